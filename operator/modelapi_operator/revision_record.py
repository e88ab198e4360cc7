"""The revision record: everything the operator stores on a revision's Deployment, typed.

The record lives in the Deployment's annotations, so a restarted operator carries on where it stopped: the revision's
role in a rollout, the size a rolling update aims at, a canary's progress, why it was aborted or rolled back, when it
went to zero or woke, which model it serves, when it last served and the artifact size its model volume was sized
from. Those annotations are a stored API (clusters keep them across operator upgrades): their keys never change.
Every other module reads and writes them through :class:`RevisionRecord`.

``decode`` never fails: a missing or garbled value reads as its default (role ``next``, no canary progress, no abort,
warm). ``encode`` writes only the fields that are set; :func:`patch` also removes fields (a merge patch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from modelapi_operator import names
from modelapi_operator.api.status import RevisionRole
from modelapi_operator.timestamps import parse_rfc3339, rfc3339

ROLE_ANNOTATION: Final = f"{names.GROUP}/role"
ROLLOUT_REPLICAS_ANNOTATION: Final = f"{names.GROUP}/rollout-replicas"
ABORTED_ANNOTATION: Final = f"{names.GROUP}/aborted"
STEP_ANNOTATION: Final = f"{names.GROUP}/canary-step"
STEP_STARTED_ANNOTATION: Final = f"{names.GROUP}/canary-step-started"
FAILED_CHECKS_ANNOTATION: Final = f"{names.GROUP}/canary-failed-checks"
LAST_CHECK_ANNOTATION: Final = f"{names.GROUP}/canary-last-check"
CHECK_PASSED_ANNOTATION: Final = f"{names.GROUP}/canary-step-check-passed"
SCALED_TO_ZERO_ANNOTATION: Final = f"{names.GROUP}/scaled-to-zero-at"
ACTIVE_SINCE_ANNOTATION: Final = f"{names.GROUP}/active-since"
MODEL_URI_ANNOTATION: Final = f"{names.GROUP}/model-uri"
MODEL_SHA256_ANNOTATION: Final = f"{names.GROUP}/model-sha256"
LAST_SERVED_ANNOTATION: Final = f"{names.GROUP}/last-served"
ARTIFACT_BYTES_ANNOTATION: Final = f"{names.GROUP}/artifact-bytes"

CANARY_ANNOTATIONS: Final = (
    STEP_ANNOTATION,
    STEP_STARTED_ANNOTATION,
    FAILED_CHECKS_ANNOTATION,
    LAST_CHECK_ANNOTATION,
    CHECK_PASSED_ANNOTATION,
)

# stable: serves, the HPA sizes it; next: grows in a rolling update; canary: takes a step's share of traffic (or was
# aborted / rolled back); lastKnownGood: the stable before the last promotion (a rolling update's or a canary's), kept
# for a rollback at spec.rollout.lastKnownGoodReplicas (0 by default).
Role = RevisionRole
ROLES: Final[tuple[Role, ...]] = get_args(Role)
DEFAULT_ROLE: Final[Role] = "next"
_ROLE_NAMED: Final[dict[str, Role]] = {role: role for role in ROLES}

# A merge patch of a Deployment's annotations: None removes the key.
Patch = dict[str, str | None]


@dataclass(frozen=True)
class CanaryProgress:
    """Where a canary is: its step, when the step started, consecutive failed checks, the last analysis."""

    step: int = 0
    step_started: datetime | None = None
    failed_checks: int = 0
    last_check: datetime | None = None
    step_check_passed: bool = False


@dataclass(frozen=True)
class Aborted:
    """Why a revision was aborted or rolled back; it stays so until the spec changes (stored as ``Reason: message``).
    ``reason`` is empty when the stored text had none."""

    reason: str
    message: str


@dataclass(frozen=True)
class RevisionRecord:
    """What the operator stores on one revision's Deployment. None: not recorded (``encode`` leaves it out)."""

    role: Role | None = None
    rollout_replicas: int | None = None  # the total a rolling update aims at, fixed when it starts
    aborted: Aborted | None = None
    canary: CanaryProgress | None = None
    # when the revision went to zero, as written (any value means at zero: its traffic goes through the activator)
    scaled_to_zero_at: str | None = None
    active_since: datetime | None = None  # when it was last woken from zero
    model_uri: str | None = None  # redacted: never a presigned URL's query
    model_sha256: str | None = None
    last_served: datetime | None = None  # when it stopped serving: when a newer revision was promoted over it
    # the artifact size its model volume was sized from when it was created (None: sized from spec.storage.cacheSize)
    artifact_bytes: int | None = None

    def encode(self) -> dict[str, str]:
        values: dict[str, str] = {}
        if self.role is not None:
            values[ROLE_ANNOTATION] = self.role
        if self.aborted is not None:
            values[ABORTED_ANNOTATION] = f"{self.aborted.reason}: {self.aborted.message}"
        if self.canary is not None:
            values |= _encode_canary(self.canary)
        if self.rollout_replicas is not None:
            values[ROLLOUT_REPLICAS_ANNOTATION] = str(self.rollout_replicas)
        if self.scaled_to_zero_at is not None:
            values[SCALED_TO_ZERO_ANNOTATION] = self.scaled_to_zero_at
        if self.active_since is not None:
            values[ACTIVE_SINCE_ANNOTATION] = rfc3339(self.active_since)
        if self.model_uri is not None:
            values[MODEL_URI_ANNOTATION] = self.model_uri
        if self.model_sha256 is not None:
            values[MODEL_SHA256_ANNOTATION] = self.model_sha256
        if self.last_served is not None:
            values[LAST_SERVED_ANNOTATION] = rfc3339(self.last_served)
        if self.artifact_bytes is not None:
            values[ARTIFACT_BYTES_ANNOTATION] = str(self.artifact_bytes)
        return values

    @classmethod
    def decode(cls, annotations: Mapping[str, Any]) -> RevisionRecord:
        def text(key: str) -> str | None:
            value = annotations.get(key)
            return str(value) if value else None

        replicas = text(ROLLOUT_REPLICAS_ANNOTATION)
        size = text(ARTIFACT_BYTES_ANNOTATION)
        return cls(
            role=_ROLE_NAMED.get(text(ROLE_ANNOTATION) or "", DEFAULT_ROLE),
            rollout_replicas=int(replicas) if replicas is not None and replicas.isdigit() else None,
            aborted=_decode_aborted(text(ABORTED_ANNOTATION)),
            canary=_decode_canary(annotations) if any(key in annotations for key in CANARY_ANNOTATIONS) else None,
            scaled_to_zero_at=text(SCALED_TO_ZERO_ANNOTATION),
            active_since=parse_rfc3339(text(ACTIVE_SINCE_ANNOTATION)),
            model_uri=text(MODEL_URI_ANNOTATION),
            model_sha256=text(MODEL_SHA256_ANNOTATION),
            last_served=parse_rfc3339(text(LAST_SERVED_ANNOTATION)),
            artifact_bytes=int(size) if size is not None and size.isdigit() else None,
        )

    @classmethod
    def of(cls, manifest: Mapping[str, Any] | None) -> RevisionRecord:
        """The record of a Deployment as observed (a missing Deployment reads as an empty record)."""
        metadata = (manifest or {}).get("metadata") or {}
        return cls.decode(metadata.get("annotations") or {})


Field = Literal["scaled_to_zero_at", "active_since", "aborted", "canary"]
_FIELD_ANNOTATIONS: Final[dict[Field, tuple[str, ...]]] = {
    "scaled_to_zero_at": (SCALED_TO_ZERO_ANNOTATION,),
    "active_since": (ACTIVE_SINCE_ANNOTATION,),
    "aborted": (ABORTED_ANNOTATION,),
    "canary": CANARY_ANNOTATIONS,
}


def patch(record: RevisionRecord | None = None, *, clear: Sequence[Field] = ()) -> Patch:
    """A merge patch that writes the fields set in ``record`` and removes the ``clear`` ones."""
    values: Patch = dict((record or RevisionRecord()).encode())
    for field in clear:
        values |= dict.fromkeys(_FIELD_ANNOTATIONS[field])
    return values


def _encode_canary(progress: CanaryProgress) -> dict[str, str]:
    values = {
        STEP_ANNOTATION: str(progress.step),
        FAILED_CHECKS_ANNOTATION: str(progress.failed_checks),
        CHECK_PASSED_ANNOTATION: "true" if progress.step_check_passed else "false",
    }
    if progress.step_started is not None:
        values[STEP_STARTED_ANNOTATION] = rfc3339(progress.step_started)
    if progress.last_check is not None:
        values[LAST_CHECK_ANNOTATION] = rfc3339(progress.last_check)
    return values


def _decode_canary(annotations: Mapping[str, Any]) -> CanaryProgress:
    def number(key: str) -> int:
        value = str(annotations.get(key) or "")
        return int(value) if value.isdigit() else 0

    def moment(key: str) -> datetime | None:
        value = annotations.get(key)
        return parse_rfc3339(str(value)) if value else None

    return CanaryProgress(
        step=number(STEP_ANNOTATION),
        step_started=moment(STEP_STARTED_ANNOTATION),
        failed_checks=number(FAILED_CHECKS_ANNOTATION),
        last_check=moment(LAST_CHECK_ANNOTATION),
        step_check_passed=annotations.get(CHECK_PASSED_ANNOTATION) == "true",
    )


def _decode_aborted(text: str | None) -> Aborted | None:
    if not text:
        return None
    reason, _, message = text.partition(": ")
    return Aborted(reason, message)
