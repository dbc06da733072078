"""The parity monitor's comparison: rows served from any version the stores may hold agree;
a definition that differs between serving and the lake (a window cut an hour off) does not.

"Serving" here is serving's own row code (UserContext.of, feature_matrix) fed with what the
flows' logic had written by the time of the read, read up to `lag` before the request."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedflow.parity import CHECKED, USER_COLUMNS, Context, ParityConfig, ParityReport, check
from kernel.settings import Settings
from operators import user_profile
from operators.content import ItemRecord, Stamp
from operators.contracts import EngagementEvent, Impression, ImpressionItem
from operators.item_info import ItemInfo, lookup_from
from operators.point_in_time import ItemInput, item_versions, user_versions
from serving.caches import stats_values
from serving.item_table import Columns, Vocab
from serving.ranking import SOURCE_CODE, Pool, UserContext, feature_matrix

T0 = 1_700_000_000_000
MIN = 60_000
HOUR = 60 * MIN
SETTINGS = Settings()
CONFIG = ParityConfig.of(SETTINGS)
CATEGORIES = ("news", "sports", "music", "talk")
INFOS = {
    f"m{n}": ItemInfo(f"m{n}", category=CATEGORIES[n % 4], duration_s=120.0,
                      content_type="AUDIO" if n % 3 else "VIDEO", creator_id=f"c{n % 5}",
                      language="en" if n % 2 else "de", published_at=T0 - n * HOUR)
    for n in range(12)
}  # fmt: skip
ITEMS = lookup_from(INFOS)
RECORDS = {
    m: ItemRecord(media_id=m, stamp=Stamp(0, 0), category=i.category or "",
                  content_type=i.content_type or "", creator_id=i.creator_id or "",
                  language=i.language or "", published_at=i.published_at or 0)
    for m, i in INFOS.items()
}  # fmt: skip
CONTEXT = Context(RECORDS, lambda user: None, frozenset({"holdback"}))


def watch(user: str, media: str, start: int, seconds: int) -> list[EngagementEvent]:
    """Started, a heartbeat every 10 s, then completed when it ran the item's length."""
    evs = [EngagementEvent(event_id=f"{user}-{media}-{start}", event_type="media_started",
                           user_id=user, media_id=media, ts=start, position_s=0.0)]  # fmt: skip
    for k in range(1, seconds // 10 + 1):
        evs.append(EngagementEvent(
            event_id=f"{user}-{media}-{start}-{k}", event_type="media_progress", user_id=user,
            media_id=media, ts=start + k * 10_000, position_s=k * 10.0,
        ))  # fmt: skip
    if seconds >= 120:
        evs.append(EngagementEvent(
            event_id=f"{user}-{media}-{start}-end", event_type="media_completed", user_id=user,
            media_id=media, ts=start + 120_000, position_s=120.0,
        ))  # fmt: skip
    return evs


def traffic(seed: int, users: int = 4) -> tuple[list[EngagementEvent], list[tuple[str, int]]]:
    """Views over two hours, and feed requests (user, time) between them."""
    rng = random.Random(seed)
    events: list[EngagementEvent] = []
    requests: list[tuple[str, int]] = []
    for u in range(users):
        at = T0 + rng.randrange(0, 20 * MIN)
        for _ in range(rng.randrange(2, 7)):
            events += watch(f"u{u}", f"m{rng.randrange(12)}", at, rng.choice([30, 60, 130]))
            at += rng.randrange(3 * MIN, 40 * MIN)
            requests.append((f"u{u}", at - rng.randrange(0, 2 * MIN)))
    return events, requests


def serve(
    events: list[EngagementEvent], requests: list[tuple[str, int]], lag_ms: int, arm: str = "a"
) -> list[Impression]:
    """Every request answered with all items, rows from the versions as of `t - lag`."""
    by_user: dict[str, list[EngagementEvent]] = defaultdict(list)
    for ev in sorted(events, key=lambda e: e.ts):
        by_user[ev.user_id].append(ev)
    inputs: list[tuple[int, ItemInput]] = []
    reads: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for user, t in requests:
        reads[user].append((t - lag_ms, t - lag_ms))
    users = {}
    for user in sorted(by_user):
        at = user_versions(SETTINGS, ITEMS, by_user[user], reads[user], inputs)
        users |= {(user, w[0]): v[0] for w, v in at.items()}
    ids = sorted(RECORDS)
    wanted = {m: [(t - lag_ms, t - lag_ms) for _, t in requests] for m in ids}
    stats = item_versions(SETTINGS, ITEMS, inputs, wanted)
    out = []
    for n, (user, t) in enumerate(requests):
        vocab = Vocab()
        pool = Pool(ids, np.full(len(ids), SOURCE_CODE["ann"], dtype=np.int8),
                    np.linspace(0.1, 0.9, len(ids), dtype=np.float32),
                    Columns.of([RECORDS[m] for m in ids], vocab))  # fmt: skip
        ctx = UserContext.of(users[user, t - lag_ms])
        ctx = ctx if arm != "holdback" else ctx.impersonal()
        rows = np.asarray(
            [stats_values(stats[m, (t - lag_ms, t - lag_ms)][0]) for m in ids], dtype=np.float32
        )
        matrix = feature_matrix(ctx, pool, rows, t, CONFIG.fresh_ms, vocab)
        items = [ImpressionItem(media_id=m, position=k, score=0.0, source="ann",
                                features=[float(x) for x in matrix[k]])
                 for k, m in enumerate(ids)]  # fmt: skip
        out.append(Impression(request_id=f"r{n}", user_id=user, ts=t, arm=arm,
                              model_version="v", index_version="i", items=items))  # fmt: skip
    return out


def divergence(report: ParityReport) -> dict[str, float]:
    assert set(report.compared) == set(CHECKED)
    return report.divergence()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), lag_s=st.integers(0, SETTINGS.user_features_refresh_s))
def test_rows_served_from_any_version_the_stores_may_hold_agree(seed: int, lag_s: int) -> None:
    events, requests = traffic(seed)
    feeds = serve(events, requests, lag_s * 1000)
    report = check(SETTINGS, CONFIG, ITEMS, CONTEXT, events, feeds)
    assert report.impressions == len(feeds)
    assert divergence(report) == dict.fromkeys(CHECKED, 0.0), report.examples


def test_a_session_window_cut_an_hour_off_is_caught_in_that_feature_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, requests = traffic(7, users=6)
    with monkeypatch.context() as m:
        # The online side cuts the 30-minute window as a cutoff taken in UTC+1 and compared
        # with UTC stamps would: an hour late, so nothing is ever inside it.
        m.setattr(user_profile, "GENRE_WINDOW_MS", user_profile.GENRE_WINDOW_MS - HOUR)
        feeds = serve(events, requests, 0)
    report = check(SETTINGS, CONFIG, ITEMS, CONTEXT, events, feeds)
    shares = divergence(report)
    assert shares["session_genre"] > 0.1, shares
    assert {c: v for c, v in shares.items() if c != "session_genre"} == dict.fromkeys(
        set(CHECKED) - {"session_genre"}, 0.0
    )
    [example, *_] = report.examples["session_genre"]
    assert example["served"] == 0.0 and example["recomputed"] == [1.0]


def test_a_value_older_than_the_staleness_allowed_diverges() -> None:
    events, requests = traffic(11, users=6)
    late = serve(events, requests, CONFIG.user_staleness_ms + 20 * MIN)
    shares = check(SETTINGS, CONFIG, ITEMS, CONTEXT, events, late).divergence()
    assert max(shares[c] for c in ("category_affinity", "session_genre")) > 0.05, shares


def test_a_holdback_row_is_recomputed_without_personal_signals() -> None:
    events, requests = traffic(3)
    feeds = serve(events, requests, 0, arm="holdback")
    assert divergence(check(SETTINGS, CONFIG, ITEMS, CONTEXT, events, feeds)) == dict.fromkeys(
        CHECKED, 0.0
    )
    personal = Context(RECORDS, CONTEXT.weights, frozenset())
    shares = check(SETTINGS, CONFIG, ITEMS, personal, events, feeds).divergence()
    assert shares["category_affinity"] > 0.1


def test_rows_without_features_or_items_it_cannot_know_are_counted_as_skipped() -> None:
    events, requests = traffic(5)
    [imp, *_] = serve(events, requests, 0)
    bare = [ImpressionItem(media_id="m1", position=0, score=0.0, source="ann"),
            ImpressionItem(media_id="gone", position=1, score=0.0, source="ann",
                           features=[0.0] * 14),
            ImpressionItem(media_id="m2", position=2, score=0.0, source="somewhere",
                           features=[0.0] * 14)]  # fmt: skip
    odd = Impression(request_id="x", user_id="u0", ts=imp.ts, arm="a", model_version="v",
                     index_version="i", items=bare)  # fmt: skip
    report = check(SETTINGS, CONFIG, ITEMS, CONTEXT, events, [odd])
    assert report.skipped == {"no_feature_row": 1, "item_unknown": 1, "unknown_source": 1}
    assert report.compared == {}


def test_a_user_whose_history_holds_an_item_the_store_forgot_is_left_out_of_user_columns() -> None:
    events, requests = traffic(7, users=6)
    feeds = serve(events, requests, 0)
    watched = {e.media_id for e in events if e.user_id == requests[-1][0] and e.media_id}
    # The item store has since forgotten one item the last requester watched (removed).
    forgot = lookup_from({m: i for m, i in INFOS.items() if m != sorted(watched)[0]})
    report = check(SETTINGS, CONFIG, forgot, CONTEXT, events, feeds)
    assert report.skipped["history_item_unknown"] > 0
    assert report.compared["freshness"] > report.compared["session_genre"]
    assert all(v == 0.0 for c, v in report.divergence().items() if c not in USER_COLUMNS)
