"""The base of every API model: frozen, unknown fields refused, camelCase on the wire."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from modelapi_operator.api.rules import X_VALIDATIONS, CelRule, check_model_rules


def _add_model_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "__rules__", ())
    if rules:
        schema.setdefault(X_VALIDATIONS, []).extend(rule.as_schema() for rule in rules)


class ApiModel(BaseModel):
    """Spec models: immutable once validated; a typo in a field name is an error, not a silent no-op."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,  # like the API server: "5" is not an integer, 1 is not a string
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_extra=_add_model_rules,
    )

    __rules__: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_model_rules(self) -> Self:
        check_model_rules(self, type(self).__rules__)
        return self


class StatusModel(BaseModel):
    """Status models: written by the operator; read back leniently so an older operator can parse a newer status."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
