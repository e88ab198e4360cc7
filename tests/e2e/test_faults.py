"""Faults (issue 9): the operator on the real local cluster when things break under it.

Every test name contains ``fault`` (``make test-e2e PYTEST_ARGS="-k fault"``). Each test runs its own operator
process, watching only the test's namespace, with its own log file next to the components' logs
(``modelapi-operator-<test>.log``). What is covered, by item of the issue:

1. ``kill -9`` of the operator at seeded random points while it reconciles 40 ModelAPIs, 10 of them mid-canary
   (``MODELAPI_FAULT_SEED`` reproduces a run, ``MODELAPI_FAULT_MODELAPIS`` / ``MODELAPI_FAULT_KILLS`` scale it);
2. kube-apiserver, then etcd, restarted (``cluster.sh restart``) under load; a change made as soon as each answers
   again (before the operator has caught up) is applied;
3. through a fault-injecting proxy (``apiproxy.py``) between the operator and kube-apiserver: every request answered
   429 / 500 / 503, then 30 % of the writes, while ModelAPIs are created and changed (kopf retries its requests and
   our handler, with the server's Retry-After); every watch stream silent, and a change made meanwhile acted on once
   kopf has dropped the silent streams (``MODELAPI_OPERATOR_WATCH_INACTIVITY_TIMEOUT_SECONDS``);
5. RBAC for PodDisruptionBudgets revoked from the chart's Role under which the operator runs, then restored;
6. a ModelAPI deleted while its canary runs: its children go, a neighbour's stay untouched;
7. two operator processes with kopf peering (the chart's CRD, peering object and RBAC), each behind a recording proxy:
   only the one of higher priority acts; after ``kill -9`` of it the other takes over within the peering lifetime and
   converges a change made at once; the killed one started again takes back over, and the other sends nothing but
   heartbeats while standing by (its resync and canary loops included);
8. hypothesis-generated ModelAPI specs: refused at apply time with a message, or reconciled without an
   unhandled exception.

Item 4 (S3 during a rollout) needs pods that really pull the artifact, so it waits for a real node (tier B).
"""

from __future__ import annotations

import os
import random
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .apiproxy import ApiProxy, Faults, Record
from .conftest import CLUSTER_SH, Cluster, load_scaled, wait_until
from .faults_support import (
    CHILD_KINDS,
    LABEL_NAME,
    RBAC_KINDS,
    Expected,
    FaultOperator,
    apply_all,
    chart_docs,
    chart_rbac,
    child_problems,
    children,
    condition,
    modelapi,
    modelapis,
    specs,
    wait_converged,
)
from .processes import sa_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelapi"
SEED = int(os.environ.get("MODELAPI_FAULT_SEED", "90210"))
FAST = {"MODELAPI_OPERATOR_RESYNC_SECONDS": "5", "MODELAPI_OPERATOR_CANARY_TICK_SECONDS": "1"}

Operators = Callable[..., FaultOperator]


@pytest.fixture
def operators(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Operators]:
    """Start operators for this test (watching its namespace only); every one is stopped afterwards."""
    started: list[FaultOperator] = []
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50]

    def start(namespace: str, **settings: str) -> FaultOperator:
        log_name = f"modelapi-operator-{test}{'-' + str(len(started)) if started else ''}.log"
        process = FaultOperator(
            cluster, {**FAST, "MODELAPI_OPERATOR_NAMESPACES": namespace, **settings}, log_name=log_name
        )
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _rolled(before: str, after: str, replicas: int = 1) -> Expected:
    """A ModelAPI rolled from ``before`` to ``after``: the old revision stays as its last-known-good one."""
    return Expected(after, replicas, last_known_good=before)


def _ready(body: dict[str, Any]) -> bool:
    ready = condition(body, "Ready")
    return ready.get("status") == "True" and ready.get("observedGeneration") == body["metadata"]["generation"]


def _wait_all_ready(cluster: Cluster, namespace: str, names: list[str], timeout: float) -> None:
    def all_ready() -> bool:
        bodies = modelapis(cluster, namespace)
        return all(name in bodies and _ready(bodies[name]) for name in names)

    wait_until(all_ready, timeout=timeout, interval=1, what=f"{len(names)} ModelAPIs Ready")


# ---- 1. kill -9 at random points -------------------------------------------------------------------------------------
# Long enough that kills land mid-canary, short enough that every canary is promoted within the test.
CANARY_STEPS = {"steps": [{"weight": 25, "pauseSeconds": 10}, {"weight": 50, "pauseSeconds": 10}]}


def test_fault_kill9_operator_at_random_points_converges(
    cluster: Cluster, namespace: str, operators: Operators
) -> None:
    """40 ModelAPIs (10 canaries mid-rollout, 15 rolling updates started while no operator runs, 15 autoscaling
    edits), the operator killed with SIGKILL 15 times at random delays: after the last start every ModelAPI is
    Ready at its current generation with exactly the expected children and nothing orphaned."""
    rng = random.Random(SEED)
    total = int(os.environ.get("MODELAPI_FAULT_MODELAPIS", "40"))
    kills = int(os.environ.get("MODELAPI_FAULT_KILLS", "15"))
    n_canary = max(total // 4, 1)
    canaries = [f"c{i:02d}" for i in range(n_canary)]
    rolling = [f"r{i:02d}" for i in range(total - n_canary)]
    replicas = {name: rng.choice([1, 1, 2]) for name in canaries + rolling}

    def uri(name: str, version: int) -> str:
        return f"s3://models/faults/{name}/{version}/model.onnx"

    operator = operators(namespace)
    # The canaries need a stable revision first; then the rest are created and the canaries moved to v2.
    apply_all(
        cluster, namespace, [modelapi(n, uri(n, 1), min_replicas=replicas[n], canary=CANARY_STEPS) for n in canaries]
    )
    _wait_all_ready(cluster, namespace, canaries, timeout=120)
    apply_all(cluster, namespace, [modelapi(n, uri(n, 1), min_replicas=replicas[n]) for n in rolling])
    # Last, so that the canaries' steps (not the time kubectl takes for the rest) overlap the kills.
    apply_all(
        cluster, namespace, [modelapi(n, uri(n, 2), min_replicas=replicas[n], canary=CANARY_STEPS) for n in canaries]
    )
    half = len(rolling) // 2
    began = time.monotonic()
    mid_canary: list[int] = []  # canaries in progress at each kill
    for kill in range(kills):
        time.sleep(rng.uniform(0.5, 5.0))
        operator.assert_alive()
        operator.kill()
        bodies = modelapis(cluster, namespace)
        mid_canary.append(sum(bool((bodies[n].get("status") or {}).get("canary")) for n in canaries))
        if kill == kills // 3:  # while no operator runs: rolling updates of half of them
            apply_all(cluster, namespace, [modelapi(n, uri(n, 2), min_replicas=replicas[n]) for n in rolling[:half]])
        if kill == 2 * kills // 3:  # autoscaling edits of the other half (no new revision)
            edits = [modelapi(n, uri(n, 1), min_replicas=replicas[n], max_replicas=4) for n in rolling[half:]]
            apply_all(cluster, namespace, edits)
        time.sleep(rng.uniform(0.0, 1.0))
        operator.start()
    killed_for = time.monotonic() - began

    expected = {n: Expected(uri(n, 2), replicas[n], last_known_good=uri(n, 1)) for n in canaries}
    expected |= {n: Expected(uri(n, 2), replicas[n], last_known_good=uri(n, 1)) for n in rolling[:half]}
    expected |= {n: Expected(uri(n, 1), replicas[n]) for n in rolling[half:]}
    converge_began = time.monotonic()
    bodies = wait_converged(cluster, namespace, expected, timeout=180, what="convergence after the last restart")
    converged_in = time.monotonic() - converge_began
    for name in rolling[half:]:
        hpa = cluster.get_json("hpa", name, namespace=namespace)
        assert hpa["spec"]["maxReplicas"] == 4, f"{name}: the autoscaling edit was lost"
    assert len(bodies) == total
    operator.assert_alive()
    assert operator.starts == kills + 1
    assert any(mid_canary), "no kill landed while a canary was in progress: the test proved less than it says"
    print(
        f"\n[fault] seed {SEED}: {total} ModelAPIs, {kills} kills over {killed_for:.0f}s (canaries in progress at "
        f"each kill: {mid_canary}), converged {converged_in:.0f}s after the last start"
    )


# ---- 5. RBAC revoked for a child kind --------------------------------------------------------------------------------
@pytest.fixture
def chart_identity(cluster: Cluster, namespace: str) -> Iterator[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRole(Binding) and Role(Binding) for an operator of this namespace; the
    cluster-scoped ones are deleted afterwards (the namespace fixture takes the rest)."""
    release = f"f{secrets.token_hex(3)}"
    docs = chart_rbac(cluster, CHART, release, namespace, "activator.enabled=false")  # the operator's identity only
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump_all(docs))
    account = next(doc for doc in docs if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    role = next(doc for doc in docs if doc["kind"] == "Role")
    try:
        yield {"account": account, "role": role}
    finally:
        for doc in docs:
            if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                name = doc["metadata"]["name"]
                cluster.kubectl("delete", doc["kind"].lower(), name, "--ignore-not-found", check=False)


def _without(role: dict[str, Any], resource: str) -> dict[str, Any]:
    rules = [rule for rule in role["rules"] if resource not in rule.get("resources", [])]
    assert len(rules) == len(role["rules"]) - 1, f"the chart's Role should have one rule for {resource}"
    return {**role, "rules": rules}


def test_fault_rbac_revoked_for_pdbs_is_named_and_recovers(
    cluster: Cluster, namespace: str, operators: Operators, chart_identity: dict[str, Any], tmp_path: Path
) -> None:
    """The operator runs under the chart's ServiceAccount. With poddisruptionbudgets removed from its Role, a new
    ModelAPI that wants a PDB says so precisely (condition and Event) and the operator keeps running; with the rule
    restored, the ModelAPI converges without anyone touching it."""
    kubeconfig = sa_kubeconfig(cluster, namespace, chart_identity["account"], tmp_path / "sa-kubeconfig")
    role = chart_identity["role"]
    operator = operators(namespace, KUBECONFIG=str(kubeconfig))
    apply_all(cluster, namespace, [modelapi("before", "s3://models/faults/before/1/model.onnx")])
    _wait_all_ready(cluster, namespace, ["before"], timeout=90)

    cluster.kubectl(
        "apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(_without(role, "poddisruptionbudgets"))
    )
    wait_until(
        lambda: (
            cluster.kubectl(
                "auth",
                "can-i",
                "create",
                "poddisruptionbudgets.policy",
                f"--as=system:serviceaccount:{namespace}:{chart_identity['account']}",
                namespace=namespace,
                check=False,
            ).stdout.strip()
            == "no"
        ),
        timeout=30,
        what="the PDB rule revoked",
    )
    apply_all(cluster, namespace, [modelapi("after", "s3://models/faults/after/1/model.onnx")])

    def named() -> dict[str, Any] | None:
        body = modelapis(cluster, namespace).get("after", {})
        degraded = condition(body, "Degraded")
        return (
            degraded
            if degraded.get("status") == "True" and "poddisruptionbudgets" in degraded.get("message", "")
            else None
        )

    degraded = wait_until(named, timeout=90, interval=1, what="Degraded naming the refused PodDisruptionBudget")
    print(f"\n[fault] with the PDB rule revoked: Degraded {degraded['reason']}: {degraded['message']}")
    assert degraded["reason"] == "PermissionDenied"
    events = cluster.get_json("events", "--field-selector", "involvedObject.name=after", namespace=namespace)["items"]
    assert any("poddisruptionbudgets" in event.get("message", "") for event in events), [
        (e["reason"], e["message"]) for e in events
    ]
    # No crash loop: the same process keeps running (and keeps serving the ModelAPI it already had) ...
    operator.assert_alive()
    assert operator.starts == 1
    assert _ready(modelapis(cluster, namespace)["before"])
    # ... and one started while the rule is missing (it cannot even list PDBs now) comes up and keeps trying.
    operator.stop()
    mark = len(operator.log())
    operator.start()
    wait_until(
        lambda: (
            "poddisruptionbudgets" in operator.log()[mark:] and "Starting the watch-stream" in operator.log()[mark:]
        ),
        timeout=60,
        what="the restarted operator meets the refusal again",
    )
    operator.assert_alive()

    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(role))
    wait_converged(
        cluster,
        namespace,
        {
            "before": Expected("s3://models/faults/before/1/model.onnx", 1),
            "after": Expected("s3://models/faults/after/1/model.onnx", 1),
        },
        timeout=90,
        what="convergence once the PDB rule is back",
    )
    operator.assert_alive()
    assert operator.starts == 2
    assert not operator.unhandled(), operator.unhandled()[:5]


# ---- 6. a ModelAPI deleted mid-canary --------------------------------------------------------------------------------
def test_fault_modelapi_deleted_mid_canary_takes_only_its_own_children(
    cluster: Cluster, namespace: str, operators: Operators
) -> None:
    operator = operators(namespace)
    gateway = {"name": "public", "namespace": "gateway", "sectionName": "http"}
    slow = {"steps": [{"weight": 20, "pauseSeconds": 3600}], "trafficRouting": "gatewayAPI", "gateway": gateway}
    victim = modelapi("victim", "s3://models/faults/victim/1/model.onnx", min_replicas=2, canary=slow)
    neighbour = modelapi("neighbour", "s3://models/faults/neighbour/1/model.onnx", min_replicas=2, canary=slow)
    apply_all(cluster, namespace, [victim, neighbour])
    _wait_all_ready(cluster, namespace, ["victim", "neighbour"], timeout=90)
    victim["spec"]["model"]["uri"] = "s3://models/faults/victim/2/model.onnx"
    neighbour["spec"]["model"]["uri"] = "s3://models/faults/neighbour/2/model.onnx"
    apply_all(cluster, namespace, [victim, neighbour])
    cluster.kubectl("create", "configmap", "unrelated", namespace=namespace)

    def both_mid_canary() -> bool:
        bodies = modelapis(cluster, namespace)
        return all(((bodies[n].get("status") or {}).get("canary") or {}).get("weight") == 20 for n in bodies)

    wait_until(both_mid_canary, timeout=90, interval=1, what="both canaries at step 1 with 20 %")
    owned = {(item["kind"], item["metadata"]["name"]): item["metadata"]["uid"] for item in children(cluster, namespace)}
    kinds = {kind for kind, name in owned if name.startswith("victim")}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "HTTPRoute"}, owned
    assert ("Service", "victim-canary") in owned
    theirs = {key: uid for key, uid in owned.items() if key[1].startswith("neighbour")}
    pods_before = {
        p["metadata"]["uid"]
        for p in cluster.get_json("pods", "-l", "serving.modelapi.io/name=neighbour", namespace=namespace)["items"]
    }

    cluster.kubectl("delete", "modelapi", "victim", "--wait=true", namespace=namespace, timeout=60)

    def victim_gone() -> bool:
        left = cluster.get_json(
            "deployments,replicasets,pods,services,hpa,pdb,httproutes",
            "-l",
            "serving.modelapi.io/name=victim",
            namespace=namespace,
        )["items"]
        return not left

    wait_until(victim_gone, timeout=90, interval=1, what="every child of the deleted ModelAPI garbage-collected")
    # Nothing comes back: the canary tick (1 s) and the resync (5 s) pass over it twice without recreating anything.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        assert victim_gone(), "a child of the deleted ModelAPI was recreated"
        time.sleep(1)
    now = {(item["kind"], item["metadata"]["name"]): item["metadata"]["uid"] for item in children(cluster, namespace)}
    assert now == theirs, "the neighbour's children must be exactly the ones it had, not recreated"
    pods_after = {
        p["metadata"]["uid"]
        for p in cluster.get_json("pods", "-l", "serving.modelapi.io/name=neighbour", namespace=namespace)["items"]
    }
    assert pods_after == pods_before
    body = modelapis(cluster, namespace)["neighbour"]
    assert ((body.get("status") or {}).get("canary") or {}).get("weight") == 20
    assert cluster.kubectl("get", "configmap", "unrelated", namespace=namespace, check=False).returncode == 0
    operator.assert_alive()
    assert not operator.unhandled(), operator.unhandled()[:5]


# ---- 2. kube-apiserver and etcd restarted under load ---------------------------------------------------------------
CONVERGE_AFTER_OUTAGE_S = 75


def _restart(cluster: Cluster, component: str, down_seconds: float) -> float:
    """``cluster.sh restart``; the seconds it took (stop, down time, start, healthy again)."""
    began = time.monotonic()
    env = {**cluster.subprocess_env(), "MODELAPI_CLUSTER_DIR": cluster.env["MODELAPI_CLUSTER_DIR"]}
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), "restart", component, str(down_seconds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"cluster.sh restart {component} failed:\n{proc.stderr}"
    return time.monotonic() - began


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_fault_control_plane_restart_under_load_converges(
    cluster: Cluster, namespace: str, operators: Operators, component: str
) -> None:
    """20 ModelAPIs being reconciled when ``component`` goes down for a few seconds; as soon as it answers again
    (the operator is still reconnecting) 10 of them get a new model and 5 new ones are created: within 75 s every
    ModelAPI serves what its spec says, and the operator process never restarted."""
    operator = operators(namespace)
    names = [f"m{i:02d}" for i in range(20)]

    def uri(name: str, version: int) -> str:
        return f"s3://models/faults/{name}/{version}/model.onnx"

    apply_all(cluster, namespace, [modelapi(n, uri(n, 1)) for n in names])
    wait_until(
        lambda: sum(_ready(body) for body in modelapis(cluster, namespace).values()) >= 3,
        timeout=90,
        what="the first ModelAPIs Ready (the rest still reconciling)",
    )
    outage = _restart(cluster, component, down_seconds=3)
    changed, added = names[:10], [f"n{i:02d}" for i in range(5)]
    apply_all(cluster, namespace, [modelapi(n, uri(n, 2)) for n in changed] + [modelapi(n, uri(n, 1)) for n in added])
    back = time.monotonic()
    expected = {n: _rolled(uri(n, 1), uri(n, 2)) if n in changed else Expected(uri(n, 1), 1) for n in names + added}
    wait_converged(
        cluster, namespace, expected, timeout=CONVERGE_AFTER_OUTAGE_S, what=f"convergence after {component} restart"
    )
    print(f"\n[fault] {component} restart took {outage:.0f}s; converged {time.monotonic() - back:.0f}s after")
    operator.assert_alive()
    assert operator.starts == 1
    assert not child_problems(cluster, namespace, expected)


# ---- 8. fuzzed specs -----------------------------------------------------------------------------------------------
def test_fault_fuzzed_specs_are_refused_with_a_message_or_reconciled(
    cluster: Cluster, namespace: str, operators: Operators
) -> None:
    from hypothesis import Phase, given, settings

    operator = operators(namespace)
    accepted: dict[str, dict[str, Any]] = {}
    refused: list[str] = []

    @settings(
        max_examples=int(os.environ.get("MODELAPI_FAULT_FUZZ_EXAMPLES", "60")),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each example costs an API round trip
    )
    @given(spec=specs())
    def apply_one(spec: dict[str, Any]) -> None:
        name = f"fz{len(accepted) + len(refused):03d}"
        manifest = {"apiVersion": "serving.modelapi.io/v1alpha1", "kind": "ModelAPI", "metadata": {"name": name}}
        proc = cluster.kubectl(
            "create", "-f", "-", namespace=namespace, input=yaml.safe_dump({**manifest, "spec": spec}), check=False
        )
        if proc.returncode == 0:
            accepted[name] = spec
            return
        message = proc.stderr.strip()
        assert re.search(r"is invalid|Invalid value|Unsupported value|Required value|unknown field|must", message), (
            f"refused without a message naming the problem: {message!r}\nspec: {spec}"
        )
        refused.append(message)

    apply_one()
    assert accepted, "the generator should produce specs the API server accepts"
    assert refused, "the generator should produce specs the API server refuses"
    outcomes: dict[str, str] = {}

    def reconciled() -> bool:
        bodies = modelapis(cluster, namespace)
        for name in accepted:
            body = bodies[name]
            ready = condition(body, "Ready")
            if (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"] and ready:
                outcomes[name] = f"{ready['status']}/{ready['reason']}"
        return len(outcomes) == len(accepted)

    wait_until(reconciled, timeout=150, interval=2, what=f"{len(accepted)} accepted specs reconciled")
    operator.assert_alive()
    assert operator.starts == 1
    problems = operator.unhandled()
    assert not problems, f"unhandled exceptions in the operator's log ({operator.log_path}):\n" + "\n".join(
        problems[:5]
    )
    tally: dict[str, int] = {}
    for outcome in outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    print(f"\n[fault] {len(refused)} refused at apply time, {len(accepted)} reconciled: {dict(sorted(tally.items()))}")
    # The API server and the operator read the same rules (the CRD is generated from the operator's models): a spec
    # the API server stored is one the operator can reconcile.
    disagreements = {name: accepted[name] for name, outcome in outcomes.items() if outcome.endswith("/InvalidSpec")}
    assert not disagreements, f"stored by the API server but InvalidSpec for the operator: {disagreements}"


# ---- 3. 429 / 5xx from the API, silent watches ---------------------------------------------------------------------
Proxies = Callable[[], ApiProxy]


@pytest.fixture
def proxies(cluster: Cluster) -> Iterator[Proxies]:
    """Fault-injecting proxies in front of kube-apiserver (tests/e2e/apiproxy.py); every one is stopped afterwards
    (after the operators, which are stopped first: fixtures end in reverse order)."""
    started: list[ApiProxy] = []

    def start() -> ApiProxy:
        proxy = ApiProxy(cluster, seed=SEED + len(started)).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _uri(name: str, version: int) -> str:
    return f"s3://models/faults/{name}/{version}/model.onnx"


# kopf's own client retrying one of its requests (settings.networking.error_backoffs, stretched to the server's
# Retry-After), and kopf retrying our handler after the kopf.TemporaryError it raised for an API error.
KOPF_REQUEST_RETRY = re.compile(r"Request attempt #(?P<attempt>\d+)/\d+ failed; will retry: \S+ (?P<url>\S+) -> ")
KOPF_RETRY_AFTER = "with the retry-after 2s from the server"
KOPF_HANDLER_RETRY = re.compile(
    r"Handler 'reconcile_modelapi' failed temporarily: "
    r"Kubernetes API: (?P<status>\d+) \w+: .*\(retry in (?P<delay>[\d.]+) s\)"
)
OUTAGE_STATUSES = (429, 500, 503)


def test_fault_api_429_and_5xx_are_retried_with_backoff_and_converge(
    cluster: Cluster, namespace: str, proxies: Proxies, operators: Operators, tmp_path: Path
) -> None:
    """The operator talks to kube-apiserver through a proxy. First every new request fails (429 with Retry-After: 2,
    500, 503, in turn) while 4 ModelAPIs are created and 2 get a new model: nothing is written; kopf retries its own
    requests with its back-off (stretched to the Retry-After) and retries our handler after the kopf.TemporaryError
    it raised (the delay: the server's Retry-After, else 10 s). Then 30 % of the writes fail while 2 more change:
    every ModelAPI converges under that, and stays converged once the proxy heals; the operator never restarts."""
    proxy = proxies()
    kubeconfig = proxy.kubeconfig(tmp_path / "kubeconfig", cluster.env["KUBE_TOKEN"])
    operator = operators(namespace, KUBECONFIG=str(kubeconfig))
    first = [f"a{i}" for i in range(4)]
    apply_all(cluster, namespace, [modelapi(n, _uri(n, 1)) for n in first])
    wait_converged(cluster, namespace, {n: Expected(_uri(n, 1), 1) for n in first}, timeout=90, what="first 4 Ready")

    # -- every new request fails (open watch streams keep delivering, as from an overloaded kube-apiserver) -------
    mark = len(operator.log())
    proxy.inject(Faults(statuses=OUTAGE_STATUSES, share=1.0, writes_only=False, retry_after=2))
    outage_began = time.monotonic()
    added = [f"b{i}" for i in range(4)]
    changed = first[:2]
    apply_all(cluster, namespace, [modelapi(n, _uri(n, 2)) for n in changed] + [modelapi(n, _uri(n, 1)) for n in added])

    def retried() -> bool:
        """kopf retried every changed ModelAPI's handler, and the patch of its progress 5 times over growing delays
        (its back-off of 1, 1, 2, 3 s, stretched to the 2 s of Retry-After after a 429)."""
        text = operator.log()[mark:]
        patched = {
            m["url"].rsplit("/", 1)[-1]
            for m in KOPF_REQUEST_RETRY.finditer(text)
            if "/modelapis/" in m["url"] and int(m["attempt"]) >= 5
        }
        handled = KOPF_HANDLER_RETRY.findall(text)
        return set(changed + added) <= patched and len(handled) >= len(changed + added) and KOPF_RETRY_AFTER in text

    wait_until(retried, timeout=90, interval=1, what="kopf retrying every changed ModelAPI's handler and its patches")
    outage = time.monotonic() - outage_began
    text = operator.log()[mark:]
    handler_retries = KOPF_HANDLER_RETRY.findall(text)
    request_retries = KOPF_REQUEST_RETRY.findall(text)
    # the handler's delay is the server's Retry-After after a 429 or 503, and 10 s after a 500 (no advice)
    assert set(handler_retries) <= {("429", "2"), ("503", "2"), ("500", "10")}, handler_retries
    leaked = [d for d in children(cluster, namespace, ["deployments"]) if d["metadata"]["labels"][LABEL_NAME] in added]
    assert not leaked, "a write got through the outage: the proxy is not in the operator's path"
    injected = [r for r in proxy.records() if r.injected]
    assert {r.status for r in injected} == set(OUTAGE_STATUSES)
    assert not [r for r in proxy.records() if r.at > outage_began and not r.injected and not r.watch]
    operator.assert_alive()

    # -- 30 % of the writes fail -------------------------------------------------------------------------------------
    flaky_began = time.monotonic()
    proxy.inject(Faults(statuses=OUTAGE_STATUSES, share=0.3, writes_only=True, retry_after=1))
    later = first[2:]
    apply_all(cluster, namespace, [modelapi(n, _uri(n, 2)) for n in later])
    expected = {
        n: _rolled(_uri(n, 1), _uri(n, 2)) if n in changed + later else Expected(_uri(n, 1), 1) for n in first + added
    }
    wait_converged(cluster, namespace, expected, timeout=120, what="convergence with 30 % of the writes failing")
    flaky = time.monotonic() - flaky_began
    writes = [r for r in proxy.records() if r.at > flaky_began and r.write]
    failed_writes = [r for r in writes if r.injected]
    assert failed_writes, "no write failed in the flaky phase: it proved nothing"

    proxy.inject(None)
    wait_converged(cluster, namespace, expected, timeout=30, what="still converged once healed")
    operator.assert_alive()
    assert operator.starts == 1
    assert not operator.unhandled(), operator.unhandled()[:5]
    print(
        f"\n[fault] outage {outage:.0f}s ({len(injected)} requests failed: "
        f"{ {s: sum(r.status == s for r in injected) for s in OUTAGE_STATUSES} }); kopf retried "
        f"{len(request_retries)} of its requests and {len(handler_retries)} handler calls (status, delay s: "
        f"{sorted(set(handler_retries))}); flaky phase: {len(failed_writes)}/{len(writes)} writes failed, "
        f"converged in {flaky:.0f}s"
    )


SILENT_WATCH_TIMEOUT_S = 8


def test_fault_silent_watch_is_detected_and_reestablished(
    cluster: Cluster, namespace: str, proxies: Proxies, operators: Operators, tmp_path: Path
) -> None:
    """Every watch stream between the operator and kube-apiserver goes silent (open, nothing delivered, as behind a
    half-dead load balancer), and so does every watch opened meanwhile. A ModelAPI changed and one created during
    the silence are not acted on (the operator cannot know); kopf drops each silent stream after
    MODELAPI_OPERATOR_WATCH_INACTIVITY_TIMEOUT_SECONDS and watches again, and once watches get through, both are acted
    on within that timeout plus the reconcile."""
    proxy = proxies()
    kubeconfig = proxy.kubeconfig(tmp_path / "kubeconfig", cluster.env["KUBE_TOKEN"])
    operator = operators(
        namespace,
        KUBECONFIG=str(kubeconfig),
        MODELAPI_OPERATOR_WATCH_INACTIVITY_TIMEOUT_SECONDS=str(SILENT_WATCH_TIMEOUT_S),
    )
    apply_all(cluster, namespace, [modelapi(n, _uri(n, 1)) for n in ("quiet", "other")])
    wait_converged(
        cluster,
        namespace,
        {n: Expected(_uri(n, 1), 1) for n in ("quiet", "other")},
        timeout=90,
        what="both Ready before the silence",
    )
    mark = len(operator.log())
    silenced = proxy.silence_watches(True)
    silence_began = time.monotonic()
    # the operator watches ModelAPIs and 6 kinds of children in the namespace, plus namespaces cluster-wide
    assert silenced >= 7, f"only {silenced} open watch streams to silence"
    apply_all(cluster, namespace, [modelapi("quiet", _uri("quiet", 2)), modelapi("late", _uri("late", 1))])
    inactive = re.compile(r"Watch-stream for modelapis\.v1alpha1\.serving\.modelapi\.io .* is inactive, reconnecting")

    def reconnected_into_silence_twice() -> bool:
        silent_again = [r for r in proxy.records() if r.silenced and r.resource == "modelapis"]
        return len(inactive.findall(operator.log()[mark:])) >= 2 and len(silent_again) >= 1

    wait_until(
        reconnected_into_silence_twice,
        # two inactivity timeouts, and the slack of a loaded machine for the reconnects
        timeout=2 * SILENT_WATCH_TIMEOUT_S + load_scaled(2 * SILENT_WATCH_TIMEOUT_S),
        interval=0.5,
        what="kopf dropping the silent ModelAPI watch twice (the second time a stream silent from its start)",
    )
    silent_for = time.monotonic() - silence_began
    # nothing got through: the change and the new ModelAPI are unknown to the operator
    bodies = modelapis(cluster, namespace)
    assert (bodies["quiet"].get("status") or {}).get("observedGeneration") == 1, bodies["quiet"].get("status")
    assert not bodies["late"].get("status"), bodies["late"].get("status")
    assert not [item for item in children(cluster, namespace) if item["metadata"]["name"].startswith("late")]

    proxy.silence_watches(False)
    healed = time.monotonic()

    def acted_on() -> float | None:
        writes = [r for r in proxy.records() if r.at > healed and r.write and "/late" in r.path]
        return writes[0].at - healed if writes else None

    # the silent stream's inactivity timeout, then a reconnect, a list and a reconcile: CPU-bound, so their slack
    # grows with the machine's load (the new ModelAPI is known only through a watch: any write for it shows one)
    first_write = wait_until(
        acted_on,
        timeout=SILENT_WATCH_TIMEOUT_S + load_scaled(10),
        interval=0.2,
        what="the operator writing for the new ModelAPI",
    )
    expected = {"quiet": _rolled(_uri("quiet", 1), _uri("quiet", 2)), "other": Expected(_uri("other", 1), 1)}
    expected["late"] = Expected(_uri("late", 1), 1)
    wait_converged(
        cluster,
        namespace,
        expected,
        timeout=SILENT_WATCH_TIMEOUT_S + load_scaled(30),
        what="convergence after the silence",
    )
    converged = time.monotonic() - healed
    operator.assert_alive()
    assert operator.starts == 1
    assert not operator.unhandled(), operator.unhandled()[:5]
    print(
        f"\n[fault] {silenced} watch streams silenced for {silent_for:.0f}s (inactivity timeout "
        f"{SILENT_WATCH_TIMEOUT_S}s); after the silence: first write {first_write:.1f}s, converged {converged:.0f}s"
    )


# ---- 7. two replicas with peering ------------------------------------------------------------------------------------
PEERING_LIFETIME_S = 10
PEERING = "modelapi-operator"
# A write that is not "acting": kopf's heartbeat into the peering object, which every replica sends.
HEARTBEAT = "kopfpeerings"


@pytest.fixture
def peered_chart(cluster: Cluster, namespace: str) -> Iterator[str]:
    """What the chart installs for ``peering.enabled=true`` and an operator of this namespace: kopf's KopfPeering CRD,
    the KopfPeering object, the ServiceAccount and its RBAC (with the peering rules). Yields the ServiceAccount's
    name; cluster-scoped objects are deleted afterwards (the CRD only if this test created it)."""
    release = f"p{secrets.token_hex(3)}"
    sets = ("peering.enabled=true", f"peering.name={PEERING}", "activator.enabled=false")  # the operator's identity
    docs = chart_docs(cluster, CHART, release, namespace, *sets)
    # the chart's crds/ (helm install applies them before the templates; helm template leaves them out)
    kopf_crds = yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text())
    (crd,) = [doc for doc in kopf_crds if doc["metadata"]["name"] == "kopfpeerings.kopf.dev"]
    crd_name = crd["metadata"]["name"]
    created_crd = cluster.kubectl("get", "crd", crd_name, check=False).returncode != 0
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd_name}", "--timeout=30s")
    rest = [doc for doc in docs if doc["kind"] in RBAC_KINDS or doc["kind"] == "KopfPeering"]
    assert [doc["metadata"]["name"] for doc in rest if doc["kind"] == "KopfPeering"] == [PEERING]
    cluster.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump_all(rest))
    try:
        yield next(doc for doc in docs if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    finally:
        for doc in rest:
            if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                cluster.kubectl(
                    "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False
                )
        if created_crd:
            cluster.kubectl("delete", "crd", crd_name, "--ignore-not-found", "--wait=false", check=False)


def _acting(records: list[Record], since: float = 0.0) -> list[str]:
    """The requests that only an active replica sends: any request for ModelAPIs or children, any write other than
    the peering heartbeat."""
    return [
        f"{r.method} {r.path}"
        for r in records
        if r.at >= since
        and (r.resource in {"modelapis", *CHILD_KINDS, "endpointslices", "pods", "events"} or r.write)
        and r.resource != HEARTBEAT
    ]


def test_fault_two_replicas_with_peering_one_acts_and_kill9_hands_over(
    cluster: Cluster, namespace: str, proxies: Proxies, operators: Operators, peered_chart: str, tmp_path: Path
) -> None:
    """Two operator processes under the chart's ServiceAccount and peering object, priorities 200 (A) and 100 (B),
    each behind its own recording proxy. Only A acts (B sends nothing but heartbeats, not even a read of a ModelAPI).
    ``kill -9`` A: B takes over within the peering lifetime, and a change made right after the kill converges.
    A started again (a restarted pod) outranks B: B stands by again and sends nothing but heartbeats while A
    finishes the canary B had started and applies one more change."""
    token = cluster.kubectl("create", "token", peered_chart, "--duration=1h", namespace=namespace).stdout.strip()
    proxy_a, proxy_b = proxies(), proxies()
    peering = {
        "MODELAPI_OPERATOR_PEERING": PEERING,
        "MODELAPI_OPERATOR_PEERING_LIFETIME_SECONDS": str(PEERING_LIFETIME_S),
    }
    a = operators(
        namespace,
        KUBECONFIG=str(proxy_a.kubeconfig(tmp_path / "a", token)),
        MODELAPI_OPERATOR_PEERING_PRIORITY="200",
        **peering,
    )
    wait_until(lambda: "Resuming operations after the pause" in a.log(), timeout=60, what="A active")
    b = operators(
        namespace,
        KUBECONFIG=str(proxy_b.kubeconfig(tmp_path / "b", token)),
        MODELAPI_OPERATOR_PEERING_PRIORITY="100",
        **peering,
    )

    def peers() -> dict[str, Any]:
        return dict(cluster.get_json("kopfpeering", PEERING, namespace=namespace).get("status") or {})

    wait_until(lambda: len(peers()) == 2, timeout=60, what="both replicas in the KopfPeering's status")
    assert sorted(peer["priority"] for peer in peers().values()) == [100, 200]
    wait_until(lambda: "Pausing the watch-stream for modelapis" in b.log(), timeout=30, what="B's watches paused")

    steps = {"steps": [{"weight": 50, "pauseSeconds": 20}]}
    names = ["m0", "m1", "m2"]
    apply_all(
        cluster,
        namespace,
        [modelapi(n, _uri(n, 1)) for n in names] + [modelapi("c0", _uri("c0", 1), min_replicas=2, canary=steps)],
    )
    expected = {n: Expected(_uri(n, 1), 1) for n in names} | {"c0": Expected(_uri("c0", 1), 2)}
    wait_converged(cluster, namespace, expected, timeout=90, what="4 ModelAPIs Ready with A acting")
    assert _acting(proxy_a.records()), "A did not act"
    assert not _acting(proxy_b.records()), f"B acted while A was active: {_acting(proxy_b.records())[:5]}"
    assert "Resuming operations" not in b.log()

    # -- kill -9 the active replica ---------------------------------------------------------------------------------
    a.kill()
    killed = time.monotonic()
    apply_all(cluster, namespace, [modelapi("m0", _uri("m0", 2)), modelapi("m3", _uri("m3", 1))])
    wait_until(
        lambda: "Resuming operations after the pause" in b.log(), timeout=PEERING_LIFETIME_S + 20, what="B taking over"
    )
    took_over = time.monotonic() - killed
    expected |= {"m0": _rolled(_uri("m0", 1), _uri("m0", 2)), "m3": Expected(_uri("m3", 1), 1)}
    wait_converged(cluster, namespace, expected, timeout=PEERING_LIFETIME_S + 30, what="convergence with B acting")
    converged_after_kill = time.monotonic() - killed
    assert _acting(proxy_b.records(), since=killed)
    assert not _acting(proxy_a.records(), since=killed)

    # B starts a canary; A comes back (a new pod) with the higher priority, B stands by, A finishes the canary.
    apply_all(cluster, namespace, [modelapi("c0", _uri("c0", 2), min_replicas=2, canary=steps)])
    wait_until(
        lambda: ((modelapis(cluster, namespace)["c0"].get("status") or {}).get("canary") or {}).get("weight") == 50,
        timeout=60,
        what="B moving the canary to 50 %",
    )
    a_mark, b_mark = len(a.log()), len(b.log())
    a.start()
    wait_until(lambda: "Pausing operations in favour of" in b.log()[b_mark:], timeout=60, what="B standing by again")
    b_paused = time.monotonic()
    # B stands by with a canary in progress in its (now stale) memory: its canary tick would advance it
    assert ((modelapis(cluster, namespace)["c0"].get("status") or {}).get("canary") or {}).get("weight") == 50
    wait_until(lambda: "Resuming operations after the pause" in a.log()[a_mark:], timeout=30, what="A acting again")
    apply_all(cluster, namespace, [modelapi("m1", _uri("m1", 2))])
    expected |= {
        "m1": _rolled(_uri("m1", 1), _uri("m1", 2)),
        "c0": Expected(_uri("c0", 2), 2, last_known_good=_uri("c0", 1)),
    }
    wait_converged(cluster, namespace, expected, timeout=90, what="A finishing the canary and applying m1")
    # B's canary tick (1 s) and resync (5 s) had the canary's promotion due in B's memory too: one more resync
    # period passes without B doing anything but heartbeats (a request in flight at the pause may end just after it;
    # the loops read the peering object once a second)
    deadline = time.monotonic() + float(FAST["MODELAPI_OPERATOR_RESYNC_SECONDS"]) + 2
    while time.monotonic() < deadline:
        late = _acting(proxy_b.records(), since=b_paused + 3)
        assert not late, f"B acted while standing by: {late[:10]}"
        time.sleep(1)
    for process in (a, b):
        process.assert_alive()
        assert not process.unhandled(), process.unhandled()[:5]
    print(
        f"\n[fault] peering lifetime {PEERING_LIFETIME_S}s: B took over {took_over:.1f}s after kill -9 of A; "
        f"the change made after the kill converged {converged_after_kill:.0f}s after it; B's requests while A was "
        f"active: {len([r for r in proxy_b.records() if r.at < killed])} (heartbeats and discovery only)"
    )
