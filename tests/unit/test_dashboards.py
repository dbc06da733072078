"""The Grafana dashboards: the provisioned JSON is what `feedflow.dashboards` writes, every
panel's query is valid PromQL (promtool checks them as rules), and each names only metrics
Feedflow exports or the recording rules define."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from feedflow.dashboards import DASHBOARDS, write
from kernel import metrics

ROOT = Path(__file__).resolve().parents[2]
PROVISIONED = ROOT / "docker" / "grafana" / "dashboards"
RULES = ROOT / "docker" / "prometheus" / "rules" / "feedflow.yml"


def queries() -> list[tuple[str, str]]:
    return [(f"{d['uid']}: {p['title']}", t["expr"])
            for d in DASHBOARDS for p in d["panels"] for t in p["targets"]]  # fmt: skip


def test_the_provisioned_files_are_what_the_code_writes(tmp_path: Path) -> None:
    written = {p.name: p.read_text() for p in write(tmp_path)}
    assert {p.name: p.read_text() for p in PROVISIONED.glob("*.json")} == written, (
        "regenerate: python -m feedflow.dashboards docker/grafana/dashboards"
    )
    for text in written.values():
        doc = json.loads(text)
        assert doc["panels"] and all(p["targets"] for p in doc["panels"])


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "panels", "rules": [
        {"record": f"panel:check:{n}", "expr": expr} for n, (_, expr) in enumerate(queries())
    ]}]}  # fmt: skip
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool comes with Debian's prometheus (make setup)"
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_panel_reads_a_metric_that_exists() -> None:
    exported = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    recorded = set(re.findall(r"record: (\S+)", RULES.read_text()))
    known = exported | recorded | {"bytewax_kafka_consumer_lag"}  # Bytewax's Kafka source
    for where, expr in queries():
        names = re.findall(r"\b(feedflow[:_][a-z_:0-9]+|bytewax_[a-z_]+)", expr)
        bases = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names if ":" not in n}
        bases |= {n for n in names if ":" in n}
        assert bases and bases <= known, (where, bases - known)
