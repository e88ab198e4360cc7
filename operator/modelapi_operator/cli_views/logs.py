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


def started(pod: Mapping[str, Any]) -> bool:
    """Whether the runtime container has run at all (a log exists): running, or terminated at least once."""
    for item in (pod.get("status") or {}).get("containerStatuses") or []:
        if item.get("name") == names.RUNTIME_CONTAINER:
            state, last = item.get("state") or {}, item.get("lastState") or {}
            return "running" in state or "terminated" in state or "terminated" in last
    return False


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
