"""The rolling update between two revisions' Deployments always finishes and never drops below its budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelapi_operator import rollout


@pytest.mark.parametrize(
    ("surge", "unavailable", "total", "expected"),
    [("25%", 0, 4, (1, 0)), ("25%", 0, 1, (1, 0)), (0, 1, 3, (0, 1)), ("10%", "10%", 2, (1, 0)), (0, "10%", 2, (0, 1))],
)
def test_bounds_round_like_kubernetes(
    surge: int | str, unavailable: int | str, total: int, expected: tuple[int, int]
) -> None:
    assert rollout.bounds(surge, unavailable, total) == expected


def _simulate(total: int, max_surge: int, max_unavailable: int, capacity: int | None) -> list[tuple[int, int, int]]:
    """Run steps against a cluster where a pod is ready one step after it is created, if it fits in ``capacity``."""
    old, new, new_ready = total, 0, 0
    history = []
    for _ in range(4 * total + 10):
        step = rollout.next_step(
            total=total,
            max_surge=max_surge,
            max_unavailable=max_unavailable,
            old_replicas=old,
            new_replicas=new,
            new_ready=new_ready,
        )
        if step.complete:
            history.append((0, new, new_ready))
            return history
        old, new = step.old_replicas, step.new_replicas
        room = new if capacity is None else min(new, capacity - old)
        new_ready = max(0, room)
        history.append((old, new, new_ready))
    raise AssertionError(f"rollout did not finish: {history}")


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 12), surge=st.integers(0, 4), unavailable=st.integers(0, 4))
def test_rollout_finishes_and_respects_availability(total: int, surge: int, unavailable: int) -> None:
    if surge == 0 and unavailable == 0:
        unavailable = 1
    for old, new, new_ready in _simulate(total, surge, unavailable, capacity=None):
        assert old + new_ready >= max(total - unavailable, 0), "availability budget broken"
        assert old + new <= total + surge, "surge budget broken"


def test_one_gpu_rollout_completes_without_a_spare_gpu() -> None:
    """One replica, one GPU in the cluster, maxSurge 0 / maxUnavailable 1: the old pod must go first."""
    history = _simulate(total=1, max_surge=0, max_unavailable=1, capacity=1)
    assert history[-1] == (0, 1, 1)


def test_cpu_rollout_keeps_every_replica_available() -> None:
    for old, _new, new_ready in _simulate(total=4, max_surge=1, max_unavailable=0, capacity=None):
        assert old + new_ready >= 4
