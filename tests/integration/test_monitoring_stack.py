"""A real Prometheus (Debian's) scraping a running stack on loopback: the three flows, a
serving process, the parity monitor and simulated traffic with feeds requested. Prometheus
loads docker/prometheus's rules; every query of every dashboard returns data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from feedflow.dashboards import DASHBOARDS
from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo, free_port
from tests.integration.processes import stop
from tests.integration.test_serving_e2e import ActiveUsers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "docker" / "prometheus"


def prometheus_config(targets: dict[str, list[int]], path: Path) -> None:
    """docker/prometheus's config, its targets on loopback, scraping every second."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / "rules" / "*.yml")]
    config.pop("alerting", None)
    config["scrape_configs"] = [
        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
        for job, ports in targets.items()
    ]
    path.write_text(yaml.safe_dump(config))


def test_every_dashboard_query_returns_data_from_a_running_stack(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus comes with Debian's prometheus package (make setup)"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": private_stack.bootstrap,
        "REDIS_URL": private_stack.redis_url,
        "FEEDFLOW_LAKE_URL": str(tmp_path / "lake"),
        "FEEDFLOW_INDEX_DIR": str(tmp_path / "index"),
        "FEEDFLOW_SNAPSHOT_INTERVAL_S": "1",
        "FEEDFLOW_INDEX_SNAPSHOT_EVERY_S": "2",
        # Feeds close fast enough to be labelled within the test.
        "FEEDFLOW_LABEL_WINDOW_S": "2",
        "FEEDFLOW_LABEL_LATENESS_S": "1",
        "FEEDFLOW_LABEL_IDLE_S": "3",
    }
    sim = Simulation(SimConfig(users=1500, items=200, rate=20_000, duration_s=1, seed=9,
                               speedup=1200), now_ms=int(time.time() * 1000))  # fmt: skip
    sink = ActiveUsers(KafkaSink(private_stack.bootstrap))
    sim.run(sink)
    ports = {name: free_port() for name in ("content", "engagement", "learning", "parity")}
    serve_port, prom_port = free_port(), free_port()
    me = [sys.executable, "-m", "feedflow.cli"]
    commands = {
        **{n: [*me, "flow", n, "--no-recovery", "--metrics-port", str(ports[n])]
           for n in ("content", "engagement", "learning")},
        "serve": [*me, "serve", "--port", str(serve_port)],
        "parity": [*me, "parity", "--every", "3", "--window", "900", "--delay", "0"],
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            state = tmp_path / name
            state.mkdir()
            extra = {"FEEDFLOW_METRICS_PORT": str(ports["parity"])} if name == "parity" else {}
            with (tmp_path / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env={**env, "FEEDFLOW_STATE_DIR": str(state), **extra},
                ))  # fmt: skip
        base = f"http://127.0.0.1:{serve_port}"
        wait_for(lambda: _ok(f"{base}/readyz"), 120, "serving ready")
        users = sorted(sink.users)[:40]
        for user in users:  # feeds, then (for the labels) a little more engagement
            r = httpx.get(f"{base}/api/v1/content/feed", params={"user_id": user}, timeout=10)
            assert r.status_code == 200, r.text

        config = tmp_path / "prometheus.yml"
        prometheus_config({
            "feedflow-flows": [ports[n] for n in ("content", "engagement", "learning")],
            "feedflow-serve": [serve_port], "feedflow-parity": [ports["parity"]],
        }, config)  # fmt: skip
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(subprocess.Popen([
                binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ], stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        queries = [(f"{d['title']}: {p['title']}", t["expr"])
                   for d in DASHBOARDS for p in d["panels"] for t in p["targets"]]  # fmt: skip
        api = f"http://127.0.0.1:{prom_port}/api/v1/query"
        empty: list[str] = []

        def all_answered() -> bool:
            for user in users[:5]:  # traffic keeps flowing while Prometheus scrapes
                httpx.get(f"{base}/api/v1/content/feed", params={"user_id": user}, timeout=10)
            empty[:] = [w for w, q in queries if not _result(api, q)]
            return not empty

        try:
            wait_for(all_answered, 150, "every dashboard query answered")
        except AssertionError as e:
            raise AssertionError(f"{e}; no data for: {empty}") from None
    finally:
        for proc in reversed(procs):
            stop(proc)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _result(api: str, query: str) -> list[Any]:
    try:
        body = httpx.get(api, params={"query": query}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return []
    return list(body.get("data", {}).get("result", [])) if body.get("status") == "success" else []
