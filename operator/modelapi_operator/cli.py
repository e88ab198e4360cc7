"""``modelapi``: the user's command line. ``modelapi render -f model.yaml`` prints every child manifest.

Errors go to stderr as ``FILE: ModelAPI NAME: <field path>: <message>``, in the API server's words,
with exit status 1; a usage error exits 2. There is never a traceback.
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

from modelapi_operator import names
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
