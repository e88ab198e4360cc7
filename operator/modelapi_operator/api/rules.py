"""Validation rules written once, enforced twice: by the API server (CEL) and by pydantic.

A :class:`CelRule` holds a CEL expression for the CRD's ``x-kubernetes-validations`` and the
Python predicate that means the same thing. Both report the same ``message``, so ``modelapi
render`` and ``kubectl apply`` refuse a bad manifest in the same words. e2e tests apply the same
invalid manifests to a real API server to keep the two halves honest.

Use it on a field (``Annotated[str, CelRule(...)]``: ``self`` is the value) or on a model via
``ModelRules`` (``self`` is the object; ``field`` names the sub-field the error is reported on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

RULE_ERROR_TYPE = "modelapi_rule"
X_VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class CelRule:
    """One rule: CEL for the API server, ``check`` for Python; ``check`` returns True when valid."""

    cel: str
    message: str
    check: Callable[[Any], bool] = field(compare=False)
    field: str | None = None  # for model rules: the sub-field (camelCase) the error points at

    def as_schema(self) -> dict[str, str]:
        schema = {"rule": self.cel, "message": self.message}
        if self.field:
            schema["fieldPath"] = f".{self.field}"
        return schema

    def error(self) -> PydanticCustomError:
        context = {"field": self.field} if self.field else None
        return PydanticCustomError(RULE_ERROR_TYPE, self.message, context)

    # -- used as Annotated[...] metadata on a field -------------------------------------------
    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            if not self.check(value):
                raise self.error()
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(X_VALIDATIONS, []).append(self.as_schema())
        return json_schema


def check_model_rules(obj: Any, rules: tuple[CelRule, ...]) -> None:
    """Raise the first broken model-level rule as a pydantic error."""
    for rule in rules:
        if not rule.check(obj):
            raise rule.error()
