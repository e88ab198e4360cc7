"""Sizing two revisions during a rolling update (pure).

Each revision is its own Deployment, so the operator does between Deployments what a Deployment
does between ReplicaSets: the new revision grows within the surge budget, the old one shrinks only
as new replicas become ready, never below what maxUnavailable allows. With the GPU defaults
(maxSurge 0, maxUnavailable 1) the old revision gives up one pod (and its GPU) at a time, so a
cluster without a spare GPU still completes the rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def resolve(value: int | str, total: int, *, round_up: bool) -> int:
    """An absolute number or a percentage of ``total`` (surge rounds up, unavailable down, as in Kubernetes)."""
    if isinstance(value, int):
        return value
    share = total * int(value.rstrip("%")) / 100
    return math.ceil(share) if round_up else math.floor(share)


def bounds(surge: int | str, unavailable: int | str, total: int) -> tuple[int, int]:
    max_surge = resolve(surge, total, round_up=True)
    max_unavailable = resolve(unavailable, total, round_up=False)
    if max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1  # Kubernetes does the same when percentages both round to zero
    return max_surge, max_unavailable


@dataclass(frozen=True)
class Step:
    new_replicas: int
    old_replicas: int
    complete: bool


def next_step(
    *,
    total: int,
    max_surge: int,
    max_unavailable: int,
    old_replicas: int,
    new_replicas: int,
    new_ready: int,
) -> Step:
    """Replica counts for the next step towards ``total`` new replicas and none of the old."""
    if new_replicas >= total and new_ready >= total:
        return Step(new_replicas=new_replicas, old_replicas=0, complete=True)
    most_pods = total + max_surge
    least_available = max(total - max_unavailable, 0)
    new_target = min(total, max(new_replicas, most_pods - old_replicas))
    old_target = min(old_replicas, max(least_available - new_ready, 0))
    return Step(new_replicas=new_target, old_replicas=old_target, complete=False)
