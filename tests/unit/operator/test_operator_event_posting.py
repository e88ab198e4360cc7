"""A reconcile's Events go out after its status patch, and the operator's queue posts them without holding the
reconcile (event_posting.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from kube_fakes import RecordingKube

from modelapi_operator import kube
from modelapi_operator.event_posting import EventQueue, InlineEvents, reference
from modelapi_operator.status import EventRecord

BODY: dict[str, Any] = {
    "apiVersion": "serving.modelapi.io/v1alpha1",
    "kind": "ModelAPI",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "labels": {"a": "b"}, "resourceVersion": "7"},
    "spec": {"model": {"uri": "s3://models/iris/model.onnx"}},
    "status": {"conditions": []},
}


class GatedKube(RecordingKube):
    """Events wait at a gate (a slow API server); a reason in ``refuse`` is answered 403."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.refuse = refuse
        self.involved: list[Mapping[str, Any]] = []

    async def post_event(
        self, involved: Mapping[str, Any], event_type: str, reason: str, message: str, now: str
    ) -> None:
        await self.gate.wait()
        if reason in self.refuse:
            raise kube.Forbidden(403, "Forbidden", "events is forbidden")
        self.involved.append(involved)
        await super().post_event(involved, event_type, reason, message, now)


def _event(reason: str) -> EventRecord:
    return EventRecord("Normal", reason, f"{reason} happened")


def _posted(client: RecordingKube) -> list[str]:
    return [args[1] for call, args in client.calls if call == "event"]


async def test_queued_events_do_not_hold_the_caller_and_keep_their_order() -> None:
    client = GatedKube()
    queue = EventQueue(client, in_flight=1)
    for reason in ("Serving", "RolloutComplete", "CanaryStep"):
        await asyncio.wait_for(queue.post(BODY, _event(reason), "2026-12-01T00:00:00Z"), 0.5)  # returns at once
    assert queue.waiting >= 2
    assert _posted(client) == []
    client.gate.set()
    assert await queue.flush(5)
    assert _posted(client) == ["Serving", "RolloutComplete", "CanaryStep"]
    # only the object's identity waits in the queue, not the whole body
    assert client.involved[0] == {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1"},
    }
    assert reference(BODY) == client.involved[0]


async def test_a_full_queue_drops_new_events_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    client = GatedKube()
    queue = EventQueue(client, in_flight=1, max_queued=2)
    for i in range(6):
        await queue.post(BODY, _event(f"E{i}"), "2026-12-01T00:00:00Z")
    await asyncio.sleep(0)
    assert queue.dropped >= 3
    assert caplog.text.count("dropping new ones") == 1, "one warning per burst of drops"
    client.gate.set()
    assert await queue.flush(5)
    assert len(_posted(client)) == 6 - queue.dropped


async def test_a_refused_event_is_logged_and_the_rest_still_go(caplog: pytest.LogCaptureFixture) -> None:
    client = GatedKube(refuse=frozenset({"Serving"}))
    client.gate.set()
    queue = EventQueue(client)
    await queue.post(BODY, _event("Serving"), "t")
    await queue.post(BODY, _event("RolloutComplete"), "t")
    assert await queue.flush(5)
    assert _posted(client) == ["RolloutComplete"]
    assert "could not post event Serving" in caplog.text


async def test_flush_gives_up_after_its_timeout() -> None:
    client = GatedKube()  # never opens
    queue = EventQueue(client)
    await queue.post(BODY, _event("Serving"), "t")
    assert not await queue.flush(0.1)


async def test_inline_events_are_posted_before_post_returns() -> None:
    client = RecordingKube()
    await InlineEvents(client).post(BODY, _event("Serving"), "t")
    assert _posted(client) == ["Serving"]


async def test_a_reconcile_returns_after_its_status_patch_while_its_events_wait() -> None:
    """The reconcile slot is free once the status is written: Events the API server is slow to take wait in the
    queue, not in the reconcile; they follow the status patch, never precede it."""
    from modelapi_operator.builders import RuntimeImages
    from modelapi_operator.reconcile import Observed, Reconciler

    client = GatedKube()
    queue = EventQueue(client)
    reconciler = Reconciler(
        client, RuntimeImages(cpu="runtime:1", gpu="runtime-gpu:1"), gateway_api_installed=False, events=queue
    )
    invalid = {**BODY, "spec": {"model": {}}}  # a spec that fails validation: a status and a Warning Event
    status = await asyncio.wait_for(reconciler.reconcile(invalid, Observed()), 5)
    assert any(c.reason == "InvalidSpec" for c in status.conditions)
    assert [call for call, _ in client.calls] == ["status"]
    client.gate.set()
    assert await queue.flush(5)
    assert [call for call, _ in client.calls] == ["status", "event"]
    assert _posted(client) == ["InvalidSpec"]
