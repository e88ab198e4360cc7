"""What the operator keeps in memory of the objects kopf's watches deliver (indices.py)."""

from __future__ import annotations

import inspect

from modelapi_operator import handlers, indices
from modelapi_operator.builders import Owner
from modelapi_operator.builders.service import SLICE_MANAGED_BY_LABEL, ActivatorEndpoints, build_activator_slice


def test_only_the_operators_own_endpointslices_are_kept_in_memory() -> None:
    """The EndpointSlice controller copies a Service's labels (ours) onto its slices: two per ModelAPI that nothing
    reads from memory. The activator's slice, which the operator writes and deletes, is kept."""
    owner = Owner(name="iris", namespace="ml", uid="uid-1")
    activator = ActivatorEndpoints(addresses=("10.0.0.9",), port=8080)
    ours = build_activator_slice(owner, "iris", "abc", activator)
    ours_labels = ours["metadata"]["labels"]
    controllers = {**ours_labels, SLICE_MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    assert indices.slice_entry("ml", ours_labels, ours) == {("ml", "iris"): ours}
    assert indices.slice_entry("ml", controllers, {**ours, "metadata": {"labels": controllers}}) == {}


def test_every_index_runs_on_the_event_loop() -> None:
    """kopf runs a plain function in a thread of its executor: a hop to a thread and back for every watch event."""
    assert [name for name in indices.INDEX_NAMES if not inspect.iscoroutinefunction(getattr(handlers, name))] == []
