"""Golden files: ``modelapi render`` (the operator's planner with nothing observed) for representative ModelAPIs,
reviewed as a diff; test_plan_golden.py has the planner's whole output for each rollout phase.

Run ``pytest tests/unit --update-golden`` after an intended change and review the diff of
tests/unit/operator/golden/*/expected.yaml like any other change of behaviour.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelapi_operator import cli
from modelapi_operator.api import ModelAPI
from modelapi_operator.builders import (
    Owner,
    RuntimeImages,
    build_deployment,
    build_httproute,
    build_service,
    compute_revision,
)

GOLDEN = Path(__file__).parent / "golden"
IMAGES = RuntimeImages(cpu="modelapi/runtime:test", gpu="modelapi/runtime-gpu:test")
RENDER_CASES = ["iris", "gpu", "canary-gateway", "inflight-single-replica", "scale-to-zero", "prediction-log"]


def _check(case_dir: Path, actual: str, update: bool) -> None:
    expected_path = case_dir / "expected.yaml"
    if update:
        expected_path.write_text(actual, encoding="utf-8")
    assert expected_path.exists(), f"missing {expected_path}: run pytest --update-golden"
    assert actual == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", RENDER_CASES)
def test_render_matches_golden(case: str, update_golden: bool) -> None:
    actual = cli.render([str(GOLDEN / case / "modelapi.yaml")], IMAGES, gateway_api=True, namespace=None)
    # The header comments name the source path; keep them relative so the files do not depend on the checkout.
    actual = actual.replace(str(GOLDEN) + "/", "")
    _check(GOLDEN / case, actual, update_golden)


def test_canary_in_progress_matches_golden(update_golden: bool) -> None:
    """A canary mid-rollout: the canary Deployment sized by the operator, its Service, and a 10% HTTPRoute split."""
    document = yaml.safe_load((GOLDEN / "canary-in-progress" / "modelapi.yaml").read_text(encoding="utf-8"))
    model = ModelAPI.model_validate(document)
    owner = Owner(name=model.metadata.name, namespace=model.metadata.namespace, uid=str(model.metadata.uid))
    revision = compute_revision(model.spec, owner, IMAGES)
    from modelapi_operator.api import GatewayRef

    children = [
        build_deployment(model.spec, owner, revision, IMAGES, replicas=1),
        build_service(owner, "canary", revision),
        build_httproute(GatewayRef(name="public"), owner, "0123abcd", canary_weight=10),
    ]
    actual = "---\n".join(yaml.safe_dump(child, sort_keys=False, width=120) for child in children)
    _check(GOLDEN / "canary-in-progress", actual, update_golden)


def test_iris_example_renders_the_documented_children() -> None:
    rendered = cli.render(["examples/iris/model.yaml"], IMAGES, gateway_api=True, namespace=None)
    kinds = [(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(rendered)]
    assert [kind for kind, _ in kinds] == [
        "Deployment",
        "Service",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    assert [name for _, name in kinds][1:] == ["iris", "iris-stable", "iris", "iris"]
