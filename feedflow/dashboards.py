"""Grafana dashboards as code: `python -m feedflow.dashboards DIR` writes them as JSON.

`docker/grafana/dashboards/` holds what this module writes (a test keeps the two equal, and
checks every panel's query is valid PromQL with `promtool`); Grafana provisions them from
there (`docker/grafana/dashboards.yaml`). One dashboard per concern an SRE looks at:
ingestion and lag, freshness and the index, serving, quality, and the weekly job. Queries use
the recording rules of `docker/prometheus/rules/feedflow.yml` where there is one, so a panel
and its alert read the same number.

Example:
    >>> [d["uid"] for d in DASHBOARDS][:2]
    ['feedflow-ingest', 'feedflow-freshness']
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import orjson

DATASOURCE: Final = {"type": "prometheus", "uid": "prometheus"}
WIDTH: Final = 12
HEIGHT: Final = 8


def panel(
    title: str, unit: str, *queries: tuple[str, str], kind: str = "timeseries"
) -> dict[str, Any]:
    """A panel of `(PromQL, legend)` queries (its place is set by :func:`dashboard`)."""
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for n, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """A dashboard of two panels a row."""
    placed = [
        p | {"id": n + 1, "gridPos": {"x": (n % 2) * WIDTH, "y": (n // 2) * HEIGHT,
                                      "w": WIDTH, "h": HEIGHT}}
        for n, p in enumerate(panels)
    ]  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "tags": ["feedflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": placed,
    }


_P99 = "histogram_quantile(0.99, sum by (le) (rate({metric}_bucket[5m])))"

DASHBOARDS: Final = (
    dashboard("feedflow-ingest", "Feedflow: ingestion and lag", [
        panel("Events read, by outcome", "reqps",
              ("sum by (topic, outcome) (rate(feedflow_events_total[5m]))",
               "{{topic}} {{outcome}}")),
        panel("Consumer lag (messages behind), by topic", "short",
              ("sum by (instance, topic) (bytewax_kafka_consumer_lag)", "{{instance}} {{topic}}")),
        panel("Event lag P99 (processing − event time)", "s",
              (_P99.format(metric="feedflow_event_lag_seconds"), "P99")),
        panel("Dead letters, share of events", "percentunit",
              ("feedflow:deadletter:ratio_5m", "dead-lettered")),
        panel("Event lake rows written, by dataset", "rowsps",
              ("sum by (dataset) (rate(feedflow_lake_rows_total[5m]))", "{{dataset}}")),
        panel("Store retries, by store", "short",
              ("sum by (store) (increase(feedflow_store_retries_total[10m])) or vector(0)",
               "{{store}}")),
    ]),
    dashboard("feedflow-freshness", "Feedflow: freshness and the index", [
        panel("Event → feature in Redis, P99 (budget 1 s)", "s",
              ("feedflow:feature_freshness_seconds:p99_5m", "P99")),
        panel("Publish → searchable, P99 (budget 1 s)", "s",
              ("feedflow:publish_to_searchable_seconds:p99_5m", "P99")),
        panel("Index items, by role", "short",
              ("max by (role) (feedflow_index_items)", "{{role}}")),
        panel("Index deleted items, by role", "short",
              ("max by (role) (feedflow_index_deleted_items)", "{{role}}")),
        panel("Index changes in no snapshot yet, oldest (alert > 30 min)", "s",
              ("max(feedflow_index_unsnapshotted_seconds)", "unsaved")),
        panel("Index snapshots, by kind and outcome (1 h)", "short",
              ("sum by (kind, outcome) (increase(feedflow_index_snapshots_total[1h])) or vector(0)",
               "{{kind}} {{outcome}}")),
    ]),
    dashboard("feedflow-serving", "Feedflow: serving", [
        panel("Feed latency P95, by stage", "s",
              ("histogram_quantile(0.95, sum by (le, stage) "
               "(rate(feedflow_feed_request_seconds_bucket[5m])))", "{{stage}}")),
        panel("Feed latency P99, by arm", "s",
              ("histogram_quantile(0.99, sum by (le, arm) "
               '(rate(feedflow_feed_request_seconds_bucket{stage="total"}[5m])))', "{{arm}}")),
        panel("Feeds per second, by arm", "reqps",
              ('sum by (arm) (rate(feedflow_feed_request_seconds_count{stage="total"}[5m]))',
               "{{arm}}")),
        panel("Fallbacks, by reason", "reqps",
              ("sum by (reason) (rate(feedflow_feed_fallback_total[5m])) or vector(0)",
               "{{reason}}")),
        panel("Fallback share (SLO 1 %)", "percentunit",
              ("feedflow:feed_fallback:ratio_5m", "failure rungs")),
        panel("Serving ready and Redis reachable, by replica", "short",
              ("min by (instance) (feedflow_serving_ready)", "ready {{instance}}"),
              ("min by (instance) (feedflow_serving_redis_up)", "Redis {{instance}}")),
    ]),
    dashboard("feedflow-quality", "Feedflow: recommendation quality", [
        panel("Catalogue coverage, 7 days (alert < 70 %)", "percentunit",
              ("feedflow:catalogue_coverage:ratio_7d", "coverage")),
        panel("Share from the 100 most popular, 7 days (alert > 50 %)", "percentunit",
              ("feedflow:popular_share:ratio_7d", "popular share")),
        panel("CTR and completion per arm, 1 day", "percentunit",
              ("feedflow:ctr:ratio_1d", "CTR {{arm}}"),
              ("feedflow:completion:ratio_1d", "completion {{arm}}")),
        panel("Online ranker: progressive AUC and log loss", "short",
              ("max(feedflow_ranker_roc_auc)", "AUC"),
              ("max(feedflow_ranker_log_loss)", "log loss")),
        panel("Parity divergence, by feature", "percentunit",
              ("max by (feature) (feedflow_parity_divergence)", "{{feature}}")),
    ]),
    dashboard("feedflow-weekly", "Feedflow: weekly job", [
        panel("Age of the weekly weights serving follows (alert > 8 days)", "s",
              ("time() - max(feedflow_weights_active_completed_timestamp_seconds)", "age")),
        panel("Ranker versions published (1 h)", "short",
              ("sum(increase(feedflow_ranker_versions_published_total[1h]))", "versions")),
        panel("Since serving last loaded a ranker version (alert > 6 h)", "s",
              ("time() - max(feedflow_ranker_loaded_timestamp_seconds)", "age")),
    ]),
)  # fmt: skip


def write(directory: Path) -> list[Path]:
    """Write every dashboard as `<uid>.json` in `directory`; the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for d in DASHBOARDS:
        path = directory / f"{d['uid']}.json"
        path.write_bytes(orjson.dumps(d, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docker/grafana/dashboards")):
        print(p)
