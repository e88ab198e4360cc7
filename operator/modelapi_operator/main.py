"""``modelapi-operator``: run the kopf operator with the settings from MODELAPI_OPERATOR_* variables."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, cast

from prometheus_client.core import REGISTRY
from pydantic import ValidationError

from modelapi_operator import metrics
from modelapi_operator.redaction import install_log_redaction
from modelapi_operator.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    lines = [
        f"  MODELAPI_OPERATOR_{name.upper():<30} {field.description}"
        for name, field in OperatorSettings.model_fields.items()
    ]
    return argparse.ArgumentParser(
        prog="modelapi-operator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reconcile ModelAPI resources (serving.modelapi.io/v1alpha1) into Deployments, Services, "
        "HPAs, PDBs and HTTPRoutes.",
        epilog="settings (environment variables):\n" + "\n".join(lines),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--liveness", metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines: text, or json (one object per line); default MODELAPI_OPERATOR_LOG_FORMAT, else text",
    )
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings(**({"log_format": args.log_format} if args.log_format else {}))
    except ValidationError as error:
        sys.stderr.write(f"modelapi-operator: invalid settings:\n{error}\n")
        return 2

    # Imported only to run: `--help` and settings errors stay fast.
    import kopf  # noqa: PLC0415

    from modelapi_operator import handlers  # noqa: F401, PLC0415 - registers the handlers
    from modelapi_operator.peering import Peer  # noqa: PLC0415

    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(verbose=args.verbose, log_format=log_format)
    if not args.verbose:
        # kopf logs "Handler ... succeeded." at INFO for every handled watch event (some 20 per new ModelAPI, of its
        # children, pods and slices): a few % of the operator's CPU in a burst, for lines nobody reads. Its
        # warnings and errors (a handler failing, retried) stay, and so does what posting_level posts as Events.
        level = min(logging.WARNING, logging.getLevelName(settings.posting_level))
        logging.getLogger("kopf.objects").setLevel(level)
    # with the process_* and python_* collectors of the default registry
    operator_metrics = metrics.OperatorMetrics(REGISTRY)
    if settings.metrics_address:
        operator_metrics.count_watch_restarts(verbose=args.verbose)
        metrics.serve(operator_metrics, settings.metrics_address)
    # kopf logs whole bodies at debug level and posts its object log lines as Events: no query string in either
    install_log_redaction(logging.getLogger("kopf.objects"))
    # kopf and the resync loops compare the same identity and priority with the peering objects (peering.py)
    peer = Peer.create(settings.peering_priority)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        identity=cast(Any, peer.identity),
        priority=peer.priority,
        liveness_endpoint=args.liveness,
        # handlers.start makes the operator's context from these (context.py)
        memo=kopf.Memo(settings=settings, peer=peer, metrics=operator_metrics),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
