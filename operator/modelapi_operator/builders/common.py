"""What every child shares: owner identity, canonical labels, object metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelapi_operator import names

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The ModelAPI that owns the children (its identity, not its spec)."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class RuntimeImages:
    """The operator's defaults for model pods (operator settings): the runtime images (spec.runtime.image overrides
    both), the Secrets every model pod pulls its image with (operator setting image_pull_secrets), the node cache
    agent's port (0: none), the runtime's log format (operator setting log_format) and its default trace collector."""

    cpu: str
    gpu: str
    pull_secrets: tuple[str, ...] = ()
    node_cache_port: int = 0
    max_artifact_size: str = ""  # the default of spec.storage.maxArtifactSize ("": cacheSize)
    log_format: str = "text"  # the runtime's log lines: text or json (the chart's logFormat)
    tracing_endpoint: str = ""  # the default OTLP/HTTP collector of model pods ("": none; the chart's tracing)
    tracing_sample_rate: float = 100.0  # its default sample rate, percent


def canonical_labels(owner: Owner, revision: str) -> dict[str, str]:
    return {
        names.LABEL_APP_NAME: names.APP_NAME,
        names.LABEL_APP_INSTANCE: owner.name,
        names.LABEL_MANAGED_BY: names.FIELD_MANAGER,
        names.LABEL_NAME: owner.name,
        names.LABEL_REVISION: revision,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(name: str, owner: Owner, revision: str, annotations: dict[str, str] | None = None) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": owner.namespace,
        "labels": canonical_labels(owner, revision),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def model_selector(owner: Owner) -> dict[str, str]:
    """Selects every revision's pods of this ModelAPI (the client-facing Service, the PDB)."""
    return {names.LABEL_NAME: owner.name}


def revision_selector(owner: Owner, revision: str) -> dict[str, str]:
    """Selects one revision's pods (its Deployment, the -stable and -canary Services)."""
    return {names.LABEL_NAME: owner.name, names.LABEL_REVISION: revision}
