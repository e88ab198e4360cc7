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
