"""What kopf keeps per ModelAPI, written to the ModelAPI only when it must be.

kopf's diff base (the ModelAPI as last handled, which tells an update from nothing new) is kept in memory here. kopf's
default keeps it in an annotation, and its progress storage marks the annotation prefix as kopf's (a
``<prefix>/kopf-managed`` annotation) the first time it handles an object: together one PATCH of every new ModelAPI
(and one of every changed one), at 1,000 new ones 1,000 of the operator's requests. Progress (a handler's retries)
stays in annotations, unmarked: it is written only while a handler is retried, and the marker only tells other
kopf-based operators to leave the prefix out of their diffs.

The operator's handlers are level-based (a reconcile reads the whole desired and observed state and writes only what
differs), so what a lost diff base causes is harmless: after a restart, or when this replica takes over from a peer,
kopf sees each ModelAPI as created and reconciles it once, as the resume handler would have.

The diff base is kept as its compact JSON (parsed again when kopf asks for it), and annotations under the operator's
own prefix stay out of it, as kopf's annotation storage leaves them out: the activation and rollback requests are
handled by their own triggers, not as spec updates.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from modelapi_operator import names

NOT_ESSENCE = frozenset({"apiVersion", "kind", "metadata", "status"})
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """Each ModelAPI's last handled essence, by uid, in this process only (nothing written to the object)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = f"{prefix}/"
        self._kept: dict[str, str] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """kopf's essence (the spec, the labels and the annotations but the operator's own and kubectl's last applied
        one), built without kopf's deep copy of the whole object, managed fields and status included, which it then
        drops: at a burst of new ModelAPIs that copy took a tenth of the operator's CPU. kopf builds it for every
        event of every ModelAPI, a status patch's included."""
        if not str(body.get("apiVersion", "")).startswith(f"{names.GROUP}/"):
            # A child, a pod or an EndpointSlice: kopf builds the essence of every object it watches, but only
            # ModelAPIs have handlers that read it (the children's are event handlers): nothing to copy.
            return cast(kopf.BodyEssence, {})
        if extra_fields:  # handlers of fields outside the essence (the operator has none): kopf's own way
            essence = cast(dict[str, Any], super().build(body=body, extra_fields=extra_fields))
            annotations = (essence.get("metadata") or {}).get("annotations") or {}
            for name in [name for name in annotations if name.startswith(self.prefix)]:
                del annotations[name]
            self.remove_empty_stanzas(cast(kopf.BodyEssence, essence))
            return cast(kopf.BodyEssence, essence)
        raw = cast(Mapping[str, Any], body)
        essence = copy.deepcopy({key: value for key, value in raw.items() if key not in NOT_ESSENCE})
        metadata = raw.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        others = self._detect_marked_prefixes(annotations)  # other kopf-based operators' storages
        kept = {
            name: value
            for name, value in annotations.items()
            if not name.startswith(self.prefix)
            and name != LAST_APPLIED
            and not any(name.startswith(f"{prefix}/") for prefix in others)
        }
        picked = {"labels": dict(metadata.get("labels") or {}), "annotations": kept}
        essence["metadata"] = {field: value for field, value in picked.items() if value}
        self.remove_empty_stanzas(cast(kopf.BodyEssence, essence))
        return cast(kopf.BodyEssence, essence)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        kept = self._kept.get(body.metadata.uid or "")
        return None if kept is None else cast(kopf.BodyEssence, json.loads(kept))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        uid = body.metadata.uid
        if uid:
            self._kept[uid] = json.dumps(essence, separators=(",", ":"))

    def forget(self, uid: str) -> None:
        """A ModelAPI was deleted: its diff base goes too."""
        self._kept.pop(uid, None)

    def __len__(self) -> int:
        return len(self._kept)


class UnmarkedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage without the ``kopf-managed`` marker, which it would patch onto every
    ModelAPI it handles, even when a handler succeeds at once and there is no progress to keep."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """The essence without progress annotations, as kopf's, but without its deep copy of the whole essence first:
        what it is given is already a copy of its own (MemoryDiffBaseStorage builds one and parses one from JSON),
        and only its annotations are changed, which are copied here."""
        cleared: dict[str, Any] = dict(essence)
        metadata = cleared.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        if not isinstance(metadata, Mapping) or not annotations or not self.prefix:
            return cast(kopf.BodyEssence, cleared)
        ours = f"{self.prefix}/"
        cleared["metadata"] = {
            **metadata,
            "annotations": {name: value for name, value in annotations.items() if not name.startswith(ours)},
        }
        self.remove_empty_stanzas(cast(kopf.BodyEssence, cleared))
        return cast(kopf.BodyEssence, cleared)
