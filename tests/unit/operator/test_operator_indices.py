"""What the operator keeps in memory of the objects kopf's watches deliver (indices.py)."""

from __future__ import annotations

import inspect
import json
from typing import Any, cast

import kopf

from modelapi_operator import handlers, indices
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment
from modelapi_operator.builders.service import SLICE_MANAGED_BY_LABEL, ActivatorEndpoints, build_activator_slice


def _as_index(entries: dict[indices.Key, Any]) -> kopf.Index[indices.Key, Any]:
    """What kopf makes of an index function's answers: each key's values in a store (one each here)."""
    return cast("kopf.Index[indices.Key, Any]", {key: [value] for key, value in entries.items()})


def test_only_the_operators_own_endpointslices_are_kept_in_memory() -> None:
    """The EndpointSlice controller copies a Service's labels (ours) onto its slices: two per ModelAPI that nothing
    reads from memory. The activator's slice, which the operator writes and deletes, is kept."""
    owner = Owner(name="iris", namespace="ml", uid="uid-1")
    activator = ActivatorEndpoints(addresses=("10.0.0.9",), port=8080)
    ours = build_activator_slice(owner, "iris", "abc", activator)
    ours_labels = ours["metadata"]["labels"]
    controllers = {**ours_labels, SLICE_MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    kept = indices.slice_entry("ml", ours_labels, ours)
    assert indices.unpacked(_as_index(kept), ("ml", "iris")) == [ours]
    assert indices.slice_entry("ml", controllers, {**ours, "metadata": {"labels": controllers}}) == {}


def test_the_controllers_slices_of_the_main_service_are_kept_slim_for_ready() -> None:
    """Ready reads which pods the ``<name>`` Service's slices list, and whether as ready: only that is kept (no
    addresses, ports or other metadata); the ``<name>-stable`` Service's slices and the operator's own are not."""
    owner = Owner(name="iris", namespace="ml", uid="uid-1")
    ours = build_activator_slice(owner, "iris", "abc", ActivatorEndpoints(addresses=("10.0.0.9",), port=8080))
    labels = {**ours["metadata"]["labels"], SLICE_MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    endpoint = {
        "addresses": ["10.0.0.7"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "name": "iris-abc-1", "namespace": "ml", "uid": "pod-uid"},
        "nodeName": "kwok-cpu-0",
    }
    controllers = {
        "metadata": {"name": "iris-x7k2", "labels": labels, "resourceVersion": "42"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [endpoint],
    }
    kept = indices.service_slice_entry("ml", labels, controllers)
    assert indices.unpacked(_as_index(kept), ("ml", "iris")) == [
        {
            "metadata": {"name": "iris-x7k2"},
            "endpoints": [{"targetRef": {"kind": "Pod", "name": "iris-abc-1"}, "conditions": {"ready": True}}],
        }
    ]
    stable = {**labels, "kubernetes.io/service-name": "iris-stable"}
    assert indices.service_slice_entry("ml", stable, controllers) == {}
    assert indices.service_slice_entry("ml", ours["metadata"]["labels"], ours) == {}


def test_a_child_is_kept_as_compact_json_without_managed_fields_and_read_back_whole() -> None:
    """At 1,000 ModelAPIs the children are most of the operator's memory: parsed, a Deployment takes about six times
    the size of its JSON."""
    spec = ModelAPISpec.model_validate({"model": {"uri": "s3://models/iris/1/model.onnx"}})
    owner = Owner(name="iris", namespace="ml", uid="uid-1")
    deployment = build_deployment(spec, owner, "abc", RuntimeImages(cpu="c", gpu="g"))
    labels = deployment["metadata"]["labels"]
    served = {**deployment, "metadata": {**deployment["metadata"], "managedFields": [{"manager": "x"}]}}
    kept = indices.child_entry("ml", labels, served)
    (entry,) = kept.values()
    assert entry == json.dumps(deployment, separators=(",", ":"))
    assert indices.unpacked(_as_index(kept), ("ml", "iris")) == [deployment]
    assert indices.unpacked(_as_index({}), ("ml", "iris")) == []


def test_every_index_runs_on_the_event_loop() -> None:
    """kopf runs a plain function in a thread of its executor: a hop to a thread and back for every watch event."""
    assert [name for name in indices.INDEX_NAMES if not inspect.iscoroutinefunction(getattr(handlers, name))] == []


def test_a_modelapi_is_kept_as_compact_json_with_whether_it_ticks() -> None:
    body = {
        "metadata": {"name": "iris", "namespace": "ml", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"autoscaling": {"minReplicas": 0}},
    }
    index = _as_index(indices.modelapi_entry("ml", "iris", body, ticks=True))
    (kept,) = index[("ml", "iris")]
    assert kept.packed == '{"metadata":{"name":"iris","namespace":"ml"},"spec":{"autoscaling":{"minReplicas":0}}}'
    assert indices.values(index, ("ml", "iris")) == [{**body, "metadata": {"name": "iris", "namespace": "ml"}}]
    assert indices.known(index, ("ml", "iris"))
    assert indices.ticking(index, ("ml", "iris"))
    assert not indices.known(index, ("ml", "other"))
    assert not indices.ticking(index, ("ml", "other"))
