"""The Argo CD health check (argocd/health.lua) in a real Lua 5.1 interpreter, as Argo CD runs it.

Each fixture in tests/unit/project/argocd/*.yaml is a ModelAPI (``object``) and the health Argo CD must show for it
(``expected``). The object goes to Lua as a table literal; tests/unit/project/argocd/runner.lua sets it as the global
``obj`` and runs the script. Lua comes from Debian's ``lua5.1`` (installed here when missing and we are root).

Run this file as a script to regenerate argocd/argocd-cm.yaml from argocd/health.lua.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
HEALTH_LUA = ROOT / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "argocd" / "argocd-cm.yaml"
CM_KEY = "resource.customizations.health.serving.modelapi.io_ModelAPI"
FIXTURES = Path(__file__).resolve().parent / "argocd"
RUNNER = FIXTURES / "runner.lua"
CASES = sorted(FIXTURES.glob("*.yaml"))


def to_lua(value: Any) -> str:
    """A Python value (from YAML/JSON) as a Lua 5.1 literal: objects and lists become tables, like Argo CD does."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _lua_string(text: str) -> str:
    """A double-quoted Lua string; every byte outside printable ASCII as a decimal escape (Lua 5.1 has no \\x)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


@pytest.fixture(scope="module")
def lua() -> str:
    found = shutil.which("lua5.1")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "lua5.1"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            subprocess.run(install, env=env, capture_output=True, check=False)
        found = shutil.which("lua5.1")
    if found is None:
        pytest.skip("lua5.1 is not installed (Debian package lua5.1) and cannot be installed here (not root)")
    return found


def run_health(lua: str, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    object_file = tmp_path / "object.lua"
    object_file.write_text("return " + to_lua(obj) + "\n")
    proc = subprocess.run(
        [lua, str(RUNNER), str(HEALTH_LUA), str(object_file)], capture_output=True, check=False, timeout=30
    )
    assert proc.returncode == 0, proc.stderr.decode()
    status, _, message = proc.stdout.decode().partition("\n")
    return status, message


def test_there_are_fixtures_for_every_health() -> None:
    expected = {yaml.safe_load(case.read_text())["expected"]["status"] for case in CASES}
    assert expected == {"Healthy", "Progressing", "Degraded"}


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_health(case: Path, lua: str, tmp_path: Path) -> None:
    fixture = yaml.safe_load(case.read_text())
    status, message = run_health(lua, fixture["object"], tmp_path)
    expected = fixture["expected"]
    assert (status, message) == (expected["status"], expected["message"]), fixture["description"]


def test_lua_literals_round_trip_through_the_interpreter(lua: str, tmp_path: Path) -> None:
    """The fixture encoding itself: what Lua reads is what the YAML said (strings byte for byte, numbers, arrays)."""
    text = 'quote " backslash \\ newline \n tab \t é ✓'
    obj = {"metadata": {"generation": 7}, "status": {"conditions": [{"type": "Ready", "message": text}]}}
    script = tmp_path / "echo.lua"
    script.write_text(
        "local c = obj.status.conditions\n"
        "return {status = tostring(#c) .. ':' .. tostring(obj.metadata.generation + 1), message = c[1].message}\n"
    )
    object_file = tmp_path / "object.lua"
    object_file.write_text("return " + to_lua(obj) + "\n")
    proc = subprocess.run([lua, str(RUNNER), str(script), str(object_file)], capture_output=True, check=True)
    assert proc.stdout.decode() == f"1:8\n{text}"


def argocd_cm_text() -> str:
    """argocd/argocd-cm.yaml as it must be: health.lua embedded under the argocd-cm key for ModelAPI."""
    lines = HEALTH_LUA.read_text().splitlines()
    body = "\n".join(("    " + line) if line else "" for line in lines)
    return (
        "# Argo CD health check for ModelAPI, as a patch of argocd-cm (generated from health.lua by\n"
        "# `python tests/unit/project/test_argocd_health.py`; a unit test keeps them identical). Apply:\n"
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd/argocd-cm.yaml\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "  labels:\n"
        "    app.kubernetes.io/name: argocd-cm\n"
        "    app.kubernetes.io/part-of: argocd\n"
        "data:\n"
        f"  {CM_KEY}: |\n"
        f"{body}\n"
    )


def test_argocd_cm_embeds_the_tested_script() -> None:
    assert ARGOCD_CM.read_text() == argocd_cm_text(), "stale: run `python tests/unit/project/test_argocd_health.py`"
    assert yaml.safe_load(ARGOCD_CM.read_text())["data"][CM_KEY] == HEALTH_LUA.read_text()


if __name__ == "__main__":
    ARGOCD_CM.write_text(argocd_cm_text())
    sys.stdout.write(f"wrote {ARGOCD_CM.relative_to(ROOT)}\n")
