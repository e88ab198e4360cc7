"""The operator's context (issue 17, item 4): nothing is built when the operator's modules are imported; the startup
handler makes the context from what main.py puts in kopf's memo, and every handler reaches it through its memo."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry

from modelapi_operator import handlers
from modelapi_operator.context import MEMO_KEY, OperatorContext, context_of
from modelapi_operator.indices import INDEX_NAMES
from modelapi_operator.metrics import OperatorMetrics
from modelapi_operator.peering import Peer
from modelapi_operator.settings import OperatorSettings


def test_importing_the_handlers_reads_no_settings() -> None:
    """A setting that main.py would refuse does not break an import: settings are read at start-up, not before."""
    env = {**os.environ, "MODELAPI_OPERATOR_RESYNC_SECONDS": "not-a-number"}
    code = "import modelapi_operator.handlers, modelapi_operator.resync, modelapi_operator.triggers"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_each_replica_gets_its_own_identity_and_a_priority_unless_one_is_set() -> None:
    first, second = Peer.create(None), Peer.create(None)
    assert first.identity != second.identity
    assert Peer.create(7).priority == 7


async def test_startup_puts_the_context_in_the_memo_and_cleanup_stops_its_loops() -> None:
    settings = OperatorSettings(peering="modelapi", namespaces=["ml"], resync_seconds=5)
    memo = kopf.Memo(settings=settings, peer=Peer("me", 5), metrics=OperatorMetrics(CollectorRegistry()))
    start: Any = handlers.start  # kopf's decorator types it as kopf calls it, with every kwarg
    close: Any = handlers.close
    kopf_settings = kopf.OperatorSettings()
    await start(settings=kopf_settings, memo=memo, **{name: {} for name in INDEX_NAMES})
    context = context_of(memo)
    assert memo[MEMO_KEY] is context
    assert context.settings is settings
    assert context.standby.peer == Peer("me", 5)
    assert context.standby.places()[0][1] == "ml"
    assert context.logged_in is False
    assert kopf_settings.peering.lifetime == settings.peering_lifetime_seconds
    assert kopf_settings.queueing.idle_timeout == handlers.WORKER_IDLE_SECONDS
    assert len(context.background) == 2
    assert not any(task.done() for task in context.background)
    await close(memo=memo)
    await asyncio.sleep(0)
    assert all(task.cancelled() for task in context.background)


async def test_startup_without_mains_memo_says_how_to_start_the_operator() -> None:
    start: Any = handlers.start
    with pytest.raises(kopf.PermanentError, match="modelapi-operator"):
        await start(settings=kopf.OperatorSettings(), memo=kopf.Memo(), **{name: {} for name in INDEX_NAMES})


def test_a_handler_without_the_context_says_so() -> None:
    with pytest.raises(LookupError, match="modelapi-operator"):
        context_of(kopf.Memo())


async def test_the_client_refuses_requests_until_kopf_logs_in() -> None:
    context = OperatorContext.create(OperatorSettings(), Peer("me", 1), OperatorMetrics(CollectorRegistry()))
    try:
        reconciler = await context.current_reconciler()  # the Gateway API check fails softly: asked again soon
        assert reconciler is context.reconciler
        assert context.gateway_checked_at < 0
    finally:
        await context.close()
