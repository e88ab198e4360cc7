"""The cluster commands of the ``modelapi`` console script fail in one clear line, never with a traceback: bad
input is refused before any request, and an API server that does not answer (a real closed port) is named."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelapi_operator import cli_commands, kube


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = shutil.which("modelapi", path=str(Path(sys.executable).parent))
    assert script, "the modelapi console script is installed next to the interpreter"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_unreachable_api_server(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    for args in (["get"], ["status", "iris"], ["logs", "iris"], ["predict", "iris", "--data", "[[1]]"]):
        result = _run(*args, "--kubeconfig", str(config))
        assert result.returncode == 1, result
        assert result.stderr.startswith(f"modelapi {args[0]}: cannot reach the Kubernetes API: GET "), result.stderr
        assert "Traceback" not in result.stderr


def test_bad_data_is_refused_before_any_request(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    result = _run("predict", "iris", "--data", '{"instances": [1,', "--kubeconfig", str(config))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "modelapi predict: --data: invalid JSON: Expecting value: line 1 column 18 (char 17)\n"


def test_unknown_context_and_no_kubeconfig(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path, "https://127.0.0.1:1")
    result = _run("get", "--kubeconfig", str(config), "--context", "prod")
    assert result.returncode == 1
    assert result.stderr == f"modelapi get: context prod is not in {config} (contexts: x)\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": ""}
    result = _run("status", "iris", env=env)
    assert result.returncode == 1
    assert "no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG" in result.stderr


def test_help_names_every_command() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in ("render", "get", "status", "logs", "predict"):
        assert command in result.stdout
    result = _run("logs", "--help")
    assert "--revision" in result.stdout
    assert "--tail" in result.stdout
    assert "--follow" in result.stdout


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (kube.KubeError(401, "Unauthorized", "Unauthorized"), "refused your credentials (401 Unauthorized): log in"),
        (kube.Forbidden(403, "Forbidden", 'pods is forbidden: User "u"'), 'forbidden: pods is forbidden: User "u"'),
        (
            kube.NotFound(404, "NotFound", "the server could not find the requested resource (get modelapis)"),
            "the ModelAPI resource is not installed in this cluster",
        ),
        (kube.KubeError(500, "InternalError", "etcd down"), "the Kubernetes API answered 500 InternalError: etcd down"),
        (FileNotFoundError(2, "No such file or directory"), "cannot use the kubeconfig's TLS files"),
    ],
)
def test_one_error_map(error: Exception, message: str) -> None:
    assert message in cli_commands.failure_message(error)
