"""Peering (issue 9, item 7): kopf pauses its own watches and handlers while a peer outranks this replica; the
resync loops are ours, so they apply kopf's rule themselves (peering.outranked) to the peering objects' status.
The e2e side, two operator processes and kill -9, is tests/e2e/test_faults.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelapi_operator.peering import outranked

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def peer(priority: int, *, seen_ago: float = 1, lifetime: int = 10) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, False),  # alone
        ({"me": peer(100)}, False),  # only this replica's own heartbeat
        ({"me": peer(100), "other": peer(50)}, False),  # outranks the other one: acts
        ({"me": peer(100), "other": peer(200)}, True),  # outranked: stands by
        ({"me": peer(100), "other": peer(100)}, True),  # a tie: kopf pauses both, and so do the loops
        ({"me": peer(100), "other": peer(200, seen_ago=11)}, False),  # the higher one died (no heartbeat): take over
        ({"me": peer(100), "other": peer(200, seen_ago=9)}, True),  # ... not before its lifetime has passed
        ({"me": peer(100), "other": peer(200, lifetime=0)}, False),  # it left (kopf's goodbye sets lifetime 0)
        ({"me": peer(100), "other": {"priority": 200}}, True),  # no lastseen: kopf counts it as seen now
        ({"me": peer(100), "other": {"priority": 200, "lastseen": "2026-11-27T11:58:30+00:00"}}, False),  # 60 s
        ({"me": peer(100), "other": {"priority": "x", "lastseen": "never"}}, False),  # unreadable: ignored
        ({"me": peer(100), "other": "garbage"}, False),
    ],
)
def test_a_live_peer_of_higher_or_equal_priority_outranks(status: dict[str, Any], expected: bool) -> None:
    assert outranked([status], identity="me", priority=100, now=NOW) is expected


def test_any_peering_object_of_the_watched_namespaces_counts() -> None:
    """kopf pauses the whole operator when any namespace's peering object has a conflict."""
    quiet = {"me": peer(100)}
    busy = {"me": peer(100), "other": peer(300)}
    assert outranked([quiet, busy], identity="me", priority=100, now=NOW)
    assert not outranked([quiet, quiet], identity="me", priority=100, now=NOW)
