"""What kopf's indices keep of each child in memory, and a ModelAPI's children read back from them.

The index functions themselves are registered in handlers.py; the shapes they store are built here, so a reconcile
reads nothing from the API. A child is kept as its compact JSON and parsed again when a reconcile reads it: parsed, a
Deployment takes about six times the size of its JSON in Python dicts and strings (23 KiB against 4 KiB), and at
1,000 ModelAPIs the children are most of the operator's memory. A ModelAPI too (parsed, 1,000 of them took 11.6 MB
against 3.2 MB), beside whether the canary loop reconciles it every tick, which it asks of every ModelAPI every few
seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from modelapi_operator import names
from modelapi_operator.builders.service import SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL
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
    "service_slices_idx",
)
CHILD_INDICES = tuple(name for name in INDEX_NAMES if name != "modelapis_idx")
POD_STATUS_FIELDS = ("phase", "reason", "message", "conditions", "containerStatuses", "initContainerStatuses")


@dataclass(frozen=True)
class KeptModelAPI:
    """What the ModelAPI index keeps of one: its compact JSON, and whether it ticks (resync.ticks)."""

    packed: str
    ticks: bool


def modelapi_entry(namespace: str | None, name: str, body: Mapping[str, Any], *, ticks: bool) -> dict[Key, Any]:
    return {(namespace or "", name): KeptModelAPI(packed(plain(body)), ticks)}


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
    controller's slices of the operator's Services carry the Services' labels, ours included: those of the ``<name>``
    Service are kept slim by ``service_slice_entry``, the rest nothing reads."""
    if labels.get(SLICE_MANAGED_BY_LABEL) != names.FIELD_MANAGER:
        return {}
    return child_entry(namespace, labels, body)


def service_slice_entry(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any]) -> dict[Key, Any]:
    """The EndpointSlice controller's slices of a model's ``<name>`` Service, as little as Ready reads of them (which
    pods they list, and whether as ready): Ready answers from memory instead of listing them from the API."""
    key = model_key(namespace, labels)
    if (
        key is None
        or labels.get(SERVICE_NAME_LABEL) != key[1]
        or labels.get(SLICE_MANAGED_BY_LABEL) == names.FIELD_MANAGER
    ):
        return {}
    endpoints = [
        {
            "targetRef": {field: ref[field] for field in ("kind", "name") if field in ref},
            "conditions": {"ready": (endpoint.get("conditions") or {}).get("ready")},
        }
        for endpoint in body.get("endpoints") or []
        if (ref := endpoint.get("targetRef") or {})
    ]
    return {key: packed({"metadata": {"name": body["metadata"].get("name")}, "endpoints": endpoints})}


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
    """The ModelAPIs under ``key`` (one, or none), parsed."""
    store = index.get(key)
    return [json.loads(kept.packed) for kept in store] if store is not None else []


def known(index: kopf.Index[Key, Any], key: Key) -> bool:
    """Whether the ModelAPI index holds ``key`` (nothing parsed)."""
    return bool(index.get(key))


def ticking(index: kopf.Index[Key, Any], key: Key) -> bool:
    """Whether the ModelAPI under ``key`` ticks (nothing parsed)."""
    return any(kept.ticks for kept in index.get(key) or ())


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
        service_slices=unpacked(indices["service_slices_idx"], key),
    )


def of(kwargs: Mapping[str, Any]) -> dict[str, kopf.Index[Key, Any]]:
    """The indices among a handler's keyword arguments (kopf passes each by its function's name)."""
    return {name: kwargs[name] for name in INDEX_NAMES}
