"""Log lines: the JSON format, and the request id on every line logged while a request is handled (a handler's own
lines included), on both HTTP layers of ``serve``."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from live_server import live_server, read_response

from modelapi_runtime import logs

HANDLER = """
import logging

log = logging.getLogger("the_handler")

def preprocess(payload):
    log.info("preprocess saw %d rows", len(payload["instances"]))
    return {"x": payload["instances"]}

def postprocess(outputs, payload):
    log.info("postprocess answers %d rows", len(outputs["y"]))
    return {"predictions": outputs["y"]}
"""


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the runtime's loggers write, as ``logs.configure(..., "json")`` formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_request_id(json_lines: io.StringIO) -> None:
    log = logging.getLogger("modelapi_runtime.test")
    log.info("outside %s", "a request")
    token = logs.current_request.set(logs.RequestId(b"abc-1"))
    try:
        log.warning("inside")
    finally:
        logs.current_request.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    outside, inside, failed = _lines(json_lines)
    assert outside["message"] == "outside a request"
    assert outside["level"] == "info"
    assert outside["logger"] == "modelapi_runtime.test"
    assert str(outside["time"]).endswith("Z")
    assert "request_id" not in outside
    assert inside["request_id"] == "abc-1"
    assert "ValueError: boom" in str(failed["exception"])


def test_request_ids_are_the_clients_when_sane_else_made_up() -> None:
    assert logs.RequestId(b"req-42.a:b").get() == "req-42.a:b"
    made = {logs.RequestId(given).get() for given in (None, b"x" * 200, b"bad id <x>", None)}
    assert len(made) == 4
    rid = logs.RequestId(None)
    assert rid.get() == rid.get()  # made once


def test_the_text_format_shows_the_request_id() -> None:
    record = logging.LogRecord("the_handler", logging.INFO, __file__, 1, "hello", None, None)
    token = logs.current_request.set(logs.RequestId(b"abc-1"))
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        logs.current_request.reset(token)
    assert logging.Formatter(logs.TEXT_FORMAT).format(record).endswith("the_handler [abc-1]: hello")


@pytest.mark.parametrize("http", ["fast", "uvicorn"])
@pytest.mark.parametrize("predictions", [False, True], ids=["plain", "prediction-log"])
@pytest.mark.parametrize("batching", [False, True], ids=["inline", "batched"])
def test_a_handlers_log_lines_carry_the_request_id(
    model_dir: Path, tmp_path: Path, json_lines: io.StringIO, http: str, predictions: bool, batching: bool
) -> None:
    """Batched, postprocess runs after the request waited for its batch (on the fast layer: from the batcher's
    future's callback, not a task): its lines carry the id too."""
    (tmp_path / "handler.py").write_text(HANDLER)
    extra: dict[str, Any] = {"prediction_log_sample_rate": 100} if predictions else {}
    if batching:
        extra |= {"max_batch_size": 8, "max_latency_ms": 1}
    uri = (model_dir / "affine.onnx").as_uri()
    handler = (tmp_path / "handler.py").as_uri()
    with live_server(uri, str(tmp_path / "cache"), http=http, handler=handler, **extra) as live:
        if predictions:  # the records go elsewhere than this test's stdout
            live.app.state.runtime.predictions.sink.stream = io.BytesIO()
        sock = live.connect()
        for given in ("client-1", None):
            body = orjson.dumps({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]})
            head = f"POST /v1/models/m:predict HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n"
            if given:
                head += f"x-request-id: {given}\r\n"
            sock.sendall(head.encode() + b"\r\n" + body)
            status, headers, _ = read_response(sock)
            assert status == 200
            lines = [line for line in _lines(json_lines) if line["logger"] == "the_handler"]
            assert [line["message"] for line in lines[-2:]] == ["preprocess saw 2 rows", "postprocess answers 2 rows"]
            assert lines[-2].get("request_id") == lines[-1].get("request_id")
            rid = lines[-1].get("request_id")
            if given:
                assert rid == given
            else:
                assert isinstance(rid, str)
                assert rid not in ("", "client-1")
            if predictions:  # the answer says the same id
                assert headers["x-request-id"] == rid
        sock.close()


def test_configure_json_writes_one_object_per_line_on_stderr() -> None:
    script = "from modelapi_runtime import logs; import logging; logs.configure('info', 'json'); "
    script += "logging.getLogger('x').info('hi'); logging.getLogger('x').debug('hidden')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == ""  # stdout is the prediction log's
    (line,) = result.stderr.splitlines()
    assert orjson.loads(line)["message"] == "hi"


def test_the_cli_takes_a_log_format() -> None:
    from modelapi_runtime.cli import build_parser, settings_from

    args = build_parser().parse_args(["serve", "--model-uri", "file:///m.onnx", "--log-format", "json"])
    assert settings_from(args).log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model-uri", "file:///m.onnx", "--log-format", "xml"])
