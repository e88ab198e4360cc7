"""The user's identity for the ``modelapi`` CLI, found as kubectl finds it: ``--kubeconfig``, else the files of
``$KUBECONFIG`` (merged, the first file to name an entry wins), else ``~/.kube/config``, else the pod's service
account (in a cluster); ``--context`` picks another context than the current one.

Supported: server, certificate-authority(-data), insecure-skip-tls-verify; token, tokenFile, client-certificate(-data)
and client-key(-data), and exec credential plugins (client.authentication.k8s.io). Certificate material embedded in
the file is written to a private directory the caller owns and removes (``LoadedConfig.scratch``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelapi_operator import kube

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_NAMESPACE = "default"
EXEC_TIMEOUT_SECONDS = 60


class ConfigError(Exception):
    """A kubeconfig that cannot be used; the message says which file or entry, and what to do."""


@dataclass(frozen=True)
class LoadedConfig:
    credentials: kube.Credentials
    namespace: str
    context: str


@dataclass(frozen=True)
class Merged:
    """Named entries of every file, the first file's entry winning (kubectl's merge)."""

    clusters: Mapping[str, tuple[Mapping[str, Any], Path]]
    users: Mapping[str, tuple[Mapping[str, Any], Path]]
    contexts: Mapping[str, Mapping[str, Any]]
    current_context: str | None


def config_paths(explicit: str | None, environ: Mapping[str, str], home: Path) -> list[Path]:
    """The files to read, in order: the explicit one, else $KUBECONFIG's (existing ones), else ~/.kube/config."""
    if explicit:
        return [Path(explicit).expanduser()]
    listed = [Path(part).expanduser() for part in environ.get("KUBECONFIG", "").split(os.pathsep) if part]
    if listed:
        return [path for path in listed if path.is_file()]
    default = home / ".kube" / "config"
    return [default] if default.is_file() else []


def _read(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a valid kubeconfig (YAML): {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: not a kubeconfig (expected a mapping)")
    return document


def merge(documents: Sequence[tuple[Path, Mapping[str, Any]]]) -> Merged:
    clusters: dict[str, tuple[Mapping[str, Any], Path]] = {}
    users: dict[str, tuple[Mapping[str, Any], Path]] = {}
    contexts: dict[str, Mapping[str, Any]] = {}
    current: str | None = None
    for path, document in documents:
        for entry in document.get("clusters") or []:
            if isinstance(entry, dict) and "name" in entry:
                clusters.setdefault(str(entry["name"]), (entry.get("cluster") or {}, path))
        for entry in document.get("users") or []:
            if isinstance(entry, dict) and "name" in entry:
                users.setdefault(str(entry["name"]), (entry.get("user") or {}, path))
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and "name" in entry:
                contexts.setdefault(str(entry["name"]), entry.get("context") or {})
        current = current or document.get("current-context") or None
    return Merged(clusters, users, contexts, current)


class _Scratch:
    """Writes embedded certificate material to private files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def write(self, data: bytes, suffix: str) -> str:
        self.count += 1
        path = self.directory / f"{self.count}{suffix}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        return str(path)


def _decode(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise ConfigError(f"{what} is not valid base64") from None


def _relative(value: Any, base: Path) -> str:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base.parent / path)


def _exec_credential(spec: Mapping[str, Any], user_name: str, base: Path) -> Mapping[str, Any]:
    """Run an exec credential plugin (client.authentication.k8s.io) and return its ``status``."""
    command = spec.get("command")
    if not command:
        raise ConfigError(f"user {user_name}: exec has no command")
    command = str(command)
    if os.sep in command and not Path(command).is_absolute():
        command = _relative(command, base)
    api_version = spec.get("apiVersion") or "client.authentication.k8s.io/v1"
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item["name"])] = str(item["value"])
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    try:
        done = subprocess.run(  # noqa: S603 - the user's own kubeconfig names the plugin, as kubectl runs it
            [command, *[str(arg) for arg in spec.get("args") or []]],
            env=env,
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        hint = spec.get("installHint")
        raise ConfigError(
            f"user {user_name}: credential plugin {command} did not run: {error}" + (f"\n{hint}" if hint else "")
        ) from None
    if done.returncode != 0:
        raise ConfigError(
            f"user {user_name}: credential plugin {command} exited with status {done.returncode}: "
            f"{done.stderr.strip()[-500:]}"
        )
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError):
        raise ConfigError(f"user {user_name}: credential plugin {command} printed no ExecCredential JSON") from None
    if not isinstance(status, dict):
        raise ConfigError(f"user {user_name}: credential plugin {command} printed no ExecCredential status")
    return status


def _user_auth(user: Mapping[str, Any], user_name: str, base: Path, scratch: _Scratch) -> dict[str, Any]:
    """token, certificate_path and private_key_path of Credentials, from a kubeconfig user."""
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise ConfigError(
            f"user {user_name}: auth-provider {provider} is not supported; use its exec credential plugin "
            "(as kubectl itself now requires)"
        )
    auth: dict[str, Any] = {}
    if user.get("token"):
        auth["token"] = str(user["token"])
    elif user.get("tokenFile"):
        try:
            auth["token"] = Path(_relative(user["tokenFile"], base)).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"user {user_name}: cannot read tokenFile: {error}") from None
    if user.get("client-certificate-data"):
        what = f"user {user_name}: client-certificate-data"
        auth["certificate_path"] = scratch.write(_decode(user["client-certificate-data"], what), ".crt")
    elif user.get("client-certificate"):
        auth["certificate_path"] = _relative(user["client-certificate"], base)
    if user.get("client-key-data"):
        what = f"user {user_name}: client-key-data"
        auth["private_key_path"] = scratch.write(_decode(user["client-key-data"], what), ".key")
    elif user.get("client-key"):
        auth["private_key_path"] = _relative(user["client-key"], base)
    if user.get("exec"):
        status = _exec_credential(user["exec"], user_name, base)
        if status.get("token"):
            auth["token"] = str(status["token"])
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            auth["certificate_path"] = scratch.write(str(status["clientCertificateData"]).encode(), ".crt")
            auth["private_key_path"] = scratch.write(str(status["clientKeyData"]).encode(), ".key")
    return auth


def _from_kubeconfig(merged: Merged, context_name: str | None, scratch: _Scratch, paths: list[Path]) -> LoadedConfig:
    name = context_name or merged.current_context
    files = ", ".join(str(path) for path in paths)
    if not name:
        raise ConfigError(f"no current context in {files}; pass --context NAME")
    context = merged.contexts.get(name)
    if context is None:
        known = ", ".join(sorted(merged.contexts)) or "none"
        raise ConfigError(f"context {name} is not in {files} (contexts: {known})")
    cluster_name = str(context.get("cluster") or "")
    if cluster_name not in merged.clusters:
        raise ConfigError(f"context {name}: cluster {cluster_name or '(none)'} is not defined in {files}")
    cluster, cluster_file = merged.clusters[cluster_name]
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {cluster_name}: no server")
    ca_path = (
        _relative(cluster["certificate-authority"], cluster_file) if cluster.get("certificate-authority") else None
    )
    ca_data = None
    if cluster.get("certificate-authority-data"):
        raw = _decode(cluster["certificate-authority-data"], f"cluster {cluster_name}: certificate-authority-data")
        ca_data = raw.decode("ascii", errors="replace")
    auth: dict[str, Any] = {}
    user_name = str(context.get("user") or "")
    if user_name:
        if user_name not in merged.users:
            raise ConfigError(f"context {name}: user {user_name} is not defined in {files}")
        user, user_file = merged.users[user_name]
        auth = _user_auth(user, user_name, user_file, scratch)
    credentials = kube.Credentials(
        server=str(server),
        ca_path=ca_path,
        ca_data=ca_data,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        **auth,
    )
    return LoadedConfig(credentials, str(context.get("namespace") or DEFAULT_NAMESPACE), name)


def _in_cluster(environ: Mapping[str, str], directory: Path) -> LoadedConfig | None:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file = directory / "token"
    if not host or not port or not token_file.is_file():
        return None
    namespace_file = directory / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else DEFAULT_NAMESPACE
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    credentials = kube.Credentials(
        server=server, ca_path=str(directory / "ca.crt"), token=token_file.read_text().strip()
    )
    return LoadedConfig(credentials, namespace, "(in-cluster)")


def load(
    *,
    kubeconfig: str | None,
    context: str | None,
    scratch_dir: Path,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> LoadedConfig:
    """The credentials and default namespace of the chosen context (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    paths = config_paths(kubeconfig, environ, home or Path.home())
    if not paths and not context:
        found = _in_cluster(environ, service_account_dir)
        if found is not None:
            return found
    if not paths:
        raise ConfigError(
            "no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config "
            "(the CLI uses the same identity as kubectl)"
        )
    documents = [(path, _read(path)) for path in paths]
    return _from_kubeconfig(merge(documents), context, _Scratch(scratch_dir), paths)
