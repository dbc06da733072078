"""Settings: environment, flags, unknown keys and masking."""

from __future__ import annotations

import pytest

from kernel.errors import ConfigError
from kernel.settings import load_settings


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


def test_kafka_client_properties_from_a_file_and_variables_secrets_masked(tmp_path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# a managed broker\nsecurity.protocol = SASL_SSL\nsasl.mechanism=PLAIN\n\n"
        "sasl.username=feedflow\nsasl.password=from-file\n"
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9093",
        "FEEDFLOW_KAFKA_PROPERTIES": str(props),
        "KAFKA_SASL_PASSWORD": "hunter2",  # a variable wins over the file
        "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
    }
    s = load_settings(env)
    assert s.kafka_client == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "feedflow",
        "sasl.password": "hunter2", "ssl.ca.location": "/etc/ca.pem",
    }  # fmt: skip
    config = s.kafka(acks="all")
    assert config["bootstrap.servers"] == "b:9093" and config["sasl.password"] == "hunter2"
    shown = repr(s)
    assert "hunter2" not in shown and "from-file" not in shown
    assert s.masked()["kafka_client"]["sasl.username"] == "feedflow"


def test_a_broken_properties_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="FEEDFLOW_KAFKA_PROPERTIES"):
        load_settings({"FEEDFLOW_KAFKA_PROPERTIES": str(tmp_path / "missing")})
    bad = tmp_path / "bad.properties"
    bad.write_text("security.protocol\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_settings({"FEEDFLOW_KAFKA_PROPERTIES": str(bad)})


def test_an_encoder_with_its_own_dimension_sizes_the_user_vectors() -> None:
    assert load_settings({"FEEDFLOW_ENCODER": "minilm-l6-v2"}).embedding_dim == 384
    assert load_settings({}).embedding_dim == 64
    assert load_settings({"FEEDFLOW_EMBEDDING_DIM": "32"}).embedding_dim == 32
    both = {"FEEDFLOW_ENCODER": "minilm-l6-v2", "FEEDFLOW_EMBEDDING_DIM": "384"}
    assert load_settings(both).embedding_dim == 384


def test_a_dimension_contradicting_the_encoder_is_refused_at_start() -> None:
    env = {"FEEDFLOW_ENCODER": "minilm-l6-v2", "FEEDFLOW_EMBEDDING_DIM": "64"}
    with pytest.raises(ConfigError, match=r"contradicts FEEDFLOW_ENCODER=minilm-l6-v2.*384"):
        load_settings(env)
    with pytest.raises(ConfigError, match="FEEDFLOW_ENCODER='word2vec' is unknown"):
        load_settings({"FEEDFLOW_ENCODER": "word2vec"})


def test_every_parameter_set_defaults_to_the_settings_defaults() -> None:
    from kernel.settings import Settings
    from serving.feed import FeedConfig
    from serving.params import Limits
    from serving.rules import RuleParams
    from serving.runtime import feed_config
    from state.index_replica import IndexParams

    s = Settings()
    assert IndexParams() == IndexParams.from_settings(s)
    assert FeedConfig() == feed_config(s)
    assert Limits() == Limits(s.feed_limit_default, s.feed_limit_max, s.feed_diversity)
    rules = RuleParams()
    assert (rules.limit, rules.max_per_category, rules.max_per_creator, rules.diversity) == (
        s.feed_limit_default,
        s.feed_max_per_category,
        s.feed_max_per_creator,
        s.feed_diversity,
    )
    assert (rules.explore_share, rules.new_boost) == (s.feed_explore_share, s.feed_new_boost)
