"""Why a revision cannot become available, read from its Deployment and pods (pure).

The most precise cause wins: the runtime's own termination message (it writes
``Reason: message`` to /dev/termination-log, e.g. ``ChecksumMismatch: ...``), then image pulls,
missing Secrets, GPU scheduling, crash loops, pod-creation failures and finally the
Deployment's progress deadline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelapi_operator.reasons import (
    CRASH_LOOPING,
    IMAGE_PULL_FAILED,
    INSUFFICIENT_GPU,
    INVALID_SPEC,
    PROGRESS_DEADLINE_EXCEEDED,
    RUNTIME_REASONS,
    SECRET_NOT_FOUND,
    SERVICE_ACCOUNT_NOT_FOUND,
)
from modelapi_operator.redaction import redact_text

_IMAGE_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_TERMINATION = re.compile(r"^\s*([A-Z][A-Za-z]+):\s*(.*)$", re.DOTALL)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SECRET_ASSIGNMENT = re.compile(r"(?i)(aws_secret_access_key|aws_session_token|password|secret|token)(\s*[=:]\s*)\S+")

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    """A cause a human must act on: a reason from the documented set and a message saying what to do."""

    reason: str
    message: str


def redact(text: str) -> str:
    """Strip credentials that might appear in messages copied from the cluster (never show them in status): userinfo,
    URL query strings (presigned URLs), secret-looking assignments."""
    text = redact_text(_USERINFO.sub(r"\g<scheme>***@", text))
    return _SECRET_ASSIGNMENT.sub(r"\1\2***", text)


def _statuses(pod: Manifest) -> Iterable[Manifest]:
    status = pod.get("status") or {}
    yield from status.get("initContainerStatuses") or []
    yield from status.get("containerStatuses") or []


def _runtime_failure(container: Manifest) -> Failure | None:
    for state_key in ("state", "lastState"):
        terminated = (container.get(state_key) or {}).get("terminated") or {}
        match = _TERMINATION.match(terminated.get("message") or "")
        if match and match.group(1) in RUNTIME_REASONS:
            return Failure(match.group(1), redact(match.group(2).strip()))
    return None


def _container_failure(pod_name: str, container: Manifest) -> Failure | None:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason, message = waiting.get("reason", ""), redact(waiting.get("message", ""))
    if reason in _IMAGE_PULL_WAITING:
        image = container.get("image", "")
        return Failure(
            IMAGE_PULL_FAILED,
            f"pod {pod_name} cannot pull image {image}: {message or reason}. Check spec.runtime.image (or the "
            "operator's default image) and the registry's pull secret.",
        )
    if reason == "CreateContainerConfigError" and "secret" in message.lower():
        return Failure(
            SECRET_NOT_FOUND,
            f"pod {pod_name}: {message}. Create the Secret named by spec.storage.credentialsSecret (keys "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or fix the name.",
        )
    last = (container.get("lastState") or {}).get("terminated") or {}
    if (
        last.get("reason") == "OOMKilled"
        or (container.get("state") or {}).get("terminated", {}).get("reason") == "OOMKilled"
    ):
        return Failure(
            CRASH_LOOPING,
            f"pod {pod_name} was killed for exceeding its memory limit (OOMKilled): raise "
            "spec.runtime.resources.memory.",
        )
    if reason == "CrashLoopBackOff":
        detail = f"exit code {last.get('exitCode')}" if last else "no exit code"
        tail = redact((last.get("message") or "").strip())[-300:]
        return Failure(
            CRASH_LOOPING,
            f"pod {pod_name} keeps crashing ({detail}, {container.get('restartCount', 0)} restarts)"
            + (f": {tail}" if tail else "")
            + ". See `kubectl logs --previous`.",
        )
    return None


def _scheduling_failure(pod: Manifest) -> Failure | None:
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = condition.get("message", "")
            if "nvidia.com/gpu" in message:
                return Failure(
                    INSUFFICIENT_GPU,
                    f"pod {pod['metadata']['name']} cannot be scheduled: {message}. Free or add GPU nodes, or lower "
                    "spec.runtime.resources.gpu.",
                )
    return None


def _recovered(container: Manifest) -> bool:
    return container.get("ready") is True and "running" in (container.get("state") or {})


def diagnose_pods(pods: Iterable[Manifest]) -> Failure | None:
    """The most precise failure among a revision's pods, or None when nothing needs a human."""
    found: list[Failure] = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        for container in _statuses(pod):
            if _recovered(container):
                continue  # its last termination is history: it restarted and passed its readiness probe since
            runtime = _runtime_failure(container)
            # The runtime's own reason is authoritative, but only once it has exited (it may be retrying).
            if runtime is not None:
                return runtime
            failure = _container_failure(name, container)
            if failure is not None:
                found.append(failure)
        scheduling = _scheduling_failure(pod)
        if scheduling is not None:
            found.append(scheduling)
    order = [IMAGE_PULL_FAILED, SECRET_NOT_FOUND, INSUFFICIENT_GPU, CRASH_LOOPING]
    found.sort(key=lambda failure: order.index(failure.reason))
    return found[0] if found else None


def diagnose_deployment(deployment: Manifest) -> Failure | None:
    """Failures the Deployment itself reports: pods it cannot create, and its progress deadline."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        kind, status, reason = condition.get("type"), condition.get("status"), condition.get("reason")
        message = redact(condition.get("message", ""))
        if kind == "ReplicaFailure" and status == "True":
            if "serviceaccount" in message.lower():
                return Failure(
                    SERVICE_ACCOUNT_NOT_FOUND,
                    f"{message}. Create the ServiceAccount named by spec.storage.serviceAccountName or fix the name.",
                )
            return Failure(INVALID_SPEC, f"pods cannot be created: {message}")
        if kind == "Progressing" and status == "False" and reason == "ProgressDeadlineExceeded":
            return Failure(
                PROGRESS_DEADLINE_EXCEEDED,
                f"revision {deployment['metadata']['name']} made no progress: {message}",
            )
    return None


def diagnose_revision(deployment: Manifest | None, pods: Iterable[Manifest]) -> Failure | None:
    pod_failure = diagnose_pods(pods)
    if pod_failure is not None:
        return pod_failure
    return diagnose_deployment(deployment) if deployment is not None else None
