"""The resync loops: every ModelAPI is reconciled once per ``resync_seconds`` (drift and status; a settled one whose
inputs did not change, once per ``FULL_RESYNC_EVERY`` of them), and those with a canary or that may scale to zero
once per ``canary_tick_seconds``.

One loop for every ModelAPI instead of a kopf timer per object: timers make kopf put a finalizer on each ModelAPI,
and a finalizer would keep a ModelAPI from being deleted whenever the operator is not running. kopf pauses its own
handlers while a peer outranks this replica, not these loops: they ask the peering objects themselves and stand by
too (the indices stop being updated then: acting on them would undo the active replica's work).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from modelapi_operator import peering
from modelapi_operator.context import OperatorContext
from modelapi_operator.indices import Indices, Key, ticking, values
from modelapi_operator.triggers import fingerprint, schedule

log = logging.getLogger(__name__)

FULL_RESYNC_EVERY = 10  # rounds: what no watch shows (a ServiceAccount deleted, a name freed) is seen within them


def start(context: OperatorContext, indices: Indices) -> None:
    loop = asyncio.get_running_loop()
    context.background = [
        loop.create_task(_loop(context, indices, context.settings.resync_seconds, canaries_only=False)),
        loop.create_task(_loop(context, indices, context.settings.canary_tick_seconds, canaries_only=True)),
    ]
    for task in context.background:
        task.add_done_callback(_loop_ended)


def _loop_ended(task: asyncio.Task[None]) -> None:
    """A resync loop never ends but by cancellation at exit: say so loudly if one did (nothing else would)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a resync loop stopped: no more resyncs or canary steps", exc_info=task.exception())


async def _loop(context: OperatorContext, indices: Indices, interval: float, *, canaries_only: bool) -> None:
    """Reconcile every ModelAPI (or every one that ticks) once per ``interval``, spread over it; nothing while a peer
    outranks this replica. A settled ModelAPI whose inputs did not change since (triggers.settled) is skipped, but in
    one round of every ``FULL_RESYNC_EVERY``: at 1,000 ModelAPIs that serve, the resync was most of the idle CPU."""
    rounds = 0
    while True:
        if await context.standing_by():
            await asyncio.sleep(min(interval, peering.RECHECK_SECONDS))
            continue
        keys = list(indices["modelapis_idx"].keys())
        if canaries_only:  # and those that may scale to zero: idleness, demand, the activator's endpoints
            keys = [key for key in keys if ticking(indices["modelapis_idx"], key)]
        full = rounds % FULL_RESYNC_EVERY == 0
        rounds += 1
        pause = interval / max(len(keys), 1)
        for key in keys:
            if await context.standing_by():
                break
            if full or not unchanged(context, key, indices):
                schedule(context, key, indices)
            await asyncio.sleep(pause)
        if not keys:
            await asyncio.sleep(interval)


def unchanged(context: OperatorContext, key: Key, indices: Indices) -> bool:
    """Settled at its last reconcile, and nothing it reads changed since."""
    known = context.settled.get(key)
    if known is None:
        return False
    bodies = values(indices["modelapis_idx"], key)
    return bool(bodies) and fingerprint(context, key, bodies[0], indices) == known


def ticks(body: Mapping[str, Any]) -> bool:
    """A ModelAPI reconciled every canary tick: a canary runs, or it may scale to zero."""
    autoscaling = (body.get("spec") or {}).get("autoscaling") or {}
    return bool((body.get("status") or {}).get("canary")) or autoscaling.get("minReplicas") == 0
