"""The CLI finds the user's identity as kubectl does: real kubeconfig files, a real exec credential plugin."""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelapi_operator import kubeconfig

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def _config(context: str, server: str, user: dict[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"cluster": f"c-{context}", "user": f"u-{context}"}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"c-{context}", "cluster": {"server": server, "certificate-authority": "ca.crt"}}],
        "users": [{"name": f"u-{context}", "user": user}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
    }


def _load(tmp_path: Path, **kwargs: Any) -> kubeconfig.LoadedConfig:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    kwargs.setdefault("kubeconfig", None)
    kwargs.setdefault("context", None)
    kwargs.setdefault("environ", {})
    kwargs.setdefault("home", tmp_path / "home")
    kwargs.setdefault("service_account_dir", tmp_path / "no-sa")
    return kubeconfig.load(scratch_dir=scratch, **kwargs)


def test_kubeconfig_list_merges_first_wins_and_context_picks(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", _config("dev", "https://dev:6443", {"token": "t-dev"}, namespace="team"))
    (tmp_path / "sub").mkdir()
    second = _write(tmp_path / "sub" / "b", _config("prod", "https://prod:6443", {"token": "t-prod"}))
    environ = {"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "absent"), str(second)])}

    current = _load(tmp_path, environ=environ)
    assert (current.context, current.namespace, current.credentials.server) == ("dev", "team", "https://dev:6443")
    assert current.credentials.token == "t-dev"
    assert current.credentials.ca_path == str(tmp_path / "ca.crt")

    chosen = _load(tmp_path, environ=environ, context="prod")
    assert (chosen.namespace, chosen.credentials.token) == ("default", "t-prod")
    # relative paths are relative to the file that names them
    assert chosen.credentials.ca_path == str(tmp_path / "sub" / "ca.crt")

    explicit = _load(tmp_path, environ=environ, kubeconfig=str(second))
    assert explicit.context == "prod"


def test_embedded_certificates_go_to_private_files(tmp_path: Path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode(),
    }
    document = _config("dev", "https://dev:6443", user)
    del document["clusters"][0]["cluster"]["certificate-authority"]
    document["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(CA_PEM.encode()).decode()
    loaded = _load(tmp_path, kubeconfig=str(_write(tmp_path / "config", document)))
    credentials = loaded.credentials
    assert credentials.ca_data == CA_PEM
    assert credentials.token is None
    assert credentials.certificate_path
    assert credentials.private_key_path
    assert Path(credentials.certificate_path).read_bytes() == b"CERT"
    assert Path(credentials.private_key_path).read_bytes() == b"KEY"
    assert stat.S_IMODE(Path(credentials.private_key_path).stat().st_mode) == 0o600
    assert Path(credentials.private_key_path).parent == tmp_path / "scratch"


def test_token_file_and_insecure(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    document = _config("dev", "https://dev:6443", {"tokenFile": "token"})
    document["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
    loaded = _load(tmp_path, kubeconfig=str(_write(tmp_path / "config", document)))
    assert loaded.credentials.token == "from-file"
    assert loaded.credentials.insecure


def test_exec_credential_plugin_runs_with_its_args_and_env(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential'\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',\n"
        "                  'status': {'token': sys.argv[1] + '-' + os.environ['TEAM']}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), "minted"],
            "env": [{"name": "TEAM", "value": "ml"}],
        }
    }
    loaded = _load(tmp_path, kubeconfig=str(_write(tmp_path / "config", _config("dev", "https://d", user))))
    assert loaded.credentials.token == "minted-ml"


def test_failing_exec_plugin_says_why(tmp_path: Path) -> None:
    user = {"exec": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('token expired')"]}}
    path = _write(tmp_path / "config", _config("dev", "https://d", user))
    with pytest.raises(kubeconfig.ConfigError, match="exited with status 1: token expired"):
        _load(tmp_path, kubeconfig=str(path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update({"current-context": ""}), "no current context in .*; pass --context NAME"),
        (lambda d: d.update({"current-context": "gone"}), r"context gone is not in .* \(contexts: dev\)"),
        (lambda d: d["users"][0].update({"user": {"auth-provider": {"name": "gcp"}}}), "auth-provider gcp is not"),
        (lambda d: d["clusters"].clear(), "context dev: cluster c-dev is not defined"),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "not base64!"}),
            "certificate-authority-data is not valid base64",
        ),
    ],
)
def test_unusable_kubeconfig(tmp_path: Path, change: Any, message: str) -> None:
    document = _config("dev", "https://dev:6443", {"token": "t"})
    change(document)
    with pytest.raises(kubeconfig.ConfigError, match=message):
        _load(tmp_path, kubeconfig=str(_write(tmp_path / "config", document)))


def test_no_kubeconfig_at_all_and_in_cluster(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.ConfigError, match="no kubeconfig found: pass --kubeconfig FILE"):
        _load(tmp_path)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("serving")
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    loaded = _load(tmp_path, environ=environ, service_account_dir=sa)
    assert (loaded.credentials.server, loaded.credentials.token, loaded.namespace) == (
        "https://10.0.0.1:443",
        "sa-token",
        "serving",
    )
    # ~/.kube/config wins over the pod's identity, as with kubectl
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    _write(tmp_path / "home" / ".kube" / "config", _config("dev", "https://dev:6443", {"token": "t"}))
    assert _load(tmp_path, environ=environ, service_account_dir=sa).context == "dev"


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("clusters: [")
    with pytest.raises(kubeconfig.ConfigError, match="not a valid kubeconfig"):
        _load(tmp_path, kubeconfig=str(tmp_path / "bad"))
    with pytest.raises(kubeconfig.ConfigError, match="cannot read"):
        _load(tmp_path, kubeconfig=str(tmp_path / "missing"))
