"""The operator's metrics: what a reconcile, a failure, a queue and a watch restart do to them, and the endpoint
served over a real socket."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import urllib.request
from pathlib import Path

import pytest
from kopf._cogs.clients import watching
from prometheus_client import CollectorRegistry

from modelapi_operator import kube, triggers
from modelapi_operator.metrics import (
    KOPF_WATCH_LOGGER,
    WATCH_RESTART_MESSAGES,
    OperatorMetrics,
    package_version,
    parse_address,
    serve,
)
from modelapi_operator.settings import OperatorSettings


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_a_reconcile_is_counted_and_timed_by_result() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    with metrics.reconciling(triggers.error_reason):
        assert value(metrics, "modelapi_operator_reconciles_in_progress") == 1
    with (
        pytest.raises(kube.KubeError),
        metrics.reconciling(triggers.error_reason),
    ):
        raise kube.KubeError(409, "Conflict", "the object has been modified")
    with pytest.raises(RuntimeError), metrics.reconciling(triggers.error_reason):
        raise RuntimeError("a bug")
    assert value(metrics, "modelapi_operator_reconciles_total", result="success") == 1
    assert value(metrics, "modelapi_operator_reconciles_total", result="error") == 2
    assert value(metrics, "modelapi_operator_reconcile_errors_total", reason="Conflict") == 1
    assert value(metrics, "modelapi_operator_reconcile_errors_total", reason="RuntimeError") == 1
    assert value(metrics, "modelapi_operator_reconcile_duration_seconds_count") == 3
    assert value(metrics, "modelapi_operator_reconciles_in_progress") == 0


def test_an_api_reason_that_is_not_a_word_becomes_the_status() -> None:
    """Reasons are label values: only the API's CamelCase words, never a free text."""
    assert triggers.error_reason(kube.KubeError(0, "Unavailable", "connection refused")) == "Unavailable"
    assert triggers.error_reason(kube.KubeError(502, "Bad Gateway: <html>", "x")) == "HTTP502"


async def test_reconciles_that_wait_for_their_turn_are_counted_until_they_get_it() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    lock, slots = asyncio.Lock(), asyncio.Semaphore(1)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def one() -> None:
        async with metrics.turn(lock, slots):
            entered.set()
            await release.wait()

    first = asyncio.create_task(one())
    await entered.wait()
    second = asyncio.create_task(one())
    await asyncio.sleep(0.01)
    assert value(metrics, "modelapi_operator_reconciles_waiting") == 1
    release.set()
    await asyncio.gather(first, second)
    assert value(metrics, "modelapi_operator_reconciles_waiting") == 0
    assert not lock.locked()


def test_kopf_still_logs_the_watch_restarts_the_counter_reads() -> None:
    source = inspect.getsource(watching)
    assert watching.logger.name == KOPF_WATCH_LOGGER
    for text in WATCH_RESTART_MESSAGES:
        assert text in source, f"kopf no longer logs {text!r}: modelapi_operator_watch_restarts_total would stay 0"


@pytest.mark.parametrize("verbose", [False, True])
def test_watch_restarts_are_counted_from_kopfs_log_lines(caplog: pytest.LogCaptureFixture, verbose: bool) -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    logger = logging.getLogger(KOPF_WATCH_LOGGER)
    before = (logger.level, list(logger.filters))
    try:
        metrics.count_watch_restarts(verbose=verbose)
        with caplog.at_level(logging.DEBUG, logger=KOPF_WATCH_LOGGER):
            logger.debug("Restarting the watch-stream for pods.v1 cluster-wide.")
            logger.debug("Watch-stream for pods.v1 in 'ml' is inactive, reconnecting.")
            logger.debug("Starting the watch-stream for pods.v1 cluster-wide.")
        assert value(metrics, "modelapi_operator_watch_restarts_total", cause="gone") == 1
        assert value(metrics, "modelapi_operator_watch_restarts_total", cause="inactive") == 1
        # counted either way; logged only with --verbose, as before
        assert len([r for r in caplog.records if r.name == KOPF_WATCH_LOGGER]) == (3 if verbose else 0)
    finally:
        logger.setLevel(before[0])
        logger.filters[:] = before[1]


def test_the_endpoint_serves_the_series_over_a_real_socket() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    with metrics.reconciling(triggers.error_reason):
        pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(metrics, f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'modelapi_operator_reconciles_total{result="success"} 1.0' in text
    assert f'modelapi_operator_build_info{{version="{package_version()}"}} 1.0' in text
    assert "modelapi_operator_reconciles_waiting 0.0" in text


def test_metrics_address_setting() -> None:
    assert OperatorSettings().metrics_address == "", "off unless asked for (the chart asks)"
    assert parse_address(OperatorSettings(metrics_address="0.0.0.0:8081").metrics_address) == ("0.0.0.0", 8081)
    assert parse_address("[::]:9000") == ("::", 9000)
    for wrong in ("8081", "host:port", "0.0.0.0:8081/metrics"):
        with pytest.raises(ValueError, match="metrics_address"):
            OperatorSettings(metrics_address=wrong)


def test_image_pull_secrets_setting() -> None:
    assert OperatorSettings().image_pull_secrets == []
    settings = OperatorSettings.model_validate({"image_pull_secrets": "regcred, mirror.pull"})
    assert settings.image_pull_secrets == ["regcred", "mirror.pull"]
    with pytest.raises(ValueError, match=r"not Secret names.*Bad_Name"):
        OperatorSettings.model_validate({"image_pull_secrets": "ok,Bad_Name"})


def test_every_operator_series_has_a_row_in_docs_metrics() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    metrics = OperatorMetrics(CollectorRegistry())
    names = [family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()]
    assert len(names) == 13
    missing = [name for name in names if f"| `{name}` |" not in doc]
    assert not missing, f"operator series without a row in docs/metrics.md: {missing}"
