"""``modelapi-runtime`` as a user and Kubernetes run it: flags, env, exit codes, SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from modelapi_runtime.cli import build_parser, main, settings_from
from modelapi_runtime.exceptions import EXIT_STARTUP_FAILED
from modelapi_runtime.settings import RuntimeSettings, env_var_name

RUNTIME = [sys.executable, "-m", "modelapi_runtime.cli"]


def test_help_documents_every_flag_with_its_env_var() -> None:
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve_help = subcommands.choices["serve"].format_help()
    for field in RuntimeSettings.model_fields:
        assert "--" + field.replace("_", "-") in serve_help
        assert env_var_name(field) in serve_help
    pull_help = subcommands.choices["pull"].format_help()
    assert "--dest" in pull_help
    assert "MODELAPI_MODEL_DIR" in pull_help


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELAPI_MODEL_URI", "file:///env.onnx")
    monkeypatch.setenv("MODELAPI_NAME", "from-env")
    monkeypatch.setenv("MODELAPI_MAX_BATCH_SIZE", "8")
    args = build_parser().parse_args(["serve", "--name", "from-flag", "--device", "cpu", "--log-requests"])
    s = settings_from(args)
    assert (s.model_uri, s.name, s.max_batch_size, s.device, s.log_requests) == (
        "file:///env.onnx", "from-flag", 8, "cpu", True,
    )  # fmt: skip
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--device", "tpu"])


def test_env_names_match_in_any_case_and_bad_values_name_their_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The environment as pydantic-settings read it: names in any case, text parsed by the model's validation (the
    same messages as a flag's), variables that are no setting ignored."""
    monkeypatch.setenv("modelapi_model_uri", "file:///lower.onnx")
    monkeypatch.setenv("MODELAPI_BATCH_FILL_WHEN_IDLE", "true")
    monkeypatch.setenv("MODELAPI_NOT_A_SETTING", "x")
    s = RuntimeSettings()
    assert (s.model_uri, s.batch_fill_when_idle, s.port) == ("file:///lower.onnx", True, 8080)
    monkeypatch.setenv("MODELAPI_PORT", "http")
    assert main(["serve"]) == 2
    assert "--port: Input should be a valid integer, unable to parse string as an integer" in capsys.readouterr().err
    assert RuntimeSettings(port=81).port == 81  # an argument wins over the variable


def test_invalid_setting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model-uri", "file:///m.onnx", "--max-batch-size", "0"]) == 2
    assert "--max-batch-size" in capsys.readouterr().err


def test_pull_reports_json_and_fails_with_reason(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "--model-uri", (model_dir / "affine.onnx").as_uri(), "--dest", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["path"].endswith("affine.onnx")
    assert len(out["sha256"]) == 64
    term = tmp_path / "termination-log"
    code = main(["pull", "--model-uri", (tmp_path / "gone.onnx").as_uri(), "--dest", str(tmp_path),
                 "--termination-log", str(term)])  # fmt: skip
    assert code == EXIT_STARTUP_FAILED
    assert term.read_text().startswith("ArtifactNotFound: ")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        e.close()
        return int(e.code)
    except OSError:
        return 0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELAPI_")}


def test_serve_exits_non_zero_with_reason_when_the_artifact_is_missing(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [*RUNTIME, "serve", "--model-uri", (tmp_path / "gone.onnx").as_uri(), "--port", str(_port()),
         "--host", "127.0.0.1", "--model-dir", str(tmp_path), "--termination-log", str(term)],
        check=False, capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert proc.returncode == EXIT_STARTUP_FAILED
    assert "ArtifactNotFound" in proc.stderr
    assert term.read_text().startswith("ArtifactNotFound: ")


def test_sigterm_drains_without_losing_accepted_requests(model_dir: Path, tmp_path: Path) -> None:
    port = _port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*RUNTIME, "serve", "--model-uri", (model_dir / "affine.onnx").as_uri(), "--name", "m",
         "--port", str(port), "--host", "127.0.0.1", "--model-dir", str(tmp_path),
         "--max-batch-size", "64", "--max-latency-ms", "700", "--drain-seconds", "1",
         "--shutdown-grace-seconds", "10", "--termination-log", str(tmp_path / "t")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _get(f"{base}/v2/health/ready") != 200:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)

        results: list[int] = []

        def call() -> None:
            body = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()
            req = urllib.request.Request(f"{base}/v1/models/m:predict", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=20) as r:
                results.append(int(r.status))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # accepted and waiting in the batcher (700 ms window)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert _get(f"{base}/v2/health/ready") == 503  # draining: not ready, still answering
        assert _get(f"{base}/v2/health/live") == 200
        for t in threads:
            t.join(20)
        assert results == [200] * 8
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_the_command_imports_no_server_module_before_the_pull_starts() -> None:
    """`serve` starts the artifacts' pull before it imports the server (FastAPI, uvicorn, onnxruntime, numpy), so
    those imports run while the pull waits on the store or the node's agent: the command's module must not import
    them itself."""
    program = (
        "import sys, modelapi_runtime.cli\n"
        "heavy = ('fastapi', 'uvicorn', 'onnxruntime', 'numpy', 'modelapi_runtime.server', 'modelapi_runtime.app')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


# A `serve` whose thread, once the server answers ready, prints which of these it has imported, then ends the process.
_SERVE_AND_LIST = """
import os, sys, threading, time, urllib.request
from modelapi_runtime.cli import main

def watch(port, lazy):
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    names = sorted({m.split(".")[0] for m in sys.modules} & lazy)
    print(",".join(names), flush=True)
    os._exit(0)

threading.Thread(target=watch, args=(sys.argv[3], {"fastapi", "opentelemetry", "pydantic_settings", "dotenv"}),
                 daemon=True).start()
sys.exit(main(["serve", "--model-uri", sys.argv[1], "--name", "m", "--host", "127.0.0.1", "--port", sys.argv[3],
               "--model-dir", sys.argv[2], "--termination-log", sys.argv[2] + "/t"]))
"""


def test_a_start_with_defaults_imports_no_fastapi_opentelemetry_or_pydantic_settings(
    model_dir: Path, tmp_path: Path
) -> None:
    """Every module a start imports is CPU before Ready (at a `500m` limit, each CPU-ms is 2 ms of wall time): FastAPI
    (and the OpenTelemetry API it imports) is loaded only to build /openapi.json, on its first request (test_app);
    the settings read their environment without pydantic-settings."""
    env = {k: v for k, v in _env().items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_LIST, (model_dir / "affine.onnx").as_uri(), str(tmp_path), str(_port())],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
