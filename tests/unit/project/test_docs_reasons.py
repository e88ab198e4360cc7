"""Condition reasons: the code, docs/conditions.md and the runtime's start-up failures say the same thing.

The reasons are collected from the code itself, not from a list kept here:

- every module-level constant of the operator whose value is a CamelCase word (``SERVING = "Serving"``,
  ``PERMISSION_DENIED: Final = "PermissionDenied"``), read with ``ast`` from every module of the package except
  ``names.py`` (the API's own identifiers: group, kind, labels);
- every literal reason the operator passes to ``Failure(reason, ...)`` or ``EventRecord(type, reason, ...)``;
- every ``reason`` of the runtime's ``StartupError`` classes (what a pod writes to its termination log).

A reason added without a row in docs/conditions.md fails here, and so does a runtime start-up reason the operator
does not recognise (or one the operator expects that no runtime error carries), a reason defined (or passed as a
literal) anywhere but ``reasons.py``, and a row of the doc for a reason ``reasons.py`` does not define.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

import modelapi_operator
from modelapi_operator import reasons
from modelapi_operator.api.status import ConditionType
from modelapi_operator.diagnose import diagnose_pods
from modelapi_operator.reasons import RUNTIME_REASONS
from modelapi_runtime import exceptions, pull
from modelapi_runtime.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[3]
OPERATOR = Path(modelapi_operator.__file__).parent
CONDITIONS_DOC = ROOT / "docs" / "conditions.md"
NOT_REASONS = {"names.py"}  # identifiers of the API (group, kind, label keys), never a reason
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
REASON_ARGUMENT = {"Failure": 0, "EventRecord": 1}  # callable name -> index of its reason argument
# A reason in the first cell of a Markdown table row: | `Reason` | ...
DOC_ROW = re.compile(r"^\|\s*`([A-Za-z0-9]+)`")


def _module_constants(tree: ast.Module) -> Iterator[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str) and CAMEL_CASE.match(value.value)):
            continue
        if any(isinstance(target, ast.Name) and target.id.isupper() for target in targets):
            yield value.value


def _literal_reasons(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        index = REASON_ARGUMENT.get(name)
        if index is None or len(node.args) <= index:
            continue
        argument = node.args[index]
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            yield argument.value


def reasons_module() -> set[str]:
    """The reasons reasons.py defines, read as the operator imports them."""
    return {value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}


def operator_reasons() -> dict[str, str]:
    """Every reason the operator's code defines or passes as a literal -> the module it comes from."""
    found: dict[str, str] = {}
    for path in sorted(OPERATOR.rglob("*.py")):
        if path.name in NOT_REASONS:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for reason in [*_module_constants(tree), *_literal_reasons(tree)]:
            found.setdefault(reason, str(path.relative_to(ROOT)))
    return found


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def runtime_startup_errors() -> list[type[exceptions.StartupError]]:
    """The runtime's start-up failures that carry a reason of their own (not only the base class's)."""
    return [cls for cls in _subclasses(exceptions.StartupError) if "reason" in vars(cls)]


def documented_reasons() -> set[str]:
    lines = CONDITIONS_DOC.read_text().splitlines()
    return {match.group(1) for line in lines if (match := DOC_ROW.match(line))}


def test_the_collector_finds_reasons_of_every_kind() -> None:
    """The collector itself must not go blind: the constants of reasons.py are all seen (and nothing else is one)."""
    found = operator_reasons()
    assert {"InvalidSpec", "Serving", "RolloutComplete", "PermissionDenied", "CanaryPromoted"} <= set(found)
    assert "ModelAPI" not in found
    assert set(found) == reasons_module()
    tree = ast.parse("OTHER = 'OtherReason'\nEventRecord('Normal', 'LiteralReason', 'x')\nFailure('Literal2', 'x')")
    assert [*_module_constants(tree), *_literal_reasons(tree)] == ["OtherReason", "LiteralReason", "Literal2"]


def test_every_reason_is_defined_in_reasons_py_and_nowhere_else() -> None:
    """One module holds the reasons: a constant or a literal reason in another module is one more place to look."""
    elsewhere = {reason: where for reason, where in operator_reasons().items() if not where.endswith("/reasons.py")}
    assert not elsewhere, (
        f"reasons defined outside operator/modelapi_operator/reasons.py (move them there): {elsewhere}"
    )


def test_every_row_of_docs_conditions_is_a_reason_of_reasons_py() -> None:
    """The doc and the module say the same thing both ways: no row for a reason the operator no longer has."""
    stale = documented_reasons() - reasons_module() - set(get_args(ConditionType))  # the first table: conditions
    assert not stale, f"rows of docs/conditions.md for reasons operator/modelapi_operator/reasons.py lacks: {stale}"


def test_every_reason_in_the_code_has_a_row_in_docs_conditions() -> None:
    documented = documented_reasons()
    runtime = {cls.reason for cls in runtime_startup_errors()}
    missing = dict.fromkeys(runtime - documented, "runtime/modelapi_runtime/exceptions.py")
    missing |= {reason: where for reason, where in operator_reasons().items() if reason not in documented}
    assert not missing, (
        f"reasons without a row in docs/conditions.md (add one: which condition, what it means, what to do): "
        f"{dict(sorted(missing.items()))}"
    )


def test_runtime_startup_reasons_are_exactly_the_ones_the_operator_reads() -> None:
    runtime = {cls.reason for cls in runtime_startup_errors()}
    assert runtime == RUNTIME_REASONS, (
        f"runtime start-up reasons {sorted(runtime)} and the operator's RUNTIME_REASONS "
        f"(modelapi_operator/reasons.py) {sorted(RUNTIME_REASONS)} differ: the operator would show a runtime "
        "failure as a crash loop, or expect a reason no runtime writes"
    )


@pytest.mark.parametrize("error", runtime_startup_errors(), ids=lambda cls: cls.__name__)
def test_the_operator_reads_what_the_runtime_writes_to_the_termination_log(
    error: type[exceptions.StartupError], tmp_path: Path
) -> None:
    """The runtime's own writer produces the termination message; the operator's diagnosis finds its reason."""
    log = tmp_path / "termination-log"
    settings = RuntimeSettings(model_uri="file:///models/m.onnx", termination_log=str(log))
    pull.report_failure(settings, error("the artifact s3://models/m.onnx cannot be used"))
    pod = {
        "metadata": {"name": "m-1234abcd-x"},
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": log.read_text()}},
                }
            ]
        },
    }
    failure = diagnose_pods([pod])
    assert failure is not None
    assert failure.reason == error.reason
    assert "cannot be used" in failure.message
