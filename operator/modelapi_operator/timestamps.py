"""RFC 3339 timestamps as Kubernetes writes them (UTC, whole seconds, a trailing ``Z``), for annotations the
operator stores on its children and for conditions and Events."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def parse_rfc3339(text: str | None) -> datetime | None:
    """The moment ``text`` names, or None when it is missing or not a timestamp (a hand-edited annotation)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
