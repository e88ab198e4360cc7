"""``modelapi logs NAME``: which pods to read, and each line prefixed with its pod and revision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelapi_operator import names
from modelapi_operator.cli_views.common import short_revision


def revision_label(model_name: str, revision: str | None) -> str | None:
    """The pods' revision label for ``--revision``: the hash, or the revision's full name ``<name>-<hash>``."""
    return short_revision(model_name, revision) if revision else None


def revision_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata", {}).get("labels") or {}).get(names.LABEL_REVISION, "?"))


def _runtime_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The runtime container's entry of the pod's containerStatuses ({} before the kubelet reports it)."""
    for item in (pod.get("status") or {}).get("containerStatuses") or []:
        if item.get("name") == names.RUNTIME_CONTAINER:
            return item  # type: ignore[no-any-return]
    return {}


def started(pod: Mapping[str, Any]) -> bool:
    """Whether the runtime container has run at all (a log exists): running, or terminated at least once."""
    item = _runtime_status(pod)
    state, last = item.get("state") or {}, item.get("lastState") or {}
    return "running" in state or "terminated" in state or "terminated" in last


def restarts(pod: Mapping[str, Any]) -> int:
    """How often the kubelet has restarted the runtime container in this pod."""
    return int(_runtime_status(pod).get("restartCount") or 0)


def new_run(pod: Mapping[str, Any], restarts_followed: int) -> bool:
    """The runtime container restarted since the run being followed (restarts_followed), and its new run has
    started, so it has a log to follow (not while the kubelet waits to restart it, as in CrashLoopBackOff)."""
    state = _runtime_status(pod).get("state") or {}
    return restarts(pod) > restarts_followed and ("running" in state or "terminated" in state)


def restarted(pod: str, revision: str, restart_count: int) -> str:
    """The line that says a followed runtime restarted; its new run's lines follow."""
    return f"{prefix(pod, revision)}the runtime container restarted (restart {restart_count}): following its new run"


def readable_pods(pods: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The pods whose runtime has a log (sorted by name), and a line about each one that has none yet."""
    ready, waiting = [], []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        name = str(pod["metadata"]["name"])
        if started(pod):
            ready.append(name)
        else:
            phase = (pod.get("status") or {}).get("phase", "Unknown")
            waiting.append(
                f"pod {name} (revision {revision_of(pod)}): no log yet, the runtime has not started ({phase})"
            )
    return ready, waiting


def prefix(pod: str, revision: str) -> str:
    return f"[{pod} {revision}] "


def no_pods(model_name: str, revision: str | None) -> str:
    which = f"revision {revision} of ModelAPI {model_name}" if revision else f"ModelAPI {model_name}"
    return f"no pod of {which} (scaled to zero, or not created yet: modelapi status {model_name})"
