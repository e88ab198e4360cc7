"""Peer: the HTTP floor. A raw ASGI app that answers every request with a fixed JSON body."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

BODY = b'{"predictions":[[0.0,0.0,0.0]]}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})  # fmt: skip


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                http="httptools", loop="uvloop", lifespan="off")  # fmt: skip
