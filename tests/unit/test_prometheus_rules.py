"""The alerting in docker/, checked by Prometheus's own tools: the config and its rules load
(`promtool check`), every alert fires on the series that should fire it and stays quiet on
healthy ones (`promtool test rules`), Alertmanager's config loads (`amtool check-config`),
and every alert links an entry of docs/runbook.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "docker" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
INSTALL = (
    "promtool and amtool come with Debian's prometheus and prometheus-alertmanager (make setup)"
)


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(name)
    assert binary is not None, f"{name} not found: {INSTALL}"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          cwd=PROMETHEUS, check=False)  # fmt: skip


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "rules" / "feedflow.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_the_config_and_its_rules_load() -> None:
    out = tool("promtool", "check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rules found" in out.stdout


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    out = tool("promtool", "test", "rules", "tests/feedflow_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    tests = yaml.safe_load((PROMETHEUS / "tests" / "feedflow_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no case fires it"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no quiet case"


def test_alertmanagers_config_loads() -> None:
    out = tool("amtool", "check-config", str(ROOT / "docker" / "alertmanager" / "alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_links_its_runbook_entry(alert: dict[str, Any]) -> None:
    url = alert["annotations"]["runbook_url"]
    assert url == f"docs/runbook.md#{alert['alert'].lower()}"
    headings = re.findall(r"^## (\S+)$", RUNBOOK.read_text(), re.M)
    assert alert["alert"] in headings
    assert alert["labels"]["severity"] in {"page", "ticket"}
