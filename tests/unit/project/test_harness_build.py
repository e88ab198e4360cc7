"""The harness's cached build (tests/e2e/cluster/lib/build.sh): only what is missing is built, once, into a stage
directory under the build lock, then moved into the cache; a build that produces nothing fails with its name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[3] / "tests" / "e2e" / "cluster" / "lib"

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="the harness builds with go")

# a builder that writes an executable for each name it is asked for, and records what it was asked for
BUILDER = """
fake_builder() {
	local stage="$1" b
	shift
	echo "$*" >>"$CACHE_ROOT/asked"
	for b in "$@"; do
		[[ $b == never ]] && continue
		printf '#!/bin/sh\\necho %s\\n' "$b" >"$stage/$b" && chmod +x "$stage/$b"
	done
}
"""


def build(cache: Path, *names: str) -> subprocess.CompletedProcess[str]:
    script = (
        f'set -euo pipefail\nsource "{LIB}/log.sh"\nsource "{LIB}/build.sh"\nCACHE_ROOT="{cache}"\n{BUILDER}\n'
        f'cached_build "$(cache_bin_dir fake- "fake=1")" fake_builder {" ".join(names)}\n'
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_builds_what_is_missing_once_and_then_only_finds_it(tmp_path: Path) -> None:
    first = build(tmp_path, "alpha", "beta")
    assert first.returncode == 0, first.stderr
    bin_dir = Path(first.stdout.strip())
    assert bin_dir.parent.name.startswith("fake-")
    assert bin_dir.parent.parent == tmp_path
    assert subprocess.run([bin_dir / "alpha"], capture_output=True, text=True, check=True).stdout == "alpha\n"
    again = build(tmp_path, "alpha", "beta")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(bin_dir)
    more = build(tmp_path, "alpha", "beta", "gamma")
    assert more.returncode == 0, more.stderr
    assert (tmp_path / "asked").read_text().splitlines() == ["alpha beta", "gamma"]
    assert not list(bin_dir.parent.glob("stage.*")), "the stage directory is removed"


def test_a_build_that_produces_nothing_fails_with_its_name(tmp_path: Path) -> None:
    proc = build(tmp_path, "alpha", "never")
    assert proc.returncode == 1
    assert "ERROR: build did not produce never" in proc.stderr
    assert (Path(proc.stderr.split("missing from ")[1].split(":")[0]) / "alpha").exists()
