"""The ``modelapi`` commands that read a cluster: get, status, logs and predict.

Each logs in with the user's kubeconfig (``kubeconfig.py``), reads through ``cli_reads`` and prints what a
``cli_views`` module makes of it. Every failure becomes one line on stderr and exit status 1 (``failure_message``);
there is never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from modelapi_operator import cli_reads, kube, kubeconfig
from modelapi_operator.cli_views import get as get_view
from modelapi_operator.cli_views import logs as logs_view
from modelapi_operator.cli_views import predict as predict_view
from modelapi_operator.cli_views import status as status_view

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
READ_TIMEOUT_SECONDS = 60
FOLLOW_RESCAN_SECONDS = 5.0


class CommandFailed(Exception):
    """A failure already put in words for the user."""


@dataclass(frozen=True)
class Session:
    client: kube.Kube
    namespace: str


@asynccontextmanager
async def _session(
    args: argparse.Namespace, *, timeout_seconds: float = READ_TIMEOUT_SECONDS
) -> AsyncIterator[Session]:
    with tempfile.TemporaryDirectory(prefix="modelapi-cli-") as scratch:
        loaded = kubeconfig.load(kubeconfig=args.kubeconfig, context=args.context, scratch_dir=Path(scratch))
        client = kube.Kube(loaded.credentials, timeout_seconds=timeout_seconds)
        try:
            yield Session(client, args.namespace or loaded.namespace)
        finally:
            await client.close()


def failure_message(error: Exception) -> str:
    """The one error map of the CLI: what went wrong and what to do, in one or two lines."""
    if isinstance(error, kube.KubeError):
        if error.status == 0:
            return f"cannot reach the Kubernetes API: {error.message}"
        if error.status == 401:
            return f"the Kubernetes API refused your credentials (401 {error.reason}): log in again for this context"
        if error.status == 403:
            return f"forbidden: {error.message}"
        if isinstance(error, kube.NotFound) and "modelapis" in error.message:
            return f"the ModelAPI resource is not installed in this cluster ({error.message})"
        return f"the Kubernetes API answered {error.status} {error.reason}: {error.message}"
    if isinstance(error, OSError) and not isinstance(error, BrokenPipeError):
        return f"cannot use the kubeconfig's TLS files: {error}"
    return str(error)


def _now() -> datetime:
    return datetime.now(UTC)


async def get(args: argparse.Namespace, out: TextIO) -> None:
    async with _session(args) as session:
        namespace = None if args.all_namespaces else session.namespace
        models = await cli_reads.list_models(session.client, namespace)
    text = get_view.models_table(models, _now(), all_namespaces=args.all_namespaces)
    if not text:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        sys.stderr.write(f"No ModelAPI in {where}.\n")
    out.write(text)


async def status(args: argparse.Namespace, out: TextIO) -> None:
    async with _session(args) as session:
        reads = await cli_reads.read_status(session.client, session.namespace, args.name)
    out.write(
        status_view.status_screen(
            reads.model, reads.children, reads.events, _now(), event_limit=args.events, forbidden=reads.forbidden
        )
    )


async def _print_log(
    session: Session, pod: str, revision: str, *, tail: int | None, follow: bool, out: TextIO, previous: bool = False
) -> None:
    label = logs_view.prefix(pod, revision)
    lines = cli_reads.pod_log(session.client, session.namespace, pod, tail=tail, follow=follow, previous=previous)
    try:
        async for line in lines:
            out.write(label + line + "\n")
            out.flush()
    except kube.KubeError as error:
        if error.status in {0, 401, 403}:
            raise
        # a pod that went away or restarted meanwhile: say so, the other pods go on
        sys.stderr.write(f"{label}log ended: {failure_message(error)}\n")


async def logs(args: argparse.Namespace, out: TextIO) -> None:
    async with _session(args) as session:
        await cli_reads.read_model(session.client, session.namespace, args.name)
        revision = logs_view.revision_label(args.name, args.revision)
        pods = await cli_reads.runtime_pods(session.client, session.namespace, args.name, revision)
        names, waiting = logs_view.readable_pods(pods)
        for line in waiting:
            sys.stderr.write(line + "\n")
        if not pods and not args.follow:
            raise CommandFailed(logs_view.no_pods(args.name, args.revision))
        by_name = {str(p["metadata"]["name"]): p for p in pods}
        if not args.follow:
            for pod in names:
                await _print_log(
                    session,
                    pod,
                    logs_view.revision_of(by_name[pod]),
                    tail=args.tail,
                    follow=False,
                    out=out,
                    previous=args.previous,
                )
            return
        followed = {pod: _follow_pod(session, by_name[pod], args.tail, out) for pod in names}
        if not followed:
            sys.stderr.write(logs_view.no_pods(args.name, args.revision) + "; waiting for one\n")
        await _follow(session, args, revision, followed, out)


@dataclass(frozen=True)
class _Followed:
    """One pod's log being followed: the task that prints it, and the container restarts when it began."""

    task: asyncio.Task[None]
    restarts: int


def _follow_pod(session: Session, pod: kube.Manifest, tail: int | None, out: TextIO) -> _Followed:
    name, revision = str(pod["metadata"]["name"]), logs_view.revision_of(pod)
    task = asyncio.create_task(_print_log(session, name, revision, tail=tail, follow=True, out=out))
    return _Followed(task, logs_view.restarts(pod))


async def _follow(
    session: Session, args: argparse.Namespace, revision: str | None, followed: dict[str, _Followed], out: TextIO
) -> None:
    """Every pod's log as it grows; a pod that starts later (a scale-up, a new revision) joins, from its start, and
    a runtime container that restarts in its pod is followed again, from its new run's start (a log stream ends
    with the run that wrote it)."""
    while True:
        await asyncio.sleep(FOLLOW_RESCAN_SECONDS)
        for each in followed.values():
            error = each.task.exception() if each.task.done() else None
            if error is not None:
                raise error
        pods = await cli_reads.runtime_pods(session.client, session.namespace, args.name, revision)
        ready, _ = logs_view.readable_pods(pods)
        for pod in pods:
            name = str(pod["metadata"]["name"])
            if name not in ready:
                continue
            one = followed.get(name)
            if one is None:
                followed[name] = _follow_pod(session, pod, None, out)
            elif one.task.done() and logs_view.new_run(pod, one.restarts):
                sys.stderr.write(logs_view.restarted(name, logs_view.revision_of(pod), logs_view.restarts(pod)) + "\n")
                followed[name] = _follow_pod(session, pod, None, out)


async def _post_direct(url: str, body: bytes) -> kube.RawResponse:
    try:
        return await cli_reads.post_direct(url, body)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise CommandFailed(f"cannot reach {url}: {type(error).__name__}: {error}") from None


def _expose_url(model: kube.Manifest) -> str | None:
    """status.url when it is the Gateway's address (spec.expose, route accepted), not the in-cluster Service's."""
    url = (model.get("status") or {}).get("url")
    exposed = bool((model.get("spec") or {}).get("expose"))
    return str(url) if exposed and url and ".svc.cluster.local" not in str(url) else None


async def predict(args: argparse.Namespace, out: TextIO) -> None:
    stdin_text = sys.stdin.read() if args.data == "-" else None
    data = predict_view.read_data(args.data, stdin_text)
    model_path, body = predict_view.request_for(args.name, data, v2=args.v2)
    async with _session(args, timeout_seconds=cli_reads.PREDICT_TIMEOUT_SECONDS) as session:
        model = await cli_reads.read_model(session.client, session.namespace, args.name)
        refusal = predict_view.not_servable(model)
        if refusal:
            raise CommandFailed(refusal)
        exposed = _expose_url(model)
        if args.via == "expose" and exposed is None:
            raise CommandFailed(f"ModelAPI {args.name} has no external address yet (spec.expose, status.url)")
        response: kube.RawResponse | None = None
        if exposed is not None and args.via in {"auto", "expose"}:
            try:
                response = await _post_direct(exposed + model_path, body)
            except CommandFailed as error:
                if args.via == "expose":
                    raise
                sys.stderr.write(f"{error}; sending through the Kubernetes API's service proxy instead\n")
        if response is None:
            response = await cli_reads.post_via_proxy(session.client, session.namespace, args.name, model_path, body)
            refused = predict_view.is_api_server_status(response.content_type, response.body)
            if refused is not None and response.status >= 400:
                raise CommandFailed(_proxy_refusal(response.status, refused, session.namespace))
    if response.status >= 400:
        sys.stderr.write(f"modelapi predict: the model answered {response.status}:\n")
        sys.stderr.write(predict_view.answer_text(response.body))
        raise CommandFailed("")
    out.write(predict_view.answer_text(response.body))


def _proxy_refusal(status: int, message: str, namespace: str) -> str:
    if status == 403:
        return f"forbidden: {message} (the service proxy needs get and create on services/proxy in {namespace})"
    if status == 503:
        return f"no replica answers yet: {message}"
    return f"the Kubernetes API's service proxy answered {status}: {message}"


Command = Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, None]]
COMMANDS: dict[str, Command] = {"get": get, "status": status, "logs": logs, "predict": predict}


def run(args: argparse.Namespace) -> int:
    """Run one command; its failure is one line on stderr, ``modelapi COMMAND: ...``."""
    try:
        asyncio.run(COMMANDS[args.command](args, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `modelapi logs NAME | head` is fine
        sys.stderr.close()
    except (
        CommandFailed,
        kube.KubeError,
        kubeconfig.ConfigError,
        cli_reads.ModelNotFound,
        predict_view.DataError,
        OSError,  # a certificate file of the kubeconfig that ssl cannot read
    ) as error:
        message = failure_message(error)
        if message:
            sys.stderr.write(f"modelapi {args.command}: {message}\n")
        return EXIT_FAILED
    return 0
