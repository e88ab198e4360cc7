"""``modelapi-cache``: the node cache agent; serves until SIGTERM (answers in progress are cut, pods retry)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pydantic import ValidationError

from modelapi_runtime.cache_agent.cache import NodeCache
from modelapi_runtime.cache_agent.server import make_server
from modelapi_runtime.cache_agent.settings import CacheAgentSettings

log = logging.getLogger("modelapi_cache")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print("modelapi-cache: the node cache of model artifacts. Settings are MODELAPI_CACHE_* variables:")
        for name, info in CacheAgentSettings.model_fields.items():
            default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
            print(f"  MODELAPI_CACHE_{name.upper()}: {info.description} (default {default})")
        return 0
    try:
        settings = CacheAgentSettings()
    except ValidationError as error:
        print(f"modelapi-cache: invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cache = NodeCache(settings)
        server = make_server(cache, settings.host, settings.port, settings.max_connections)
    except OSError as error:
        print(f"modelapi-cache: cannot start: {error}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("node cache agent on %s:%d, %s (bound %d MiB), endpoints %s", settings.host, settings.port,
             settings.dir, settings.max_mib, ", ".join(settings.allowed_endpoints) or "none")  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
