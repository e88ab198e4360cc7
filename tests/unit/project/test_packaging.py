"""Packaging: each part's declared dependencies match what it imports, and the operator runs without the runtime's.

``pip install modelapi`` is render, the operator and the activator; the model server's dependencies are the
``[runtime]`` (or ``[gpu]``) extra. The import graph is read from the source (every ``import``, followed through the
project's own modules), so a new import of an undeclared package, or a runtime package reaching the operator, fails
here rather than in an image.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
SOURCES = {"modelapi_operator": ROOT / "operator", "modelapi_runtime": ROOT / "runtime"}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# Imported, yet part of a declared dependency's own API, which pins it (FastAPI pins Starlette, boto3 pins botocore,
# pydantic pins pydantic-core, uvicorn[standard] brings the httptools parser its protocol is built on): declaring them
# too would only add ranges that can fight those pins.
PROVIDED_BY = {"starlette": "fastapi", "botocore": "boto3", "pydantic_core": "pydantic", "httptools": "uvicorn"}
# What `pip install modelapi` runs: the operator (and render) and the activator.
LIGHT_ROOTS = ("modelapi_operator", "modelapi_runtime.activator")


def _declared(extra: str | None) -> set[str]:
    """The distributions an install brings directly: the base dependencies plus ``extra`` (self-references expanded)."""
    requirements = list(PROJECT["dependencies"])
    pending = [extra] if extra else []
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in PROJECT["optional-dependencies"][name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT["name"]:
                pending += sorted(requirement.extras)
            else:
                requirements.append(text)
    return {canonicalize_name(Requirement(text).name) for text in requirements}


def _file_of(module: str) -> Path | None:
    top = module.split(".", maxsplit=1)[0]
    if top not in SOURCES:
        return None
    base = SOURCES[top].joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _modules_under(package: str) -> list[str]:
    source = SOURCES[package.split(".", maxsplit=1)[0]]
    modules = []
    for path in sorted(source.joinpath(*package.split(".")).rglob("*.py")):
        modules.append(".".join(path.relative_to(source).with_suffix("").parts).removesuffix(".__init__"))
    return modules


@cache
def _imports(module: str) -> frozenset[str]:
    path = _file_of(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # imports for the type checker only (under `if TYPE_CHECKING:`) are not imported at run time
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if _file_of(f"{node.module}.{alias.name}")}
    return frozenset(found)


def _external_imports(roots: tuple[str, ...]) -> set[str]:
    """Top-level names of the third-party modules that ``roots`` import, following the project's own modules."""
    pending = [module for root in roots for module in _modules_under(root)]
    seen: set[str] = set()
    external: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module):
            if _file_of(name) is not None:
                pending.append(name)
            elif name.split(".")[0] not in SOURCES and name.split(".")[0] not in sys.stdlib_module_names:
                external.add(name.split(".")[0])
    return external


def _distribution(top_level: str) -> str:
    if top_level in PROVIDED_BY:
        return canonicalize_name(PROVIDED_BY[top_level])
    owners = packages_distributions().get(top_level)
    assert owners, f"{top_level} is imported but no installed distribution provides it"
    return canonicalize_name(owners[0])


def test_the_operator_render_and_the_activator_import_only_base_dependencies() -> None:
    imported = {_distribution(name) for name in _external_imports(LIGHT_ROOTS)}
    declared = _declared(None)
    assert imported <= declared, f"imported but not declared in [project].dependencies: {sorted(imported - declared)}"
    assert declared <= imported, f"declared in [project].dependencies but never imported: {sorted(declared - imported)}"
    assert not declared & {"onnxruntime", "onnxruntime-gpu", "boto3", "fastapi", "uvicorn", "numpy"}


def test_the_runtime_imports_only_what_its_extra_declares() -> None:
    imported = {_distribution(name) for name in _external_imports(("modelapi_runtime",))}
    for extra, onnxruntime in (("runtime", "onnxruntime"), ("gpu", "onnxruntime-gpu")):
        declared = _declared(extra)
        # onnxruntime-gpu installs the module `onnxruntime` too
        wanted = {onnxruntime if name == "onnxruntime" else name for name in imported}
        assert wanted <= declared, f"[{extra}] misses what the runtime imports: {sorted(wanted - declared)}"
        unused = declared - _declared(None) - wanted
        assert not unused, f"[{extra}] declares what the runtime never imports: {sorted(unused)}"


def test_dev_installs_the_runtime_for_its_tests() -> None:
    assert _declared("runtime") <= _declared("dev")


def _runtime_only_modules() -> list[str]:
    """The top-level modules that only the runtime extra installs (its packages and what comes with their API)."""
    runtime_only = _declared("runtime") - _declared(None)
    return sorted(
        {name for name, owners in packages_distributions().items() if canonicalize_name(owners[0]) in runtime_only}
        | {name for name, provider in PROVIDED_BY.items() if canonicalize_name(provider) in runtime_only}
    )


def _run_without(modules: list[str], program: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` as in an environment where ``modules`` are not installed: None in sys.modules makes
    ``import x`` fail and importlib.util.find_spec("x") answer None."""
    hide = "import sys\nfor name in sys.argv[1].split(','):\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", hide + program, ",".join(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_operator_and_render_run_without_the_runtime_dependencies() -> None:
    """As in an environment of `pip install modelapi`: the runtime extra's packages cannot be imported."""
    hidden = _runtime_only_modules()
    assert {"onnxruntime", "fastapi", "boto3", "numpy", "uvicorn"} <= set(hidden)
    done = _run_without(
        hidden,
        "import modelapi_operator.handlers, modelapi_operator.main, modelapi_runtime.activator.main\n"
        "from modelapi_operator import cli\n"
        'sys.exit(cli.main(["render", "-f", "examples/iris/model.yaml"]))\n',
    )
    assert done.returncode == 0, done.stderr
    assert "kind: Deployment" in done.stdout


def test_the_runtime_command_without_its_extra_says_what_to_install() -> None:
    done = _run_without(_runtime_only_modules(), "import modelapi_runtime.cli\n")
    assert done.returncode == 1
    assert "pip install 'modelapi[runtime]'" in done.stderr
    assert "Traceback" not in done.stderr
