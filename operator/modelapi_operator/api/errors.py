"""Turn pydantic validation errors into messages in the API server's words.

``modelapi render`` and the operator report a bad spec as ``<field path>: <message>``, using the
phrases the Kubernetes API server uses for the same schema violation, so a user sees one
vocabulary whether the manifest was refused by ``kubectl apply`` or by ``modelapi render``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from modelapi_operator.api.rules import RULE_ERROR_TYPE

# Segments pydantic adds to a location for union members and wrapped validators; not field names.
_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})

_TYPE_NAMES = {
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
}


@dataclass(frozen=True)
class FieldProblem:
    """One problem: the field path (``spec.autoscaling.minReplicas``) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A manifest that cannot be served; ``problems`` names every offending field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def _path(loc: Iterable[int | str], extra: str | None = None) -> str:
    path = ""
    for segment in loc:
        if isinstance(segment, int):
            path += f"[{segment}]"
        elif segment in _TYPE_TAGS or "[" in segment:
            continue
        else:
            path += f".{segment}" if path else segment
    if extra:
        path += extra if extra.startswith("[") else (f".{extra}" if path else extra)
    return path


def _message(error: ErrorDetails, path: str) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == RULE_ERROR_TYPE:
        return error["msg"]
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return f'unknown field "{path}"'
    if kind == "greater_than_equal":
        return f"should be greater than or equal to {ctx['ge']}"
    if kind == "greater_than":
        return f"should be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"should be less than or equal to {ctx['le']}"
    if kind == "less_than":
        return f"should be less than {ctx['lt']}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"').replace(" or ", ", ")
        return f'Unsupported value: "{error["input"]}": supported values: {expected}'
    if kind == "string_too_long":
        return f"Too long: may not be more than {ctx['max_length']} bytes"
    if kind == "string_too_short":
        return f"should be at least {ctx['min_length']} chars long"
    if kind == "too_long":
        return f"Too many: must have at most {ctx['max_length']} items"
    if kind in _TYPE_NAMES:
        return f"must be of type {_TYPE_NAMES[kind]}"
    return str(error["msg"])


def problems_from(error: ValidationError) -> list[FieldProblem]:
    """Every distinct problem in ``error``, in the order pydantic found them."""
    seen: dict[str, FieldProblem] = {}
    for detail in error.errors(include_url=False):
        ctx = detail.get("ctx") or {}
        field = ctx.get("field") if detail["type"] == RULE_ERROR_TYPE else None
        path = _path(detail["loc"], field)
        problem = FieldProblem(path, _message(detail, path))
        # A value that fits no member of a union (int-or-string) yields one error per member: keep the first.
        seen.setdefault(path if detail["type"] in _TYPE_NAMES else str(problem), problem)
    return list(seen.values())


def format_validation_error(error: ValidationError) -> SpecError:
    return SpecError(problems_from(error))
