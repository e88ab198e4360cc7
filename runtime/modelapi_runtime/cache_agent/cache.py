"""The node cache on disk: lookups behind the pod's own access check, fills that pods read while they download,
leases while a pod reads, LRU eviction within the bound, and a digest check of every entry as it is served.

Whatever the agent vouches for (``Answer.sha256``) is complete only if the bytes have that digest: an entry is hashed
again as it is served and a fill as it arrives from the store, and the last bytes wait for the verdict. The pod then
does not hash them again (protocol.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from modelapi_runtime.cache_agent.index import Entry, Index
from modelapi_runtime.cache_agent.metrics import AgentMetrics
from modelapi_runtime.cache_agent.placement import Method, PlacementRefused, place
from modelapi_runtime.cache_agent.presigned import PresignedSource, Store, object_key
from modelapi_runtime.cache_agent.settings import CacheAgentSettings
from modelapi_runtime.exceptions import ArtifactError, InvalidArtifactSpec
from modelapi_runtime.storage import ObjectInfo, TransferOptions, display_uri, download

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CHUNK = 4 * MiB


class Busy(Exception):
    """Another version of the object is being filled right now; the pod downloads itself."""


class StreamAborted(Exception):
    """The bytes cannot be served whole (a corrupt entry, a failed or stalled fill): the connection is cut short."""


class TooLarge(Exception):
    """The object is larger than the pod admits (its bound or its volume's room): nothing is filled or placed."""

    def __init__(self, display: str, size: int, limit: int) -> None:
        super().__init__(f"{display}: {size} bytes, the pod admits at most {limit}")
        self.size = size


class DigestMismatch(Exception):
    """The cached object (the store's current version) does not have the digest the pod asked for."""

    def __init__(self, display: str, actual: str, requested: str) -> None:
        super().__init__(f"{display}: the object's sha256 is {actual}, the pod asked for {requested}")
        self.actual = actual


@dataclass(slots=True)
class Fill:
    key: str
    etag: str
    size: int
    tmp: Path
    written: int = 0
    done: bool = False
    failure: str | None = None
    sha256: str | None = None  # once done without failure
    readers: int = 0
    entry: Entry | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def advance(self, written: int) -> None:
        with self.changed:
            self.written = max(self.written, written)
            self.changed.notify_all()

    def finish(self, failure: str | None, sha256: str | None = None) -> None:
        with self.changed:
            self.done, self.failure, self.sha256 = True, failure, sha256
            self.changed.notify_all()


def _signature(path: Path) -> tuple[int, int, int]:
    """What changes when a file's bytes are written or it is replaced (its ctime is not used: every hard link
    made or removed changes it)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _movable(fill: Fill, offset: int) -> bool:
    """Whether a reader at ``offset`` can go on: the fill ended, or bytes past it are written (all but the last
    byte, which waits for the fill's verdict)."""
    return fill.done or (fill.written > offset and offset < fill.size - 1)


def _vouch(size: int, sha256: str | None) -> str | None:
    """The digest a fill's answer vouches for: the pod's, unless the object is empty (no last byte to withhold: the
    pod hashes the nothing it gets itself)."""
    return sha256 if size > 0 else None


@dataclass(slots=True)
class Answer:
    """What a pod is sent. ``close()`` (always called, once the answer is sent or abandoned) ends its lease."""

    size: int
    origin: Literal["cache", "store"]
    sha256: str | None  # the digest the stream is complete only with (an entry's, or the pod's for a fill)
    chunks: Iterator[bytes | memoryview]
    release: Callable[[], None]
    closed: bool = False
    placed: Method | None = None  # put into the pod's volume (placement.py): nothing is streamed
    etag: str = ""  # the object's ETag, from the store's HEAD with the pod's URL

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.release()


class NodeCache:
    def __init__(self, settings: CacheAgentSettings, metrics: AgentMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.root = Path(settings.dir)
        self.objects, self.tmp = self.root / "objects", self.root / "tmp"
        self.store = Store(settings.allowed_endpoints)
        self.options = TransferOptions(
            concurrency=settings.download_concurrency, part_size=settings.download_part_mib * MiB
        )
        self.stall_s = settings.fill_stall_seconds
        self.pods_dir = Path(settings.pods_dir) if settings.pods_dir else None
        self.pod_volume = settings.pod_volume
        self.index = Index(settings.max_mib * MiB)
        self.fills: dict[str, Fill] = {}
        self.lock = threading.Lock()
        self._load()
        self.metrics.watch(self._held)

    def _held(self) -> tuple[int, int, int, int]:
        """(entries, their bytes, bytes reserved by fills, the bound), for the metrics."""
        with self.lock:
            held = sum(e.size for e in self.index.entries.values())
            return len(self.index.entries), held, self.index.reserved, self.index.max_bytes

    # -- start-up -----------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        """Entries that survived a restart of the agent (verified again when served); partial fills are dropped."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():
            stale.unlink(missing_ok=True)
        for meta in self.objects.glob("*.json"):
            blob = meta.with_suffix("")
            try:
                data = json.loads(meta.read_text())
                entry = Entry(data["key"], data["etag"], int(data["size"]), data["sha256"], blob.stat().st_atime)
                valid = entry.size == blob.stat().st_size and self._blob(entry.key) == blob
            except (OSError, ValueError, KeyError, TypeError):
                valid = False
            if valid:
                with contextlib.suppress(OSError):
                    blob.chmod(0o444)  # an entry of an agent before placement was 0600
                self.index.entries[entry.key] = entry
            else:
                meta.unlink(missing_ok=True)
                blob.unlink(missing_ok=True)
        for victim in self.index.reserve(0):  # a bound lowered since the last run
            self._delete(victim.key)
        log.info("node cache %s: %d entries, %d of %d bytes", self.root, len(self.index.entries),
                 self.index.used_bytes, self.index.max_bytes)  # fmt: skip

    # -- files --------------------------------------------------------------------------------------------------------
    def _blob(self, key: str) -> Path:
        return self.objects / hashlib.sha256(key.encode()).hexdigest()

    def _touch(self, key: str) -> None:
        """Last use, kept in the file's atime so that it survives a restart of the agent (its mtime is left alone:
        it is part of what ``_intact`` compares)."""
        with contextlib.suppress(OSError):
            blob = self._blob(key)
            os.utime(blob, ns=(time.time_ns(), blob.stat().st_mtime_ns))

    def _delete(self, key: str) -> None:
        blob = self._blob(key)
        blob.with_suffix(".json").unlink(missing_ok=True)
        blob.unlink(missing_ok=True)

    # -- serving ------------------------------------------------------------------------------------------------------
    def open(
        self,
        head_url: str,
        get_url: str,
        sha256: str | None = None,
        pod: tuple[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> Answer:
        """The object's bytes for a pod, if the store lets the pod read it; ``sha256``: the digest the pod expects
        (a fill's stream is then cut short unless its bytes have it); ``pod``: (its UID, its proof's token) when it
        asks to have a verified entry placed in its volume (placement.py; streamed where that cannot be done);
        ``max_bytes``: the largest object the pod admits. Raises ``ArtifactError`` (the store's answer to the pod's
        own URLs), ``TooLarge``, ``NoRoom`` (index), ``Busy`` or ``DigestMismatch`` (an entry with another digest)."""
        key = object_key(head_url)
        if object_key(get_url) != key:
            raise InvalidArtifactSpec("the HEAD and GET URLs name different objects")
        info = self.store.head(head_url)  # the pod's access check: before the cache is looked at
        etag, size = str(info.etag), int(info.size or 0)
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(display_uri(get_url), size, max_bytes)
        answer = self._answer(key, info, get_url, sha256, pod)
        answer.etag = etag
        return answer

    def _answer(
        self, key: str, info: ObjectInfo, get_url: str, sha256: str | None, pod: tuple[str, str] | None
    ) -> Answer:
        """``open``'s answer once the pod's access is checked: placed, an entry streamed, a fill followed or begun."""
        etag, size = str(info.etag), int(info.size or 0)
        if pod is not None and self.pods_dir is not None:
            placed = self._place(key, (etag, size), sha256, pod, display_uri(get_url))
            if placed is not None:
                return placed
        with self.lock:
            entry = self.index.match(key, etag, size)
            if entry is not None:
                if sha256 is not None and entry.sha256 != sha256:
                    raise DigestMismatch(display_uri(get_url), entry.sha256, sha256)
                self.index.lease(key, time.time())
                self.metrics.hits.inc()
                return Answer(size, "cache", entry.sha256, self._serve_entry(entry), partial(self._release, entry))
            fill = self.fills.get(key)
            if fill is not None:
                if (fill.etag, fill.size) != (etag, size):
                    raise Busy(f"{display_uri(get_url)}: another version of the object is being cached")
                fill.readers += 1
                self.metrics.hits.inc()
                return Answer(
                    size, "cache", _vouch(size, sha256), self._follow(fill, sha256), partial(self._leave, fill)
                )
            source = self.store.source(get_url)
            victims = self.index.reserve(size)
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix="fill-")
            os.close(fd)
            fill = self.fills[key] = Fill(key, etag, size, Path(name), readers=1)
        self.metrics.misses.inc()
        self.metrics.evictions.inc(len(victims))
        for victim in victims:
            log.info("evicting %s (%d bytes, least recently used)", victim.key, victim.size)
            self._delete(victim.key)
        thread = threading.Thread(target=self._run_fill, args=(fill, source, info), name="fill", daemon=True)
        thread.start()
        return Answer(size, "store", _vouch(size, sha256), self._follow(fill, sha256), partial(self._leave, fill))

    def _place(
        self, key: str, version: tuple[str, int], sha256: str | None, pod: tuple[str, str], display: str
    ) -> Answer | None:
        """A verified entry put into the pod's volume; None when there is none, it proved corrupt (dropped: the
        caller fills it again) or it cannot be placed (the caller streams it)."""
        assert self.pods_dir is not None
        size = version[1]
        with self.lock:
            entry = self.index.match(key, *version)
            if entry is None:
                return None
            if sha256 is not None and entry.sha256 != sha256:
                raise DigestMismatch(display, entry.sha256, sha256)
            self.index.lease(key, time.time())
        try:
            blob = self._blob(key)
            if not self._intact(entry, blob):
                return None
            method = place(self.pods_dir, self.pod_volume, pod[0], pod[1], blob)
        except PlacementRefused as exc:
            log.info("%s not placed in pod %s, streamed instead: %s", key, pod[0], exc)
            self.metrics.placement_refusals.inc()
            return None
        finally:
            self._release(entry)
        self._touch(key)
        self.metrics.hits.inc()
        self.metrics.placed.labels(method).inc()
        self.metrics.placed_bytes.labels(method).inc(size)
        log.info("placed %s in pod %s (%s, %d bytes)", key, pod[0], method, size)
        return Answer(size, "cache", entry.sha256, iter(()), lambda: None, placed=method)

    def _intact(self, entry: Entry, blob: Path) -> bool:
        """Whether the entry's file still has its digest: taken as known while its (size, mtime_ns, inode) are those
        it had when last verified, hashed again here (the agent's CPU) otherwise. A corrupt one is dropped."""
        try:
            before = _signature(blob)
            if before == entry.verified:
                return True
            digest = hashlib.sha256()
            with blob.open("rb", buffering=0) as f:
                buffer = bytearray(CHUNK)
                while n := f.readinto(buffer):
                    digest.update(memoryview(buffer)[:n])
            after = _signature(blob)
        except OSError as exc:
            self._drop_corrupt(entry, f"unreadable ({exc.strerror})")
            return False
        if digest.hexdigest() != entry.sha256:
            self._drop_corrupt(entry, f"sha256 is {digest.hexdigest()}, recorded {entry.sha256}")
            return False
        if before == after:
            entry.verified = after
        return True

    def _release(self, entry: Entry) -> None:
        with self.lock:
            Index.release(entry)

    def _leave(self, fill: Fill) -> None:
        """A reader of a fill is done: its lease is on the entry once the fill became one."""
        with self.lock:
            if fill.entry is not None:
                Index.release(fill.entry)
            else:
                fill.readers -= 1

    def _run_fill(self, fill: Fill, source: PresignedSource, info: ObjectInfo) -> None:
        started = time.perf_counter()
        failure: str | None = None
        sha256: str | None = None
        try:
            sha256, size = download(source, info, fill.tmp, self.options, progress=fill.advance)
            entry = Entry(fill.key, fill.etag, size, sha256, time.time())
            blob = self._blob(fill.key)
            os.chmod(fill.tmp, 0o444)  # placed in pods' volumes as a hard link: readable by them, never writable
            os.replace(fill.tmp, blob)
            entry.verified = _signature(blob)  # its bytes were hashed as they were written
            meta = {"key": entry.key, "etag": entry.etag, "size": entry.size, "sha256": entry.sha256}
            blob.with_suffix(".json").write_text(json.dumps(meta))
            with self.lock:
                entry.leases = fill.readers
                self.index.add(entry, fill.size)
                fill.entry = entry
                del self.fills[fill.key]
            self.metrics.store_bytes.inc(size)
            log.info("cached %s: %d bytes in %.2fs", fill.key, size, time.perf_counter() - started)
            sha256 = entry.sha256
        except Exception as exc:  # any failure: the readers are told and the reservation returned
            failure = exc.message if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
            log.warning("fill of %s failed: %s", fill.key, failure)
            self.metrics.store_bytes.inc(fill.written)  # at least these came from the store
            fill.tmp.unlink(missing_ok=True)
            with self.lock:
                self.index.unreserve(fill.size)
                self.fills.pop(fill.key, None)
        finally:
            fill.finish(failure, sha256)

    def _follow(self, fill: Fill, sha256: str | None) -> Iterator[bytes]:
        """A fill's bytes as they are written and hashed; the last byte only once the fill is a verified entry (and,
        when the pod asked for a digest, has it)."""
        with fill.tmp.open("rb") as f:
            offset, done = 0, False
            while not (done and offset == fill.size):  # an empty object too waits for the fill's verdict
                with fill.changed:
                    if not fill.changed.wait_for(partial(_movable, fill, offset), timeout=self.stall_s):
                        raise StreamAborted(f"the fill of {fill.key} stalled for {self.stall_s:.0f}s")
                    if fill.failure is not None:
                        raise StreamAborted(f"the fill of {fill.key} failed: {fill.failure}")
                    if fill.done and sha256 is not None and fill.sha256 != sha256:
                        raise StreamAborted(f"{fill.key} has sha256 {fill.sha256}, the pod asked for {sha256}")
                    done = fill.done
                    limit = fill.size if done else min(fill.written, fill.size - 1)
                while offset < limit:
                    chunk = os.pread(f.fileno(), min(CHUNK, limit - offset), offset)
                    if not chunk:
                        raise StreamAborted(f"the fill of {fill.key} is shorter than its size")
                    offset += len(chunk)
                    yield chunk

    def _serve_entry(self, entry: Entry) -> Iterator[bytes | memoryview]:
        """The entry's bytes, hashed as they go; the last chunk is sent only when the digest matches (a corrupt
        entry is dropped and the stream cut short, so the pod asks again and gets a fresh fill).

        Two buffers take turns: one is read and hashed while the other, yielded, is being sent (the caller sends a
        chunk before asking for the next), so serving allocates nothing per chunk."""
        digest, held = hashlib.sha256(), memoryview(b"")
        buffers, turn = (bytearray(CHUNK), bytearray(CHUNK)), 0
        try:
            before = _signature(self._blob(entry.key))
            with self._blob(entry.key).open("rb", buffering=0) as f:
                while n := f.readinto(buffers[turn]):
                    chunk = memoryview(buffers[turn])[:n]
                    digest.update(chunk)
                    if held:
                        yield held
                    held, turn = chunk, 1 - turn
        except OSError as exc:
            self._drop_corrupt(entry, f"unreadable ({exc.strerror})")
            raise StreamAborted(f"{entry.key}: the cached copy is unreadable") from None
        if digest.hexdigest() != entry.sha256:
            self._drop_corrupt(entry, f"sha256 is {digest.hexdigest()}, recorded {entry.sha256}")
            raise StreamAborted(f"{entry.key}: the cached copy is corrupt")
        with contextlib.suppress(OSError):
            if _signature(self._blob(entry.key)) == before:
                entry.verified = before
        if held:
            yield held
        self._touch(entry.key)

    def _drop_corrupt(self, entry: Entry, why: str) -> None:
        log.warning("dropping the cached copy of %s: %s", entry.key, why)
        self.metrics.corrupt.inc()
        with self.lock:
            if self.index.entries.get(entry.key) is entry:
                self.index.drop(entry.key)
                self._delete(entry.key)
