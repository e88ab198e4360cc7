"""plan_children as the operator's plan tests call it: the revision computed from the spec as the reconciler does,
with the owner, runtime images and clock of the test module, and no Gateway API unless the test says so."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, compute_revision
from modelapi_operator.plan import Plan, PlanInput, plan_children


def plan_for(
    spec: ModelAPISpec,
    deployments: list[dict[str, Any]],
    *,
    owner: Owner,
    images: RuntimeImages,
    now: datetime,
    gateway_api_installed: bool = False,
    **extra: Any,
) -> Plan:
    """The plan for spec with these Deployments in the cluster; extra: the other fields of PlanInput."""
    return plan_children(
        PlanInput(
            spec=spec,
            owner=owner,
            revision=compute_revision(spec, owner, images),
            images=images,
            deployments=deployments,
            now=now,
            gateway_api_installed=gateway_api_installed,
            **extra,
        )
    )
