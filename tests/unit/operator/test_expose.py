"""spec.expose: the API's validation, the route's builder, who holds a host and paths, the Exposed condition, and
the planner's output with it (golden files tests/unit/operator/golden/plan-exposed-*/expected.yaml)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from plan_given import plan_for
from pydantic import ValidationError
from test_plan_golden import IMAGES, OLD_URI, OWNER, STEPS, T0, _canary, _serving, _spec, plan_document

from modelapi_operator.api import ExposeSpec, ModelAPISpec
from modelapi_operator.builders import (
    CLAIM_ANNOTATION,
    EXPOSE_LABEL,
    Owner,
    build_expose_route,
    expose_claim,
)
from modelapi_operator.expose import Exposure, claim_holder, exposed_condition, external_url
from modelapi_operator.plan import Plan
from modelapi_operator.reasons import (
    EXPOSED,
    GATEWAY_API_NOT_INSTALLED,
    GATEWAY_NOT_FOUND,
    HOST_PATH_TAKEN,
    LISTENER_NOT_FOUND,
    ROUTE_NOT_ACCEPTED,
    ROUTE_PENDING,
)
from modelapi_operator.revision_record import CanaryProgress

GOLDEN = Path(__file__).parent / "golden"
CLUSTER_URL = "http://iris.ml.svc.cluster.local"


def _expose(**fields: Any) -> ExposeSpec:
    return ExposeSpec.model_validate({"hostname": "models.example.com", "gateway": {"name": "public"}, **fields})


# ---- API ------------------------------------------------------------------------------------------------------------


def test_expose_accepts_a_host_a_prefix_and_a_gateway_in_another_namespace() -> None:
    spec = ModelAPISpec.model_validate(
        {
            "model": {"uri": OLD_URI},
            "expose": {
                "hostname": "models.example.com",
                "pathPrefix": "/team-a/v2024",
                "gateway": {"name": "public", "namespace": "gateway", "sectionName": "https"},
            },
        }
    )
    assert spec.expose is not None
    assert spec.expose.path_prefix == "/team-a/v2024"
    assert spec.expose.gateway.namespace == "gateway"


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"hostname": "Models.Example.com"}, "hostname", "must be a DNS host name"),
        ({"hostname": "*.example.com"}, "hostname", "no wildcard"),
        ({"hostname": "models.example.com:8080"}, "hostname", "no port"),
        ({"pathPrefix": "team-a"}, "pathPrefix", "must be a path such as /team-a"),
        ({"pathPrefix": "/team-a/"}, "pathPrefix", "no trailing '/'"),
        ({"pathPrefix": "/"}, "pathPrefix", "must be a path"),
        ({"pathPrefix": "/a b"}, "pathPrefix", "must be a path"),
    ],
)
def test_bad_expose_fields_are_refused_with_the_field_and_what_to_write(
    fields: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _expose(**fields)
    text = str(caught.value)
    assert says in text
    assert ("path_prefix" if where == "pathPrefix" else where) in text or where in text


def test_the_crd_validates_expose_with_the_same_rules() -> None:
    crd = yaml.safe_load((Path(__file__).parents[3] / "crds" / "modelapi.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["expose"]
    assert schema["required"] == ["gateway", "hostname"] or set(schema["required"]) == {"gateway", "hostname"}
    rules = yaml.safe_dump(schema)
    assert "must be a DNS host name" in rules
    assert "must be a path such as /team-a" in rules


# ---- builder --------------------------------------------------------------------------------------------------------


def _paths(route: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    found = []
    for rule in route["spec"]["rules"]:
        match = rule["matches"][0]["path"]
        rewrite = next((f["urlRewrite"]["path"] for f in rule["filters"] if f["type"] == "URLRewrite"), None)
        target = None if rewrite is None else rewrite.get("replaceFullPath") or rewrite.get("replacePrefixMatch")
        found.append((match["type"], match["value"], target))
    return found


def test_the_route_claims_only_this_models_paths_on_the_host() -> None:
    route = build_expose_route(_expose(), OWNER, "abc12345", None, split=False)
    assert route["metadata"]["name"] == "iris-expose"
    assert route["spec"]["hostnames"] == ["models.example.com"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    # /v1/models/iris:predict is one path segment after /v1/models: a prefix match of /v1/models/iris misses it
    assert _paths(route) == [
        ("Exact", "/v1/models/iris", None),
        ("Exact", "/v1/models/iris:predict", None),
        ("PathPrefix", "/v2/models/iris", None),
    ]
    for rule in route["spec"]["rules"]:
        assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "iris", "port": 80, "weight": 100}]
        header = rule["filters"][0]["requestHeaderModifier"]["set"][0]
        assert header == {"name": "X-ModelAPI-Target", "value": "ml/iris"}  # the activator serves it at zero
    assert route["metadata"]["labels"][EXPOSE_LABEL] == "true"
    assert route["metadata"]["annotations"][CLAIM_ANNOTATION] == "ml/public models.example.com/v{1,2}/models/iris"
    assert route["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid


def test_a_path_prefix_is_matched_and_removed_before_the_model() -> None:
    expose = _expose(pathPrefix="/team-a", gateway={"name": "public", "namespace": "gw", "sectionName": "https"})
    route = build_expose_route(expose, OWNER, "abc12345", None, split=False)
    assert _paths(route) == [
        ("Exact", "/team-a/v1/models/iris", "/v1/models/iris"),
        ("Exact", "/team-a/v1/models/iris:predict", "/v1/models/iris:predict"),
        ("PathPrefix", "/team-a/v2/models/iris", "/v2/models/iris"),
    ]
    rewrites = [f["urlRewrite"]["path"]["type"] for r in route["spec"]["rules"] for f in r["filters"][1:]]
    assert rewrites == ["ReplaceFullPath", "ReplaceFullPath", "ReplacePrefixMatch"]
    assert route["spec"]["parentRefs"][0] | {} == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "public",
        "namespace": "gw",
        "sectionName": "https",
    }
    assert (
        route["metadata"]["annotations"][CLAIM_ANNOTATION] == "gw/public models.example.com/team-a/v{1,2}/models/iris"
    )


def test_with_a_gateway_api_canary_the_route_splits_like_the_canarys_own_route() -> None:
    route = build_expose_route(_expose(), OWNER, "abc12345", 30, split=True)
    weights = [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [("iris-stable", 70), ("iris-canary", 30)]
    steady = build_expose_route(_expose(), OWNER, "abc12345", None, split=True)
    assert [(b["name"], b["weight"]) for b in steady["spec"]["rules"][0]["backendRefs"]] == [("iris-stable", 100)]


# ---- who holds a host and paths -------------------------------------------------------------------------------------


def _route(owner: Owner, expose: ExposeSpec, created: str, uid: str | None = None) -> dict[str, Any]:
    route = build_expose_route(expose, owner, "abc12345", None, split=False)
    route["metadata"]["creationTimestamp"] = created
    route["metadata"]["uid"] = uid or f"route-{owner.uid}"
    return route


OTHER = Owner(name="iris", namespace="team-b", uid="uid-other")


SHARED = {"name": "public", "namespace": "gateway"}  # one Gateway for both namespaces


def test_the_first_route_keeps_the_host_and_paths_and_the_second_is_told_who_holds_them() -> None:
    expose = _expose(gateway=SHARED)
    theirs = _route(OTHER, expose, "2026-11-30T10:00:00Z")
    assert claim_holder(expose, OWNER, [theirs]) == "team-b/iris"  # ours not created: theirs holds it
    ours = _route(OWNER, expose, "2026-11-30T11:00:00Z")
    assert claim_holder(expose, OWNER, [theirs, ours]) == "team-b/iris"  # both exist: the older one holds it
    assert claim_holder(expose, OTHER, [theirs, ours]) is None  # ... and keeps its route


def test_other_hosts_prefixes_gateways_and_names_share_nothing() -> None:
    expose = _expose(gateway=SHARED)
    others = [
        _route(OTHER, _expose(hostname="other.example.com", gateway=SHARED), "2026-11-30T10:00:00Z"),
        _route(OTHER, _expose(pathPrefix="/team-b", gateway=SHARED), "2026-11-30T10:00:00Z"),
        _route(OTHER, _expose(gateway={"name": "internal", "namespace": "gateway"}), "2026-11-30T10:00:00Z"),
        _route(Owner(name="mlp", namespace="ml", uid="uid-mlp"), expose, "2026-11-30T10:00:00Z"),
    ]
    assert claim_holder(expose, OWNER, others) is None
    # without a namespace the Gateway is each ModelAPI's own namespace's: two Gateways, no shared address
    assert expose_claim(_expose(), OWNER) != expose_claim(_expose(), OTHER)


# ---- the Exposed condition and status.url ---------------------------------------------------------------------------


def _gateway(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "public", "namespace": "ml"}, "spec": {"listeners": list(listeners)}}


HTTP = {"name": "http", "protocol": "HTTP", "port": 80}
HTTPS = {"name": "https", "protocol": "HTTPS", "port": 443}


def _accepted_route(status: str = "True", reason: str = "Accepted", message: str = "") -> dict[str, Any]:
    route = build_expose_route(_expose(), OWNER, "abc12345", None, split=False)
    condition = {"type": "Accepted", "status": status, "reason": reason, "message": message}
    route["status"] = {"parents": [{"parentRef": {"name": "public"}, "conditions": [condition]}]}
    return route


def _seen(**fields: Any) -> Exposure:
    values: dict[str, Any] = {
        "expose": _expose(),
        "owner": OWNER,
        "gateway_api_installed": True,
        "gateway": _gateway(HTTP),
        "route": _accepted_route(),
        "holder": None,
    }
    return Exposure(**{**values, **fields})


def test_exposed_once_the_gateway_accepts_the_route_and_status_url_is_the_external_address() -> None:
    (status, reason, message), url = exposed_condition(_seen(), CLUSTER_URL)
    assert (status, reason, url) == ("True", EXPOSED, "http://models.example.com")
    assert message == "http://models.example.com/v1/models/iris and /v2/models/iris through Gateway ml/public"


@pytest.mark.parametrize(
    ("listeners", "section", "prefix", "url"),
    [
        ([HTTP], None, None, "http://models.example.com"),
        ([HTTPS], None, "/team-a", "https://models.example.com/team-a"),
        ([HTTP, HTTPS], None, None, "http://models.example.com"),
        ([HTTP, HTTPS], "https", None, "https://models.example.com"),
        ([{"name": "web", "protocol": "HTTP", "port": 8080}], None, None, "http://models.example.com:8080"),
        ([{"name": "tls", "protocol": "HTTPS", "port": 8443}], None, None, "https://models.example.com:8443"),
    ],
)
def test_the_url_takes_scheme_and_port_from_the_listeners_the_route_attaches_to(
    listeners: list[dict[str, Any]], section: str | None, prefix: str | None, url: str
) -> None:
    expose = _expose(pathPrefix=prefix, gateway={"name": "public", "sectionName": section})
    assert external_url(expose, _gateway(*listeners)) == url


@pytest.mark.parametrize(
    ("fields", "reason", "says"),
    [
        ({"gateway_api_installed": False}, GATEWAY_API_NOT_INSTALLED, "Gateway API CRDs"),
        ({"gateway": None}, GATEWAY_NOT_FOUND, "Gateway ml/public not found"),
        (
            {"expose": _expose(gateway={"name": "public", "sectionName": "grpc"})},
            LISTENER_NOT_FOUND,
            "Gateway ml/public has no listener grpc",
        ),
        ({"holder": "team-b/iris"}, HOST_PATH_TAKEN, "are taken by ModelAPI team-b/iris"),
        ({"route": None}, ROUTE_PENDING, "waiting for the controller of Gateway ml/public"),
        (
            {"route": _accepted_route("False", "NotAllowedByListeners", "namespace ml not allowed")},
            ROUTE_NOT_ACCEPTED,
            "(NotAllowedByListeners: namespace ml not allowed)",
        ),
    ],
)
def test_each_problem_has_a_reason_that_names_it_and_the_model_keeps_serving_inside(
    fields: dict[str, Any], reason: str, says: str
) -> None:
    (status, got, message), url = exposed_condition(_seen(**fields), CLUSTER_URL)
    assert (status, got, url) == ("False", reason, None)
    assert says in message
    assert message.endswith(f"the model keeps serving inside the cluster at {CLUSTER_URL}")


# ---- the planner ----------------------------------------------------------------------------------------------------


def _plan(spec: ModelAPISpec, deployments: list[dict[str, Any]], **extra: Any) -> Plan:
    given = {"gateway_api_installed": True, **extra}
    return plan_for(spec, deployments, owner=OWNER, images=IMAGES, now=T0, **given)


def _exposed_spec(*, canary: bool) -> ModelAPISpec:
    spec = _spec(OLD_URI, canary=canary).model_dump(by_alias=True, exclude_none=True)
    spec["expose"] = {"hostname": "models.example.com", "pathPrefix": "/team-a", "gateway": {"name": "public"}}
    if canary:
        spec["rollout"]["canary"].update({"trafficRouting": "gatewayAPI", "gateway": {"name": "public"}})
    return ModelAPISpec.model_validate(spec)


def exposed_steady() -> Plan:
    spec = _exposed_spec(canary=False)
    return _plan(spec, [_serving(spec)])


def exposed_canary() -> Plan:
    spec = _exposed_spec(canary=True)
    new = ModelAPISpec.model_validate(
        {**spec.model_dump(by_alias=True, exclude_none=True), "model": {"uri": "s3://models/iris/2/model.onnx"}}
    )
    progress = CanaryProgress(step=0, step_started=T0 - timedelta(seconds=10))
    return _plan(new, [_serving(spec), _canary(new, progress, replicas=1, ready=1)])


CASES = {"exposed-steady": exposed_steady, "exposed-canary": exposed_canary}


@pytest.mark.parametrize("case", CASES)
def test_plan_with_expose_matches_golden(case: str, update_golden: bool) -> None:
    actual = yaml.safe_dump(plan_document(CASES[case]()), sort_keys=False)
    expected = GOLDEN / f"plan-{case}" / "expected.yaml"
    if update_golden:
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(actual, encoding="utf-8")
    assert expected.exists(), f"missing {expected}: run pytest tests/unit --update-golden"
    assert actual == expected.read_text(encoding="utf-8")


def test_the_planned_routes_are_the_ones_each_case_says() -> None:
    steady = [m for m in exposed_steady().apply if m["kind"] == "HTTPRoute"]
    assert [m["metadata"]["name"] for m in steady] == ["iris-expose"]
    assert steady[0]["spec"]["rules"][0]["backendRefs"][0]["name"] == "iris"
    canary = {m["metadata"]["name"]: m for m in exposed_canary().apply if m["kind"] == "HTTPRoute"}
    assert set(canary) == {"iris", "iris-expose"}
    split = [(b["name"], b["weight"]) for b in canary["iris-expose"]["spec"]["rules"][0]["backendRefs"]]
    assert split == [("iris-stable", 100 - STEPS[0]["weight"]), ("iris-canary", STEPS[0]["weight"])]


def test_a_taken_address_plans_no_route_and_no_gateway_api_plans_none() -> None:
    spec = _exposed_spec(canary=False)
    taken = _plan(spec, [_serving(spec)], gateway_api_installed=True, expose_allowed=False)
    assert not [m for m in taken.apply if m["kind"] == "HTTPRoute"]
    missing = _plan(spec, [_serving(spec)], gateway_api_installed=False)
    assert not [m for m in missing.apply if m["kind"] == "HTTPRoute"]
