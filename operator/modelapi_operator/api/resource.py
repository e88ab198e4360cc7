"""A whole ModelAPI object as read from a manifest or the API server."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelapi_operator import names
from modelapi_operator.api import patterns as p
from modelapi_operator.api.rules import CelRule, check_model_rules
from modelapi_operator.api.spec import ModelAPISpec
from modelapi_operator.api.status import ModelAPIStatus

NameRule = CelRule(
    cel=f"size(self.metadata.name) <= {names.MAX_NAME_LENGTH} && "
    f"{p.cel_matches(p.DNS1035_LABEL, 'self.metadata.name')}",
    message=f"metadata.name must be at most {names.MAX_NAME_LENGTH} characters of lowercase letters, digits and "
    "'-', starting with a letter and ending with a letter or digit, so that every child name (<name>-<revision>, "
    "<name>-canary) is a valid Service name",
    check=lambda meta: len(meta.name) <= names.MAX_NAME_LENGTH and p.search(p.DNS1035_LABEL, meta.name),
    field=None,
)
# Two ModelAPIs of one namespace must never claim the same child: ``x``'s Services ``x-stable`` and ``x-canary`` are
# the ``<name>`` Services of ModelAPIs named ``x-stable`` and ``x-canary``, and ``x``'s HTTPRoute ``x-expose``
# (spec.expose) is the ``<name>`` HTTPRoute (a Gateway API canary) of a ModelAPI named ``x-expose``. No other child
# can collide: HPA and PDB are ``<name>`` only; Deployments are ``<name>-<revision>`` with a fixed-length revision
# of hex digits; the activator's EndpointSlices are ``<service>-activator``, of this ModelAPI's own Services, while
# the EndpointSlices Kubernetes makes for a Service ``<name>-activator`` carry a generated suffix.
_RESERVED = names.RESERVED_NAME_SUFFIXES
NameSuffixRule = CelRule(
    cel=" && ".join(f"!self.metadata.name.endsWith('{suffix}')" for suffix in _RESERVED),
    message=f"metadata.name must not end with {', '.join(_RESERVED[:-1])} or {_RESERVED[-1]}: the Services "
    f"<name>{names.STABLE_SUFFIX} and <name>{names.CANARY_SUFFIX} and the HTTPRoute <name>{names.EXPOSE_SUFFIX} "
    "belong to the ModelAPI named without the suffix (choose another name)",
    check=lambda meta: not meta.name.endswith(names.RESERVED_NAME_SUFFIXES),
    field=None,
)
NAME_RULES = (NameRule, NameSuffixRule)


class ObjectMeta(BaseModel):
    """The metadata fields the operator uses; everything else is kept but not interpreted."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(min_length=1, description="Object name.")
    namespace: str = Field(default="default", description="Namespace.")
    uid: str | None = Field(default=None, description="Set by the API server.")
    generation: int | None = Field(default=None, description="Set by the API server.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelAPI(BaseModel):
    """apiVersion serving.modelapi.io/v1alpha1, kind ModelAPI."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    api_version: Literal["serving.modelapi.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelAPI"]
    metadata: ObjectMeta
    spec: ModelAPISpec
    status: ModelAPIStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _check_name(cls, metadata: ObjectMeta) -> ObjectMeta:
        check_model_rules(metadata, NAME_RULES)
        return metadata
