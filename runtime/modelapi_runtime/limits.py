"""Process-wide limits that no single request may exceed: the in-flight byte budget and its default size.

The budget counts the bytes of every request in progress: its body as it is buffered, then an estimate of what
decoding its JSON allocates (Python objects and arrays take several times the text they came from). A request that
does not fit gets 503 with ``Retry-After``; what it held is given back when it is answered. All of it runs on the
event loop's thread: plain integer arithmetic, no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelapi_runtime.exceptions import Overloaded

CGROUP_V2_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything this large is no limit.
_NO_LIMIT_ABOVE = 1 << 60
BUDGET_SHARE_OF_MEMORY = 4  # the default budget: a quarter of the memory limit
# Decoded JSON: a value takes at least 2 bytes of text ("1,") and at most ~80 bytes decoded (an empty list is a
# 56-byte object plus its 8-byte slot in the parent, plus the array it becomes). What decoding N bytes of JSON may
# allocate is held as DECODED_BYTES_PER_JSON_VALUE * min(N // 2 + 1, max_json_values) (routes.InferenceEndpoint).
DECODED_BYTES_PER_JSON_VALUE = 80
# GET /v2/health/ready?wait=S holds a not-ready answer up to S seconds and answers 200 the moment the model is ready:
# the pod's startup probe asks this way, so the kubelet learns of the ready model at once instead of at its next
# 1-second tick. Below the probe's 5 s timeout, with room for a busy start.
MAX_READY_WAIT_S = 4.0


def memory_limit_bytes(v2: Path = CGROUP_V2_MEMORY_MAX, v1: Path = CGROUP_V1_MEMORY_LIMIT) -> int | None:
    """The container's memory limit (cgroup v2 ``memory.max``, else v1 ``memory.limit_in_bytes``), or None."""
    for path in (v2, v1):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < _NO_LIMIT_ABOVE:
            return int(text)
        return None  # "max" (v2) or the v1 sentinel: this cgroup has no limit
    return None


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget_bytes(limit: int | None = None) -> int:
    """A quarter of the memory limit (of the machine's memory when the container has none)."""
    memory = limit if limit is not None else memory_limit_bytes()
    return (memory if memory is not None else physical_memory_bytes()) // BUDGET_SHARE_OF_MEMORY


class ByteBudget:
    """Bytes held by the requests in progress, against a process-wide limit (event loop thread only)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes, or raise :class:`Overloaded` (503 + Retry-After) holding nothing more."""
        used = self.used + size
        if used > self.limit:
            raise Overloaded(
                f"the server is holding {self.used} bytes of requests in progress (budget {self.limit}); "
                f"this request needs {size} more: retry shortly"
            )
        self.used = used

    def give_back(self, size: int) -> None:
        self.used -= size
