"""What happened when, on the cluster and in the containers: the benchmark's sources of real timestamps.

- ``Recorder``: streaming watches (one per resource, straight to the API server) of a namespace's ModelAPIs,
  Deployments, pods and EndpointSlices; every event is kept with the wall-clock time it arrived here (Kubernetes'
  own timestamps have one-second resolution, too coarse for phases of a second).
- ``container_log``: a container's log lines with containerd's timestamps (``kubectl logs --timestamps``, ns).
- ``first_answer_phases``: the phases of one first answer from zero, from the two above (pure).

The bench and the cluster share one machine and one clock.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ACTIVATE_ANNOTATION = "serving.modelapi.io/activate"
NAME_LABEL = "serving.modelapi.io/name"
WATCHED = {
    "modelapis": "/apis/serving.modelapi.io/v1alpha1/namespaces/{ns}/modelapis",
    "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
    "pods": "/api/v1/namespaces/{ns}/pods",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
}


@dataclass(frozen=True)
class Event:
    at: float  # time.time() when the event arrived
    resource: str
    kind: str  # ADDED, MODIFIED, DELETED
    body: Mapping[str, Any]


@dataclass
class Recorder:
    """Watches of one namespace, on daemon threads, from ``start()`` until the namespace goes away (or 30 min)."""

    env: Mapping[str, str]
    namespace: str
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Recorder:
        for resource, path in WATCHED.items():
            thread = threading.Thread(target=self._watch, args=(resource, path), daemon=True, name=f"watch-{resource}")
            thread.start()
        time.sleep(1.0)  # the watches are open (their ADDED events of what exists arrive first)
        return self

    def _watch(self, resource: str, path: str) -> None:
        context = ssl.create_default_context(cafile=self.env["KUBE_CA_FILE"])
        url = f"{self.env['KUBE_APISERVER_URL']}{path.format(ns=self.namespace)}?watch=1&timeoutSeconds=1800"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.env['KUBE_TOKEN']}"})
        try:
            with urllib.request.urlopen(request, context=context) as response:
                for line in response:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    with self._lock:
                        self.events.append(Event(time.time(), resource, str(event["type"]), event["object"]))
        except OSError:
            return  # the namespace went away, or the run ended

    def since(self, at: float, resource: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.at >= at and e.resource == resource]


@dataclass(frozen=True)
class LogLine:
    at: float
    text: str


_NANOS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(value: str) -> float:
    """RFC 3339 with nanoseconds (containerd's) to a POSIX time."""
    match = _NANOS.match(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    whole, fraction, zone = match.groups()
    base = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return base + (float(f"0.{fraction}") if fraction else 0.0)


def parse_log(text: str) -> list[LogLine]:
    lines = []
    for raw in text.splitlines():
        stamp, _, rest = raw.partition(" ")
        try:
            lines.append(LogLine(parse_timestamp(stamp), rest))
        except ValueError:
            continue
    return lines


def first(lines: Iterable[LogLine], pattern: str, since: float = 0.0) -> float | None:
    """The earliest line at or after ``since`` that matches (several pods' logs come one pod after the other)."""
    regex = re.compile(pattern)
    return min((line.at for line in lines if line.at >= since and regex.search(line.text)), default=None)


def _first_event(events: Iterable[Event], test: Callable[[Mapping[str, Any]], bool]) -> Event | None:
    return next((e for e in events if test(e.body)), None)


def _condition_true(pod: Mapping[str, Any], kind: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _running(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def _lists_ready(slice_: Mapping[str, Any], address: str) -> bool:
    return any(
        address in (e.get("addresses") or []) and (e.get("conditions") or {}).get("ready")
        for e in slice_.get("endpoints") or []
    )


@dataclass(frozen=True)
class Phases:
    """Seconds from the request's send to each milestone (None: not seen), in the order they happen."""

    milestones: tuple[tuple[str, float | None], ...]
    pod: str

    def table(self) -> list[tuple[str, float | None, float | None]]:
        """(milestone, seconds since the previous seen milestone, seconds since the request was sent)."""
        rows, previous = [], 0.0
        for name, at in self.milestones:
            rows.append((name, None if at is None else at - previous, at))
            previous = at if at is not None else previous
        return rows

    def as_dict(self) -> dict[str, float | None]:
        return {name: None if at is None else round(at, 3) for name, at in self.milestones}


def first_answer_phases(
    recorder: Recorder,
    model: str,
    sent_at: float,
    answered_at: float,
    runtime_log: Callable[[str], list[LogLine]],
    activator_logs: list[LogLine],
) -> Phases:
    """The milestones of one request sent at ``sent_at`` to ``model`` at zero and answered at ``answered_at``."""

    def rel(at: float | None) -> float | None:
        return None if at is None else at - sent_at

    asked = _first_event(
        recorder.since(sent_at, "modelapis"),
        lambda b: b["metadata"]["name"] == model and ACTIVATE_ANNOTATION in (b["metadata"].get("annotations") or {}),
    )
    scaled = _first_event(
        recorder.since(sent_at, "deployments"),
        lambda b: (b["metadata"].get("labels") or {}).get(NAME_LABEL) == model and b["spec"].get("replicas", 0) > 0,
    )
    pods = [
        e for e in recorder.since(sent_at, "pods") if (e.body["metadata"].get("labels") or {}).get(NAME_LABEL) == model
    ]
    created = pods[0] if pods else None
    pod = created.body["metadata"]["name"] if created else ""
    mine = [e for e in pods if e.body["metadata"]["name"] == pod]
    scheduled = _first_event(mine, lambda b: bool(b["spec"].get("nodeName")))
    sandbox = _first_event(mine, lambda b: _condition_true(b, "PodReadyToStartContainers"))
    started = _first_event(mine, _running)
    ready = _first_event(mine, lambda b: _condition_true(b, "Ready"))
    address = next((e.body["status"].get("podIP") for e in mine if (e.body.get("status") or {}).get("podIP")), "")
    endpoint = _first_event(
        recorder.since(sent_at, "endpointslices"),
        lambda b: (
            (b["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == model
            and bool(address)
            and _lists_ready(b, address)
        ),
    )
    log = runtime_log(pod) if pod else []
    return Phases(
        milestones=(
            ("activator asked for a replica (ModelAPI annotated)", rel(asked.at if asked else None)),
            ("operator scaled the Deployment to 1", rel(scaled.at if scaled else None)),
            ("pod created", rel(created.at if created else None)),
            ("pod scheduled", rel(scheduled.at if scheduled else None)),
            ("pod sandbox and network ready", rel(sandbox.at if sandbox else None)),
            ("container running", rel(started.at if started else None)),
            ("runtime process listening (imports done)", rel(first(log, r"Uvicorn running on|Application startup"))),
            ("artifact downloaded", rel(first(log, r"artifact .*(downloaded|cache hit)"))),
            ("model loaded (onnxruntime session)", rel(first(log, r"model loaded:"))),
            ("model warmed up, runtime ready", rel(first(log, r"ready: model"))),
            ("pod Ready (readiness probe passed)", rel(ready.at if ready else None)),
            (
                "activator saw a ready replica, forwarded",
                rel(first(activator_logs, rf"replica of \S+/{model} is ready", sent_at)),
            ),
            ("answer received by the client", rel(answered_at)),
            ("Service endpoints list the pod (off the path)", rel(endpoint.at if endpoint else None)),
        ),
        pod=pod,
    )
