"""The node cache agent's Prometheus metrics (docs/metrics.md, "The node cache agent's metrics"), at ``GET /metrics``.

No label takes a value from a request: ``origin`` is ``cache`` or ``store``, ``method`` ``link`` or ``copy``,
``reason`` one of the agent's refusal reasons (``server.error_status``).
Entries and bytes held are read from the index when scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest

PREFIX = "modelapi_cache_"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.hits = Counter(
            PREFIX + "hits", "Pod requests answered from the cache: a verified entry or a fill in progress.", registry=r
        )
        self.misses = Counter(PREFIX + "misses", "Pod requests that started a fill from the store.", registry=r)
        self.served_bytes = Counter(
            PREFIX + "served_bytes", "Bytes sent to pods, by where they came from for that pod.", ["origin"],
            registry=r,
        )  # fmt: skip
        self.store_bytes = Counter(PREFIX + "store_bytes", "Bytes fetched from the store by fills.", registry=r)
        self.evictions = Counter(
            PREFIX + "evictions", "Entries evicted to make room (least recently used).", registry=r
        )
        self.corrupt = Counter(
            PREFIX + "corrupt_entries", "Entries dropped because their bytes no longer matched.", registry=r
        )
        self.placed = Counter(
            PREFIX + "placed", "Entries put into a pod's volume instead of streamed, by method (link, copy).",
            ["method"], registry=r,
        )  # fmt: skip
        self.placed_bytes = Counter(
            PREFIX + "placed_bytes", "Bytes put into pods' volumes, by method (link, copy).", ["method"], registry=r
        )
        self.placement_refusals = Counter(
            PREFIX + "placement_refusals",
            "Placements asked for but not made (no such pod volume, no proof, no room): streamed instead.",
            registry=r,
        )
        self.refusals = Counter(PREFIX + "refusals", "Pod requests refused, by reason.", ["reason"], registry=r)
        self.entries = Gauge(PREFIX + "entries", "Verified artifacts held.", registry=r)
        self.bytes = Gauge(PREFIX + "bytes", "Bytes held by verified artifacts.", registry=r)
        self.reserved_bytes = Gauge(PREFIX + "reserved_bytes", "Bytes reserved by fills in progress.", registry=r)
        self.max_bytes = Gauge(PREFIX + "max_bytes", "The cache's bound.", registry=r)
        ProcessCollector(registry=r)  # its memory and CPU (process_*)

    def watch(self, held: Callable[[], tuple[int, int, int, int]]) -> None:
        """Read (entries, bytes, reserved bytes, bound) from ``held`` at each scrape."""
        self.entries.set_function(lambda: held()[0])
        self.bytes.set_function(lambda: held()[1])
        self.reserved_bytes.set_function(lambda: held()[2])
        self.max_bytes.set_function(lambda: held()[3])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
