"""The feature catalogue: one definition per feature, under the platform's names.

Each :class:`Feature` says what a feature is called (the platform's feature table's name
where it has one), its type, entity, window and source, where it is stored, and which field
of the stored record holds it. `feedflow inspect` shows stored records under these names,
`docs/features.md` is generated from here (`feedflow features catalogue --markdown`), and a
test keeps the two equal. The ranking features (:data:`operators.ranking_contract.FEATURES`)
are listed too, as `ranking.<column>`, with the column each takes in a served feature row.

Example:
    >>> from operators.user_features import UserFeatures
    >>> values(USER, UserFeatures(content_type="AUDIO", engagements=7))["preferred_content_type"]
    'AUDIO'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from operators.ranking_contract import FEATURES as RANKING_FEATURES

USER: Final = "user"
ITEM: Final = "item"
CREATOR: Final = "creator"
USER_ITEM: Final = "user × item"


#: The ranking columns the parity monitor (:mod:`feedflow.parity`) recomputes from the lake:
#: those computed from user features, item stats, item metadata and the request's time. The
#: others need what the lake does not hold (the index's vectors, the boards, co-engagement,
#: the behaviour space, the candidate's source).
PARITY_CHECKED: Final = (
    "category_affinity", "session_genre", "creator_affinity", "type_match", "language_match",
    "completion_rate", "like_ratio", "freshness",
)  # fmt: skip


class Feature(NamedTuple):
    """One feature's definition."""

    name: str
    entity: str
    type: str
    window: str
    source: str
    stored: str
    description: str
    value: Callable[[Any], Any] | None = None  # from the stored record; None: not stored


def _field(name: str) -> Callable[[Any], Any]:
    return lambda record: getattr(record, name)


_U = "Redis `ff:{u:<user>}` (UserFeatures)"
_I = "Redis `ff:{i:<media>}` (ItemStatsRecord)"
_M = "Redis item store (ItemRecord, content flow)"
_EV = "user.engagement.events"

CATALOGUE: Final[tuple[Feature, ...]] = (
    Feature("preferred_content_type", USER, "VIDEO | AUDIO | MIXED", "~7 days (decayed)", _EV,
            _U, "VIDEO or AUDIO with ≥ 70 % of recent seconds, else MIXED",
            _field("content_type")),
    Feature("preferred_language", USER, "str", "~28 days (decayed)", _EV, _U,
            "the language of most seconds consumed", _field("language")),
    Feature("top_categories_7d", USER, "list[str] (3)", "~7 days (decayed)", _EV, _U,
            "categories by seconds consumed", _field("top_categories")),
    Feature("recent_media_7d", USER, "list[str] (3)", "last 3 items, within the TTL", _EV,
            _U, "most recently consumed items, newest first (the reasons' anchors)",
            _field("recent")),
    Feature("genre_affinity_30m", USER, "list[str]", "30 minutes", _EV, _U,
            "categories watched in the last 30 minutes", _field("genre_affinity_30m")),
    Feature("avg_session_duration", USER, "int (s)", "~7 days (decayed)", _EV, _U,
            "mean session length (a session ends after 30 minutes without events)",
            _field("avg_session_s")),
    Feature("completion_rate_7d", USER, "float | null", "7 days (day buckets)", _EV, _U,
            "completed views / closed views", _field("completion_rate_7d")),
    Feature("binge_depth", USER, "int", "current session", _EV, _U,
            "items started in the current (or last) session", _field("binge_depth")),
    Feature("engagement_count", USER, "int", "lifetime of the record (35 days idle)", _EV,
            _U, "closed views plus explicit feedback", _field("engagements")),
    Feature("cold_start", USER, "bool", "—", _EV, _U, "fewer than 5 engagements",
            lambda r: r.cold_start),
    Feature("continue_watching", USER, "list[(str, int)]", "last 2 unfinished", _EV, _U,
            "items started and not finished, with the resume position",
            _field("continue_watching")),
    Feature("subscription_count", USER, "int", "lifetime of the record", _EV, _U,
            "creators subscribed to (`subscription_to_creator`)", _field("subscriptions")),
    Feature("views_1h", ITEM, "int", "1 hour", _EV, _I, "views started in the last hour",
            _field("views_1h")),
    Feature("play_count_24h", ITEM, "int", "24 hours", _EV, _I,
            "views started in the last 24 hours", _field("plays_24h")),
    Feature("play_count_total", ITEM, "int", "item's record lifetime", _EV, _I,
            "views started", _field("plays_total")),
    Feature("completion_rate", ITEM, "float | null", "item's record lifetime", _EV, _I,
            "completed / closed views", _field("completion_rate")),
    Feature("avg_watch_fraction", ITEM, "float | null", "item's record lifetime", _EV, _I,
            "mean watch fraction of closed views", _field("mean_watch_fraction")),
    Feature("like_ratio", ITEM, "float", "item's record lifetime", _EV, _I,
            "(likes + 1) / (likes + dislikes + 2)", _field("like_ratio")),
    Feature("trending_score", ITEM, "float", "24 h half-life", _EV, _I,
            "decayed engagement velocity", _field("trending_score")),
    Feature("popularity", ITEM, "float", "7 day half-life", _EV, _I,
            "decayed qualified views", _field("popularity")),
    Feature("creator_subscriber_count", ITEM, "int", "lifetime of the record", _EV,
            "the item's creator's record", "subscriber_count of the item's `creator_id`", None),
    Feature("subscriber_count", CREATOR, "int", "lifetime of the record (35 days idle)", _EV,
            "Redis `ff:{cr:<creator>}` (CreatorRecord)",
            "users who subscribed (`subscription_to_creator`, each once)",
            _field("subscribers")),
    Feature("publish_age_hours", ITEM, "float", "at request time", "media.published",
            _M, "hours since `published_at`, computed when a feed is served", None),
    *(
        Feature(f"ranking.{name}", USER_ITEM, "float32", "at request time", "serving.ranking",
                f"`feed.impressions` feature rows, column {n}; lake `impressions.features`",
                "a ranking feature (operators/ranking_contract.py); "
                + ("recomputed" if name in PARITY_CHECKED else "not recomputed")
                + " by the parity monitor", None)
        for n, name in enumerate(RANKING_FEATURES)
    ),
)  # fmt: skip
BY_NAME: Final = {f.name: f for f in CATALOGUE}


def values(entity: str, record: Any) -> dict[str, Any]:
    """A stored record's features of `entity`, by catalogue name."""
    return {f.name: f.value(record) for f in CATALOGUE if f.entity == entity and f.value}


def markdown() -> str:
    """The catalogue as the Markdown page `docs/features.md`."""
    lines = [
        "# Feature catalogue",
        "",
        "Generated from `operators/feature_catalogue.py` by "
        "`feedflow features catalogue --markdown`; a test keeps this page equal to it.",
        "Names follow the platform's feature table where it names the feature.",
        "",
        "| name | entity | type | window | source | stored | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in CATALOGUE:
        cells = (f.name, f.entity, f.type, f.window, f.source, f.stored, f.description)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
