"""Tier B: requests through a real Gateway API data plane (Traefik, tests/e2e/cluster/gateway.sh) to real pods.

The Gateway is examples/gateway/gateway.yaml (its class set to the harness's), applied in the test's namespace:
plain HTTP on port 80 and HTTPS on 443 with a certificate this test makes with openssl. Traefik listens on the node's
bridge address and sends each request to a pod of the backend its weighted round robin picks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import Cluster, wait_until
from e2e.processes import OperatorProcess

from .test_real_node import FLOWERS, ROOT, Models, _apply, _condition, _manifest, _run_load, _wait_ready

pytestmark = pytest.mark.node

TLS_HOST = "models.example.test"
# The canary's weight, and how many requests measure it: the share of n requests that a fair 30 % split sends to
# the canary has a standard deviation of sqrt(0.3 * 0.7 / n); with 2000 requests that is 1.0 point, so the ±5-point
# bound is about 5 standard deviations (a correct split fails it about once in three million runs) while a route
# that ignored the weights (0 %, 50 % or 100 % to the canary) fails it by far.
CANARY_WEIGHT = 30
REQUESTS = 2000


def _gateway(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """examples/gateway/gateway.yaml in this namespace, with the harness's class, Programmed."""
    gateway: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "gateway" / "gateway.yaml").read_text())
    gateway["metadata"]["namespace"] = namespace
    gateway["spec"]["gatewayClassName"] = cluster.env["GATEWAY_CLASS"]
    ports = {listener["port"] for listener in gateway["spec"]["listeners"]}
    assert ports == {int(cluster.env["GATEWAY_HTTP_PORT"]), int(cluster.env["GATEWAY_HTTPS_PORT"])}
    _apply(cluster, namespace, gateway)

    def programmed() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("gateway", gateway["metadata"]["name"], namespace=namespace)
        return body if _condition(body, "Programmed").get("status") == "True" else None

    result: dict[str, Any] = wait_until(programmed, timeout=60, interval=1, what="the Gateway Programmed")
    return result


def _tls_secret(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A CA and a certificate for TLS_HOST signed by it (openssl, as the example says); the Secret models-tls."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=modelapi-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={TLS_HOST}", "-keyout", "tls.key", "-out", "tls.csr")
    (directory / "san.ext").write_text(f"subjectAltName=DNS:{TLS_HOST}\n")
    openssl("x509", "-req", "-days", "1", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-extfile", "san.ext", "-out", "tls.crt")  # fmt: skip
    cluster.kubectl(
        "create", "secret", "tls", "models-tls", "--cert", str(directory / "tls.crt"), "--key",
        str(directory / "tls.key"), namespace=namespace,
    )  # fmt: skip
    return directory / "ca.crt"


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "5", *args], capture_output=True, text=True, check=False)


def test_canary_weights_split_traffic_through_the_gateway_over_http_and_https(
    cluster: Cluster,
    node: dict[str, str],
    operator: OperatorProcess,
    restricted: str,
    models: Models,
    tmp_path: Path,
) -> None:
    ca = _tls_secret(cluster, restricted, tmp_path)
    gateway = _gateway(cluster, restricted)
    address = gateway["status"]["addresses"][0]["value"]
    assert address == node["GATEWAY_ADDRESS"]
    name = "gw"
    canary = {
        "steps": [{"weight": CANARY_WEIGHT, "pauseSeconds": 600}],
        "trafficRouting": "gatewayAPI",
        "gateway": {"name": gateway["metadata"]["name"]},
    }
    spec = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "runtime": {"resources": {"cpu": "250m", "memory": "384Mi"}},
        "rollout": {"strategy": "Canary", "canary": canary},
    }
    _apply(cluster, restricted, _manifest(name, models.put("v1", 0.0), node, **spec))
    _wait_ready(cluster, restricted, name)
    _apply(cluster, restricted, _manifest(name, models.put("v2", 5.0), node, **spec))

    def canary_at_weight() -> bool:
        status = cluster.get_json("modelapi", name, namespace=restricted).get("status", {})
        route = cluster.get_json("httproute", name, namespace=restricted)
        weights = [backend["weight"] for backend in route["spec"]["rules"][0]["backendRefs"]]
        return (status.get("canary") or {}).get("weight") == CANARY_WEIGHT and weights == [70, 30]

    wait_until(canary_at_weight, timeout=180, interval=1, what=f"the canary at weight {CANARY_WEIGHT} in its route")
    url = f"http://{address}:{node['GATEWAY_HTTP_PORT']}/v1/models/{name}:predict"

    def both_answer() -> bool:  # Traefik has the route with both backends' ready endpoints
        report = _run_load(url, models, 1, keepalive=True, rate=50)
        return not report.failed and {"v1", "v2"} <= set(report.shares())

    wait_until(both_answer, timeout=60, interval=1, what="both revisions answering through the Gateway")
    report = _run_load(url, models, REQUESTS / 200, keepalive=True, rate=200)
    shares = report.shares()
    canary_share = 100 * shares["v2"] / max(1, sum(shares.values()))
    print(f"[node] Gateway route at weight {CANARY_WEIGHT}: canary share {canary_share:.1f} %; {report.summary()}")
    assert not report.failed, report.summary()
    assert report.sent >= REQUESTS * 0.95, report.summary()
    assert set(shares) == {"v1", "v2"}, report.summary()
    assert abs(canary_share - CANARY_WEIGHT) <= 5, report.summary()

    # The same route on the HTTPS listener: the certificate verifies against the test's CA, and answers come from
    # both revisions there too.
    https = f"https://{TLS_HOST}:{node['GATEWAY_HTTPS_PORT']}/v1/models/{name}:predict"
    resolve = f"{TLS_HOST}:{node['GATEWAY_HTTPS_PORT']}:{address}"
    body = json.dumps({"instances": FLOWERS})
    seen: set[str] = set()
    for _ in range(40):
        proc = _curl(
            "--cacert", str(ca), "--resolve", resolve, "-H", "Content-Type: application/json", "-d", body, https
        )
        assert proc.returncode == 0, proc.stderr
        seen.add(models.classify(json.loads(proc.stdout)))
    assert seen == {"v1", "v2"}, seen
    # and a client that does not trust the CA is refused (curl exit 60: the peer certificate cannot be verified)
    untrusted = _curl("--resolve", resolve, "-d", body, https)
    assert untrusted.returncode == 60, (untrusted.returncode, untrusted.stderr)
    # Traefik serves every Gateway's listeners on its shared entry points: this route (PathPrefix /, no host) would
    # catch the next test's unclaimed paths while its namespace is being deleted
    cluster.kubectl("delete", "gateway", gateway["metadata"]["name"], "--wait=true", namespace=restricted)


def _exposed(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def accepted() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("modelapi", name, namespace=namespace)
        return body if _condition(body, "Exposed").get("status") == "True" else None

    result: dict[str, Any] = wait_until(accepted, timeout=90, interval=1, what=f"{name} Exposed through the Gateway")
    return result


def _v2_body() -> str:
    data = [value for row in FLOWERS for value in row]
    return json.dumps({"inputs": [{"name": "input", "shape": [len(FLOWERS), 4], "datatype": "FP32", "data": data}]})


def test_two_models_share_a_host_through_the_gateway_with_spec_expose_over_http_and_https(
    cluster: Cluster,
    node: dict[str, str],
    operator: OperatorProcess,
    restricted: str,
    models: Models,
    tmp_path: Path,
) -> None:
    ca = _tls_secret(cluster, restricted, tmp_path)
    gateway = _gateway(cluster, restricted)
    address = gateway["status"]["addresses"][0]["value"]
    shared = {"hostname": TLS_HOST, "gateway": {"name": gateway["metadata"]["name"]}}
    small = {"autoscaling": {"minReplicas": 1, "maxReplicas": 1}}
    _apply(cluster, restricted, _manifest("iris-a", models.put("v1", 0.0), node, **small, expose=shared))
    _apply(
        cluster,
        restricted,
        _manifest("iris-b", models.put("v2", 5.0), node, **small, expose={**shared, "pathPrefix": "/team-b"}),
    )
    for name in ("iris-a", "iris-b"):
        _wait_ready(cluster, restricted, name)
    a, b = _exposed(cluster, restricted, "iris-a"), _exposed(cluster, restricted, "iris-b")
    # the route attaches to both listeners (no sectionName): HTTP on port 80 is the address status.url gives
    assert a["status"]["url"] == f"http://{TLS_HOST}"
    assert b["status"]["url"] == f"http://{TLS_HOST}/team-b"

    http, https = node["GATEWAY_HTTP_PORT"], node["GATEWAY_HTTPS_PORT"]
    resolve = ["--resolve", f"{TLS_HOST}:{http}:{address}", "--resolve", f"{TLS_HOST}:{https}:{address}"]
    json_header = ["-H", "Content-Type: application/json"]
    v1 = json.dumps({"instances": FLOWERS})

    def post(url: str, body: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return _curl(*resolve, *json_header, "-w", "\n%{http_code}", "-d", body, *extra, url)

    def answer(proc: subprocess.CompletedProcess[str]) -> tuple[int, Any]:
        assert proc.returncode == 0, proc.stderr
        text, _, code = proc.stdout.rpartition("\n")
        return int(code), json.loads(text) if text.startswith("{") else text

    def routed() -> bool:  # Traefik has both routes with a ready endpoint each
        return all(
            answer(post(url, v1))[0] == 200
            for url in (
                f"http://{TLS_HOST}/v1/models/iris-a:predict",
                f"http://{TLS_HOST}/team-b/v1/models/iris-b:predict",
            )
        )

    wait_until(routed, timeout=60, interval=1, what="both models answering through the Gateway")
    for _ in range(5):  # each path reaches its own model, never the other one
        code, got = answer(post(f"{a['status']['url']}/v1/models/iris-a:predict", v1))
        assert (code, models.classify(got)) == (200, "v1")
        code, got = answer(post(f"{b['status']['url']}/v1/models/iris-b:predict", v1))
        assert (code, models.classify(got)) == (200, "v2")
    # v2 under the prefix (removed before the model), and the model's metadata at /v1/models/<name>
    code, got = answer(post(f"http://{TLS_HOST}/team-b/v2/models/iris-b/infer", _v2_body()))
    assert code == 200, got
    predictions = [got["outputs"][0]["data"][i : i + 3] for i in range(0, 6, 3)]
    assert models.classify({"predictions": predictions}) == "v2"
    meta = _curl(*resolve, "-w", "\n%{http_code}", f"http://{TLS_HOST}/v1/models/iris-a")
    assert answer(meta)[0] == 200, meta.stdout
    # paths that belong to neither route: the other model's path without its prefix, another model's name
    for path in ("/v1/models/iris-b:predict", "/team-b/v1/models/iris-a:predict", "/v1/models/other:predict"):
        code, _ = answer(post(f"http://{TLS_HOST}{path}", v1))
        assert code == 404, path
    # HTTPS on the same host: the test CA verifies the listener's certificate
    code, got = answer(post(f"https://{TLS_HOST}/v1/models/iris-a:predict", v1, "--cacert", str(ca)))
    assert (code, models.classify(got)) == (200, "v1")
    code, got = answer(post(f"https://{TLS_HOST}/team-b/v1/models/iris-b:predict", v1, "--cacert", str(ca)))
    assert (code, models.classify(got)) == (200, "v2")
    print(f"[node] iris-a at {a['status']['url']}, iris-b at {b['status']['url']} through {address} (HTTP and HTTPS)")
