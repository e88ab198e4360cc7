"""This replica in kopf's peering, and whether a live peer outranks it.

kopf pauses its own watches and handlers while a peer outranks this replica, but not the resync loops, which are
ours: they read the peering objects themselves and apply kopf's rule (``outranked``) to stand by too. ``Peer`` is
made once at start-up (main.py) and handed both to ``kopf.run`` and to the loops, so both compare the same identity
and priority.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelapi_operator import kube

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
KOPF_PEER_LIFETIME_SECONDS = 60  # kopf's assumption for a peer that does not say its lifetime


@dataclass(frozen=True)
class Peer:
    """This replica's identity and priority in kopf's peering."""

    identity: str
    priority: int

    @classmethod
    def create(cls, priority: int | None) -> Peer:
        """A unique identity; a random priority unless one is set, so that two replicas never tie (kopf pauses every
        replica of a tied priority)."""
        return cls(
            identity=f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}",
            priority=priority if priority is not None else secrets.randbelow(2**31),
        )


def outranked(statuses: Iterable[Mapping[str, Any]], *, identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule (kopf._core.engines.peering): a replica pauses while any live peer in any of its peering objects'
    ``status`` (``{identity: {priority, lifetime, lastseen}}``) has a priority higher than or equal to its own."""
    for status in statuses:
        for peer, info in status.items():
            if peer == identity or not isinstance(info, Mapping):
                continue
            try:
                lastseen = info.get("lastseen")
                seen = datetime.fromisoformat(lastseen) if lastseen else now
                lifetime = timedelta(seconds=int(info.get("lifetime", KOPF_PEER_LIFETIME_SECONDS)))
                if seen + lifetime > now and int(info.get("priority", 0)) >= priority:
                    return True
            except (TypeError, ValueError):
                continue
    return False


class Standby:
    """Whether this replica stands by, from the peering objects (read at most once per ``RECHECK_SECONDS``)."""

    def __init__(self, peer: Peer, peering: str | None, namespaces: Iterable[str]) -> None:
        self.peer = peer
        self.peering = peering
        self.namespaces = tuple(namespaces)
        self.standby = peering is not None  # until the peering objects are read
        self.checked_at = -1e9

    def places(self) -> list[tuple[kube.Kind, str | None]]:
        """The peering objects kopf uses: one per watched namespace, or the cluster's."""
        if self.namespaces:
            return [(kube.KOPF_PEERING, namespace) for namespace in self.namespaces]
        return [(kube.CLUSTER_KOPF_PEERING, None)]

    async def standing_by(self, client: kube.KubeClient, *, logged_in: bool) -> bool:
        """Whether a live peer outranks this replica (before kopf's login: the last answer, standing by; kopf itself
        is paused until it has read the peering objects)."""
        if self.peering is None:
            return False
        now = time.monotonic()
        if now - self.checked_at < RECHECK_SECONDS or not logged_in:
            return self.standby
        try:
            bodies = [await client.get(kind, namespace, self.peering) for kind, namespace in self.places()]
        except kube.KubeError as error:  # keep the last answer; kopf cannot read them either
            log.warning("cannot read the peering objects (%s); %s", error, "standing by" if self.standby else "acting")
            return self.standby
        peers = [((body or {}).get("status") or {}) for body in bodies]
        standby = outranked(peers, identity=self.peer.identity, priority=self.peer.priority, now=datetime.now(UTC))
        if standby != self.standby or self.checked_at < 0:
            log.info(
                "resync loops %s (peering %r: %s is priority %d; peers %s)",
                "stand by: a live peer outranks this replica" if standby else "act",
                self.peering,
                self.peer.identity,
                self.peer.priority,
                peers,
            )
        self.standby = standby
        self.checked_at = now
        return self.standby
