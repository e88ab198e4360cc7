"""The ConfigMap ``<name>-arms``: which arm each revision of a ModelAPI is, for its prediction log records.

A revision's role changes while its pods run (a canary is promoted, or aborted), so it cannot be in the pod template
(that would replace the pods). The pods mount this ConfigMap instead (read-only, optional: a pod starts before it
exists) and the runtime's prediction log writer reads its own revision's key: ``stable``, ``canary``, ``next`` (a
rolling update's new revision) or ``lastKnownGood`` (a warm replica kept for a rollback). Only with
spec.monitoring.predictionLog.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelapi_operator import names
from modelapi_operator.builders.common import Manifest, Owner, object_meta

# Where the model pod mounts it: one file per revision, named by the revision, holding its role.
ARMS_DIR = "/etc/modelapi/arms"
ARMS_VOLUME = "arms"


def build_arms(owner: Owner, stable_revision: str, roles: Mapping[str, str]) -> Manifest:
    """``roles``: revision -> role of every revision the operator keeps (keys sorted: the same roles give the same
    manifest, so an unchanged ConfigMap is never applied again)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(names.arms_name(owner.name), owner, stable_revision),
        "data": {revision: roles[revision] for revision in sorted(roles)},
    }


def arms_volume(owner: Owner) -> Manifest:
    return {"name": ARMS_VOLUME, "configMap": {"name": names.arms_name(owner.name), "optional": True}}


def arms_mount() -> Manifest:
    return {"name": ARMS_VOLUME, "mountPath": ARMS_DIR, "readOnly": True}
