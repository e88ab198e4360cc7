"""The committed CRD is exactly what the pydantic API generates, and it is a usable structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelapi_operator.crd import build_crd, render_crd_yaml

CRD_PATH = Path(__file__).parents[3] / "crds" / "modelapi.yaml"


def _schema() -> dict[str, Any]:
    crd = build_crd()
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}" if path else name)
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_committed_crd_is_not_stale() -> None:
    assert CRD_PATH.read_text(encoding="utf-8") == render_crd_yaml(), "crds/modelapi.yaml is stale: run `make crds`"


def test_every_spec_field_is_documented() -> None:
    spec = _schema()["properties"]["spec"]
    undocumented = [path for path, node in _walk(spec, "spec") if not node.get("description")]
    assert undocumented == []


def test_schema_is_structural() -> None:
    """Kubernetes refuses non-structural schemas: every node has a type (or is int-or-string), no $ref, no
    nullable unions, no additionalProperties next to properties."""
    for path, node in _walk(_schema()):
        assert not {"$ref", "allOf", "title"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            assert not {"type", "anyOf"} & node.keys(), path
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert "anyOf" not in node, path
        if "properties" in node:
            assert "additionalProperties" not in node, path


def test_defaults_enums_and_bounds_come_from_the_models() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    autoscaling = spec["autoscaling"]
    assert autoscaling["default"] == {
        "minReplicas": 1,
        "maxReplicas": 5,
        "metric": "cpu",
        "target": 70,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 300,
    }
    assert autoscaling["properties"]["maxReplicas"] == {
        "default": 5,
        "description": "Most replicas.",
        "maximum": 1000,
        "minimum": 1,
        "type": "integer",
    }
    assert autoscaling["properties"]["metric"]["enum"] == ["cpu", "memory", "inFlight"]
    assert spec["model"]["properties"]["format"]["enum"] == ["onnx"]
    assert spec["rollout"]["properties"]["strategy"]["default"] == "RollingUpdate"
    assert spec["runtime"]["properties"]["resources"]["properties"]["memory"]["default"] == "2Gi"
    assert spec["model"]["required"] == ["uri"]
    assert "default" not in spec["rollout"]["properties"]["canary"], "an absent canary must stay absent"
    env = spec["runtime"]["properties"]["env"]
    assert env["x-kubernetes-list-type"] == "map"
    assert env["x-kubernetes-list-map-keys"] == ["name"]
    assert "default" not in env["items"]["properties"]["valueFrom"]


def test_cross_field_rules_are_cel_validations() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    rules = {rule["message"]: rule for rule in spec["autoscaling"]["x-kubernetes-validations"]}
    zero = rules["scaleToZeroAfterSeconds needs minReplicas: 0 (scale to zero)"]
    assert zero == {
        "rule": "!has(self.scaleToZeroAfterSeconds) || self.minReplicas == 0",
        "message": "scaleToZeroAfterSeconds needs minReplicas: 0 (scale to zero)",
        "fieldPath": ".scaleToZeroAfterSeconds",
    }
    # no schema default: it would make every ModelAPI "set" it, and the rule above refuse all of them
    assert "default" not in spec["autoscaling"]["properties"]["scaleToZeroAfterSeconds"]
    canary_rules = [rule["rule"] for rule in spec["rollout"]["properties"]["canary"]["x-kubernetes-validations"]]
    assert any("isSorted" in rule for rule in canary_rules)
    root_rules = _schema()["x-kubernetes-validations"]
    assert "self.metadata.name" in root_rules[0]["rule"]


def test_every_string_with_a_regex_rule_is_bounded() -> None:
    """CEL cost estimation needs maxLength on strings that rules run regexes over."""
    for path, node in _walk(_schema()["properties"]["spec"], "spec"):
        rules = " ".join(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
        if node.get("type") == "string" and "matches" in rules:
            assert "maxLength" in node, path


def test_resource_names_columns_and_subresources() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "modelapis.serving.modelapi.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("ModelAPI", "modelapis", ["mapi"])
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == [
        "Ready",
        "Reason",
        "URL",
        "Replicas",
        "Canary",
        "Revision",
        "Age",
        "Model",
        "Strategy",
        "LastKnownGood",
    ]
    wide = [column["name"] for column in version["additionalPrinterColumns"] if column.get("priority") == 1]
    assert wide == ["Model", "Strategy", "LastKnownGood"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert set(status) >= {
        "observedGeneration",
        "conditions",
        "url",
        "replicas",
        "readyReplicas",
        "revisions",
        "canary",
        "lastFailure",
        "coldStart",
    }


def test_committed_file_parses_as_one_crd() -> None:
    documents = list(yaml.safe_load_all(CRD_PATH.read_text(encoding="utf-8")))
    assert len(documents) == 1
    assert documents[0]["kind"] == "CustomResourceDefinition"
