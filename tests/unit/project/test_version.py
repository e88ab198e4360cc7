"""One version everywhere: pyproject.toml's is the source; the chart's version and appVersion, the default image tags
(chart values, operator settings, the operator image's tag, which defaults to appVersion) and the Dockerfile's and
README's build commands say the same. A release bumps them together; this fails when one is left behind."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from modelapi_operator import settings

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modelapi"


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def tag_of(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_the_chart_is_the_projects_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == project_version()
    assert chart["appVersion"] == project_version()


def test_default_images_carry_the_projects_version() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == "", "the operator's tag defaults to appVersion (templates/_helpers.tpl)"
    tags = {
        "values runtimeImages.cpu": tag_of(values["runtimeImages"]["cpu"]),
        "values runtimeImages.gpu": tag_of(values["runtimeImages"]["gpu"]),
        "settings DEFAULT_CPU_IMAGE": tag_of(settings.DEFAULT_CPU_IMAGE),
        "settings DEFAULT_GPU_IMAGE": tag_of(settings.DEFAULT_GPU_IMAGE),
    }
    wrong = {where: tag for where, tag in tags.items() if tag != project_version()}
    assert not wrong, f"not {project_version()} (pyproject.toml): {wrong}"


def test_build_commands_in_the_docs_tag_the_projects_version() -> None:
    tagged = re.compile(r"\bmodelapi/(?:operator|runtime|runtime-gpu):([0-9][^\s`\"']*)")
    found = {
        (path.name, tag)
        for path in (ROOT / "Dockerfile", ROOT / "README.md")
        for tag in tagged.findall(path.read_text())
    }
    assert found, "the build commands name modelapi/<target>:<version>"
    wrong = sorted(item for item in found if item[1] != project_version())
    assert not wrong, f"image tags other than {project_version()} (pyproject.toml): {wrong}"
