"""Every alert of the chart links to its own section of docs/runbooks.md, and every section there is an alert."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "charts" / "modelapi" / "templates" / "prometheusrule.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERT = re.compile(r"^\s*- alert: (\S+)\s*$")
RUNBOOK_URL = re.compile(r'^\s*runbook_url: "\{\{ \$runbooks \}\}#([a-z0-9-]+)"\s*$')


def alerts_and_anchors() -> dict[str, str | None]:
    """Alert name -> the anchor its runbook_url points at (None without one), read from the template's text."""
    found: dict[str, str | None] = {}
    current = None
    for line in RULES.read_text().splitlines():
        if match := ALERT.match(line):
            current = match.group(1)
            found[current] = None
        elif (match := RUNBOOK_URL.match(line)) and current is not None:
            found[current] = match.group(1)
    return found


def runbook_sections() -> set[str]:
    return {line[3:].strip() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}


def test_every_alert_has_a_runbook_url_to_its_own_section() -> None:
    alerts = alerts_and_anchors()
    assert {"ModelAPICanaryAborted", "ModelAPIHighErrorRate", "ModelAPINoReadyReplicas"} <= set(alerts)
    assert {"ModelAPIOperatorDown", "ModelAPIOperatorReconcileErrors"} <= set(alerts)
    assert '{{- $runbooks := include "modelapi.runbookBaseUrl" . }}' in RULES.read_text()
    # A Markdown heading's anchor is its text in lower case (the names have no spaces or punctuation).
    wrong = {alert: anchor for alert, anchor in alerts.items() if anchor != alert.lower()}
    assert not wrong, f"alerts whose runbook_url is missing or points elsewhere than #<name in lower case>: {wrong}"
    sections = runbook_sections()
    assert set(alerts) == sections, (
        f"alerts without a section in docs/runbooks.md: {sorted(set(alerts) - sections)}; "
        f"sections without an alert: {sorted(sections - set(alerts))}"
    )


def test_the_runbook_base_url_is_asked_for_since_the_chart_names_no_source_repository() -> None:
    """No guessed address: Chart.yaml has no `home` or `sources` (the project publishes no repository address), so
    monitoring.runbookBaseUrl is required with the alerts (the refusal and the rendered URLs are checked by
    tests/e2e/test_chart.py); a `sources` entry added by a publisher would become the default base."""
    chart = ROOT / "charts" / "modelapi"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["monitoring"]["runbookBaseUrl"] == ""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert "sources" not in meta
    assert "home" not in meta
    helper = (chart / "templates" / "_helpers.tpl").read_text()
    assert "monitoring.prometheusRule.enabled needs monitoring.runbookBaseUrl" in helper
    assert '(trimSuffix "/" $source) .Chart.AppVersion "docs/runbooks.md"' in helper
    assert RUNBOOKS.relative_to(ROOT).as_posix() == "docs/runbooks.md"
