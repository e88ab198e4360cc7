"""docs/api.md has a row for every field of the ModelAPI (read from crds/modelapi.yaml, which the pydantic API
generates) and for every setting of the runtime (read from RuntimeSettings): a field added without docs fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from modelapi_runtime.settings import RuntimeSettings, env_var_name

ROOT = Path(__file__).resolve().parents[3]
API_DOC = ROOT / "docs" / "api.md"
# A path in the first cell of a Markdown table row: | `spec.model.uri` | ...
DOC_ROW = re.compile(r"^\|\s*`([^`]+)`")


def _fields(schema: Mapping[str, Any], path: str) -> Iterator[str]:
    """Every field under ``path``: objects, their properties, and ``[]`` for the items of a list of objects."""
    items = schema.get("items") or {}
    if schema.get("type") == "array" and items.get("properties"):
        yield path
        yield from _fields(items, path + "[]")
        return
    yield path
    if not schema.get("x-kubernetes-preserve-unknown-fields"):
        for name, sub in (schema.get("properties") or {}).items():
            yield from _fields(sub, f"{path}.{name}")


def crd_fields() -> list[str]:
    crd = yaml.safe_load((ROOT / "crds" / "modelapi.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    return [field for root in ("spec", "status") for field in _fields(properties[root], root) if field != root]


def documented() -> set[str]:
    return {match.group(1) for line in API_DOC.read_text().splitlines() if (match := DOC_ROW.match(line))}


def test_every_modelapi_field_has_a_row_in_docs_api() -> None:
    fields = crd_fields()
    assert {"spec.model.uri", "spec.runtime.env[].valueFrom.secretKeyRef.key", "status.conditions[].reason"} <= set(
        fields
    )
    missing = [field for field in fields if field not in documented()]
    assert not missing, f"fields of crds/modelapi.yaml without a row in docs/api.md: {missing}"


def test_every_runtime_setting_has_a_row_in_docs_api() -> None:
    rows = [line for line in API_DOC.read_text().splitlines() if line.startswith("| `--")]
    missing = [
        field
        for field in RuntimeSettings.model_fields
        if not any(f"`--{field.replace('_', '-')}`" in row and f"`{env_var_name(field)}`" in row for row in rows)
    ]
    assert not missing, f"runtime settings without a row (flag and variable) in docs/api.md: {missing}"
