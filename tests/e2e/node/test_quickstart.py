"""Tier B: README.md's "Quickstart on an existing cluster", run as it is written, on the real-node cluster.

The commands are the fenced `sh` block between `<!-- quickstart:begin -->` and `<!-- quickstart:end -->`, then the
block after `<!-- quickstart:cleanup -->`, in one bash (`set -euo pipefail`), from the repository root. What they
print is checked against the model itself and against the block after `<!-- quickstart:answers -->`, so a README
whose commands or answers stop being true fails here.

The test changes only the values of the block's own assignments (its first lines, where a user writes theirs), to
this cluster's (SETTINGS): the registry, the S3 endpoint, region and credentials. The rest is what a user has: helm
and kubectl on PATH, pointed at the cluster by KUBECONFIG; Python with onnx and boto3 (this virtualenv); curl; local
port 8080 free; and the three images in the registry under the chart's version, as `docker push` leaves them (the
harness pushes them tagged `dev`: the test tags the same manifests with the version, in the registry).

Run with `make test-e2e-node PYTEST_ARGS="-k quickstart"`. It installs the chart as release `modelapi` in
`modelapi-system` and uses namespace `ml`, so it runs alone (no other operator of this session is running: the
`operator` fixture is module-scoped and this module does not use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from e2e.conftest import Cluster

from .test_real_node import ROOT, registry_has

pytestmark = pytest.mark.node

README = ROOT / "README.md"
LOCAL_PORT = 8080  # the port-forward's, as written in the README
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Quickstart:
    commands: list[str]
    cleanup: list[str]
    answers: list[str]


def _fenced(text: str, marker: str, language: str, end: str | None = None) -> str:
    pattern = rf"<!-- {re.escape(marker)} -->\s*```{language}\n(.*?)```"
    if end:
        pattern += rf"\s*<!-- {re.escape(end)} -->"
    found = re.findall(pattern, text, flags=re.DOTALL)
    assert len(found) == 1, f"README.md: expected one ```{language} block after <!-- {marker} -->, found {len(found)}"
    block: str = found[0]
    return block


def _commands(block: str) -> list[str]:
    """Shell commands of a block: comment and blank lines dropped, backslash-continued lines joined."""
    commands: list[str] = []
    current: list[str] = []
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        if not line.endswith("\\"):
            commands.append("\n".join(current))
            current = []
    assert not current, f"a command ends with a backslash: {current}"
    return commands


def read_quickstart() -> Quickstart:
    text = README.read_text()
    answers = _fenced(text, "quickstart:answers", "console").splitlines()
    return Quickstart(
        commands=_commands(_fenced(text, "quickstart:begin", "sh", end="quickstart:end")),
        cleanup=_commands(_fenced(text, "quickstart:cleanup", "sh")),
        answers=[line for line in answers if line.strip()],
    )


def _is_assignment(command: str) -> bool:
    words = shlex.split(command, comments=True)
    names = words[1:] if words[:1] == ["export"] else words
    return bool(names) and all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", word) for word in names)


def with_settings(commands: list[str], settings: dict[str, str]) -> list[str]:
    """The commands with the values of their assignments set to settings; fails unless they assign exactly the
    names in settings (a README that adds or drops one must update SETTINGS, and say so)."""
    assigned: list[str] = []
    out: list[str] = []
    for command in commands:
        if not _is_assignment(command):
            out.append(command)
            continue
        words = shlex.split(command, comments=True)
        export = words[:1] == ["export"]
        names = [word.partition("=")[0] for word in (words[1:] if export else words)]
        assigned += names
        unknown = [name for name in names if name not in settings]
        assert not unknown, f"README.md's quickstart sets {unknown}, which the test does not substitute: {command}"
        values = " ".join(f"{name}={shlex.quote(settings[name])}" for name in names)
        out.append(f"export {values}" if export else values)
    assert sorted(assigned) == sorted(settings), f"the quickstart assigns {assigned}, the test sets {sorted(settings)}"
    return out


MARK = "@@quickstart-command-{}@@"


def _script(commands: list[str], *, strict: bool) -> str:
    lines = ["set -euo pipefail" if strict else "set +e"]
    for index, command in enumerate(commands):
        lines += [f"printf '\\n%s\\n' {shlex.quote(MARK.format(index))}", command]
    return "\n".join(lines) + "\n"


def _outputs(stdout: str, count: int) -> dict[int, str]:
    """The stdout of each command, by its index (up to the one that failed)."""
    parts = re.split(r"\n?@@quickstart-command-(\d+)@@\n", stdout)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2) if int(parts[i]) < count}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _run(script: str, env: dict[str, str], workdir: Path, name: str) -> Run:
    """bash with the script, from the repository root, in a process group of its own: what it leaves in the
    background (the port-forward, when the script stops before its cleanup) is ended with the group."""
    path, out, err = workdir / f"{name}.sh", workdir / f"{name}.out", workdir / f"{name}.err"
    path.write_text(script)
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", str(path)], cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = -1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    return Run(returncode, out.read_text(), err.read_text())


def _tag_in_registry(image: str, tag: str) -> None:
    """Tags the manifest of image (registry/repository:tag, as the harness pushed it) with tag as well, through the
    registry's HTTP API (plain HTTP, the harness's registry): what `docker push` of that tag would leave there."""
    registry, _, rest = image.partition("/")
    repository, _, source = rest.rpartition(":")
    kinds = [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
    get = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{source}", headers={"Accept": ", ".join(kinds)}
    )
    with urllib.request.urlopen(get, timeout=30) as response:
        body, kind = response.read(), response.headers["Content-Type"]
    put = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}", data=body, method="PUT", headers={"Content-Type": kind}
    )
    with urllib.request.urlopen(put, timeout=30) as response:
        assert response.status == 201, (image, tag, response.status)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _request_body(command: str) -> Any:
    """The JSON body a curl command of the README sends (its -d argument)."""
    words = shlex.split(command)
    return json.loads(words[words.index("-d") + 1])


def _iris(rows: list[list[float]]) -> np.ndarray:
    """What the iris model answers for rows: the example's model, run here by onnxruntime."""
    model = runpy.run_path(str(ROOT / "examples" / "iris" / "build_model.py"))["build_iris_model"]()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": np.asarray(rows, dtype=np.float32)})[0])


def _one(commands: list[str], needle: str) -> int:
    found = [index for index, command in enumerate(commands) if needle in command]
    assert len(found) == 1, f"README.md's quickstart: expected one command with {needle!r}, found {len(found)}"
    return found[0]


def test_the_readme_quickstart_runs_as_written_and_answers(
    cluster: Cluster, node: dict[str, str], tmp_path: Path
) -> None:
    quickstart = read_quickstart()
    settings = {
        "REGISTRY": node["NODE_REGISTRY"],
        "AWS_ENDPOINT_URL": node["NODE_S3_ENDPOINT_URL"],  # reached from this machine and from the pods
        "AWS_DEFAULT_REGION": cluster.env["AWS_DEFAULT_REGION"],
        "AWS_ACCESS_KEY_ID": cluster.env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": cluster.env["AWS_SECRET_ACCESS_KEY"],
    }
    commands = with_settings(quickstart.commands, settings)
    assert _port_free(LOCAL_PORT), f"local port {LOCAL_PORT} (the README's port-forward) is taken on this machine"
    version = yaml.safe_load((ROOT / "charts" / "modelapi" / "Chart.yaml").read_text())["appVersion"]
    for image in ("NODE_OPERATOR_IMAGE", "NODE_RUNTIME_IMAGE"):
        _tag_in_registry(node[image], version)
    # the chart names the GPU image, but only a GPU model's pod pulls it (the quickstart has none), and the tests'
    # cluster pushes it only for the tests that pull it: tagged when it is there
    if registry_has(node["NODE_RUNTIME_GPU_IMAGE"]):
        _tag_in_registry(node["NODE_RUNTIME_GPU_IMAGE"], version)

    tools = {str(Path(cluster.env["HELM"]).parent), str(Path(cluster.kubectl_bin).parent)}
    venv = str(Path(sys.executable).parent)
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": os.pathsep.join([venv, *sorted(tools), os.environ.get("PATH", "/usr/bin:/bin")]),
        "KUBECONFIG": cluster.env["KUBECONFIG"],
    }
    run = _run(_script(commands + quickstart.cleanup, strict=True), env, tmp_path, "quickstart")
    outputs = _outputs(run.stdout, len(commands) + len(quickstart.cleanup))
    if run.returncode != 0:  # the cleanup, as far as it goes, so the next test finds the cluster as it was
        _run(_script(quickstart.cleanup, strict=False), env, tmp_path, "cleanup")
        failed = max(outputs, default=0)
        every = commands + quickstart.cleanup
        pytest.fail(
            f"README.md's quickstart stopped (exit {run.returncode}) at:\n{every[failed]}\n"
            f"--- its output:\n{outputs.get(failed, '')[-3000:]}\n--- stderr:\n{run.stderr[-3000:]}"
        )
    print(run.stdout[-4000:])
    assert settings["AWS_SECRET_ACCESS_KEY"] not in run.stdout + run.stderr, "the quickstart never prints a credential"

    # the answers, as the README shows them and as the model gives them
    shown = quickstart.answers
    assert len(shown) == 4, shown
    url = outputs[_one(commands, "{.status.url}")].strip()
    assert url == shown[0] == "http://iris.ml.svc.cluster.local"
    ready = json.loads(outputs[_one(commands, "/v2/health/ready")])
    assert ready == json.loads(shown[1]) == {"ready": True}

    v1_command = _one(commands, "/v1/models/iris:predict")
    v1 = json.loads(outputs[v1_command])
    expected_v1 = _iris(_request_body(commands[v1_command])["instances"])
    np.testing.assert_allclose(v1["predictions"], expected_v1, atol=1e-6)
    np.testing.assert_allclose(json.loads(shown[2])["predictions"], v1["predictions"], atol=1e-6)

    v2_command = _one(commands, "/v2/models/iris/infer")
    v2 = json.loads(outputs[v2_command])
    (request,) = _request_body(commands[v2_command])["inputs"]
    expected_v2 = _iris(np.asarray(request["data"]).reshape(request["shape"]).tolist())
    (output,) = v2["outputs"]
    np.testing.assert_allclose(output["data"], expected_v2.ravel(), atol=1e-6)
    (shown_output,) = json.loads(shown[3])["outputs"]
    assert {k: v for k, v in shown_output.items() if k != "data"} == {k: v for k, v in output.items() if k != "data"}
    np.testing.assert_allclose(shown_output["data"], output["data"], atol=1e-6)
    assert v2["model_name"] == json.loads(shown[3])["model_name"] == "iris"
    assert re.fullmatch(r"[0-9a-f]{8}", v2["model_version"]), v2  # the serving revision

    # the cleanup removed what the quickstart made (the CRD stays, as the README says)
    assert cluster.kubectl("get", "namespace", "ml", check=False).returncode != 0, "namespace ml is still there"
    releases = subprocess.run(
        [cluster.env["HELM"], "list", "-n", "modelapi-system", "-o", "json"],
        env=cluster.subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert releases.returncode == 0, releases.stderr
    assert [r["name"] for r in json.loads(releases.stdout)] == [], releases.stdout
    cluster.kubectl("get", "crd", "modelapis.serving.modelapi.io")
