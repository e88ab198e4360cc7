"""Every Markdown file that code, scripts, tests or the chart cite is in the repository: a comment or message must
never send the reader to a document they cannot open."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCANNED = ("operator", "runtime", "benchmarks", "scripts", "tests", "charts", "Makefile", "Dockerfile")
SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".tpl", ".txt", ".toml", ".json", ""}
SKIPPED_DIRS = {".venv", "__pycache__", ".run", ".run-node", "node_modules", ".git", ".mypy_cache", ".ruff_cache"}
# A cited Markdown file: a path-like word ending in .md. Not a URL (a scheme before it) and not a file a script
# writes ($OUT/x.md, ${DIR}/x.md).
CITED = re.compile(r"(?<![\w$/{:.-])([\w.-]+(?:/[\w.-]+)*\.md)\b")


def _files() -> list[Path]:
    found = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            found.append(path)
            continue
        for item in path.rglob("*"):
            if item.is_file() and item.suffix in SUFFIXES and not SKIPPED_DIRS & set(item.relative_to(ROOT).parts):
                found.append(item)
    return found


def _markdown_in_repository() -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.md")
        if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts)
    ]


def test_every_cited_markdown_file_exists() -> None:
    present = _markdown_in_repository()
    assert "docs/conditions.md" in present
    missing = []
    for path in _files():
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:  # a test of another tier removed its scratch file while this one scanned
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for cited in CITED.findall(line):
                name = cited.removeprefix("./")
                if not any(doc == name or doc.endswith("/" + name) for doc in present):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "cited Markdown files that are not in the repository:\n" + "\n".join(missing)
