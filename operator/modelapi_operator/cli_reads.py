"""Every Kubernetes API read (and the one proxied POST) of the ``modelapi`` CLI's get, status, logs and predict.

Plain dicts in and out, through ``kube.Kube``; what to show is decided by ``cli_views``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from modelapi_operator import kube, names

REPLICA_SET = kube.Kind("apps", "v1", "replicasets", "ReplicaSet")
# What a ModelAPI owns, for its status screen and the events that concern it.
CHILD_KINDS: tuple[kube.Kind, ...] = (
    kube.DEPLOYMENT,
    REPLICA_SET,
    kube.POD,
    kube.SERVICE,
    kube.HPA,
    kube.PDB,
)
SERVICE_PORT_NAME = "http"
DIRECT_CONNECT_TIMEOUT_SECONDS = 5
PREDICT_TIMEOUT_SECONDS = 300


class ModelNotFound(Exception):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f'ModelAPI "{name}" not found in namespace "{namespace}"')


@dataclass(frozen=True)
class ModelReads:
    """What ``modelapi status`` shows: the ModelAPI, its children (of every kind, by label) and its namespace's
    events."""

    model: kube.Manifest
    children: list[kube.Manifest]
    events: list[kube.Manifest]
    # the kinds the user may not list (403), by plural: the screen says so and shows the rest
    forbidden: tuple[str, ...] = ()


def _selector(name: str, revision: str | None = None) -> dict[str, str]:
    labels = {names.LABEL_NAME: name}
    if revision:
        labels[names.LABEL_REVISION] = revision
    return labels


async def list_models(client: kube.Kube, namespace: str | None) -> list[kube.Manifest]:
    """Every ModelAPI of ``namespace`` (None: of every namespace)."""
    return await client.list(kube.MODELAPI, namespace, {})


async def read_model(client: kube.Kube, namespace: str, name: str) -> kube.Manifest:
    model = await client.get(kube.MODELAPI, namespace, name)
    if model is None:
        raise ModelNotFound(namespace, name)
    return model


async def _list_if_allowed(
    client: kube.Kube, kind: kube.Kind, namespace: str, labels: Mapping[str, str]
) -> list[kube.Manifest] | None:
    """The objects (with their kind set: lists leave apiVersion and kind out), or None when the user may not list
    them."""
    try:
        items = await client.list(kind, namespace, labels)
    except kube.Forbidden:
        return None
    return [{**item, "apiVersion": kind.api_version, "kind": kind.kind} for item in items]


async def read_status(client: kube.Kube, namespace: str, name: str) -> ModelReads:
    """The ModelAPI, the children the operator labelled, and the namespace's events; a list the user may not read
    is left out and named in ``forbidden``."""
    model = await read_model(client, namespace, name)
    kinds = (*CHILD_KINDS, kube.EVENT)
    lists = await asyncio.gather(
        *(_list_if_allowed(client, kind, namespace, {} if kind is kube.EVENT else _selector(name)) for kind in kinds)
    )
    found = dict(zip(kinds, lists, strict=True))
    children = [item for kind in CHILD_KINDS for item in found[kind] or []]
    forbidden = tuple(kind.plural for kind in kinds if found[kind] is None)
    return ModelReads(model, children, found[kube.EVENT] or [], forbidden)


async def runtime_pods(client: kube.Kube, namespace: str, name: str, revision: str | None) -> list[kube.Manifest]:
    """The model's pods (of one revision), by the labels the operator sets on every revision's pods."""
    return await client.list(kube.POD, namespace, _selector(name, revision))


def pod_log(
    client: kube.Kube, namespace: str, pod: str, *, tail: int | None, follow: bool, previous: bool = False
) -> AsyncIterator[str]:
    """The runtime container's log (``previous``: of its last terminated run, as after a crash)."""
    params = {"container": names.RUNTIME_CONTAINER}
    if tail is not None:
        params["tailLines"] = str(tail)
    if follow:
        params["follow"] = "true"
    if previous:
        params["previous"] = "true"
    return client.stream_lines(kube.POD.path(namespace, pod, "log"), params)


def proxy_path(namespace: str, service: str, model_path: str) -> str:
    """The API server's service proxy to the model Service's ``http`` port."""
    target = f"{service}:{SERVICE_PORT_NAME}"
    return f"/api/v1/namespaces/{quote(namespace)}/services/{quote(target, safe=':')}/proxy{model_path}"


async def post_via_proxy(
    client: kube.Kube, namespace: str, service: str, model_path: str, body: bytes
) -> kube.RawResponse:
    return await client.request_raw("POST", proxy_path(namespace, service, model_path), body=body)


async def post_direct(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> kube.RawResponse:
    """POST to the model's own address (spec.expose), without the Kubernetes credentials."""
    timeout = aiohttp.ClientTimeout(total=PREDICT_TIMEOUT_SECONDS, sock_connect=DIRECT_CONNECT_TIMEOUT_SECONDS)
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=body, headers=request_headers) as response,
    ):
        return kube.RawResponse(response.status, response.headers.get("Content-Type", ""), await response.read())
