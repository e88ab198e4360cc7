"""The real-node tier's image keys (tests/e2e/cluster/node.sh): an image is rebuilt when what it is built from changes,
and only then. README.md reaches an image only as the wheel's long description, which the harness replaces with a
fixed text, so an edit of the docs rebuilds no image (runtime-gpu's is about 3 GiB); a source edit rebuilds them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "tests" / "e2e" / "cluster"
# what the Dockerfile's build context holds (the files node.sh stages)
CONTEXT = ["Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md", "operator", "runtime"]


def node_sh(script: str, root: Path, **env: str) -> str:
    """Run script in bash with lib/log.sh and node.sh sourced, the checkout at root; its stdout."""
    prelude = f'set -euo pipefail\nHERE="{CLUSTER}" ROOT="{root}"\nsource "$HERE/lib/log.sh"\nsource "$HERE/node.sh"\n'
    proc = subprocess.run(
        ["bash", "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def checkout(tmp_path: Path) -> Path:
    """A copy of the files the images are built from."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    return root


KEY = 'ctx="$(mktemp -d)"\nnode_image_context "$ctx"\nnode_image_key "$ctx"\nrm -rf "$ctx"\n'


def test_a_docs_edit_keeps_the_image_key_and_a_source_edit_changes_it(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    before = node_sh(KEY, root).strip()
    assert len(before) == 16, before

    with (root / "README.md").open("a") as readme:
        readme.write("\nA new paragraph of the docs.\n")
    assert node_sh(KEY, root).strip() == before

    # a local model or a cache next to the sources is not in the image either
    (root / "runtime" / "model.onnx").write_bytes(b"\x08\x01")
    (root / "runtime" / "__pycache__").mkdir(exist_ok=True)
    (root / "runtime" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00")
    assert node_sh(KEY, root).strip() == before

    source = root / "runtime" / "modelapi_runtime" / "__init__.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    after_source = node_sh(KEY, root).strip()
    assert after_source != before

    (root / "constraints.txt").write_text((root / "constraints.txt").read_text() + "\n")
    assert node_sh(KEY, root).strip() not in {before, after_source}


def test_the_staged_context_holds_the_fixed_readme_and_the_sources(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    staged = tmp_path / "staged"
    staged.mkdir()
    node_sh(f'node_image_context "{staged}"', root)
    assert "left out" in (staged / "README.md").read_text()
    assert (staged / "runtime" / "modelapi_runtime" / "__init__.py").read_bytes() == (
        root / "runtime" / "modelapi_runtime" / "__init__.py"
    ).read_bytes()
    assert (staged / "Dockerfile").is_file()
    assert (staged / "constraints.txt").is_file()


def test_the_gpu_image_is_left_out_only_when_asked() -> None:
    assert node_sh("node_image_targets", ROOT).split() == ["runtime", "operator", "runtime-gpu"]
    assert node_sh("node_image_targets", ROOT, MODELAPI_NODE_GPU_IMAGE="0").split() == ["runtime", "operator"]
