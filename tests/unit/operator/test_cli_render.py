"""``modelapi render`` as a user runs it: the console script, real files, clear errors, no tracebacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelapi_operator import cli

ROOT = Path(__file__).parents[3]
IRIS = ROOT / "examples" / "iris" / "model.yaml"


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    script = shutil.which("modelapi", path=str(Path(sys.executable).parent))
    assert script, "the modelapi console script is installed next to the interpreter"
    return subprocess.run([script, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_console_script_renders_the_iris_example() -> None:
    result = _run("render", "-f", str(IRIS))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Deployment", "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


def test_invalid_manifest_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(IRIS.read_text().replace("minReplicas: 1", "minReplicas: 1\n    scaleToZeroAfterSeconds: 60"))
    result = _run("render", "-f", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.autoscaling.scaleToZeroAfterSeconds: scaleToZeroAfterSeconds needs minReplicas: 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_stdin_namespace_and_several_files(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(IRIS.read_text().replace("name: iris", "name: iris-two"))
    result = _run("render", "-f", "-", "-f", str(other), "-n", "prod", stdin=IRIS.read_text())
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert {doc["metadata"]["namespace"] for doc in documents} == {"prod"}
    assert {doc["metadata"]["labels"]["serving.modelapi.io/name"] for doc in documents} == {"iris", "iris-two"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind: ModelAPI\nmetadata: {name: x\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a Kubernetes object (a mapping), got list"),
        ("apiVersion: serving.modelapi.io/v1alpha1\nkind: ModelAPI\nmetadata: {name: x}\n", "spec: Required value"),
    ],
)
def test_malformed_input_is_named(
    tmp_path: Path, content: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    assert cli.main(["render", "-f", str(path)]) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert str(path) in err
    assert expected in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", "/nonexistent/model.yaml"]) == cli.EXIT_INVALID
    assert "/nonexistent/model.yaml: cannot read: No such file or directory" in capsys.readouterr().err


def test_other_kinds_are_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bundle.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s3-creds}\n---\n" + IRIS.read_text())
    assert cli.main(["render", "-f", str(path)]) == 0
    captured = capsys.readouterr()
    assert "skipping Secret" in captured.err
    assert "kind: Deployment" in captured.out


def test_all_errors_of_a_bundle_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bundle.yaml"
    first = IRIS.read_text().replace("maxReplicas: 3", "maxReplicas: 0")
    second = IRIS.read_text().replace("metric: cpu", "metric: qps").replace("name: iris", "name: other")
    path.write_text(first + "---\n" + second)
    assert cli.main(["render", "-f", str(path)]) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert "spec.autoscaling.maxReplicas" in err
    assert 'spec.autoscaling.metric: Unsupported value: "qps"' in err


def test_output_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", str(IRIS), "-o", "name"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "deployment/iris-9b931fbf",
        "service/iris",
        "service/iris-stable",
        "horizontalpodautoscaler/iris",
        "poddisruptionbudget/iris",
    ]


def test_pull_secrets_as_the_operator_would_set_them(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["render", "-f", str(IRIS), "--image-pull-secret", "regcred", "--image-pull-secret", "mirror"]
    assert cli.main(args) == 0
    (deployment,) = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
