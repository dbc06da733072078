"""Settings: environment, flags, unknown keys and masking."""

from __future__ import annotations

import pytest

from operators.errors import ConfigError
from operators.settings import load_settings


def test_flags_override_environment_override_defaults() -> None:
    env = {"FEEDFLOW_PORT": "9000", "FEEDFLOW_WORKERS": "2", "KAFKA_BOOTSTRAP_SERVERS": "h:1"}
    s = load_settings(env, {"port": 9100, "workers": None})
    assert (s.port, s.workers, s.kafka_bootstrap_servers) == (9100, 2, "h:1")


def test_unknown_feedflow_variable_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="FEEDFLOW_PROT"):
        load_settings({"FEEDFLOW_PROT": "1"})


def test_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match="partitions"):
        load_settings({"FEEDFLOW_PARTITIONS": "many"})


def test_secrets_are_masked_when_printed() -> None:
    s = load_settings({"REDIS_URL": "redis://user:hunter2@h:6379/0"})
    assert "hunter2" not in repr(s)
    assert s.masked()["redis_url"] == "redis://user:***@h:6379/0"
    assert s.redis_url.endswith("hunter2@h:6379/0")


def test_require_names_the_missing_variables() -> None:
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        load_settings({}).require("kafka_bootstrap_servers")
