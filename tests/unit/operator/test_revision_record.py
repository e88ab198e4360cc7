"""The revision record: what the operator stores on a Deployment, typed, with stable keys and a tolerant decode."""

from __future__ import annotations

from datetime import UTC, datetime

from modelapi_operator.revision_record import Aborted, CanaryProgress, RevisionRecord, patch

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FULL = RevisionRecord(
    role="canary",
    rollout_replicas=4,
    aborted=Aborted("RolloutAborted", "canary iris-abc rolled back: error rate 40.00% > 5.00%"),
    canary=CanaryProgress(step=1, step_started=T0, failed_checks=1, last_check=T0, step_check_passed=True),
    scaled_to_zero_at="2026-11-30T11:30:00Z",
    active_since=T0,
    model_uri="s3://models/iris/1/model.onnx?<redacted>",
    model_sha256="ab" * 32,
    last_served=T0,
    artifact_bytes=1_073_741_824,
)


def test_the_keys_are_the_stored_api_of_existing_clusters() -> None:
    """Clusters keep these annotations across operator upgrades: renaming one would lose a rollout's state."""
    assert FULL.encode() == {
        "serving.modelapi.io/role": "canary",
        "serving.modelapi.io/aborted": "RolloutAborted: canary iris-abc rolled back: error rate 40.00% > 5.00%",
        "serving.modelapi.io/canary-step": "1",
        "serving.modelapi.io/canary-failed-checks": "1",
        "serving.modelapi.io/canary-step-check-passed": "true",
        "serving.modelapi.io/canary-step-started": "2026-11-30T12:00:00Z",
        "serving.modelapi.io/canary-last-check": "2026-11-30T12:00:00Z",
        "serving.modelapi.io/rollout-replicas": "4",
        "serving.modelapi.io/scaled-to-zero-at": "2026-11-30T11:30:00Z",
        "serving.modelapi.io/active-since": "2026-11-30T12:00:00Z",
        "serving.modelapi.io/model-uri": "s3://models/iris/1/model.onnx?<redacted>",
        "serving.modelapi.io/model-sha256": "ab" * 32,
        "serving.modelapi.io/last-served": "2026-11-30T12:00:00Z",
        "serving.modelapi.io/artifact-bytes": "1073741824",
    }


def test_decode_reads_back_what_encode_wrote() -> None:
    assert RevisionRecord.decode(FULL.encode()) == FULL
    assert RevisionRecord.of({"metadata": {"annotations": FULL.encode()}}) == FULL


def test_missing_values_read_as_their_defaults() -> None:
    empty = RevisionRecord.decode({})
    assert empty == RevisionRecord(role="next")
    assert RevisionRecord.of(None) == empty
    assert RevisionRecord.of({"metadata": {"annotations": None}}) == empty
    assert RevisionRecord().encode() == {}, "encode writes only what is set"


def test_garbled_values_read_as_their_defaults_never_as_an_error() -> None:
    garbled = RevisionRecord.decode(
        {
            "serving.modelapi.io/role": "leader",
            "serving.modelapi.io/rollout-replicas": "-3",
            "serving.modelapi.io/canary-step": "two",
            "serving.modelapi.io/canary-step-started": "yesterday",
            "serving.modelapi.io/canary-failed-checks": "",
            "serving.modelapi.io/canary-step-check-passed": "yes",
            "serving.modelapi.io/active-since": "soon",
            "serving.modelapi.io/aborted": "",
            "serving.modelapi.io/last-served": "a while ago",
            "serving.modelapi.io/artifact-bytes": "1Gi",
        }
    )
    assert garbled == RevisionRecord(role="next", canary=CanaryProgress())


def test_an_abort_without_a_reason_keeps_its_text_as_the_reason() -> None:
    assert RevisionRecord.decode({"serving.modelapi.io/aborted": "stopped by hand"}).aborted == Aborted(
        "stopped by hand", ""
    )


def test_patch_writes_and_removes_fields() -> None:
    assert patch(RevisionRecord(role="stable"), clear=["scaled_to_zero_at"]) == {
        "serving.modelapi.io/role": "stable",
        "serving.modelapi.io/scaled-to-zero-at": None,
    }
    assert set(patch(clear=["canary"])) == {
        "serving.modelapi.io/canary-step",
        "serving.modelapi.io/canary-step-started",
        "serving.modelapi.io/canary-failed-checks",
        "serving.modelapi.io/canary-last-check",
        "serving.modelapi.io/canary-step-check-passed",
    }
