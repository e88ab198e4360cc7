"""Every invalid manifest is refused by ``modelapi render`` with the field path and the rule's words."""

from __future__ import annotations

import pytest
from invalid_cases import InvalidCase, load_cases

from modelapi_operator import cli

CASES = load_cases()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert sum(case.server for case in CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_render_refuses_with_field_and_message(case: InvalidCase, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["render", "-f", str(case.path)])
    captured = capsys.readouterr()
    assert status == cli.EXIT_INVALID
    assert captured.out == ""
    assert "Traceback" not in captured.err
    matching = [line for line in captured.err.splitlines() if case.field in line and case.message in line]
    assert matching, f"no line names {case.field!r} with {case.message!r} in:\n{captured.err}"
