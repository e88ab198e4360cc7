"""What kopf keeps per ModelAPI: the diff base in memory (what kopf decides from it), and nothing patched for it."""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import kopf
from kopf._cogs.structs import diffs
from kopf._core.intents.causes import Reason, detect_changing_cause

from modelapi_operator import names
from modelapi_operator.persistence import MemoryDiffBaseStorage, UnmarkedProgressStorage

MODELAPI: dict[str, Any] = {
    "apiVersion": f"{names.GROUP}/{names.VERSION}",
    "kind": "ModelAPI",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "resourceVersion": "1", "labels": {"team": "a"}},
    "spec": {"model": {"uri": "s3://models/iris/v1/model.onnx"}},
}


def _cause(storage: MemoryDiffBaseStorage, raw: dict[str, Any]) -> tuple[Reason, kopf.Patch]:
    """kopf's decision for one watch event, as its processing makes it; then, as it does once the handlers are done,
    the new diff base stored (into a patch kopf would send)."""
    body = kopf.Body(cast(kopf.RawBody, raw))
    old = storage.fetch(body=body)
    new = storage.build(body=body)
    patch = kopf.Patch()
    context: dict[str, Any] = {  # what a cause carries on to the handlers; no part of the decision
        "logger": logging.getLogger(__name__),
        "indices": {},
        "memo": kopf.Memo(),
        "resource": kopf.Resource(names.GROUP, names.VERSION, names.PLURAL),
        "patch": patch,
    }
    cause = detect_changing_cause(
        **context,
        finalizer=f"{names.GROUP}/finalizer",
        raw_event=cast(kopf.RawEvent, {"type": "MODIFIED", "object": raw}),
        body=body,
        old=old,
        new=new,
        diff=diffs.diff(old, new),
        initial=False,
    )
    if old != new:
        storage.store(body=body, patch=patch, essence=new)
    return cause.reason, patch


def _changed(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(MODELAPI)
    raw["metadata"]["resourceVersion"] = "2"
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = raw
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return raw


def test_a_new_modelapi_is_created_and_nothing_is_patched_onto_it() -> None:
    storage = MemoryDiffBaseStorage(names.GROUP)
    reason, patch = _cause(storage, copy.deepcopy(MODELAPI))
    assert reason == Reason.CREATE
    assert not patch  # kopf's annotation storage patched last-handled-configuration here: one request per ModelAPI
    assert len(storage) == 1


def test_status_and_resource_version_changes_are_nothing_new_spec_and_label_changes_are_updates() -> None:
    storage = MemoryDiffBaseStorage(names.GROUP)
    _cause(storage, copy.deepcopy(MODELAPI))
    assert _cause(storage, _changed(status={"replicas": 1}))[0] == Reason.NOOP
    spec = _changed(spec={"model": {"uri": "s3://models/iris/v2/model.onnx"}})
    assert _cause(storage, spec) == (Reason.UPDATE, kopf.Patch())
    assert _cause(storage, spec)[0] == Reason.NOOP  # the update was stored as the new base
    labelled = copy.deepcopy(spec)
    labelled["metadata"]["labels"] = {"team": "b"}
    assert _cause(storage, labelled)[0] == Reason.UPDATE


def test_annotations_under_the_operators_prefix_are_not_updates() -> None:
    """As with kopf's annotation storage: the activation and rollback requests have their own triggers."""
    storage = MemoryDiffBaseStorage(names.GROUP)
    _cause(storage, copy.deepcopy(MODELAPI))
    requested = _changed(metadata__annotations={names.ROLLBACK_ANNOTATION: "true", names.ACTIVATE_ANNOTATION: "t"})
    assert _cause(storage, requested)[0] == Reason.NOOP
    other = _changed(metadata__annotations={"example.com/owner": "team-b"})
    assert _cause(storage, other)[0] == Reason.UPDATE


def test_a_restart_sees_every_modelapi_as_created_and_a_deleted_one_is_forgotten() -> None:
    storage = MemoryDiffBaseStorage(names.GROUP)
    _cause(storage, copy.deepcopy(MODELAPI))
    assert _cause(MemoryDiffBaseStorage(names.GROUP), copy.deepcopy(MODELAPI))[0] == Reason.CREATE
    storage.forget("u-1")
    assert len(storage) == 0
    assert _cause(storage, copy.deepcopy(MODELAPI))[0] == Reason.CREATE


def test_a_handler_that_succeeds_at_once_leaves_no_progress_and_no_marker_to_patch() -> None:
    """What kopf does with the progress storage around a handler that succeeds on its first call: store its record,
    then purge it once all are done. kopf's own storage leaves its ``kopf-managed`` marker in the patch (one PATCH of
    every new ModelAPI); this one leaves nothing."""
    body = kopf.Body(cast(kopf.RawBody, copy.deepcopy(MODELAPI)))
    record = cast(kopf.ProgressRecord, {"started": "2026-12-01T00:00:00Z", "success": True, "retries": 1})
    handler = kopf.HandlerId("reconcile_modelapi")

    def patch_after_success(storage: kopf.ProgressStorage) -> kopf.Patch:
        patch = kopf.Patch()
        storage.store(key=handler, record=record, body=body, patch=patch)
        storage.purge(key=handler, body=body, patch=patch)
        return patch

    assert patch_after_success(kopf.AnnotationsProgressStorage(prefix=names.GROUP))  # the marker kopf would patch
    assert not patch_after_success(UnmarkedProgressStorage(prefix=names.GROUP))
    retried = kopf.Patch()
    UnmarkedProgressStorage(prefix=names.GROUP).store(key=handler, record=record, body=body, patch=retried)
    assert list(retried["metadata"]["annotations"]) == [f"{names.GROUP}/reconcile_modelapi"]  # progress still kept


def test_the_essence_is_kopfs_without_the_operators_annotations() -> None:
    """Built without kopf's deep copy of the whole object, it is still kopf's essence (but the operator's own
    annotations), for an object as the watch delivers it: managed fields, status, kubectl's and other operators'
    annotations."""
    storage = MemoryDiffBaseStorage(names.GROUP)
    raw = _changed(
        metadata__annotations={
            names.ROLLBACK_ANNOTATION: "true",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "example.com/owner": "team-b",
            "other.example.com/kopf-managed": "yes",
            "other.example.com/handler": "{}",
        },
        metadata__managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        status={"conditions": [{"type": "Ready", "status": "True"}]},
    )
    bodies = [raw, copy.deepcopy(MODELAPI), {**copy.deepcopy(MODELAPI), "metadata": {"name": "bare", "uid": "u-2"}}]
    for each in bodies:
        body = kopf.Body(cast(kopf.RawBody, each))
        expected: dict[str, Any] = copy.deepcopy(dict(kopf.DiffBaseStorage.build(storage, body=body)))
        annotations = expected.get("metadata", {}).get("annotations", {})
        for name in [name for name in annotations if name.startswith(f"{names.GROUP}/")]:
            del annotations[name]
        storage.remove_empty_stanzas(cast(kopf.BodyEssence, expected))
        assert storage.build(body=body) == expected
    essence = storage.build(body=kopf.Body(cast(kopf.RawBody, raw)))
    assert essence["metadata"] == {"labels": {"team": "a"}, "annotations": {"example.com/owner": "team-b"}}
    essence["spec"]["model"]["uri"] = "changed"  # a copy: the watch's object stays as it was
    assert raw["spec"]["model"]["uri"] == MODELAPI["spec"]["model"]["uri"]


def test_children_get_an_empty_essence_and_progress_is_cleared_without_touching_the_given_one() -> None:
    """kopf builds the essence of every object it watches; only ModelAPIs have handlers that diff it, so a child's is
    empty (no copy of a Deployment per watch event). The progress storage's clear leaves its argument as it was."""
    storage = MemoryDiffBaseStorage(names.GROUP)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "iris-1", "namespace": "ml", "uid": "d-1"},
        "spec": {"template": {"spec": {"containers": [{"name": "runtime"}]}}},
    }
    assert storage.build(body=kopf.Body(cast(kopf.RawBody, deployment))) == {}
    essence = storage.build(body=kopf.Body(cast(kopf.RawBody, MODELAPI)))
    assert essence["spec"] == MODELAPI["spec"]

    progress = UnmarkedProgressStorage(prefix=names.GROUP)
    given = {
        "spec": {"model": {"uri": "s3://m"}},
        "metadata": {"annotations": {f"{names.GROUP}/reconcile_modelapi": "{}", "team": "a"}, "labels": {"x": "y"}},
    }
    before = copy.deepcopy(given)
    cleared = cast(dict[str, Any], progress.clear(essence=cast(kopf.BodyEssence, given)))
    assert cleared == {
        "spec": {"model": {"uri": "s3://m"}},
        "metadata": {"annotations": {"team": "a"}, "labels": {"x": "y"}},
    }
    assert given == before
    only_ours = {"metadata": {"annotations": {f"{names.GROUP}/x": "1"}}}
    assert progress.clear(essence=cast(kopf.BodyEssence, only_ours)) == {}
