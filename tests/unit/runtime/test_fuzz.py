"""Malformed input never yields a 5xx: property-based requests against the real server, both HTTP layers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import live_server, read_responses, request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=20,
)
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "y", "", "X"]) | st.text(max_size=3)},
    optional={
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "nope"]) | json_values,
        "data": st.lists(st.floats(allow_nan=False, width=32) | st.integers(-(2**70), 2**70), max_size=9) | json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-4, 40) | json_values}),
    },
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | json_values},
    optional={
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=2)}), max_size=2) | json_values,
        "id": json_values,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": json_values}),
    },
)
v1_bodies = st.fixed_dictionaries({"instances": json_values | st.lists(st.lists(json_values, max_size=5), max_size=3)})


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # stdlib: also writes integers beyond 64 bits


@pytest.fixture(scope="module", params=["fast", "uvicorn"])
def server(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server (``serve``'s uvicorn config on a socket) for all examples; both HTTP layers."""
    uri = (model_dir / "affine.onnx").as_uri()
    cache = str(tmp_path_factory.mktemp("cache"))
    with live_server(uri, cache, http=request.param, max_request_bytes=4096) as live:
        yield live.url


requests_strategy = st.lists(
    st.one_of(
        v1_bodies.map(lambda b: ("/v1/models/m:predict", _dumps(b), {})),
        v2_bodies.map(lambda b: ("/v2/models/m/infer", _dumps(b), {})),
        st.binary(max_size=64).map(lambda b: ("/v1/models/m:predict", b, {})),
        st.tuples(v2_bodies, st.binary(max_size=48), st.integers(-3, 300)).map(
            lambda t: (
                "/v2/models/m/infer",
                _dumps(t[0]) + t[1],
                {"Inference-Header-Content-Length": str(t[2])},
            )
        ),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=requests_strategy)
def test_no_5xx_on_malformed_input(batch: list[tuple[str, bytes, dict[str, str]]], server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:  # one keep-alive connection per example
        statuses = [client.post(p, content=b, headers=h).status_code for p, b, h in batch]
    assert all(s < 500 for s in statuses), list(zip(statuses, batch, strict=True))


header_values = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)
raw_requests = st.tuples(
    st.sampled_from(["/v1/models/m:predict", "/v2/models/m/infer", "/v2/models/m/versions/1/infer"])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20).map(
        lambda s: "/v2/models/" + s + "/infer"
    ),
    st.binary(max_size=300) | v2_bodies.map(_dumps),
    st.none() | header_values,
    st.sampled_from(["application/json", "application/octet-stream", "text/plain"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(raw_requests, min_size=1, max_size=6))
def test_no_5xx_on_raw_requests_pipelined(items: list[tuple[str, bytes, str | None, str]], server: str) -> None:
    """Raw bytes on one connection, pipelined: odd paths, bodies and Inference-Header-Content-Length."""
    port = int(server.rsplit(":", 1)[1])
    raw = b""
    for path, body, header_length, ctype in items:
        headers = {"Content-Type": ctype}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = header_length
        raw += request("POST", path, body, headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        statuses = [r[0] for r in read_responses(s, len(items))]
    assert all(400 <= st_ < 500 or st_ == 200 for st_ in statuses), list(zip(statuses, items, strict=True))
