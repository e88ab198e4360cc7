"""The invalid-manifest corpus in tests/unit/operator/invalid_cases/, shared with the e2e suite.

Each file is a complete ModelAPI manifest whose first comment lines say which field is wrong
(``# field:``), which words the error must contain (``# message:``), and whether the CRD itself
refuses it (``# server: yes``) so the e2e suite can check the API server says the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CASES_DIR = Path(__file__).parent / "invalid_cases"


@dataclass(frozen=True)
class InvalidCase:
    name: str
    path: Path
    field: str
    message: str
    server: bool


def load_cases() -> list[InvalidCase]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        header: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("# "):
                break
            key, _, value = line[2:].partition(": ")
            header[key] = value
        cases.append(
            InvalidCase(
                name=path.stem,
                path=path,
                field=header["field"],
                message=header["message"],
                server=header["server"] == "yes",
            )
        )
    return cases
