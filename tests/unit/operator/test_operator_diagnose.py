"""Diagnosis of a revision from pod and Deployment status fixtures shaped like the API server's."""

from __future__ import annotations

from typing import Any

import pytest

from modelapi_operator import diagnose


def _pod(
    container: dict[str, Any], phase: str = "Running", conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-abc-1"},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [container]},
    }


def _terminated(message: str, reason: str = "Error", exit_code: int = 3) -> dict[str, Any]:
    return {
        "name": "runtime",
        "image": "modelapi/runtime:1",
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
        "lastState": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}},
    }


@pytest.mark.parametrize(
    "reason",
    [
        "ArtifactNotFound",
        "ArtifactAccessDenied",
        "ArtifactUnavailable",
        "ChecksumMismatch",
        "ModelLoadFailed",
        "GPUUnavailable",
    ],
)
def test_runtime_termination_reason_wins(reason: str) -> None:
    failure = diagnose.diagnose_pods([_pod(_terminated(f"{reason}: s3://models/iris/1/model.onnx: details"))])
    assert failure == diagnose.Failure(reason, "s3://models/iris/1/model.onnx: details")


def test_crash_loop_without_a_known_reason() -> None:
    failure = diagnose.diagnose_pods([_pod(_terminated("Traceback: boom"))])
    assert failure is not None
    assert failure.reason == "CrashLooping"
    assert "exit code 3" in failure.message


def test_oom_killed() -> None:
    failure = diagnose.diagnose_pods([_pod(_terminated("", reason="OOMKilled", exit_code=137))])
    assert failure is not None
    assert failure.reason == "CrashLooping"
    assert "spec.runtime.resources.memory" in failure.message


def test_image_pull() -> None:
    container = {
        "name": "runtime",
        "image": "nope/none:1",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
    }
    failure = diagnose.diagnose_pods([_pod(container, phase="Pending")])
    assert failure is not None
    assert failure.reason == "ImagePullFailed"
    assert "nope/none:1" in failure.message


def test_missing_secret() -> None:
    container = {
        "name": "runtime",
        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}},
    }
    failure = diagnose.diagnose_pods([_pod(container, phase="Pending")])
    assert failure is not None
    assert failure.reason == "SecretNotFound"
    assert "s3-creds" in failure.message


def test_insufficient_gpu() -> None:
    pod = {
        "metadata": {"name": "resnet-1"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    failure = diagnose.diagnose_pods([pod])
    assert failure is not None
    assert failure.reason == "InsufficientGPU"


def test_healthy_and_starting_pods_need_no_human() -> None:
    running = {"name": "runtime", "state": {"running": {"startedAt": "2026-11-27T00:00:00Z"}}, "ready": True}
    creating = {"name": "runtime", "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert diagnose.diagnose_pods([_pod(running), _pod(creating, phase="Pending")]) is None


def test_deployment_conditions() -> None:
    deadline = {
        "metadata": {"name": "iris-abc"},
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet has timed out progressing.",
                }
            ]
        },
    }
    failure = diagnose.diagnose_deployment(deadline)
    assert failure is not None
    assert failure.reason == "ProgressDeadlineExceeded"
    no_account = {
        "metadata": {"name": "iris-abc"},
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": 'pods "iris-abc-x" is forbidden: error looking up service account ml/reader: '
                    'serviceaccount "reader" not found',
                }
            ]
        },
    }
    failure = diagnose.diagnose_deployment(no_account)
    assert failure is not None
    assert failure.reason == "ServiceAccountNotFound"


def test_credentials_never_reach_a_message() -> None:
    failure = diagnose.diagnose_pods(
        [_pod(_terminated("ArtifactAccessDenied: https://bob:hunter2@host/m.onnx password=hunter2"))]
    )
    assert failure is not None
    assert "hunter2" not in failure.message


@pytest.mark.parametrize(
    ("message", "reason"),
    [("ArtifactUnavailable: s3://models/iris/2/model.onnx: S3 unreachable", "Error"), ("", "OOMKilled")],
)
def test_a_container_ready_again_leaves_its_last_failure_behind(message: str, reason: str) -> None:
    """A pod that failed while S3 was down, then restarted and became ready, needs no human any more."""
    container = _terminated(message, reason=reason)
    assert diagnose.diagnose_pods([_pod(container)]) is not None
    recovered = {**container, "state": {"running": {"startedAt": "2026-11-27T00:01:00Z"}}, "ready": True}
    assert diagnose.diagnose_pods([_pod(recovered)]) is None
    not_ready_yet = {**recovered, "ready": False}  # running, but the runtime may still fail the same way
    assert diagnose.diagnose_pods([_pod(not_ready_yet)]) is not None
