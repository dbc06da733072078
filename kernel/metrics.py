"""Every Prometheus metric Feedflow defines, in one place.

Labels are bounded: topic, step, stage, outcome, reason, arm, version — never a user or media
id. Metrics live in the default registry, which Bytewax's dataflow API appends to its own
`/metrics` and which the serving process exposes directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

_FAST = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

# Set (to a directory) for replicas sharing a port: prometheus_client then keeps each
# process's values there, and any replica's /metrics adds them up.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

EVENTS = Counter(
    "feedflow_events_total",
    "Events read from a topic, by outcome (ok, invalid, duplicate, late).",
    ["topic", "outcome"],
)
DEADLETTERS = Counter(
    "feedflow_deadletter_total", "Messages written to the dead-letter topic.", ["topic"]
)
DEADLETTERS_STRIPPED = Counter(
    "feedflow_deadletter_stripped_total",
    "Dead letters refused for their size and sent again without payload.",
)
EVENT_LAG = Histogram(
    "feedflow_event_lag_seconds", "Processing time minus event time.", buckets=_SLOW
)
FEATURE_FRESHNESS = Histogram(
    "feedflow_feature_freshness_seconds",
    "Event time to the feature being written in Redis.",
    buckets=_SLOW,
)
PUBLISH_TO_SEARCHABLE = Histogram(
    "feedflow_publish_to_searchable_seconds",
    "published_at to the item being queryable at an index reader.",
    buckets=_SLOW,
)
INDEX_ITEMS = Gauge("feedflow_index_items", "Live items in the vector index.", ["role"])
INDEX_DELETED = Gauge(
    "feedflow_index_deleted_items", "Items marked deleted in the vector index.", ["role"]
)
INDEX_VERSION = Gauge(
    "feedflow_index_active_version_info", "The active index version (value 1).", ["version"]
)
INDEX_SNAPSHOTS = Counter(
    "feedflow_index_snapshots_total",
    "Index snapshots the writer's background child finished, by kind and outcome.",
    ["kind", "outcome"],
)
STORE_RETRIES = Counter(
    "feedflow_store_retries_total", "Retried store operations, by store.", ["store"]
)
LAKE_ROWS = Counter(
    "feedflow_lake_rows_total", "Rows written to the event lake, by dataset.", ["dataset"]
)
LAKE_FILES = Counter(
    "feedflow_lake_files_total", "Parquet files written to the event lake, by dataset.", ["dataset"]
)
LAKE_WRITE = Histogram(
    "feedflow_lake_write_seconds", "Time to write one epoch of a lake part.", buckets=_SLOW
)
PARITY_DIVERGENCE = Gauge(
    "feedflow_parity_divergence",
    "Share of sampled served rows whose value of a ranking feature no allowed version of the "
    "lake's recompute gives, by feature (the parity monitor's last round).",
    ["feature"],
)
PARITY_ROWS = Gauge("feedflow_parity_rows", "Served rows the parity monitor's last round compared.")
PARITY_ROUND = Gauge(
    "feedflow_parity_last_round_timestamp_seconds",
    "When the parity monitor last finished a round (alert when it stops).",
)
LABELS = Counter(
    "feedflow_labels_total",
    "Impression items labelled by the learning flow, by label (positive, negative), reason and "
    "A/B arm (CTR and completion per arm).",
    ["label", "reason", "arm"],
)
RANKER_EXAMPLES = Counter(
    "feedflow_ranker_examples_total",
    "Labelled items offered to the online ranker, by outcome (learned, unusable: no or "
    "malformed feature row).",
    ["outcome"],
)
RANKER_LOG_LOSS = Gauge(
    "feedflow_ranker_log_loss",
    "Online ranker, progressive validation (predict before learn): log loss over the last "
    "10,000 examples.",
)
RANKER_AUC = Gauge(
    "feedflow_ranker_roc_auc",
    "Online ranker, progressive validation (predict before learn): ROC AUC over the last "
    "10,000 examples.",
)
RANKER_VERSIONS = Counter(
    "feedflow_ranker_versions_published_total", "Ranker versions published to Redis."
)
FEED_REQUEST = Histogram(
    "feedflow_feed_request_seconds",
    "Feed request latency by stage (features, retrieval, filters, ranking, rules, total) "
    "and A/B arm.",
    ["stage", "arm"],
    buckets=_FAST,
)
FEED_FALLBACK = Counter(
    "feedflow_feed_fallback_total",
    "Feeds answered by a rung of the degradation ladder, by A/B arm.",
    ["reason", "arm"],
)
FEED_ERRORS = Counter(
    "feedflow_feed_stage_errors_total", "Failures inside a timed stage.", ["stage", "arm"]
)
IMPRESSIONS = Counter(
    "feedflow_impressions_total",
    "Served feeds published to feed.impressions, by outcome: delivered; dropped as overflow "
    "(buffer full), failed (refused by the broker), unsent_at_stop or invalid.",
    ["outcome"],
)
WEIGHTS_COMPLETED = Gauge(
    "feedflow_weights_active_completed_timestamp_seconds",
    "When the weekly weights version serving follows was completed (0: none is active); "
    "a weekly job that failed or did not run leaves it a week behind.",
)
FEED_ITEMS = Counter(
    "feedflow_feed_items_total",
    "Items served, by A/B arm and whether the item is among the 100 most popular "
    "(`popular:all`): the popular share of recommendations.",
    ["arm", "popular"],
)
SERVED_DISTINCT = Gauge(
    "feedflow_served_items_distinct_7d",
    "Distinct items served over the last seven UTC days, all replicas (Redis HyperLogLog); "
    "over the catalogue's size it is the coverage.",
)
INDEX_UNSNAPSHOTTED = Gauge(
    "feedflow_index_unsnapshotted_seconds",
    "Age of the index writer's oldest change no completed snapshot holds yet (0: all saved); "
    "a reader or writer started now replays the update log that far back.",
)
RANKER_LOADED = Gauge(
    "feedflow_ranker_loaded_timestamp_seconds",
    "When this serving process last loaded a new published ranker version (0: none yet, the "
    "default weights); the learning flow publishes every FEEDFLOW_RANKER_PUBLISH_EVERY_S.",
)
SERVING_READY = Gauge(
    "feedflow_serving_ready",
    "1 while this serving process is ready (its /readyz answers 200: index loaded, boards "
    "read once), else 0.",
)
SERVING_REDIS_UP = Gauge(
    "feedflow_serving_redis_up",
    "1 while the serving process's last Redis round trips worked (refresher and feature "
    "reads), 0 while it answers from its caches and the fallback rungs (degraded, still "
    "ready).",
)
IMPRESSIONS_QUEUED = Gauge(
    "feedflow_impressions_queued", "Impressions waiting for the broker (hand-off + producer)."
)


@contextmanager
def timed(histogram: Histogram, errors: Counter | None = None, **labels: str) -> Iterator[None]:
    """Record the block's duration; count it under `errors` too when it raises.

    Example:
        >>> with timed(FEED_REQUEST, FEED_ERRORS, stage="ranking", arm="default"):
        ...     pass
    """
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        if errors is not None:
            errors.labels(**labels).inc()
        raise
    finally:
        target = histogram.labels(**labels) if labels else histogram
        target.observe(time.perf_counter() - start)
