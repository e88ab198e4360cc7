"""Canary analysis queries against Prometheus (the runtime's own metrics, by revision label)."""

from __future__ import annotations

import math
from typing import Any

import aiohttp

from modelapi_operator.canary import Measurement

# The runtime labels every request with a bounded class: success, client_error (4xx: the client's doing, such as a
# malformed body or a stalled upload), overload (503: a full queue or byte budget, not ready) or server_error (any
# other 5xx: a handler that raised, an inference error, a bug). A canary is judged by its server faults only: a
# client that can reach it must not be able to force a rollback with bad requests or a flood.
SERVER_FAULT = 'class="server_error"'


def error_rate_query(selector: str, window: int) -> str:
    """The share of requests that were server faults (``selector`` picks one revision's series)."""
    return (
        f"sum(rate(modelapi_requests_total{{{selector},{SERVER_FAULT}}}[{window}s])) "
        f"/ sum(rate(modelapi_requests_total{{{selector}}}[{window}s]))"
    )


class PrometheusError(Exception):
    """Prometheus could not answer; the analysis of this interval is skipped, not failed."""


class Prometheus:
    def __init__(self, url: str, *, namespace_label: str = "namespace", timeout_seconds: float = 10) -> None:
        self.url = url.rstrip("/")
        self.namespace_label = namespace_label
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def query(self, promql: str) -> float | None:
        """The single value of an instant query, or None when it has no samples (no traffic)."""
        result = await self._instant(promql)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    async def series(self, promql: str) -> list[dict[str, str]]:
        """The label sets of an instant query's series (values ignored: the query filters)."""
        return [dict(item.get("metric", {})) for item in await self._instant(promql)]

    async def _instant(self, promql: str) -> list[dict[str, Any]]:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(f"{self.url}/api/v1/query", params={"query": promql}) as response,
            ):
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise PrometheusError(f"{type(error).__name__}: {error}") from error
        if payload.get("status") != "success":
            raise PrometheusError(str(payload.get("error", payload)))
        result: list[dict[str, Any]] = payload.get("data", {}).get("result", [])
        return result

    def _selector(self, namespace: str, model: str, revision: str) -> str:
        return f'{self.namespace_label}="{namespace}",model="{model}",revision="{revision}"'

    async def error_rate(self, namespace: str, model: str, revision: str, window: int) -> float | None:
        return await self.query(error_rate_query(self._selector(namespace, model, revision), window))

    async def latency_p99_ms(self, namespace: str, model: str, revision: str, window: int) -> float | None:
        selector = self._selector(namespace, model, revision)
        seconds = await self.query(
            f"histogram_quantile(0.99, sum by (le) (rate(modelapi_request_duration_seconds_bucket{{{selector}}}"
            f"[{window}s])))"
        )
        return None if seconds is None else seconds * 1000

    async def requests_over(self, *, namespace: str, model: str, window: int) -> float | None:
        """Requests finished plus the most in flight at once over the last ``window`` seconds, in every revision of
        the model; None when Prometheus has no sample of the model at all (it does not scrape it: not idle)."""
        selector = f'{self.namespace_label}="{namespace}",model="{model}"'
        return await self.query(
            f"(sum(increase(modelapi_requests_total{{{selector}}}[{window}s])) or vector(0)) "
            f"+ sum(max_over_time(modelapi_inflight_requests{{{selector}}}[{window}s]))"
        )

    async def cold_start(self, *, namespace: str, model: str, revision: str) -> dict[str, float | None]:
        """The slowest replica's download, load and warm-up seconds for one revision; ``store_bytes``, what its
        replicas downloaded from the store together, ``from_store``, 1 when any of them did (0 when all read a
        cache), and ``artifact_bytes``, the size of its artifacts."""
        selector = self._selector(namespace, model, revision)
        found = {
            phase: await self.query(f"max(modelapi_cold_start_{phase}_seconds{{{selector}}})")
            for phase in ("download", "load", "warmup")
        }
        found["store_bytes"] = await self.query(f"sum(modelapi_artifact_store_bytes{{{selector}}})")
        found["artifact_bytes"] = await self.query(f"max(modelapi_artifact_bytes{{{selector}}})")
        found["from_store"] = await self.query(
            f'max(modelapi_artifact_source{{{selector},source="store"}}) or '
            f'(0 * max(modelapi_artifact_source{{{selector},source="cache"}}))'
        )
        return found

    async def prediction_log_failures(self, *, namespace: str, model: str) -> list[tuple[str, str]]:
        """(revision, reason) of every revision whose prediction log's last write failed on some replica."""
        selector = f'{self.namespace_label}="{namespace}",model="{model}"'
        found = await self.series(f"max by (revision, reason) (modelapi_prediction_log_failing{{{selector}}} == 1)")
        return sorted((labels.get("revision", ""), labels.get("reason", "")) for labels in found)

    async def measure(
        self, *, namespace: str, model: str, canary_revision: str, stable_revision: str, window: int
    ) -> Measurement:
        # A window of at least two scrape intervals, so rate() has two samples.
        window = max(window, 10)
        return Measurement(
            canary_error_rate=await self.error_rate(namespace, model, canary_revision, window),
            canary_latency_p99_ms=await self.latency_p99_ms(namespace, model, canary_revision, window),
            stable_error_rate=await self.error_rate(namespace, model, stable_revision, window),
            stable_latency_p99_ms=await self.latency_p99_ms(namespace, model, stable_revision, window),
        )
