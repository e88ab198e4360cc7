"""Which artifacts the node cache holds, which are in use, and what to evict: pure bookkeeping, no I/O.

Bytes are counted against ``max_bytes`` as soon as a fill reserves them, so two fills cannot both count on the same
free space. Eviction takes the least recently used entries that no pod is reading (a lease is held while an entry is
streamed to a pod); when that cannot make room, the reservation is refused and nothing is evicted.
"""

from __future__ import annotations

from dataclasses import dataclass


class NoRoom(Exception):
    """The artifact cannot fit: larger than the bound, or what would have to go is in use."""


@dataclass(slots=True)
class Entry:
    key: str  # the object's URL without its query
    etag: str
    size: int
    sha256: str
    last_used: float
    leases: int = 0
    verified: tuple[int, int, int] | None = None  # the file's (size, mtime_ns, inode) when its digest last matched


class Index:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: dict[str, Entry] = {}
        self.reserved = 0

    @property
    def used_bytes(self) -> int:
        return sum(e.size for e in self.entries.values()) + self.reserved

    def match(self, key: str, etag: str, size: int) -> Entry | None:
        """The entry of this object when it is the version the store has now (same ETag and size)."""
        entry = self.entries.get(key)
        return entry if entry is not None and entry.etag == etag and entry.size == size else None

    def lease(self, key: str, now: float) -> Entry:
        entry = self.entries[key]
        entry.leases += 1
        entry.last_used = now
        return entry

    @staticmethod
    def release(entry: Entry) -> None:
        """The pod finished reading ``entry`` (the object, not the key: a newer version may have replaced it)."""
        entry.leases = max(0, entry.leases - 1)

    def reserve(self, size: int) -> list[Entry]:
        """Count ``size`` bytes as used; returns the entries to evict (already removed from the index)."""
        if size > self.max_bytes:
            raise NoRoom(f"{size} bytes is more than the whole cache ({self.max_bytes} bytes)")
        excess = self.used_bytes + size - self.max_bytes
        victims: list[Entry] = []
        for entry in sorted(self.entries.values(), key=lambda e: e.last_used):
            if excess <= 0:
                break
            if entry.leases == 0:
                victims.append(entry)
                excess -= entry.size
        if excess > 0:
            in_use = sum(e.size for e in self.entries.values() if e.leases) + self.reserved
            raise NoRoom(
                f"{size} bytes do not fit: {in_use} of the cache's {self.max_bytes} bytes are in use or being filled"
            )
        for entry in victims:
            del self.entries[entry.key]
        self.reserved += size
        return victims

    def unreserve(self, size: int) -> None:
        self.reserved = max(0, self.reserved - size)

    def add(self, entry: Entry, reserved: int) -> None:
        """A fill completed: its reservation becomes the entry (replacing an older version of the object; a pod
        still reading that one keeps its open file)."""
        self.unreserve(reserved)
        self.entries[entry.key] = entry

    def drop(self, key: str) -> Entry | None:
        return self.entries.pop(key, None)
