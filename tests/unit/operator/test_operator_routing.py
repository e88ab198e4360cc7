"""Ready means routable: Ready=True waits until the Service's EndpointSlices list the revision's pods as ready."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from kube_fakes import RecordingKube
from test_operator_reconcile import _body

from modelapi_operator import kube
from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.builders import RuntimeImages
from modelapi_operator.indices import service_slice_entry
from modelapi_operator.reconcile import Observed, Reconciler
from modelapi_operator.routing import routable_pods
from modelapi_operator.status import Observation, RevisionView, compute_status


def _slice(*endpoints: tuple[str, bool]) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-x7k2", "labels": {"kubernetes.io/service-name": "iris"}},
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": name}}
            for name, ready in endpoints
        ],
    }


def test_only_ready_endpoints_of_the_revisions_pods_count_once_each() -> None:
    slices = [_slice(("iris-a-1", True), ("iris-a-2", False), ("iris-old-1", True)), _slice(("iris-a-1", True))]
    assert routable_pods(slices, {"iris-a-1", "iris-a-2"}) == 1
    assert routable_pods([], {"iris-a-1"}) == 0


def _observe(routable: int | None, previous: ModelAPIStatus | None = None) -> Observation:
    view = RevisionView(
        name="iris-a",
        revision="a",
        role="stable",
        model_uri="s3://models/iris/1/model.onnx",
        sha256=None,
        desired=2,
        ready=2,
    )
    return Observation(
        generation=1,
        desired_revision="a",
        invalid=None,
        revisions=[view],
        url="http://iris.ml.svc.cluster.local",
        previous=previous or ModelAPIStatus(),
        now="2026-11-30T09:00:00Z",
        routable=routable,
    )


def _conditions(status: ModelAPIStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_ready_pods_not_yet_listed_as_endpoints_are_not_ready() -> None:
    waiting, _ = compute_status(_observe(routable=1))
    assert _conditions(waiting) == {
        "Ready": ("False", "EndpointsNotReady"),
        "Progressing": ("True", "ReplicasStarting"),
        "Degraded": ("False", "AsExpected"),
    }
    assert "1/2 listed as ready endpoints" in waiting.conditions[0].message
    listed, events = compute_status(_observe(routable=2, previous=waiting))
    assert _conditions(listed)["Ready"] == ("True", "Serving")
    assert ("Normal", "Serving") in [(e.type, e.reason) for e in events]


def test_not_checked_means_ready_replicas_decide_as_before() -> None:
    status, _ = compute_status(_observe(routable=None))
    assert _conditions(status)["Ready"] == ("True", "Serving")


class SlicesKube(RecordingKube):
    """An empty cluster whose `<name>` Service has the given EndpointSlices; keeps the Deployments it creates."""

    def __init__(self, slices: list[dict[str, Any]]) -> None:
        super().__init__()
        self.slices = slices
        self.created: list[dict[str, Any]] = []
        self.lists: list[tuple[str, Mapping[str, str]]] = []

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.created.append(dict(manifest))
        return await super().create(manifest)

    async def list(
        self,
        kind: kube.Kind,
        namespace: str | None,
        labels: Mapping[str, str],
        *,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        self.lists.append((kind.kind, labels))
        return self.slices if kind.kind == "EndpointSlice" else []


async def _ready_after_pods_are_ready(
    slices: list[dict[str, Any]], *, kept: list[dict[str, Any]] | None = None
) -> tuple[SlicesKube, tuple[str, str]]:
    """``kept``: the slices as the operator's index holds them (then nothing is listed from the API)."""
    client = SlicesKube(slices)
    reconciler = Reconciler(client, RuntimeImages(cpu="cpu:1", gpu="gpu:1"), gateway_api_installed=False)
    body = _body({"model": {"uri": "s3://models/iris/1/model.onnx"}})
    await reconciler.reconcile(body, Observed())
    (deployment,) = [m for m in client.created if m["kind"] == "Deployment"]
    deployment = {**deployment, "status": {"replicas": 1, "readyReplicas": 1}}
    revision = deployment["metadata"]["labels"]["serving.modelapi.io/revision"]
    pod: dict[str, Any] = {
        "metadata": {
            "name": f"{deployment['metadata']['name']}-5d8c-x1",
            "labels": {**deployment["spec"]["template"]["metadata"]["labels"]},
        },
        "status": {"phase": "Running"},
    }
    assert pod["metadata"]["labels"]["serving.modelapi.io/revision"] == revision
    observed = Observed(deployments=[deployment], pods=[pod], service_slices=kept)
    status = await reconciler.reconcile(body, observed)
    ready = next(c for c in status.conditions if c.type == "Ready")
    return client, (ready.status, ready.reason)


async def test_the_reconciler_reads_the_slices_once_the_pods_are_ready_and_waits_for_them() -> None:
    client, ready = await _ready_after_pods_are_ready([])
    assert ready == ("False", "EndpointsNotReady")
    assert client.lists == [("EndpointSlice", {"kubernetes.io/service-name": "iris"})]
    _, ready = await _ready_after_pods_are_ready([_slice(("iris-other-1", True))])
    assert ready == ("False", "EndpointsNotReady")


async def test_the_reconciler_is_ready_once_the_slices_list_the_pods() -> None:
    slices = [_slice(("placeholder", True))]
    client, ready = await _ready_after_pods_are_ready(slices)
    assert ready == ("False", "EndpointsNotReady")
    name = next(m for m in client.created if m["kind"] == "Deployment")["metadata"]["name"]
    slices[0] = _slice((f"{name}-5d8c-x1", True))
    _, ready = await _ready_after_pods_are_ready(slices)
    assert ready == ("True", "Serving")


def _kept(*slices: dict[str, Any]) -> list[dict[str, Any]]:
    """The slices as the operator's index keeps them (indices.service_slice_entry)."""
    labels = {"serving.modelapi.io/name": "iris", "kubernetes.io/service-name": "iris"}
    return [json.loads(value) for item in slices for value in service_slice_entry("ml", labels, item).values()]


async def test_the_slices_the_index_keeps_decide_ready_without_a_read() -> None:
    client, ready = await _ready_after_pods_are_ready([], kept=_kept(_slice(("iris-other-1", True))))
    assert ready == ("False", "EndpointsNotReady")
    assert client.lists == []
    name = next(m for m in client.created if m["kind"] == "Deployment")["metadata"]["name"]
    client, ready = await _ready_after_pods_are_ready([], kept=_kept(_slice((f"{name}-5d8c-x1", True))))
    assert ready == ("True", "Serving")
    assert client.lists == []
    _, ready = await _ready_after_pods_are_ready([], kept=_kept(_slice((f"{name}-5d8c-x1", False))))
    assert ready == ("False", "EndpointsNotReady")


async def test_a_watch_copy_behind_the_last_status_written_repeats_no_transition() -> None:
    """The status the reconciler last wrote (kept as its JSON) stands over a watch copy that has not caught up with
    it: Ready=True once, its Events once, however often the stale copy is reconciled."""
    client = SlicesKube([])
    reconciler = Reconciler(client, RuntimeImages(cpu="cpu:1", gpu="gpu:1"), gateway_api_installed=False)
    body = _body({"model": {"uri": "s3://models/iris/1/model.onnx"}})
    await reconciler.reconcile(body, Observed())
    (created,) = [m for m in client.created if m["kind"] == "Deployment"]
    deployment = {**created, "status": {"replicas": 1, "readyReplicas": 1}}
    pod_name = f"{created['metadata']['name']}-5d8c-x1"
    pod = {"metadata": {"name": pod_name, "labels": created["spec"]["template"]["metadata"]["labels"]}}
    observed = Observed(deployments=[deployment], pods=[pod], service_slices=_kept(_slice((pod_name, True))))
    for _ in range(3):  # the body (the watch's copy) never shows the statuses written
        status = await reconciler.reconcile(body, observed)
        assert [(c.status, c.reason) for c in status.conditions if c.type == "Ready"] == [("True", "Serving")]
    statuses = [call for call in client.calls if call[0] == "status"]
    serving = [call for call in client.calls if call[0] == "event" and call[1][1] == "Serving"]
    assert len(statuses) == 2  # the first status (nothing observed yet), then Ready=True
    assert len(serving) == 1


async def test_endpoints_not_ready_is_written_only_when_the_slices_do_not_follow_within_the_grace() -> None:
    """Ready pods the slices do not list yet: nothing is written at first (the slices usually follow within a
    moment, and Ready=True then comes with one status patch and no EndpointsNotReady Event); once the wait lasts
    past the grace, Ready=False EndpointsNotReady is written, with its Event."""
    grace = 0.2

    async def setup() -> tuple[SlicesKube, Reconciler, dict[str, Any], str]:
        client = SlicesKube([])
        reconciler = Reconciler(
            client,
            RuntimeImages(cpu="cpu:1", gpu="gpu:1"),
            gateway_api_installed=False,
            endpoints_grace_seconds=grace,
        )
        body = _body({"model": {"uri": "s3://models/iris/1/model.onnx"}})
        await reconciler.reconcile(body, Observed())
        return (
            client,
            reconciler,
            body,
            next(m for m in client.created if m["kind"] == "Deployment")["metadata"]["name"],
        )

    def observed(name: str, deployment: dict[str, Any], *listed: str) -> Observed:
        ready = {**deployment, "status": {"replicas": 1, "readyReplicas": 1}}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pod = {"metadata": {"name": f"{name}-5d8c-x1", "labels": labels}}
        return Observed(deployments=[ready], pods=[pod], service_slices=_kept(_slice(*((p, True) for p in listed))))

    def written(client: SlicesKube) -> tuple[list[str | None], list[str]]:
        statuses = [
            next((c["reason"] for c in call[1]["conditions"] if c["type"] == "Ready"), None)
            for call in client.calls
            if call[0] == "status"
        ]
        return statuses, [call[1][1] for call in client.calls if call[0] == "event"]

    # the slices follow within the grace: straight to Ready=True
    client, reconciler, body, name = await setup()
    deployment = next(m for m in client.created if m["kind"] == "Deployment")
    waiting = await reconciler.reconcile(body, observed(name, deployment))
    assert [(c.status, c.reason) for c in waiting.conditions if c.type == "Ready"] == [("False", "EndpointsNotReady")]
    await reconciler.reconcile(body, observed(name, deployment, f"{name}-5d8c-x1"))
    statuses, events = written(client)
    assert statuses[1:] == ["Serving"]
    assert "EndpointsNotReady" not in events
    assert "Serving" in events

    # they do not: nothing written within the grace, EndpointsNotReady once it has passed, and only once
    client, reconciler, body, name = await setup()
    deployment = next(m for m in client.created if m["kind"] == "Deployment")
    await reconciler.reconcile(body, observed(name, deployment))
    await reconciler.reconcile(body, observed(name, deployment))
    assert written(client)[0][1:] == []
    await asyncio.sleep(grace * 1.5)
    for _ in range(2):
        await reconciler.reconcile(body, observed(name, deployment))
    statuses, events = written(client)
    assert statuses[1:] == ["EndpointsNotReady"]
    assert events.count("EndpointsNotReady") == 1
