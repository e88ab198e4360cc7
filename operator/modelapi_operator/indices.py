"""What kopf's indices keep of each child in memory, and a ModelAPI's children read back from them.

The index functions themselves are registered in handlers.py; the shapes they store are built here, so a reconcile
reads nothing from the API. A child is kept as its compact JSON and parsed again when a reconcile reads it: parsed, a
Deployment takes about six times the size of its JSON in Python dicts and strings (23 KiB against 4 KiB), and at
1,000 ModelAPIs the children are most of the operator's memory. ModelAPIs stay parsed: the resync loops look at every
one of them every few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kopf

from modelapi_operator import names
from modelapi_operator.builders.service import SLICE_MANAGED_BY_LABEL
from modelapi_operator.reconcile import Observed

Key = tuple[str, str]
Indices = Mapping[str, kopf.Index[Key, Any]]

INDEX_NAMES = (
    "modelapis_idx",
    "deployments_idx",
    "services_idx",
    "hpas_idx",
    "pdbs_idx",
    "httproutes_idx",
    "pods_idx",
    "endpointslices_idx",
    "configmaps_idx",
)
CHILD_INDICES = tuple(name for name in INDEX_NAMES if name != "modelapis_idx")
POD_STATUS_FIELDS = ("phase", "reason", "message", "conditions", "containerStatuses", "initContainerStatuses")


def model_key(namespace: str | None, labels: Mapping[str, str]) -> Key | None:
    """The ModelAPI a child belongs to, from its labels."""
    model = labels.get(names.LABEL_NAME)
    return (namespace or "", model) if model else None


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the object without metadata.managedFields (nothing reads them; a third of the memory)."""
    copy = {key: body[key] for key in body}
    meta = copy.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        copy["metadata"] = {key: value for key, value in meta.items() if key != "managedFields"}
    return copy


def packed(entry: Mapping[str, Any]) -> str:
    """What an index keeps of a child: its JSON, without spaces."""
    return json.dumps(entry, separators=(",", ":"))


def child_entry(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any]) -> dict[Key, Any]:
    key = model_key(namespace, labels)
    return {key: packed(plain(body))} if key else {}


def slice_entry(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any]) -> dict[Key, Any]:
    """Only the EndpointSlices the operator writes (the activator's, for a model at zero). The EndpointSlice
    controller's slices of the operator's Services carry the Services' labels, ours included, but nothing reads them
    from memory (Ready lists them from the API, once): two per ModelAPI kept for nothing."""
    if labels.get(SLICE_MANAGED_BY_LABEL) != names.FIELD_MANAGER:
        return {}
    return child_entry(namespace, labels, body)


def pod_entry(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any]) -> dict[Key, Any]:
    """Only what diagnosis reads: pods are the most numerous objects, keep them small."""
    key = model_key(namespace, labels)
    if key is None:
        return {}
    status = body.get("status") or {}
    slim = {
        "metadata": {"name": body["metadata"].get("name"), "labels": dict(labels)},
        "status": {field: status[field] for field in POD_STATUS_FIELDS if field in status},
    }
    return {key: packed(slim)}


def values(index: kopf.Index[Key, Any], key: Key) -> list[Any]:
    """The ModelAPIs under ``key`` (one, or none)."""
    store = index.get(key)
    return list(store) if store is not None else []


def unpacked(index: kopf.Index[Key, Any], key: Key) -> list[Any]:
    """The children of the ModelAPI ``key`` in one index, parsed again."""
    store = index.get(key)
    return [json.loads(item) for item in store] if store is not None else []


def observed(key: Key, indices: Indices) -> Observed:
    return Observed(
        deployments=unpacked(indices["deployments_idx"], key),
        services=unpacked(indices["services_idx"], key),
        hpas=unpacked(indices["hpas_idx"], key),
        pdbs=unpacked(indices["pdbs_idx"], key),
        httproutes=unpacked(indices["httproutes_idx"], key),
        pods=unpacked(indices["pods_idx"], key),
        endpointslices=unpacked(indices["endpointslices_idx"], key),
        configmaps=unpacked(indices["configmaps_idx"], key),
    )


def of(kwargs: Mapping[str, Any]) -> dict[str, kopf.Index[Key, Any]]:
    """The indices among a handler's keyword arguments (kopf passes each by its function's name)."""
    return {name: kwargs[name] for name in INDEX_NAMES}
