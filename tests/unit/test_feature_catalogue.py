"""The feature catalogue: the platform's names, one definition each, the page kept equal."""

from __future__ import annotations

from pathlib import Path

from operators.feature_catalogue import BY_NAME, CATALOGUE, ITEM, USER, markdown, values
from operators.item_stats import ItemStatsRecord
from operators.ranking_contract import FEATURES
from operators.user_features import UserFeatures, decode_user_features, encode_user_features

ROOT = Path(__file__).resolve().parents[2]


def test_docs_features_md_is_the_generated_catalogue() -> None:
    assert (ROOT / "docs" / "features.md").read_text() == markdown(), (
        "regenerate: feedflow features catalogue --markdown > docs/features.md"
    )


def test_names_are_unique_and_the_platform_names_are_there() -> None:
    assert len(BY_NAME) == len(CATALOGUE)
    platform = {
        "preferred_content_type", "preferred_language", "recent_media_7d", "top_categories_7d",
        "avg_session_duration", "play_count_24h", "publish_age_hours", "subscription_count",
        "creator_subscriber_count", "subscriber_count",
    }  # fmt: skip
    assert platform <= set(BY_NAME)
    assert {f"ranking.{c}" for c in FEATURES} <= set(BY_NAME)  # every ranking column


def test_a_stored_user_record_reads_back_under_catalogue_names() -> None:
    record = UserFeatures(
        ts=5, engagements=9, top_categories=("news", "music"), language="de",
        content_type="VIDEO", avg_session_s=640, recent=("m1", "m2"), subscriptions=3,
    )  # fmt: skip
    named = values(USER, decode_user_features(encode_user_features(record)))
    assert named["preferred_language"] == "de" and named["preferred_content_type"] == "VIDEO"
    assert named["top_categories_7d"] == ("news", "music")
    assert named["recent_media_7d"] == ("m1", "m2")
    assert named["avg_session_duration"] == 640 and named["subscription_count"] == 3
    assert named["cold_start"] is False
    assert {f.name for f in CATALOGUE if f.entity == USER} == set(named)


def test_item_stats_read_back_under_catalogue_names() -> None:
    stats = ItemStatsRecord(
        version=2, media_id="m1", ts=1, views_1h=2, plays_24h=7, plays_total=40,
        like_ratio=0.75, completion_rate=0.5, mean_watch_fraction=0.6, trending_score=1.5,
        popularity=3.0,
    )  # fmt: skip
    named = values(ITEM, stats)
    assert named["play_count_24h"] == 7 and named["play_count_total"] == 40
    assert "publish_age_hours" not in named  # computed per request, not stored
