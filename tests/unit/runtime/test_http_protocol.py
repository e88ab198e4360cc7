"""The fast HTTP layer (``--http fast``, http_protocol.py) on a real socket, as ``serve`` runs it.

It must answer exactly as the ASGI path under plain uvicorn does, and keep what uvicorn gave:
keep-alive, pipelining order, 413 before the body, the keep-alive timeout, HTTP/1.0, fallbacks.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from live_server import LiveServer, live_server, read_response, read_responses, request
from test_handler_and_batching import HANDLER
from uvicorn.server import ServerState

from modelapi_runtime import http_protocol
from modelapi_runtime.app import create_app
from modelapi_runtime.http_protocol import InferenceCycle, run_now
from modelapi_runtime.server import uvicorn_config
from modelapi_runtime.settings import RuntimeSettings

V1 = orjson.dumps({"instances": [[1, 2, 3, 4]]})
V2 = orjson.dumps({"id": "7", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
X = np.arange(8, dtype=np.float32).reshape(2, 4)
V2B_HEAD = orjson.dumps(
    {
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
)
V2B = (V2B_HEAD + X.tobytes(), {"Inference-Header-Content-Length": str(len(V2B_HEAD))})

CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v1/models/m:predict", V1, {}),
    ("/v2/models/m/infer", V2, {}),
    ("/v2/models/m/versions/3/infer", V2, {}),
    ("/v2/models/m/infer", *V2B),
    ("/v2/models/m/infer", V2B[0] + b"extra", V2B[1]),  # 400 framing
    ("/v2/models/m/infer", V2B[0], {"Inference-Header-Content-Length": "x"}),  # 400
    ("/v1/models/m:predict", b"{", {}),  # 400 malformed
    ("/v1/models/m:predict", b"", {}),  # 400 empty
    ("/v1/models/other:predict", V1, {}),  # 404
    ("/v1/models/m:predict", b'{"instances": [[1, 2, 3]]}', {}),  # 422
    ("/v2/models/m/infer", V2[:-1] + b', "outputs": [{"name": "nope"}]}', {}),  # 422 unknown output
]


def _exchange(server: LiveServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with server.connect() as s:
        s.sendall(raw)
        return read_response(s)


def _requests_total(metrics: str) -> list[str]:
    return sorted(line for line in metrics.splitlines() if line.startswith("modelapi_requests_total"))


def test_fast_layer_answers_like_uvicorn(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    answers = {}
    cycles: list[InferenceCycle] = []
    begin = InferenceCycle.begin

    def counted_begin(self: InferenceCycle) -> None:
        cycles.append(self)
        begin(self)

    monkeypatch.setattr(InferenceCycle, "begin", counted_begin)
    for layer in ("fast", "uvicorn"):
        with live_server(uri, str(tmp_path), http=layer, revision="r1") as server:
            got = []
            for path, body, headers in CASES:
                status, h, content = _exchange(server, request("POST", path, body, headers))
                got.append((status, h.get("content-type"), h.get("inference-header-content-length"), content))
                assert "date" in h
                assert "server" not in h
            answers[layer] = (got, _requests_total(server.metrics()))
    assert len(cycles) == len(CASES)  # every case took the fast path there, none under uvicorn
    assert answers["fast"] == answers["uvicorn"]
    statuses = [g[0] for g in answers["fast"][0]]
    assert statuses == [200, 200, 200, 200, 400, 400, 400, 400, 404, 422, 422]
    header_length = answers["fast"][0][3][2]
    assert header_length is not None
    n = int(header_length)
    y = np.frombuffer(answers["fast"][0][3][3][n:], dtype="<f4").reshape(2, 4)
    np.testing.assert_allclose(y, X * 2 + 1)
    assert 'modelapi_requests_total{class="success",code="200",model="m",revision="r1"} 4.0' in answers["fast"][1]


@pytest.mark.parametrize("batching", [False, True], ids=["inline", "batched"])
def test_keep_alive_and_pipelining_keep_order(model_dir: Path, tmp_path: Path, batching: bool) -> None:
    extra = {"max_batch_size": 8, "max_latency_ms": 20} if batching else {}
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path), **extra) as server, server.connect() as s:
        pipelined = [
            request("POST", "/v1/models/m:predict", V1),
            request("GET", "/v2/health/ready"),
            request("POST", "/v1/models/m:predict", b"{"),
            request("POST", "/v2/models/m/infer", *V2B),
            request("POST", "/v1/models/m:predict?q=1", V1),  # a query: uvicorn's cycle
            request("POST", "/v1/models/m:predict", orjson.dumps({"instances": [[0, 0, 0, 0]]})),
        ]
        s.sendall(b"".join(pipelined))
        responses = read_responses(s, len(pipelined))
        assert [r[0] for r in responses] == [200, 200, 400, 200, 200, 200]
        assert orjson.loads(responses[0][2]) == {"predictions": [[3.0, 5.0, 7.0, 9.0]]}
        assert orjson.loads(responses[1][2]) == {"ready": True}
        assert orjson.loads(responses[5][2]) == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}
        for _ in range(3):  # the same connection serves on, one request at a time
            s.sendall(request("POST", "/v1/models/m:predict", V1))
            assert read_response(s)[0] == 200


def test_declared_body_over_the_limit_is_413_before_it_is_sent(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path), max_request_bytes=2048) as server:
        with server.connect() as s:
            s.sendall(request("POST", "/v1/models/m:predict", headers={"Content-Length": "1000000000"}))
            status, _, body = read_response(s)  # nothing of the body was sent
            assert status == 413
            assert b"exceeds the limit" in body
        # Chunked, no Content-Length: refused while streaming, and the connection is closed (the rest is not read;
        # tests/unit/runtime/test_hostile_clients.py has the details).
        with server.connect() as s:
            s.sendall(request("POST", "/v1/models/m:predict", headers={"Transfer-Encoding": "chunked"}))
            s.sendall(b"".join(b"400\r\n" + b"1" * 1024 + b"\r\n" for _ in range(3)))
            status, headers, _ = read_response(s)
            assert (status, headers["connection"]) == (413, "close")
        with server.connect() as s:  # the server serves on
            s.sendall(request("POST", "/v1/models/m:predict", V1))
            assert read_response(s)[0] == 200


def test_body_in_pieces_and_client_gone_before_it_arrived(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path)) as server:
        with server.connect() as s:
            raw = request("POST", "/v1/models/m:predict", V1)
            for i in range(0, len(raw), 7):
                s.sendall(raw[i : i + 7])
                time.sleep(0.001)
            assert read_response(s)[0] == 200
        with server.connect() as s:
            s.sendall(request("POST", "/v1/models/m:predict", headers={"Content-Length": "100"}) + b'{"inst')
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while 'code="499"' not in server.metrics():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert 'modelapi_inflight_requests{model="m",revision=""} 0.0' in server.metrics()


def test_http_10_and_connection_close(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path)) as server:
        for raw in (
            request("POST", "/v1/models/m:predict", V1, version="1.0"),
            request("POST", "/v1/models/m:predict", V1, {"Connection": "close"}),
        ):
            with server.connect() as s:
                s.sendall(raw)
                status, headers, _ = read_response(s)
                assert (status, headers["connection"]) == (200, "close")
                assert s.recv(1) == b""  # closed by the server


def test_requests_the_fast_layer_leaves_to_uvicorn(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path)) as server:
        assert _exchange(server, request("POST", "/v1/models/m%3Apredict", V1))[0] == 200
        assert _exchange(server, request("POST", "/v1/models/m:predict?x=1", V1))[0] == 200
        assert _exchange(server, request("GET", "/v1/models/m"))[0] == 200
        with server.connect() as s:
            s.sendall(request("POST", "/v1/models/m:predict", headers={"Expect": "100-continue",
                                                                       "Content-Length": str(len(V1))}))  # fmt: skip
            assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
            s.sendall(V1)
            assert read_response(s)[0] == 200


def test_overload_is_503_with_retry_after(model_dir: Path, tmp_path: Path) -> None:
    uri = (model_dir / "slow.onnx").as_uri()
    with live_server(uri, str(tmp_path), max_queue=1) as server, server.connect() as first, server.connect() as second:
        # 32 rows of the slow model: the model thread runs it for about a second (tens of ms a row on two idle cores,
        # ten times that on a loaded machine); the second request is sent once the first is in progress
        first.sendall(request("POST", "/v1/models/m:predict", orjson.dumps({"instances": [[1, 2, 3, 4]] * 32})))
        busy = 'modelapi_inflight_requests{model="m",revision=""} 1.0'
        deadline = time.monotonic() + 30
        while busy not in server.metrics():
            assert time.monotonic() < deadline, "the first request was never in progress"
            time.sleep(0.01)
        second.sendall(request("POST", "/v1/models/m:predict", V1))
        status, headers, _ = read_response(second)
        assert (status, headers["retry-after"]) == (503, "1")
        first.settimeout(120)  # the slow model's time, on however loaded a machine
        assert read_response(first)[0] == 200


def test_handler_runs_on_the_fast_path(model_dir: Path, tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(uri, str(tmp_path / "cache"), handler=handler.as_uri()) as server:
        body = orjson.dumps({"rows": [{"a": 1, "b": 2, "c": 3, "d": 4}]})
        status, _, content = _exchange(server, request("POST", "/v1/models/m:predict", body))
        assert (status, orjson.loads(content)) == (200, {"scores": [[3.0, 5.0, 7.0, 9.0]], "n": 1})
        status, _, content = _exchange(server, request("POST", "/v1/models/m:predict", b'{"boom": true}'))
        assert status == 500


def test_idle_keep_alive_connections_close_after_the_timeout(model_dir: Path, tmp_path: Path) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    with (
        live_server(uri, str(tmp_path), keep_alive_s=1.0) as server,
        server.connect() as busy,
        server.connect() as idle,
    ):
        idle.sendall(request("POST", "/v1/models/m:predict", V1))
        assert read_response(idle)[0] == 200
        for _ in range(15):  # a request every 0.1 s: never idle for 1 s
            busy.sendall(request("POST", "/v1/models/m:predict", V1))
            assert read_response(busy)[0] == 200
            time.sleep(0.1)
        idle.settimeout(3)
        assert idle.recv(1) == b""  # closed after 1 s idle
        busy.sendall(request("POST", "/v1/models/m:predict", V1))
        assert read_response(busy)[0] == 200


def test_a_slow_reader_does_not_stall_others(model_dir: Path, tmp_path: Path) -> None:
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path)) as server:
        slow = server.connect()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = threading.Event()

        def flood() -> None:
            raw = request("POST", "/v1/models/m:predict", V1) * 200
            try:
                for _ in range(50):
                    slow.sendall(raw)
            except OSError:
                pass
            sent.set()

        threading.Thread(target=flood, daemon=True).start()
        time.sleep(0.5)
        assert _exchange(server, request("POST", "/v1/models/m:predict", V1))[0] == 200
        slow.close()


def test_run_now_refuses_a_coroutine_that_suspends() -> None:
    import asyncio

    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        run_now(waits())


def test_route_cache_is_bounded() -> None:
    for i in range(http_protocol._ROUTES_MAX + 50):
        http_protocol._route(f"/v1/models/m{i}:predict".encode())
    assert len(http_protocol._ROUTES) <= http_protocol._ROUTES_MAX
    assert http_protocol._route(b"/v1/models/x:predict?a=1") is None
    assert http_protocol._route(b"/v2/models/x/versions/1/infer") == ("v2", "x")


@pytest.mark.parametrize("layer", ["fast", "uvicorn"])
def test_while_draining_every_answer_closes_its_connection(model_dir: Path, tmp_path: Path, layer: str) -> None:
    """A kept-alive client of a pod that is leaving is told to reconnect (to a pod that stays) on its next answer,
    instead of finding the connection closed under a request it has just sent."""
    with live_server((model_dir / "affine.onnx").as_uri(), str(tmp_path), http=layer) as server:
        for path, body in [("/v1/models/m:predict", V1), ("/v2/health/live", b"")]:
            with server.connect() as s:
                method = "POST" if body else "GET"
                s.sendall(request(method, path, body))
                status, headers, _ = read_response(s)
                assert status == 200
                assert headers.get("connection") != "close"  # kept alive while serving normally
                server.app.state.runtime.begin_drain()
                try:
                    s.sendall(request(method, path, body))
                    status, headers, _ = read_response(s)
                    assert status == 200  # still answered: the drain lets requests finish
                    assert headers.get("connection") == "close"
                    s.settimeout(5)
                    assert s.recv(1) == b""  # and the server closed the connection after it
                finally:
                    server.app.state.runtime.draining = False


@pytest.mark.parametrize("batching", [False, True], ids=["inline", "batched"])
async def test_answered_requests_leave_no_reference_cycles(model_dir: Path, tmp_path: Path, batching: bool) -> None:
    """Every request object is freed by reference counting when it is answered: a reference cycle per request would
    leave the garbage collector to find it (a collection every few hundred requests, on the event loop). Batched,
    the request waits on the batcher's future and is answered from its callback (InferenceCycle._step)."""
    extra: dict[str, Any] = {"max_batch_size": 8, "max_latency_ms": 1} if batching else {}
    settings = RuntimeSettings(model_uri=(model_dir / "affine.onnx").as_uri(), name="m", model_dir=str(tmp_path / "c"),
                               termination_log=str(tmp_path / "term"), **extra)  # fmt: skip
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    config.load()
    protocol_class = config.http_protocol_class
    assert issubclass(protocol_class, http_protocol.InferenceHttpProtocol)
    loop = asyncio.get_running_loop()
    async with app.router.lifespan_context(app):
        while app.state.runtime.service is None:
            await asyncio.sleep(0.02)
        state = ServerState()
        server = await loop.create_server(
            lambda: protocol_class(config=config, server_state=state, app_state={}), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = {
            "v1": request("POST", "/v1/models/m:predict", V1),
            "v2": request("POST", "/v2/models/m/infer", V2),
            "v2 binary": request("POST", "/v2/models/m/infer", V2B[0], V2B[1]),
        }

        async def exchange(one: bytes) -> None:
            writer.write(one)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))

        try:
            for one in raw.values():  # warm-up: the route and binary header memories, the date header
                await exchange(one)
            gc.collect()
            gc.disable()
            try:
                for _ in range(100):
                    for one in raw.values():
                        await exchange(one)
                unreachable = gc.collect()
            finally:
                gc.enable()
        finally:
            writer.close()
            server.close()
            await server.wait_closed()
    assert unreachable < 50, f"{unreachable} objects in reference cycles after 300 requests"
