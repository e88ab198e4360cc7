"""What ``modelapi get`` and ``modelapi status`` print for a ModelAPI in the middle of a canary: the views are pure,
so they are checked on a fixed object and a fixed clock, against golden text (``pytest --update-golden`` rewrites
it) and against the facts an owner needs from them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelapi_operator.cli_views import get, logs, predict, status
from modelapi_operator.cli_views.common import age, revisions_summary
from modelapi_operator.cli_views.events import related_events

GOLDEN = Path(__file__).parent / "golden" / "cli"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)

MODEL: dict[str, Any] = {
    "apiVersion": "serving.modelapi.io/v1alpha1",
    "kind": "ModelAPI",
    "metadata": {
        "name": "iris",
        "namespace": "ml",
        "uid": "u-model",
        "generation": 3,
        "creationTimestamp": "2026-11-28T09:00:00Z",
    },
    "spec": {
        "model": {"uri": "s3://models/iris/2/model.onnx"},
        "rollout": {
            "strategy": "Canary",
            "canary": {
                "steps": [{"weight": 10}, {"weight": 50}],
                "analysis": {"maxErrorRate": 0.02, "maxLatencyP99Ms": 250, "failureLimit": 3},
            },
        },
    },
    "status": {
        "observedGeneration": 3,
        "url": "http://iris.ml.svc.cluster.local",
        "replicas": 2,
        "readyReplicas": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Serving",
                "message": "2 of 2 replicas ready",
                "lastTransitionTime": "2026-11-30T11:00:00Z",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "CanaryProgressing",
                "message": "canary iris-bbbb2222 at step 1 of 2 (10%)",
                "lastTransitionTime": "2026-11-30T11:55:00Z",
            },
            {
                "type": "Degraded",
                "status": "False",
                "reason": "AsExpected",
                "message": "",
                "lastTransitionTime": "2026-11-30T11:00:00Z",
            },
        ],
        "revisions": [
            {
                "name": "iris-bbbb2222",
                "role": "canary",
                "weight": 10,
                "modelUri": "s3://models/iris/2/model.onnx",
                "readyReplicas": 1,
            },
            {
                "name": "iris-aaaa1111",
                "role": "stable",
                "weight": 90,
                "modelUri": "s3://models/iris/1/model.onnx",
                "readyReplicas": 2,
            },
            {
                "name": "iris-9999zzzz",
                "role": "lastKnownGood",
                "weight": 0,
                "modelUri": "s3://models/iris/0/model.onnx",
                "readyReplicas": 0,
            },
        ],
        "canary": {
            "revision": "iris-bbbb2222",
            "step": 0,
            "weight": 10,
            "errorRate": 0.031,
            "latencyP99Ms": 180.4,
            "stableErrorRate": 0.001,
            "stableLatencyP99Ms": 95.0,
            "failedChecks": 1,
            "analysis": "error rate 3.10% > 2.00%",
        },
        "lastKnownGood": {
            "revision": "iris-9999zzzz",
            "modelUri": "s3://models/iris/0/model.onnx",
            "lastServed": "2026-11-29T12:00:00Z",
            "replicas": 0,
            "readyReplicas": 0,
        },
        "lastFailure": {
            "reason": "ChecksumMismatch",
            "message": "the artifact does not match spec.model.sha256",
            "revision": "iris-8888yyyy",
            "time": "2026-11-30T10:00:00Z",
        },
        "coldStart": {
            "revision": "iris-aaaa1111",
            "downloadSeconds": 1.25,
            "loadSeconds": 0.4,
            "warmupSeconds": 0.05,
            "source": "store",
            "storeBytes": 1234,
            "artifactBytes": 1234,
        },
    },
}

CHILDREN: list[dict[str, Any]] = [
    {"kind": "Deployment", "metadata": {"name": "iris-aaaa1111", "uid": "u-stable"}, "spec": {"replicas": 2}},
    {"kind": "Deployment", "metadata": {"name": "iris-bbbb2222", "uid": "u-canary"}, "spec": {"replicas": 1}},
    {"kind": "Service", "metadata": {"name": "iris", "uid": "u-svc"}},
]


def _event(name: str, kind: str, reason: str, when: str, *, uid: str | None = None, **extra: Any) -> dict[str, Any]:
    involved = {"kind": kind, "name": name, **({"uid": uid} if uid else {})}
    return {
        "involvedObject": involved,
        "reason": reason,
        "type": "Normal",
        "lastTimestamp": when,
        "message": f"{reason} of {name}",
        **extra,
    }


EVENTS = [
    _event("iris", "ModelAPI", "CanaryStep", "2026-11-30T11:55:00Z", uid="u-model"),
    _event("iris-aaaa1111", "Deployment", "ScalingReplicaSet", "2026-11-30T11:00:00Z", uid="u-stable"),
    # a pod of the canary revision, deleted since: matched by its name
    _event("iris-bbbb2222-5d9c-abcde", "Pod", "Pulled", "2026-11-30T11:54:00Z", uid="u-gone"),
    _event("iris-bbbb2222-5d9c-abcde", "Pod", "BackOff", "2026-11-30T11:58:00Z", uid="u-gone", count=4, type="Warning"),
    # another model whose name starts with this one's, and another object altogether
    _event("iris-two", "ModelAPI", "Serving", "2026-11-30T11:59:00Z", uid="u-other"),
    _event("iris-two-cccc3333-1-x", "Pod", "Pulled", "2026-11-30T11:59:00Z", uid="u-other-pod"),
]


def _golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review and run pytest --update-golden"


def test_get_table(update_golden: bool) -> None:
    other = copy.deepcopy(MODEL)
    other["metadata"].update(name="digits", namespace="team-b", creationTimestamp="2026-11-30T11:59:15Z")
    other["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ArtifactNotFound",
                "lastTransitionTime": "2026-11-30T11:59:30Z",
            }
        ]
    }
    text = get.models_table([other, MODEL], NOW, all_namespaces=True)
    _golden("get-all-namespaces.txt", text, update_golden)
    header, first, second = text.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "READY", "REASON", "URL", "REVISIONS", "REPLICAS", "AGE"]
    assert first.split()[:4] == ["ml", "iris", "True", "Serving"]
    assert "bbbb2222 canary 10%, aaaa1111 stable 90%" in first
    assert first.split()[-2:] == ["2/2", "2d"]
    assert second.split() == ["team-b", "digits", "False", "ArtifactNotFound", "<none>", "<none>", "<none>", "45s"]
    assert get.models_table([], NOW, all_namespaces=False) == ""


def test_revisions_leave_out_the_last_known_good_revision() -> None:
    assert "9999zzzz" not in revisions_summary(MODEL)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-30T11:59:59Z", "1s"),
        ("2026-11-30T11:30:00Z", "30m"),
        ("2026-11-30T09:00:00Z", "3h"),
        ("2026-11-27T12:00:00Z", "3d"),
        (None, "<unknown>"),
        ("yesterday", "<unknown>"),
    ],
)
def test_age(timestamp: str | None, expected: str) -> None:
    assert age(timestamp, NOW) == expected


def test_status_screen(update_golden: bool) -> None:
    text = status.status_screen(MODEL, CHILDREN, EVENTS, NOW, event_limit=10)
    _golden("status-canary.txt", text, update_golden)
    assert "Ready:          True (Serving)\n" in text
    assert "revision iris-bbbb2222: step 1 of 2, 10% of traffic" in text
    assert "error rate   3.10% (stable 0.10%), max 2.00%" in text
    assert "p99 latency  180 ms (stable 95 ms), max 250 ms" in text
    assert "failed checks 1 in a row, rollback at 3" in text
    assert "download 1.25 s, load 0.40 s, warm-up 0.05 s" in text
    assert "artifact from the store, 1.2 KiB downloaded, artifact size 1.2 KiB" in text
    assert "ChecksumMismatch (2h ago, revision iris-8888yyyy)" in text
    assert "kubectl annotate mapi -n ml iris serving.modelapi.io/rollback=true" in text
    revisions = text.split("Revisions:\n")[1].split("\n\n")[0]
    assert "iris-aaaa1111   stable          90%      2/2" in revisions
    assert "iris-9999zzzz   lastKnownGood   0%       0/?" in revisions
    assert "BackOff (x4)" in text
    assert "iris-two" not in text


def test_related_events_oldest_first_by_uid_or_revision_name() -> None:
    found = related_events(MODEL, CHILDREN, EVENTS)
    assert [e["reason"] for e in found] == ["ScalingReplicaSet", "Pulled", "CanaryStep", "BackOff"]


def test_status_of_a_new_model_without_status_and_a_failing_condition() -> None:
    fresh = {"metadata": {"name": "new", "namespace": "ml", "generation": 1}, "spec": {}}
    text = status.status_screen(fresh, [], [], NOW)
    assert "Ready:          Unknown (no condition yet) (the operator has not written a status yet)" in text
    assert "no conditions yet" in text
    assert "no revision yet" in text
    assert "no recent events" in text
    failing = copy.deepcopy(MODEL)
    del failing["status"]["lastFailure"]
    failing["status"]["conditions"][0].update(status="False", reason="ModelLoadFailed", message="bad graph")
    assert "Last failure:\n  ModelLoadFailed (Ready, 60m ago)\n  bad graph\n" in status.status_screen(
        failing, [], [], NOW
    )


def test_canary_without_analysis() -> None:
    model = copy.deepcopy(MODEL)
    del model["spec"]["rollout"]["canary"]["analysis"]
    assert "no analysis: steps advance on readiness and time" in status.status_screen(model, [], [], NOW)


def test_logs_pods_with_and_without_a_log() -> None:
    def pod(name: str, state: dict[str, Any], phase: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": {"serving.modelapi.io/revision": "aaaa1111"}},
            "status": {"phase": phase, "containerStatuses": [{"name": "runtime", "state": state}]},
        }

    running = pod("iris-aaaa1111-x-2", {"running": {}}, "Running")
    crashed = pod("iris-aaaa1111-x-1", {"waiting": {"reason": "CrashLoopBackOff"}}, "Running")
    crashed["status"]["containerStatuses"][0]["lastState"] = {"terminated": {"exitCode": 3}}
    pending = pod("iris-aaaa1111-x-3", {"waiting": {"reason": "ContainerCreating"}}, "Pending")
    ready, waiting = logs.readable_pods([running, pending, crashed])
    assert ready == ["iris-aaaa1111-x-1", "iris-aaaa1111-x-2"]
    assert waiting == ["pod iris-aaaa1111-x-3 (revision aaaa1111): no log yet, the runtime has not started (Pending)"]
    assert logs.prefix("iris-aaaa1111-x-2", "aaaa1111") == "[iris-aaaa1111-x-2 aaaa1111] "
    assert logs.revision_label("iris", "iris-aaaa1111") == "aaaa1111"
    assert logs.revision_label("iris", "aaaa1111") == "aaaa1111"
    assert logs.revision_label("iris", None) is None


def test_predict_request_bodies(tmp_path: Path) -> None:
    assert predict.request_for("iris", [[1, 2, 3, 4]], v2=False) == (
        "/v1/models/iris:predict",
        b'{"instances": [[1, 2, 3, 4]]}',
    )
    v2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    path, body = predict.request_for("iris", v2, v2=True)
    assert (path, json.loads(body)) == ("/v2/models/iris/infer", v2)
    file = tmp_path / "req.json"
    file.write_text(json.dumps(v2))
    assert predict.read_data(str(file)) == v2
    assert predict.read_data(' {"instances": [[1]]}') == {"instances": [[1]]}
    assert predict.read_data("-", "[[1]]") == [[1]]


@pytest.mark.parametrize(
    ("data", "v2", "message"),
    [
        ('{"instances": [1,', False, "--data: invalid JSON: Expecting value: line 1 column 18"),
        ("missing.json", False, "--data missing.json: not inline JSON and not a readable file: No such file"),
        ("[[1, 2]]", True, "--v2 needs an Open Inference Protocol request"),
        ("[1]", None, None),
    ],
)
def test_predict_bad_data(data: str, v2: bool | None, message: str | None, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    if message is None:
        assert predict.request_for("iris", predict.read_data(data), v2=False)[1] == b'{"instances": [1]}'
        return
    with pytest.raises(predict.DataError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        predict.request_for("iris", predict.read_data(data), v2=bool(v2))


def test_predict_refuses_a_model_that_is_not_ready_but_not_one_at_zero() -> None:
    failing = copy.deepcopy(MODEL)
    failing["status"]["conditions"][0].update(status="False", reason="ArtifactNotFound", message="no such key")
    assert predict.not_servable(failing) == (
        "ModelAPI iris is not Ready (ArtifactNotFound): no such key (modelapi status iris)"
    )
    assert predict.not_servable(MODEL) is None
    waking = copy.deepcopy(failing)
    waking["status"]["conditions"][0].update(status="True", reason="ScaledToZero")
    assert predict.not_servable(waking) is None


def test_predict_tells_the_api_servers_refusal_from_the_models_answer() -> None:
    status_body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "message": 'no endpoints available for service "iris"'}
    )
    assert predict.is_api_server_status("application/json", status_body.encode()) == (
        'no endpoints available for service "iris"'
    )
    assert predict.is_api_server_status("application/json", b'{"error": "bad shape"}') is None
    assert predict.answer_text(b'{"predictions":[[0.1,0.9]]}') == '{"predictions":[[0.1,0.9]]}\n'
    assert predict.answer_text(b"oops\n") == "oops\n"


def test_status_names_what_the_user_may_not_list() -> None:
    text = status.status_screen(MODEL, [], [], NOW, forbidden=("pods", "events"))
    assert text.endswith("\nNot shown: you may not list pods, events in ml (kubectl auth can-i list ...).\n")
