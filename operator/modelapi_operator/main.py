"""``modelapi-operator``: run the kopf operator with the settings from MODELAPI_OPERATOR_* variables."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, cast

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
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings()
    except ValidationError as error:
        sys.stderr.write(f"modelapi-operator: invalid settings:\n{error}\n")
        return 2

    # Imported only to run: `--help` and settings errors stay fast, and handlers read settings at import.
    import kopf  # noqa: PLC0415

    from modelapi_operator import handlers  # noqa: PLC0415 - registers the handlers

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if settings.metrics_address:
        metrics.METRICS.count_watch_restarts(verbose=args.verbose)
        metrics.serve(metrics.METRICS, settings.metrics_address)
    # kopf logs whole bodies at debug level and posts its object log lines as Events: no query string in either
    install_log_redaction(logging.getLogger("kopf.objects"))
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        # the same identity and priority the resync loops compare with the peering objects (handlers._standing_by)
        identity=cast(Any, handlers.PEERING_IDENTITY),
        priority=handlers.PEERING_PRIORITY,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
