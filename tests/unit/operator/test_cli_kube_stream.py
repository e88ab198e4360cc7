"""The two requests the CLI adds to kube.Kube, against a real aiohttp server on loopback answering as
kube-apiserver does: a followed pod log arrives line by line whatever its chunks, and a proxied answer comes back
with its own status and body (the model's 4xx is not the API server's error)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelapi_operator import kube

NOT_FOUND = (
    '{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","message":"pods \\"x\\" not found"}'
)


@pytest.fixture
async def client() -> AsyncIterator[kube.Kube]:
    async def log(request: web.Request) -> web.StreamResponse:
        if request.match_info["pod"] == "gone":
            return web.Response(status=404, text=NOT_FOUND, content_type="application/json")
        assert request.query["container"] == "runtime"
        response = web.StreamResponse()
        await response.prepare(request)
        # a line split across chunks, a CRLF, a non-UTF-8 byte and a last line without its newline
        for chunk in (b"first li", b"ne\nsecond\r\nthi", b"rd \xff\n", b"no newline"):
            await response.write(chunk)
            await asyncio.sleep(0.01)
        return response

    async def predict(request: web.Request) -> web.Response:
        return web.Response(status=422, text='{"error": "bad shape"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ml/pods/{pod}/log", log)
    app.router.add_post("/api/v1/namespaces/ml/services/iris:http/proxy/v1/models/iris:predict", predict)
    server = TestServer(app)
    await server.start_server()
    api = kube.Kube(kube.Credentials(server=str(server.make_url("/"))), timeout_seconds=5)
    try:
        yield api
    finally:
        await api.close()
        await server.close()


async def test_stream_lines_reassembles_lines_across_chunks(client: kube.Kube) -> None:
    path = kube.POD.path("ml", "iris-abc-1", "log")
    lines = [line async for line in client.stream_lines(path, {"container": "runtime", "follow": "true"})]
    assert lines == ["first line", "second", "third \ufffd", "no newline"]


async def test_stream_lines_raises_the_api_servers_error(client: kube.Kube) -> None:
    with pytest.raises(kube.NotFound, match='pods "x" not found'):
        async for _ in client.stream_lines(kube.POD.path("ml", "gone", "log"), {"container": "runtime"}):
            pass


async def test_request_raw_returns_any_status_with_its_body(client: kube.Kube) -> None:
    path = "/api/v1/namespaces/ml/services/iris:http/proxy/v1/models/iris:predict"
    answer = await client.request_raw("POST", path, body=b'{"instances": [[1]]}')
    assert (answer.status, answer.body) == (422, b'{"error": "bad shape"}')
    assert answer.content_type.startswith("application/json")
