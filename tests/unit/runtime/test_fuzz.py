"""Malformed input never yields a 5xx: property-based requests against the real app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelapi_runtime.app import create_app
from modelapi_runtime.settings import RuntimeSettings

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


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class _App:
    """One loaded app for all examples (loading per example would dominate the run)."""

    def __init__(self, model: Path, cache: Path) -> None:
        self.app = create_app(
            RuntimeSettings(model_uri=model.as_uri(), name="m", model_dir=str(cache), max_request_bytes=4096)
        )


async def _post_all(app: Any, requests: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.runtime.ready_event.wait(), 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [(await c.post(p, content=b, headers=h)).status_code for p, b, h in requests]


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
def test_no_5xx_on_malformed_input(
    batch: list[tuple[str, bytes, dict[str, str]]], model_dir: Path, tmp_path: Path
) -> None:
    app = _App(model_dir / "affine.onnx", tmp_path / "cache").app
    statuses = _run(_post_all(app, batch))
    assert all(s < 500 for s in statuses), list(zip(statuses, batch, strict=True))
