"""429 and 5xx answers to the operator's own writes (issue 9, item 3): kube.Kube raises a KubeError that carries the
server's Retry-After, and the handler turns it into kopf's retry after that delay. The server here is a real aiohttp
HTTP server on loopback answering as kube-apiserver does; the e2e side (a fault-injecting proxy in front of the real
kube-apiserver) is tests/e2e/test_faults.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelapi_operator import kube

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "iris-abc", "namespace": "ml"},
    "spec": {},
}


def status(code: int, reason: str, details: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
    body["message"] = f"the server says {code}"
    if details is not None:
        body["details"] = details
    return json.dumps(body)


ANSWERS: dict[str, tuple[int, dict[str, str], str]] = {
    "header": (429, {"Retry-After": "3"}, status(429, "TooManyRequests", {"retryAfterSeconds": 3})),
    "details-only": (429, {}, status(429, "TooManyRequests", {"retryAfterSeconds": 7})),
    "503-with-header": (503, {"Retry-After": "2"}, status(503, "ServiceUnavailable")),
    "500-plain": (500, {}, status(500, "InternalError")),
    "503-not-json": (503, {}, "upstream connect error"),
    "http-date": (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, status(503, "ServiceUnavailable")),
    "huge": (429, {"Retry-After": "86400"}, status(429, "TooManyRequests")),
    "zero": (429, {"Retry-After": "0"}, status(429, "TooManyRequests")),
    "conflict": (409, {}, status(409, "Conflict")),
}


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def answer(request: web.Request) -> web.Response:
        code, headers, text = ANSWERS[request.match_info["case"]]
        return web.Response(status=code, headers=headers, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_route("PATCH", "/apis/apps/v1/namespaces/{case}/deployments/{name}", answer)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


async def refusal(server: TestServer, case: str) -> kube.KubeError:
    client = kube.Kube(kube.Credentials(server=str(server.make_url("/"))), timeout_seconds=5)
    try:
        manifest = {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "namespace": case}}
        with pytest.raises(kube.KubeError) as raised:
            await client.apply(manifest)
        return raised.value
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("case", "status_code", "retry_after", "delay"),
    [
        ("header", 429, 3, 3),
        ("details-only", 429, 7, 7),  # older servers: only the Status's details say it
        ("503-with-header", 503, 2, 2),
        ("500-plain", 500, None, 10),  # no advice: soon, the error passes by itself
        ("503-not-json", 503, None, 10),
        ("http-date", 503, None, 10),  # kube-apiserver never sends a date; not guessed at
        ("huge", 429, 86400, 60),  # a day is capped: the handler checks again within a minute
        ("zero", 429, 0, 1),  # never a busy loop
        ("conflict", 409, None, 60),  # not retriable by waiting: later
    ],
)
async def test_retry_after_is_read_and_bounds_the_delay(
    server: TestServer, case: str, status_code: int, retry_after: float | None, delay: float
) -> None:
    error = await refusal(server, case)
    assert error.status == status_code
    assert error.retry_after == retry_after
    assert error.retriable is (status_code >= 429 and status_code != 409)
    assert error.retry_delay(soon=10, later=60) == delay


async def test_the_handler_asks_kopf_to_retry_after_the_servers_delay(server: TestServer) -> None:
    """triggers.reconcile: an API error becomes kopf.TemporaryError with the delay, which kopf's handler retry
    obeys (and logs with the message). The operator's context is made as at start-up, logged in to the server."""
    import kopf
    from kube_fakes import RefusingKube
    from prometheus_client import CollectorRegistry

    from modelapi_operator import triggers
    from modelapi_operator.context import OperatorContext, reconciler_for
    from modelapi_operator.indices import INDEX_NAMES
    from modelapi_operator.metrics import OperatorMetrics
    from modelapi_operator.peering import Peer
    from modelapi_operator.settings import OperatorSettings

    error = await refusal(server, "header")
    settings = OperatorSettings()
    context = OperatorContext.create(settings, Peer("me", 1), OperatorMetrics(CollectorRegistry()))
    context.login(kube.Credentials(server=str(server.make_url("/"))))
    context.reconciler = reconciler_for(RefusingKube("Deployment", error=error), settings)
    indices: dict[str, Any] = {name: {} for name in INDEX_NAMES}
    body = {
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u"},
        "spec": {"model": {"uri": "s3://models/iris/1/model.onnx"}},
    }
    try:
        with pytest.raises(kopf.TemporaryError) as raised:
            await triggers.reconcile(context, ("ml", "iris"), body, indices)
    finally:
        await context.close()
    assert raised.value.delay == 3
    assert "429 TooManyRequests" in str(raised.value)
    assert "retry in 3 s" in str(raised.value)
    assert context.reconciler.gateway_api_installed is False  # the server has no such CRD: asked, and told


def test_kopf_gets_the_watch_inactivity_timeout_and_peering_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent watch is dropped after MODELAPI_OPERATOR_WATCH_INACTIVITY_TIMEOUT_SECONDS, and a standby replica
    takes over after MODELAPI_OPERATOR_PEERING_LIFETIME_SECONDS: both are kopf settings, set at startup."""
    import kopf

    from modelapi_operator import handlers, names
    from modelapi_operator.persistence import MemoryDiffBaseStorage
    from modelapi_operator.settings import OperatorSettings

    monkeypatch.setenv("MODELAPI_OPERATOR_WATCH_INACTIVITY_TIMEOUT_SECONDS", "12")
    monkeypatch.setenv("MODELAPI_OPERATOR_PEERING_LIFETIME_SECONDS", "15")
    settings = kopf.OperatorSettings()
    diffbase = MemoryDiffBaseStorage(names.GROUP)
    handlers.configure(settings, OperatorSettings(), diffbase)
    assert settings.persistence.diffbase_storage is diffbase  # not kopf's annotation: no PATCH per ModelAPI
    assert settings.watching.inactivity_timeout == 12
    assert settings.peering.lifetime == 15
    # the defaults: kopf's own (Kubernetes sends a bookmark about every 60 s, so a quiet but healthy watch is kept)
    assert OperatorSettings.model_fields["watch_inactivity_timeout_seconds"].default == 70
    assert OperatorSettings.model_fields["peering_lifetime_seconds"].default == 60
