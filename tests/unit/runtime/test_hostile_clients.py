"""Hostile clients against the real server on a loopback socket, both HTTP layers (``--http fast`` and ``uvicorn``).

Each test reproduces one way a client could hurt the runtime (stall, flood, oversize, malformed) and checks that the
runtime answers with a clear status and keeps serving everyone else. Counts and times are kept small: the limits
are set low for the test server, not the attacks made large.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from live_server import LiveServer, live_server, read_response, request
from test_handler_and_batching import HANDLER

LAYERS = ["fast", "uvicorn"]
TIMEOUT_S = 1.0  # the test servers' head and body timeouts
V1 = orjson.dumps({"instances": [[1, 2, 3, 4]]})
PREDICT = "/v1/models/m:predict"
INFER = "/v2/models/m/infer"


@pytest.fixture(scope="module", params=LAYERS)
def server(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(
        uri,
        str(tmp_path_factory.mktemp("cache")),
        http=request.param,
        header_timeout_seconds=TIMEOUT_S,
        body_timeout_seconds=TIMEOUT_S,
        max_header_bytes=8192,
        max_queue=8,
    ) as live:
        yield live


def _closed(sock: socket.socket, within_s: float = 5.0) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``within_s``, reading and dropping what it sent."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def _exchange(live: LiveServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with live.connect() as s:
        s.sendall(raw)
        return read_response(s)


def _requests_total(live: LiveServer, code: int) -> float:
    for line in live.metrics().splitlines():
        if line.startswith("modelapi_requests_total{") and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# 1. Read timeouts


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, nothing sent
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: t\r\nContent-Le",  # head stalled
        request("POST", PREDICT, headers={"Content-Length": str(len(V1))}) + V1[:5],  # body stalled
    ],
    ids=["nothing", "head", "body"],
)
def test_a_stalled_request_gets_408_and_its_connection_is_closed(server: LiveServer, sent: bytes) -> None:
    with server.connect() as s:
        started = time.monotonic()
        s.sendall(sent)
        status, headers, body = read_response(s)
        waited = time.monotonic() - started
        assert (status, headers["connection"]) == (408, "close")
        assert b"did not arrive within" in body
        assert _closed(s)
    assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 2.5


def test_a_stalled_body_is_counted_as_408(server: LiveServer) -> None:
    before = _requests_total(server, 408)
    with server.connect() as s:
        s.sendall(request("POST", PREDICT, headers={"Content-Length": "100"}) + b"{")
        assert read_response(s)[0] == 408
    assert _requests_total(server, 408) == before + 1
    assert 'class="client_error",code="408"' in server.metrics()


def test_a_connection_idle_between_requests_keeps_the_keep_alive_timeout(server: LiveServer) -> None:
    with server.connect() as s:
        s.sendall(request("POST", PREDICT, V1))
        assert read_response(s)[0] == 200
        time.sleep(TIMEOUT_S * 1.6)  # idle longer than the read timeouts, well within keep-alive (75 s)
        s.sendall(request("POST", PREDICT, V1))
        assert read_response(s)[0] == 200


def test_a_slow_but_steady_body_within_the_timeout_is_served(server: LiveServer) -> None:
    with server.connect() as s:
        s.sendall(request("POST", PREDICT, headers={"Content-Length": str(len(V1))}))
        for i in range(0, len(V1), 8):
            s.sendall(V1[i : i + 8])
            time.sleep(TIMEOUT_S / 20)
        assert read_response(s)[0] == 200


# 2. Stalled requests hold no queue slot


def test_hundreds_of_stalled_requests_do_not_starve_the_queue(server: LiveServer) -> None:
    """The issue's finding: connections stopped mid-request (here 200 against a queue of 8) made every normal
    request get 503 for as long as they stayed open."""
    head = request("POST", PREDICT, headers={"Content-Length": str(len(V1))})
    with contextlib.ExitStack() as stack:
        stalled = []
        for _ in range(200):
            s = stack.enter_context(server.connect())
            s.sendall(head + V1[:3])
            stalled.append(s)
        with server.connect() as s:
            statuses = []
            for _ in range(20):
                s.sendall(request("POST", PREDICT, V1))
                statuses.append(read_response(s)[0])
        assert statuses == [200] * 20
        assert all(read_response(s)[0] == 408 for s in stalled)  # and every stalled one timed out


# 3. Head size


def test_a_head_over_the_limit_gets_431_and_its_connection_is_closed(server: LiveServer) -> None:
    with server.connect() as s:
        s.sendall(request("POST", PREDICT, V1, {"X-Filler": "a" * 4000}))
        assert read_response(s)[0] == 200  # under the limit (8 KiB)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed while the rest was being sent
            s.sendall(request("POST", PREDICT, V1, {"X-Filler": "a" * (1024 * 1024)}))
        status, headers, body = read_response(s)
        assert (status, headers["connection"]) == (431, "close")
        assert b"request head exceeds the limit of 8192 bytes" in body
        assert _closed(s)


def test_many_small_headers_over_the_limit_get_431(server: LiveServer) -> None:
    headers = {f"X-H{i}": "v" * 40 for i in range(400)}  # 20 KiB in 400 headers
    status, _, _ = _exchange(server, request("GET", "/v2/health/live", headers=headers))
    assert status == 431


# 7. An early answer does not read the rest of a large body


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (PREDICT, {"Content-Length": str(64 * 1024 * 1024)}),  # 413 before the body
        (PREDICT, {"Transfer-Encoding": "chunked"}),  # 413 while streaming
        ("/v1/models/other:predict", {"Content-Length": str(1024 * 1024)}),  # 404 before the body
    ],
    ids=["declared-413", "chunked-413", "unknown-model-404"],
)
def test_an_early_answer_closes_the_connection_instead_of_reading_the_body(
    model_dir: Path, tmp_path: Path, layer: str, path: str, headers: dict[str, str]
) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(uri, str(tmp_path), http=layer, max_request_bytes=4096) as live, live.connect() as s:
        s.sendall(request("POST", path, headers=headers))
        chunk = b"2000\r\n" + b"1" * 0x2000 + b"\r\n" if "Transfer-Encoding" in headers else b"1" * 0x2000
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(chunk)
        status, response_headers, _ = read_response(s)
        assert status in (404, 413)
        assert response_headers["connection"] == "close"
        assert _closed(s)


def test_an_early_answer_to_a_small_body_keeps_the_connection(server: LiveServer) -> None:
    with server.connect() as s:
        s.sendall(request("POST", "/v1/models/other:predict", V1))
        status, headers, _ = read_response(s)
        assert status == 404
        assert headers.get("connection") != "close"
        s.sendall(request("POST", PREDICT, V1))
        assert read_response(s)[0] == 200


def test_after_an_early_answer_and_the_small_rest_the_connection_idles_into_the_keep_alive_timeout(
    model_dir: Path, tmp_path: Path, layer: str
) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(uri, str(tmp_path), http=layer, keep_alive_s=1.0) as live, live.connect() as s:
        s.sendall(request("POST", "/v1/models/other:predict", V1)[:-5])  # 404 is known before the body ends
        assert read_response(s)[0] == 404
        s.sendall(V1[-5:])  # the rest, read and dropped
        s.sendall(request("POST", PREDICT, V1))
        assert read_response(s)[0] == 200  # kept alive
        s.sendall(request("POST", "/v1/models/other:predict", V1)[:-5])
        assert read_response(s)[0] == 404
        s.sendall(V1[-5:])
        assert _closed(s, within_s=4.0)  # then idle: closed by the keep-alive timeout (1 s), not left open


@pytest.fixture(params=LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# 4. The byte budget


def test_bodies_beyond_the_byte_budget_get_503_with_retry_after(
    model_dir: Path, tmp_path: Path, layer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's finding: 48 connections that each sent 14 MiB of a declared 15 MiB body grew the server by 674
    MiB. Here the budget is 2 MiB and each connection sends 600 KiB of a declared 1 MiB body."""
    uri = (model_dir / "affine.onnx").as_uri()
    part = b"1" * (600 * 1024)
    head = request("POST", PREDICT, headers={"Content-Length": str(1024 * 1024)})
    with (
        live_server(uri, str(tmp_path), http=layer, max_inflight_bytes=2 * 1024 * 1024) as live,
        contextlib.ExitStack() as stack,
    ):
        held = []
        for _ in range(3):  # 1.8 MiB held
            s = stack.enter_context(live.connect())
            s.sendall(head + part)
            held.append(s)
        time.sleep(0.3)  # the server has read them
        with live.connect() as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(head + part)
            status, headers, body = read_response(s)
            assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
            assert b"budget" in body
        assert 'class="overload",code="503"' in live.metrics()
        with caplog.at_level(logging.WARNING, logger="modelapi_runtime.routes"):
            for _ in range(10):  # a flood of refusals is not a flood of log lines
                with live.connect() as s:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        s.sendall(head + part)
                    assert read_response(s)[0] == 503
        assert len([r for r in caplog.records if "request refused" in r.getMessage()]) <= 1
        for s in held:  # gone: what they held is given back
            s.close()
        time.sleep(0.3)
        assert _exchange(live, request("POST", PREDICT, V1))[0] == 200


def test_a_json_body_that_could_never_fit_the_budget_is_413_not_503(
    model_dir: Path, tmp_path: Path, layer: str
) -> None:
    uri = (model_dir / "affine.onnx").as_uri()
    body = orjson.dumps({"instances": [[1, 2, 3, 4]] * 5000})  # ~50 KiB: ~2 MiB decoded, by the estimate
    with live_server(uri, str(tmp_path), http=layer, max_inflight_bytes=1024 * 1024) as live:
        status, headers, content = _exchange(live, request("POST", PREDICT, body))
        assert status == 413, content
        assert "retry-after" not in headers
        assert b"binary extension" in content
        assert _exchange(live, request("POST", PREDICT, V1))[0] == 200


def test_the_default_budget_is_a_quarter_of_the_cgroup_memory_limit(tmp_path: Path) -> None:
    from modelapi_runtime.limits import default_budget_bytes, memory_limit_bytes

    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("2147483648\n")
    assert memory_limit_bytes(v2, v1) == 2 * 1024**3
    assert default_budget_bytes(memory_limit_bytes(v2, v1)) == 512 * 1024**2
    v2.write_text("max\n")
    assert memory_limit_bytes(v2, v1) is None
    v2.unlink()
    v1.write_text("1073741824\n")
    assert memory_limit_bytes(v2, v1) == 1024**3
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert memory_limit_bytes(v2, v1) is None


# 5. Bounded JSON, decoded off the event loop


class _LivenessProbe:
    """GET /v2/health/live in a loop on its own connection; the slowest answer is kept."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.live.connect() as s:
            while not self._stop.is_set():
                started = time.monotonic()
                s.sendall(request("GET", "/v2/health/live"))
                assert read_response(s)[0] == 200
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.answers += 1
                time.sleep(0.02)

    def __enter__(self) -> _LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _post_big(live: LiveServer, path: str, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as s:
        s.sendall(request("POST", path, body))
        status, _, content = read_response(s)
        return status, content


def test_a_body_of_millions_of_empty_arrays_is_refused_and_liveness_answers(server: LiveServer) -> None:
    """The issue's finding: a 15 MiB v1 body of empty arrays blocked the event loop for 2.5 s."""
    body = b'{"instances": [' + b",".join([b"[]"] * (5 * 1024 * 1024)) + b"]}"
    with _LivenessProbe(server) as probe:
        time.sleep(0.1)
        status, content = _post_big(server, PREDICT, body)
        time.sleep(0.1)
    assert status == 413
    assert b"more than the limit" in content
    assert probe.answers > 0
    assert probe.slowest < 1.0


def test_liveness_answers_within_a_second_while_a_big_valid_body_is_processed(server: LiveServer) -> None:
    rows = 200_000  # 1M values (just under the default bound), 6 MiB of JSON
    body = orjson.dumps({"instances": [[1.5, 2.5, 3.5, 4.5]] * rows})
    with _LivenessProbe(server) as probe:
        time.sleep(0.1)
        started = time.monotonic()
        status, content = _post_big(server, PREDICT, body)
        busy = time.monotonic() - started
        time.sleep(0.1)
    assert status == 200
    assert len(orjson.loads(content)["predictions"]) == rows
    assert probe.answers > busy / 0.5  # it kept answering while the request was processed
    assert probe.slowest < 1.0, (probe.slowest, busy)


@pytest.mark.parametrize("batching", [False, True], ids=["inline", "batching"])
def test_large_bodies_are_served_off_the_loop_on_every_path(
    model_dir: Path, tmp_path: Path, layer: str, batching: bool
) -> None:
    """Bodies over 256 KiB take the worker-thread path: v1 and v2 JSON, v2 binary, with and without batching."""
    uri = (model_dir / "affine.onnx").as_uri()
    x = np.arange(4 * 20_000, dtype=np.float32).reshape(-1, 4)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    extra = {"max_batch_size": 4} if batching else {}
    with live_server(uri, str(tmp_path), http=layer, **extra) as live:
        status, headers, content = _exchange(
            live, request("POST", INFER, header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))})
        )
        assert status == 200, content
        n = int(headers["inference-header-content-length"])
        np.testing.assert_allclose(np.frombuffer(content[n:], dtype="<f4").reshape(x.shape), x * 2 + 1)
        v2 = orjson.dumps(
            {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        )
        status, _, content = _exchange(live, request("POST", INFER, v2))
        assert status == 200, content
        assert orjson.loads(content)["outputs"][0]["shape"] == list(x.shape)
        status, _, content = _exchange(live, request("POST", PREDICT, orjson.dumps({"instances": x.tolist()})))
        assert status == 200, content
        assert len(orjson.loads(content)["predictions"]) == len(x)


def test_a_large_body_reaches_the_handler_parsed_off_the_loop(handler_server: LiveServer) -> None:
    rows = [{"a": 1, "b": 2, "c": 3, "d": i} for i in range(20_000)]  # ~0.6 MiB
    status, _, content = _exchange(handler_server, request("POST", PREDICT, orjson.dumps({"rows": rows})))
    assert status == 200, content
    assert orjson.loads(content)["n"] == len(rows)


def test_json_nested_beyond_the_limit_is_400(server: LiveServer) -> None:
    depth = 5000
    body = b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    status, _, content = _exchange(server, request("POST", PREDICT, body))
    assert status == 400
    assert b"malformed JSON" in content


# 6. Shapes bounded before any allocation


def _v2(shape: object, data: object, datatype: str = "FP32") -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_v2([0, 2**63], []), b"describes more than"),  # the 500
        (_v2([2**40, 2**40], []), b"describes more than"),  # the product overflows 64 bits
        (_v2([0, 2**40, 2**40], []), b"describes more than"),
        (_v2([1] * 40, [1]), b"40 dimensions"),
        (_v2([1, -4], [1, 2, 3, 4]), b"non-negative integers"),
        (_v2([1, 4.0], [1, 2, 3, 4]), b"non-negative integers"),
        (_v2([1, 3], [1, 2, 3, 4]), b"4 values for shape [1, 3]"),
        (
            orjson.dumps(
                {"inputs": [{"name": "x", "shape": [2**62], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
            ),
            b"describes more than",
        ),
    ],
    ids=["0x2^63", "overflow", "zero-and-huge", "ndim", "negative", "float", "mismatch", "binary-huge"],
)
def test_a_shape_out_of_bounds_is_422(server: LiveServer, body: bytes, fragment: bytes) -> None:
    status, _, content = _exchange(server, request("POST", INFER, body))
    assert status == 422, content
    assert fragment in content, content


# 8 and 9. Server faults: labelled apart, logged with a request id, told to the client as the id only


@pytest.fixture(scope="module", params=LAYERS)
def handler_server(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    d = tmp_path_factory.mktemp("handler")
    (d / "handler.py").write_text(HANDLER)
    uri = (model_dir / "affine.onnx").as_uri()
    with live_server(uri, str(d / "cache"), http=request.param, handler=(d / "handler.py").as_uri()) as live:
        yield live


@pytest.mark.parametrize(
    ("given", "echoed"),
    [(None, False), ("req-42.a:b", True), ("x" * 200, False), ("bad id <x>", False)],
    ids=["none", "sane", "too-long", "unsafe"],
)
def test_a_handler_fault_reaches_the_client_as_a_request_id_only(
    handler_server: LiveServer, caplog: pytest.LogCaptureFixture, given: str | None, echoed: bool
) -> None:
    headers = {} if given is None else {"X-Request-Id": given}
    with caplog.at_level(logging.ERROR, logger="modelapi_runtime.errors"):
        status, response_headers, content = _exchange(
            handler_server, request("POST", PREDICT, orjson.dumps({"boom": True}), headers)
        )
    assert status == 500
    answer = orjson.loads(content)
    request_id = answer["request_id"]
    assert response_headers["x-request-id"] == request_id
    assert (request_id == given) is echoed
    assert len(request_id) <= 128
    assert "exploded" not in content.decode()
    assert answer["error"].startswith("the model's handler failed (request id ")
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert "preprocess exploded" in str(logged[0].exc_info[1])


def test_server_faults_are_labelled_apart_from_client_errors_and_overload(handler_server: LiveServer) -> None:
    _exchange(handler_server, request("POST", PREDICT, orjson.dumps({"boom": True})))  # 500
    _exchange(handler_server, request("POST", PREDICT, b"{"))  # 400
    _exchange(handler_server, request("POST", PREDICT, orjson.dumps({"rows": [{"a": 1, "b": 2, "c": 3, "d": 4}]})))
    metrics = handler_server.metrics()
    assert 'class="server_error",code="500"' in metrics
    assert 'class="client_error",code="400"' in metrics
    assert 'class="success",code="200"' in metrics
