"""``modelapi``: the model owner's command line.

``modelapi render -f model.yaml`` prints every child manifest, offline; its errors go to stderr as
``FILE: ModelAPI NAME: <field path>: <message>``, in the API server's words. ``get``, ``status``, ``logs`` and
``predict`` read a cluster with the user's kubeconfig (cli_commands.py). A failure exits with status 1, a usage
error with 2. There is never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelapi_operator import cli_commands, names
from modelapi_operator.api import ModelAPI, SpecError, format_validation_error
from modelapi_operator.api.errors import FieldProblem
from modelapi_operator.builders import Owner, RuntimeImages
from modelapi_operator.plan import desired_children
from modelapi_operator.settings import OperatorSettings

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
EXIT_INVALID = 1


class InputError(Exception):
    """A file that cannot be rendered; the message is complete and names the file."""


@dataclass(frozen=True)
class Source:
    path: str
    index: int
    document: Any

    @property
    def where(self) -> str:
        return f"{self.path} (document {self.index + 1})" if self.index else self.path


def _read_documents(path: str) -> Iterator[Source]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise InputError(f"{path}: invalid YAML{where}: {problem}") from None
    for index, document in enumerate(documents):
        if document is not None:
            yield Source(path, index, document)


def _parse(source: Source) -> ModelAPI | None:
    """The ModelAPI in ``source``, or None for a document of another kind."""
    document = source.document
    if not isinstance(document, dict):
        raise InputError(f"{source.where}: expected a Kubernetes object (a mapping), got {type(document).__name__}")
    if document.get("kind") != names.KIND:
        return None
    name = (
        (document.get("metadata") or {}).get("name", "<unnamed>")
        if isinstance(document.get("metadata"), dict)
        else "<unnamed>"
    )
    try:
        return ModelAPI.model_validate(document)
    except ValidationError as error:
        problems = format_validation_error(error).problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise InputError(f"{source.where}: ModelAPI {name} is invalid:\n{lines}") from None


def _render(
    model: ModelAPI, images: RuntimeImages, *, gateway_api: bool, namespace: str | None
) -> list[dict[str, Any]]:
    owner = Owner(
        name=model.metadata.name,
        namespace=namespace or model.metadata.namespace,
        uid=model.metadata.uid or PLACEHOLDER_UID,
    )
    return desired_children(model.spec, owner, images, gateway_api_installed=gateway_api, now=datetime.now(UTC))


def render(
    paths: Sequence[str],
    images: RuntimeImages,
    *,
    gateway_api: bool,
    namespace: str | None,
    output: str = "yaml",
) -> str:
    """All children of every ModelAPI in ``paths``: multi-document YAML, or ``kind/name`` lines (output="name")."""
    parts: list[str] = []
    errors: list[str] = []
    for path in paths:
        try:
            for source in _read_documents(path):
                try:
                    model = _parse(source)
                except InputError as error:
                    errors.append(str(error))
                    continue
                if model is None:
                    kind = source.document.get("kind", "<no kind>")
                    sys.stderr.write(f"{source.where}: skipping {kind} (not a {names.KIND})\n")
                    continue
                for child in _render(model, images, gateway_api=gateway_api, namespace=namespace):
                    if output == "name":
                        parts.append(f"{child['kind'].lower()}/{child['metadata']['name']}\n")
                        continue
                    header = f"# {child['kind']} of ModelAPI {model.metadata.name} ({source.where})\n"
                    parts.append(header + yaml.safe_dump(child, sort_keys=False, width=120))
        except InputError as error:
            errors.append(str(error))
    if errors:
        raise InputError("\n".join(errors))
    return ("" if output == "name" else "---\n").join(parts)


def _cluster_options() -> argparse.ArgumentParser:
    """The options of every command that reads a cluster, as kubectl spells them."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    options.add_argument("--context", help="kubeconfig context (default: the current context)")
    options.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    return options


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _add_cluster_commands(commands: Any) -> None:
    options = _cluster_options()
    get_cmd = commands.add_parser(
        "get",
        parents=[options],
        help="list ModelAPIs: ready, reason, URL, revisions and weights, replicas, age",
        description="List the ModelAPIs of a namespace (or, with -A, of every namespace): Ready and its reason, "
        "the URL, each serving revision with its role and traffic weight, ready/desired replicas of the stable "
        "revision, and age.",
    )
    get_cmd.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace's ModelAPIs")
    status_cmd = commands.add_parser(
        "status",
        parents=[options],
        help="one screen about a ModelAPI: conditions, revisions, canary, cold start, last failure, events",
        description="Show one ModelAPI: its conditions (status, reason, message), revisions with weights and "
        "replicas, the canary's analysis against its thresholds, cold-start phases, the last-known-good revision, "
        "the last failure and the recent Events of the ModelAPI and its children.",
    )
    status_cmd.add_argument("name", help="the ModelAPI's name")
    status_cmd.add_argument(
        "--events", type=_positive, default=10, metavar="N", help="how many recent events to show (default 10)"
    )
    logs_cmd = commands.add_parser(
        "logs",
        parents=[options],
        help="the runtime logs of every replica, each line prefixed with its pod and revision",
        description="Print the runtime container's log of every pod of a ModelAPI (or of one revision), each line "
        "prefixed with [POD REVISION]. With -f, follow them all; pods that start later join, and a runtime that "
        "restarts is followed into its new run.",
    )
    logs_cmd.add_argument("name", help="the ModelAPI's name")
    logs_cmd.add_argument("--revision", help="only this revision: its hash or its name <name>-<hash>")
    logs_cmd.add_argument("--tail", type=_positive, metavar="N", help="the last N lines of each pod (default: all)")
    logs_cmd.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until interrupted")
    logs_cmd.add_argument(
        "-p", "--previous", action="store_true", help="the log of each runtime's previous run (after a crash)"
    )
    predict_cmd = commands.add_parser(
        "predict",
        parents=[options],
        help="send a prediction request to a ModelAPI and print the answer",
        description="Send a KServe v1 request (or, with --v2, an Open Inference Protocol v2 request) to a ModelAPI "
        "and print the model's answer. The request goes to spec.expose's address when the model has one and it "
        "answers, else through the Kubernetes API's service proxy to the model's Service (which needs get and "
        "create on services/proxy). An answer of 4xx or 5xx is printed as the model gave it, with exit status 1.",
    )
    predict_cmd.add_argument("name", help="the ModelAPI's name")
    predict_cmd.add_argument(
        "-d",
        "--data",
        required=True,
        metavar="FILE|JSON",
        help='the request: inline JSON, a JSON file, or - for stdin; v1 takes {"instances": [...]} or a bare list',
    )
    predict_cmd.add_argument("--v2", action="store_true", help='send an Open Inference Protocol v2 request {"inputs"}')
    predict_cmd.add_argument(
        "--via",
        choices=["auto", "service", "expose"],
        default="auto",
        help="auto (default): spec.expose's address when set and reachable, else the service proxy; service: "
        "always the service proxy; expose: only spec.expose's address",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelapi", description="modelapi: serve ONNX models on Kubernetes.")
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser(
        "render",
        help="print the Kubernetes objects the operator creates for ModelAPI manifests",
        description="Validate ModelAPI manifests and print every child object (Deployment, Services, "
        "HorizontalPodAutoscaler, PodDisruptionBudget, HTTPRoute) as multi-document YAML, for review in GitOps. "
        "ownerReferences carry metadata.uid when the manifest has one, else a zero UUID placeholder. "
        "Documents of other kinds are skipped.",
    )
    render_cmd.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file, or - for stdin",
    )
    render_cmd.add_argument("-n", "--namespace", help="namespace to render into (default: the manifest's)")
    render_cmd.add_argument(
        "--gateway-api",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="assume the Gateway API CRDs are installed, for trafficRouting auto (default: yes)",
    )
    render_cmd.add_argument(
        "-o", "--output", choices=["yaml", "name"], default="yaml", help="yaml (default) or name: one kind/name a line"
    )
    defaults = OperatorSettings()
    render_cmd.add_argument("--cpu-image", default=defaults.cpu_image, help="default runtime image for CPU models")
    render_cmd.add_argument("--gpu-image", default=defaults.gpu_image, help="default runtime image for GPU models")
    render_cmd.add_argument(
        "--image-pull-secret",
        action="append",
        default=[],
        metavar="NAME",
        help="a Secret every model pod pulls its image with, as the chart's runtimeImages.pullSecrets (repeatable)",
    )
    _add_cluster_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "logs" and args.follow and args.previous:
        parser.error("logs: --previous cannot be combined with --follow (a finished run's log does not grow)")
    if args.command != "render":
        return cli_commands.run(args)
    images = RuntimeImages(cpu=args.cpu_image, gpu=args.gpu_image, pull_secrets=tuple(args.image_pull_secret))
    try:
        output = render(
            args.filename, images, gateway_api=args.gateway_api, namespace=args.namespace, output=args.output
        )
    except InputError as error:
        sys.stderr.write(f"modelapi render: {error}\n")
        return EXIT_INVALID
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:  # `modelapi render ... | head` is fine
        sys.stderr.close()
    return 0


__all__ = ["FieldProblem", "SpecError", "main", "render"]

if __name__ == "__main__":
    raise SystemExit(main())
