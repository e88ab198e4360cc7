"""The resync loop at 1,000 ModelAPIs (issue 17, item 8): a ModelAPI that serves, with nothing under way, is not
reconciled again while nothing it reads changed (but for one round in ``FULL_RESYNC_EVERY``); and an EndpointSlice
change reconciles only the ModelAPIs whose Ready waits for endpoints."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry

from modelapi_operator import triggers
from modelapi_operator.api import ColdStart, Condition, ModelAPIStatus
from modelapi_operator.context import OperatorContext
from modelapi_operator.indices import INDEX_NAMES, Key, modelapi_entry
from modelapi_operator.metrics import OperatorMetrics
from modelapi_operator.peering import Peer
from modelapi_operator.resync import ticks, unchanged
from modelapi_operator.settings import OperatorSettings

KEY: Key = ("ml", "iris")


class Store(dict[Key, list[Any]]):
    """What a kopf index answers to ``get``: the values under a key (here a plain list)."""


def _indices(body: dict[str, Any], deployment: str) -> dict[str, Any]:
    indices: dict[str, Any] = {name: Store() for name in INDEX_NAMES}
    indices["modelapis_idx"][KEY] = _kept(body)
    indices["deployments_idx"][KEY] = [deployment]
    return indices


def _kept(body: dict[str, Any]) -> list[Any]:
    """The ModelAPI as the index keeps it (indices.modelapi_entry)."""
    return list(modelapi_entry("ml", "iris", body, ticks=ticks(body)).values())


def _body(version: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "namespace": "ml", "resourceVersion": version}, "spec": spec or {}}


def _status(ready: str = "True", **fields: Any) -> ModelAPIStatus:
    at = "2026-11-30T20:00:00Z"
    conditions = [
        Condition(
            type="Ready",
            status=ready,
            reason="Serving" if ready == "True" else "ReplicasStarting",
            last_transition_time=at,
        ),
        Condition(type="Progressing", status="False", reason="AsExpected", last_transition_time=at),
        Condition(type="Degraded", status="False", reason="AsExpected", last_transition_time=at),
    ]
    return ModelAPIStatus(conditions=conditions, **fields)


def _context() -> OperatorContext:
    return OperatorContext.create(OperatorSettings(), Peer("me", 1), OperatorMetrics(CollectorRegistry()))


def test_only_a_model_that_serves_with_nothing_under_way_or_read_from_prometheus_is_settled() -> None:
    assert triggers.settled(_body("1"), _status(), prometheus=False)
    assert not triggers.settled(_body("1"), _status("False"), prometheus=False)
    assert not triggers.settled(_body("1", {"autoscaling": {"minReplicas": 0}}), _status(), prometheus=False)
    assert not triggers.settled(_body("1", {"expose": {"host": "a.example"}}), _status(), prometheus=False)
    assert not triggers.settled(_body("1"), _status(), prometheus=True), "its cold start is still to be read"
    cold = ColdStart.model_validate({"revision": "r1", "downloadSeconds": 1, "loadSeconds": 1, "warmupSeconds": 1})
    assert triggers.settled(_body("1"), _status(cold_start=cold), prometheus=True)


async def test_a_settled_model_is_skipped_until_what_it_reads_changes() -> None:
    context = _context()
    try:
        body = _body("1")
        indices = _indices(body, '{"metadata":{"name":"iris-r1","resourceVersion":"5"}}')
        assert not unchanged(context, KEY, indices), "never reconciled: not skipped"
        context.settled[KEY] = triggers.fingerprint(context, KEY, body, indices)
        assert unchanged(context, KEY, indices)
        indices["deployments_idx"][KEY] = ['{"metadata":{"name":"iris-r1","resourceVersion":"6"}}']
        assert not unchanged(context, KEY, indices), "a child changed"
        context.settled[KEY] = triggers.fingerprint(context, KEY, body, indices)
        indices["modelapis_idx"][KEY] = _kept(_body("2"))
        assert not unchanged(context, KEY, indices), "the ModelAPI changed"
        context.settled[KEY] = triggers.fingerprint(context, KEY, _body("2"), indices)
        context.reconciler.gateway_api_installed = True
        assert not unchanged(context, KEY, indices), "Gateway API was installed"
    finally:
        await context.close()


async def test_an_endpointslice_change_reconciles_only_a_model_waiting_for_endpoints() -> None:
    context = _context()
    try:
        indices = _indices(_body("1"), "{}")
        triggers.endpoints_changed(context, KEY, indices)
        assert KEY not in context.pending, "Ready does not wait for endpoints: nothing to learn"
        context.endpoint_rechecks[KEY] = 1
        triggers.endpoints_changed(context, KEY, indices)
        assert KEY in context.pending
        for task in context.tasks:
            task.cancel()
    finally:
        await context.close()


class WritingReconciler:
    """Answers a settled status and says its status patch left the ModelAPI at ``version`` (None: wrote nothing)."""

    prometheus = None
    gateway_api_installed = False

    def __init__(self, version: str | None) -> None:
        self.version = version

    async def reconcile(self, body: Any, observed: Any) -> ModelAPIStatus:
        return _status()

    def written_version(self, uid: str) -> str | None:
        return self.version


async def test_a_reconcile_that_wrote_the_status_is_settled_at_the_version_it_wrote() -> None:
    """The watch event of the operator's own status patch brings a new resourceVersion: the next round must not take
    it for a change (it cost one more reconcile of every ModelAPI after each status write)."""
    for written, skipped in (("2", True), (None, False)):
        context = _context()
        try:
            context.gateway_checked_at = float("inf")  # no Gateway API lookup
            context.reconciler = cast(Any, WritingReconciler(written))
            body = {**_body("1"), "metadata": {**_body("1")["metadata"], "uid": "u-1"}}
            indices = _indices(body, '{"metadata":{"name":"iris-r1","resourceVersion":"5"}}')
            await triggers.reconcile(context, KEY, body, indices)
            assert unchanged(context, KEY, indices) is (written is None), "before the write's watch event"
            written_body = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}
            indices["modelapis_idx"][KEY] = _kept(written_body)  # the watch event of the status patch
            assert unchanged(context, KEY, indices) is skipped
        finally:
            await context.close()
