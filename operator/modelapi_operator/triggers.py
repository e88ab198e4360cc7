"""Reconcile triggers: one ModelAPI at a time, triggers that coalesce, and the looks again that a status asks for.

- a reconcile takes the ModelAPI's lock and a free slot (counted while it waits), and turns an API failure into a
  ``kopf.TemporaryError``, so kopf retries with its own back-off (the server's Retry-After when it sent one); the
  status it wrote is published as the ``modelapi_status_*`` series (status_series.py);
- ``schedule`` reconciles the ModelAPI a child belongs to, soon; triggers that arrive meanwhile coalesce;
- a status that will change with time alone (endpoints not listed yet, an unschedulable grace, an HPA held at its
  maximum) schedules one more reconcile for when it may.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from modelapi_operator import autoscaling, capacity, kube
from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.context import OperatorContext
from modelapi_operator.indices import CHILD_INDICES, Indices, Key, known, observed, values
from modelapi_operator.reasons import AUTOSCALING_LIMITED, ENDPOINTS_NOT_READY
from modelapi_operator.status_series import status_samples

log = logging.getLogger(__name__)

RETRY_SOON_SECONDS = 10
RETRY_LATER_SECONDS = 60
ENDPOINTS_RECHECK_SECONDS = 1.0


async def reconcile(context: OperatorContext, key: Key, body: Mapping[str, Any], indices: Indices) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return  # being deleted: owner references remove the children; recreating them would only be refused
    lock = context.locks.setdefault(key, asyncio.Lock())
    first = not indices["deployments_idx"].get(key)  # no Deployment yet: its first reconcile goes first (slots.py)
    async with context.metrics.turn(lock, context.slots.held(first=first)):
        context.pending.discard(key)
        context.settled.pop(key, None)
        reconciler = await context.current_reconciler()
        inputs = fingerprint(context, key, body, indices)
        seen = observed(key, indices)
        try:
            with context.metrics.reconciling(error_reason):
                status = await reconciler.reconcile(body, seen)
        except kube.KubeError as error:
            # kopf retries the handler after ``delay``: the server's Retry-After when it sent one (429, 503)
            delay = error.retry_delay(soon=RETRY_SOON_SECONDS, later=RETRY_LATER_SECONDS)
            raise kopf.TemporaryError(f"Kubernetes API: {error} (retry in {delay:g} s)", delay=delay) from error
    namespace, name = key
    hpa = next((h for h in seen.hpas if h.get("metadata", {}).get("name") == name), None)
    context.metrics.publish(key, status_samples(namespace, name, status, hpa))
    written = reconciler.written_version(body.get("metadata", {}).get("uid", ""))
    if settled(body, status, prometheus=reconciler.prometheus is not None):
        # A reconcile that wrote the status changed the ModelAPI's resourceVersion itself: what the next round should
        # find is that version, not the one read before (else every status write costs one more reconcile, 1,000 of
        # them in the round after 1,000 ModelAPIs became Ready).
        context.settled[key] = (
            fingerprint(context, key, body, indices, version=written) if written is not None else inputs
        )
    _recheck_after_grace(context, key, seen.pods, indices)
    _recheck_endpoints(context, key, status, indices)
    _recheck_autoscaling_limit(context, key, seen.hpas, status, indices)


def fingerprint(
    context: OperatorContext, key: Key, body: Mapping[str, Any], indices: Indices, *, version: str | None = None
) -> int:
    """What a reconcile of this ModelAPI reads, in one number: the ModelAPI's resourceVersion (any write to it: spec,
    annotations, status; ``version`` when given), every child the indices hold (as their JSON, whose hashes Python
    keeps) and whether Gateway API is installed."""
    children = frozenset(
        item for name in CHILD_INDICES if (store := indices[name].get(key)) is not None for item in store
    )
    version = version or body.get("metadata", {}).get("resourceVersion")
    return hash((version, children, context.reconciler.gateway_api_installed))


def settled(body: Mapping[str, Any], status: ModelAPIStatus, *, prometheus: bool) -> bool:
    """A ModelAPI that serves, with nothing wrong and nothing under way, and nothing that changes without an event the
    operator watches (a canary's steps, idleness, Prometheus's readings, a Gateway's routes): reconciled again with
    the same inputs, it would write nothing. The resync loop skips it while its fingerprint stays the same."""
    spec = body.get("spec") or {}
    conditions = {condition.type: condition.status for condition in status.conditions}
    if (conditions.get("Ready"), conditions.get("Degraded"), conditions.get("Progressing")) != (
        "True",
        "False",
        "False",
    ):
        return False
    if status.canary is not None or spec.get("expose") or (spec.get("monitoring") or {}).get("predictionLog"):
        return False
    if (spec.get("autoscaling") or {}).get("minReplicas") == 0:
        return False
    return not prometheus or status.cold_start is not None


def error_reason(error: Exception) -> str:
    """A failed reconcile's reason for the metrics: the API's (a short CamelCase word) or the exception's type."""
    if isinstance(error, kube.KubeError):
        return error.reason if error.reason.isalnum() else f"HTTP{error.status}"
    return type(error).__name__


def schedule(context: OperatorContext, key: Key | None, indices: Indices) -> None:
    """Reconcile the ModelAPI a child belongs to, soon; triggers that arrive meanwhile coalesce."""
    if key is None or key in context.pending:
        return
    if not known(indices["modelapis_idx"], key):
        return
    context.pending.add(key)

    async def run() -> None:
        current = values(indices["modelapis_idx"], key)
        if not current:
            context.pending.discard(key)
            return
        try:
            await reconcile(context, key, current[0], indices)
        except kopf.TemporaryError as error:
            log.warning("reconcile of %s/%s after a change failed (the resync loop retries): %s", *key, error)

    task = asyncio.get_running_loop().create_task(run())
    context.tasks.add(task)
    task.add_done_callback(context.tasks.discard)


def endpoints_changed(context: OperatorContext, key: Key | None, indices: Indices) -> None:
    """An EndpointSlice of the ModelAPI's Services changed: reconcile it now if its Ready waits for endpoints (the
    others have nothing to learn from it: Ready lists the slices only while it waits)."""
    if key is not None and key in context.endpoint_rechecks:
        schedule(context, key, indices)


def _later(context: OperatorContext, delay: float, key: Key, indices: Indices) -> None:
    asyncio.get_running_loop().call_later(delay, schedule, context, key, indices)


def _recheck_endpoints(context: OperatorContext, key: Key, status: ModelAPIStatus, indices: Indices) -> None:
    """While Ready waits for the EndpointSlices, look again soon (the controller lists a ready pod within a moment),
    backing off to the resync interval if it does not; a change of the slices reconciles at once
    (``endpoints_changed``): the backed-off looks are for a change the watch missed."""
    if not any(c.type == "Ready" and c.reason == ENDPOINTS_NOT_READY for c in status.conditions):
        context.endpoint_rechecks.pop(key, None)
        return
    tries = context.endpoint_rechecks.get(key, 0)
    context.endpoint_rechecks[key] = tries + 1
    _later(context, min(ENDPOINTS_RECHECK_SECONDS * 2**tries, context.settings.resync_seconds), key, indices)


def _recheck_after_grace(
    context: OperatorContext, key: Key, pods: Iterable[Mapping[str, Any]], indices: Indices
) -> None:
    """A pod still within its unschedulable grace changes nothing when the grace ends: look again then."""
    wait = capacity.grace_remaining(pods, datetime.now(UTC), context.settings.unschedulable_grace_seconds)
    if wait is not None:
        _later(context, wait + 1.0, key, indices)


def _recheck_autoscaling_limit(
    context: OperatorContext, key: Key, hpas: Iterable[Mapping[str, Any]], status: ModelAPIStatus, indices: Indices
) -> None:
    """An HPA held at its maximum changes nothing when it has been so for long enough: look again then."""
    hpa = next((h for h in hpas if h.get("metadata", {}).get("name") == key[1]), None)
    was_limited = any(c.type == "Autoscaling" and c.reason == AUTOSCALING_LIMITED for c in status.conditions)
    wait = autoscaling.recheck_in(
        autoscaling.read_hpa(hpa),
        was_limited=was_limited,
        now=datetime.now(UTC),
        sustain=context.settings.autoscaling_limited_seconds,
    )
    if wait is not None:
        _later(context, wait + 1.0, key, indices)
