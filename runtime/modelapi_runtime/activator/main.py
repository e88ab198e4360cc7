"""``modelapi-activator``: serve held and forwarded requests on one port, /healthz on another; stop on SIGTERM
after the requests in progress (up to the hold timeout)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from modelapi_runtime.activator.holding import Holder
from modelapi_runtime.activator.kube import Kube, KubeError, from_kubeconfig, in_cluster
from modelapi_runtime.activator.server import build_app, build_health_app
from modelapi_runtime.activator.settings import ActivatorSettings
from modelapi_runtime.tracing import TracingConfigError, open_activator_tracer

log = logging.getLogger("modelapi_activator")


async def serve(settings: ActivatorSettings) -> None:
    credentials = from_kubeconfig(settings.kubeconfig) if settings.kubeconfig else in_cluster()
    kube = Kube(credentials)
    holder = Holder(kube, settings)
    tracer = open_activator_tracer()  # the standard OTEL_* variables (the chart's tracing values); None: off
    if tracer is not None:
        tracer.exporter.start()
    runners = [
        web.AppRunner(build_app(settings, holder, tracer), shutdown_timeout=settings.hold_timeout_seconds),
        web.AppRunner(build_health_app(holder)),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        for runner, port in zip(runners, (settings.port, settings.health_port), strict=True):
            await runner.setup()
            await web.TCPSite(runner, settings.host, port).start()
        log.info("activator listening on %s:%d (health %d)", settings.host, settings.port, settings.health_port)
        await stop.wait()
        log.info("stopping: %d requests held", holder.held)
    finally:
        for runner in runners:
            await runner.cleanup()
        await holder.close()
        await kube.close()
        if tracer is not None:  # the spans still queued are exported
            await asyncio.to_thread(tracer.exporter.stop)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(
            "modelapi-activator: holds requests for ModelAPIs at zero replicas until one is ready. Settings are "
            "MODELAPI_ACTIVATOR_* variables:"
        )
        for name, info in ActivatorSettings.model_fields.items():
            print(f"  MODELAPI_ACTIVATOR_{name.upper()}: {info.description} (default {info.default})")
        return 0
    try:
        settings = ActivatorSettings()
        open_activator_tracer()  # a bad OTEL_* value is named here, before anything starts
    except ValidationError as error:
        print(f"modelapi-activator: invalid settings: {error}", file=sys.stderr)
        return 2
    except TracingConfigError as error:
        print(f"modelapi-activator: tracing: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except KubeError as error:
        print(f"modelapi-activator: {error.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
