"""One typed settings object per process, read once at the edge and passed down.

Values come from (lowest to highest precedence) defaults, the environment
(`FEEDFLOW_<FIELD>`, plus the conventional `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL`) and
command-line flags. Unknown `FEEDFLOW_*` variables are rejected so a typo never silently
falls back to a default. Library code receives a :class:`Settings`; it never reads
`os.environ` itself.

Example:
    >>> s = load_settings({"FEEDFLOW_PARTITIONS": "8", "REDIS_URL": "redis://:pw@h:1/0"})
    >>> s.partitions, s.masked()["redis_url"]
    (8, 'redis://:***@h:1/0')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from kernel.errors import ConfigError

ENV_PREFIX = "FEEDFLOW_"
_ALIASES = {"KAFKA_BOOTSTRAP_SERVERS": "kafka_bootstrap_servers", "REDIS_URL": "redis_url"}
_SECRET = re.compile(r"(?<=://)([^:/@]*):([^@]*)@")
KAFKA_PREFIX: Final = "KAFKA_"
# librdkafka properties whose values are credentials (masked whenever settings are shown)
_SECRET_PROPERTY = re.compile(r"password|secret|token|credential|jaas|\.pem$|oauthbearer\.config")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a Feedflow process can be told. Defaults are the embedded local stack."""

    # Empty means "not configured": commands that need them say so (see `require`).
    kafka_bootstrap_servers: str = ""
    redis_url: str = ""
    state_dir: str = ".feedflow"
    partitions: int = 4
    # Dataflows
    workers: int = 1
    recovery_dir: str = ""
    snapshot_interval_s: int = 5
    recovery_backup_s: int = 300
    kafka_batch_size: int = 1000
    # payload bytes a dead letter keeps (the coordinates, size and digest it always keeps)
    deadletter_payload_bytes: int = 65536
    metrics_port: int = 0
    # Engagement semantics (event time)
    view_inactivity_s: int = 1800
    allowed_lateness_s: int = 600
    dedup_window_s: int = 3600
    user_ttl_days: int = 35
    view_close_grace_s: int = 30
    user_features_refresh_s: int = 60
    dedup_max_ids: int = 128
    item_ttl_days: int = 35
    trending_half_life_h: float = 24.0
    trending_top_k: int = 100
    # Long-horizon popularity: qualified views decayed with this half-life (event time)
    popular_half_life_h: float = 168.0
    # Co-engagement (operators/co_engagement.py): a positive engagement links to the user's
    # last `co_history` positive items; per item a sketch of `co_capacity` counters, the
    # strongest `co_list_size` stored; a changed record is written `co_flush_ms` later
    co_history: int = 8
    co_capacity: int = 128
    co_list_size: int = 48
    co_flush_ms: int = 250
    co_cache_ms: int = 500  # serving answers a record read this recently from memory
    # Behaviour space (operators/behaviour.py): vector length of the weekly factorisation
    behaviour_dim: int = 64
    # Weekly per-user weights: shrinkage towards the week's prior (in units of positive
    # engagement mass, about one completed view each) and how long a version's data is kept
    weights_prior_strength: float = 10.0
    weights_ttl_days: int = 35
    # Signal table: weight of each engagement signal in user vectors and affinities
    signal_completed: float = 1.0
    signal_replay: float = 0.8
    signal_liked: float = 0.8
    signal_shared: float = 0.8
    signal_playlist: float = 0.7
    signal_subscribed: float = 0.7
    signal_started: float = 0.1
    signal_paused_early: float = -0.2
    signal_abandoned: float = -0.2
    signal_disliked: float = -0.5
    signal_skipped: float = -0.5
    signal_watch: float = 0.5
    # Learning flow: labels in event time (operators/labels.py), the online ranker
    label_window_s: int = 1800  # engagement this long after an impression counts for it
    label_lateness_s: int = 600  # how far an input may trail the user's newest one
    label_long_watch_s: float = 60.0  # furthest position that makes a play a positive
    label_idle_s: int = 3600  # processing time without input before a user's feeds close
    ranker_learning_rate: float = 0.02
    ranker_publish_every_s: int = 300  # event time between published versions
    ranker_min_examples: int = 500  # no version before this many examples
    # Event lake (state/lake.py): validated events, closed views and impressions as Parquet
    # by event hour, in a directory or at a URL (`s3://bucket/lake`); empty: `<state_dir>/lake`.
    # Hours older than the retention are deleted by `feedflow lake compact`.
    lake_enabled: bool = True
    lake_url: str = ""
    lake_retention_days: int = 90
    # Content and index
    encoder: str = "hashing-v1"
    embedding_dim: int = 64
    index_dir: str = ""
    # hnswlib graph; chosen by the k=500 sweep in BENCHMARKS.md (Retrieval)
    index_m: int = 24
    index_ef_construction: int = 400
    index_ef_search: int = 500
    index_snapshot_every_s: int = 60
    index_compaction_share: float = 0.2
    # Serving
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    feed_candidates: int = 500
    # hnswlib ef of serving's ANN query, k=400 (the index's own `index_ef_search` when 0): on
    # the 1M-item M=24 graph, ef 400 returned 98.0 % of ef 800's top 400 (ef 500: 98.9 %) in
    # about two thirds of ef 500's time. A candidate generator; the ranker reorders anyway.
    feed_ef_search: int = 400
    feed_limit_default: int = 20
    feed_limit_max: int = 100
    feed_max_per_category: int = 8
    feed_max_per_creator: int = 3
    feed_diversity: float = 0.2
    feed_explore_share: float = 0.1
    feed_new_boost: float = 0.5
    feed_fresh_hours: float = 24.0
    # A request waits this long for Redis, then answers from in-process state; after a
    # failure Redis is left alone for `redis_retry_ms` before one request tries again.
    redis_timeout_ms: int = 10
    redis_retry_ms: int = 1000
    serving_refresh_ms: int = 1000
    # The feed explorer page at /explore (serving/explore.py): off in production unless the
    # serving port is internal; `feedflow demo` turns it on.
    serving_explore: bool = False
    features_cache_users: int = 100_000
    item_stats_ttl_s: float = 600.0
    # A/B arms (operators/ab.py): path of a JSON or TOML document; empty: one arm, "default".
    # The permanent 2 % holdback applies whatever the document says.
    ab_config: str = ""
    # Served feeds the producer keeps for `feed.impressions` while the broker is away
    impressions_buffer: int = 10_000
    # Kafka client properties for every producer and consumer (librdkafka names: SASL, SSL,
    # client.id, …): from `FEEDFLOW_KAFKA_PROPERTIES` (a `name=value` file) and from
    # `KAFKA_<NAME>` variables (`KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol`),
    # the variables winning. Values of credential properties are masked when shown.
    kafka_properties: str = ""
    kafka_client: dict[str, str] = {}

    def masked(self) -> dict[str, Any]:
        """Settings as a dict with credentials in URLs replaced by `***`."""
        out = msgspec.structs.asdict(self)
        for key, value in out.items():
            if isinstance(value, str) and "://" in value:
                out[key] = _SECRET.sub(lambda m: f"{m.group(1)}:***@", value)
        out["kafka_client"] = {
            k: "***" if _SECRET_PROPERTY.search(k) else v for k, v in self.kafka_client.items()
        }
        return out

    def kafka(self, **defaults: Any) -> dict[str, Any]:
        """A librdkafka configuration: the broker, `defaults`, then the client properties.

        Example:
            >>> Settings(kafka_bootstrap_servers="b:9092",
            ...          kafka_client={"security.protocol": "SSL"}).kafka(acks="all")
            {'bootstrap.servers': 'b:9092', 'acks': 'all', 'security.protocol': 'SSL'}
        """
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **defaults, **self.kafka_client}

    def require(self, *names: str) -> None:
        """Raise a ConfigError naming each of `names` that is empty.

        Example:
            >>> Settings(redis_url="redis://h:1/0").require("redis_url")
        """
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            hint = 'start a local stack with: eval "$(feedflow stack up)"'
            envs = ", ".join(_ENV_OF.get(n, ENV_PREFIX + n.upper()) for n in missing)
            raise ConfigError(f"{envs} not set; {hint}")

    def __repr__(self) -> str:
        return f"Settings({self.masked()!r})"


# The defaults: every other parameter set (index, serving rules, page limits) starts from these.
DEFAULTS: Final = Settings()

# Every encoder by name, with its vectors' dimension when it has one of its own; the hashing
# encoder takes `embedding_dim`. User vectors live in the items' space, so their size is
# the encoder's: settings derive it, and refuse a contradicting `FEEDFLOW_EMBEDDING_DIM`.
ENCODER_DIMS: Final[dict[str, int | None]] = {"hashing-v1": None, "minilm-l6-v2": 384}

_ENV_OF = {field: env for env, field in _ALIASES.items()}
_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


def load_settings(environ: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> Settings:
    """Build settings from an environment mapping and already-parsed flags.

    Flags whose value is None are treated as not given.

    Raises:
        ConfigError: on an unknown `FEEDFLOW_*` variable or a value of the wrong type.
    """
    raw: dict[str, Any] = {}
    client: dict[str, str] = {}
    for key, value in environ.items():
        if key in _ALIASES:
            raw[_ALIASES[key]] = value
        elif key.startswith(KAFKA_PREFIX):
            client[key[len(KAFKA_PREFIX) :].lower().replace("_", ".")] = value
        elif key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {key}; known: {sorted(_FIELDS)}")
            raw[name] = value
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        raw[name] = value
    _derive_dim(raw)
    path = raw.get("kafka_properties")
    raw["kafka_client"] = {**(_properties(Path(path)) if path else {}), **client}
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
    return settings


def _derive_dim(raw: dict[str, Any]) -> None:
    """Set `embedding_dim` from an encoder with a dimension of its own (see `ENCODER_DIMS`).

    Raises:
        ConfigError: the encoder is unknown, or `embedding_dim` was given and contradicts it.
    """
    name = str(raw.get("encoder", _FIELDS["encoder"].default))
    if name not in ENCODER_DIMS:
        raise ConfigError(f"FEEDFLOW_ENCODER={name!r} is unknown; known: {sorted(ENCODER_DIMS)}")
    fixed = ENCODER_DIMS[name]
    given = raw.get("embedding_dim")
    if fixed is None:
        return
    if given is None:
        raw["embedding_dim"] = fixed
    elif str(given).strip() != str(fixed):
        raise ConfigError(
            f"FEEDFLOW_EMBEDDING_DIM={given} contradicts FEEDFLOW_ENCODER={name}, whose vectors "
            f"have {fixed} dimensions; leave FEEDFLOW_EMBEDDING_DIM unset"
        )


def _properties(path: Path) -> dict[str, str]:
    """`name=value` lines of a Kafka client properties file (`#` comments, blank lines).

    Raises:
        ConfigError: the file cannot be read, or a line is not `name=value`.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"FEEDFLOW_KAFKA_PROPERTIES: {exc}") from exc
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"FEEDFLOW_KAFKA_PROPERTIES: line {n} is not name=value")
        out[name.strip()] = value.strip()
    return out
