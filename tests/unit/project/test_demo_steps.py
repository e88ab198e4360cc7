"""make demo's Python steps (scripts/demo_steps.py), run as demo.sh runs them: a subprocess per step."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
STEPS = ROOT / "scripts" / "demo_steps.py"


def step(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STEPS), *args], input=stdin, capture_output=True, text=True, env=env, check=False
    )


def test_point_storage_sets_the_endpoint_and_keeps_the_rest_in_order() -> None:
    example = ROOT / "examples" / "iris" / "model.yaml"
    proc = step("point-storage", str(example), "http://10.245.0.1:9000")
    assert proc.returncode == 0, proc.stderr
    original = yaml.safe_load(example.read_text())
    pointed = yaml.safe_load(proc.stdout)
    assert pointed["spec"]["storage"]["endpoint"] == "http://10.245.0.1:9000"
    original["spec"]["storage"]["endpoint"] = "http://10.245.0.1:9000"
    assert pointed == original
    assert list(pointed) == list(original)


def test_decode_secret_gives_each_key_its_value() -> None:
    secret = {
        "metadata": {"name": "s3-creds"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in {"A": "x y", "B": "ü"}.items()},
    }
    proc = step("decode-secret", stdin=json.dumps(secret))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"s3-creds": {"A": "x y", "B": "ü"}}


def test_upload_without_the_cluster_env_says_what_is_missing(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    proc = step("upload-model", str(model), "iris/1/model.onnx", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "upload-model needs S3_ENDPOINT_URL, S3_BUCKET" in proc.stderr
    assert "Traceback" not in proc.stderr
