"""A TCP proxy on 127.0.0.1 that caps each connection's download rate (a token bucket per connection).

    python throttle_proxy.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT MIB_PER_S

Stands in for what parallel ranged GETs are for: a remote object store serves one connection at a
bounded rate (tens of MiB/s), whereas versitygw on loopback serves one stream faster than SHA-256
can take it. Bytes pass through unchanged (SigV4 signs the Host header, which the client addressed
to this proxy and which reaches the gateway as sent). Client-to-server bytes are not limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

CHUNK = 256 * 1024
BURST = 1024 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None) -> None:
    loop = asyncio.get_running_loop()
    tokens, last = float(BURST), loop.time()
    try:
        while data := await reader.read(CHUNK):
            if rate:
                now = loop.time()
                tokens = min(BURST, tokens + (now - last) * rate) - len(data)
                last = now
                if tokens < 0:
                    await asyncio.sleep(-tokens / rate)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main(port: int, host: str, upstream_port: int, mib_per_s: float) -> None:
    rate = mib_per_s * 1024 * 1024

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(host, upstream_port)
        await asyncio.gather(_pump(client_r, up_w, None), _pump(up_r, client_w, rate))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(*args))
    else:
        uvloop.run(main(*args))
