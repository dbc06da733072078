"""Simulated served feeds and what users did with them: traffic for the learning flow.

A world of the simulator (catalogue, users with planted tastes) is shown to serving's own
feature code: every user gets the features the engagement flow would have stored (top
categories, favourite creators, content type, language, a behavioural vector), every item its
record and engagement stats (completion and like ratio follow the item's latent quality).
A feed scores its candidates with serving's feature matrix and a ranker, serves the best
`feed_size` (or a random order, like an exploration bucket) and records each slot's feature
row in the impression. The user then examines slot `p` with probability `(1 + p) ** -decay`
(position bias), plays what they examined with their planted affinity
(:func:`feedflow.simulator.choice.affinity`), and the views become engagement events.

Co-engagement: every user has a watch history drawn from their planted affinities, run
through the engagement flow's co-engagement logic (:mod:`operators.co_engagement`) into each
item's record, so feeds carry serving's co-engagement candidates and collaborative feature
for the user's recent items, as a live platform's would.

Example:
    >>> world = FeedWorld(users=3, items=40, seed=2)
    >>> msgs = feed_traffic(world, feeds_per_user=1, feed_size=5, candidates=10, seed=1,
    ...                     start_ms=1_700_000_000_000)
    >>> sorted({topic for topic, *_ in msgs})
    ['feed.impressions', 'user.engagement.events']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from feedflow.simulator.catalogue import (
    CONTENT_TYPES,
    Item,
    build_catalogue,
    build_creators,
    schedule_media,
)
from feedflow.simulator.choice import affinity
from feedflow.simulator.tastes import Taste, build_users
from feedflow.simulator.vocabulary import CATEGORY_NAMES
from kernel.settings import Settings
from operators.co_engagement import (
    CoLink,
    CoNeighbours,
    CoRecord,
    CoVisit,
    RecentPositives,
    links,
)
from operators.content import ItemRecord, Stamp
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_IMPRESSIONS,
    EngagementEvent,
    Impression,
    ImpressionItem,
    encode,
)
from operators.dedup import hashes
from operators.ranking_contract import RankerModel, default_model
from operators.user_features import UserFeatures
from serving.co_engagement import co_candidates, collaborative
from serving.item_table import Columns, Vocab
from serving.ranking import (
    ANN,
    CO_ENGAGED,
    EXPLORE,
    SOURCE_CODE,
    Pool,
    UserContext,
    feature_matrix,
)

Message = tuple[str, str, int, str]  # (topic, key, ts ms, JSON payload), like the simulator's
DIM: Final = 16
FRESH_MS: Final = 24 * 3_600_000
EXPLORE_SHARE: Final = 0.3  # candidates drawn at random rather than by similarity
MAX_PLAYS: Final = 3  # views per feed at most
MAX_VIEW_S: Final = 600  # a view lasts at most this long (the user moves on)
HEARTBEAT_S: Final = 30
HISTORY_DRAWS: Final = 120  # items a user considers for their co-engagement history
CO_CANDIDATES: Final = 10  # co-engaged candidates per feed, at most


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


class FeedWorld:
    """Items and users with planted tastes, as serving's feature code sees them."""

    def __init__(self, users: int, items: int, seed: int, start_ms: int = 1_700_000_000_000):
        rng = random.Random(seed)
        creators = build_creators(rng, seed, items)
        self.catalogue = build_catalogue(rng, seed, creators, initial=items, arriving=0)
        schedule_media(rng, self.catalogue, start_ms, start_ms, removals=0)
        self.items = self.catalogue.items
        self.by_id = {it.media_id: it for it in self.items}
        self.row_of = {it.media_id: n for n, it in enumerate(self.items)}
        self.users = build_users(rng, seed, users, creators)
        nrng = np.random.default_rng(seed)
        directions = [_unit(nrng.normal(size=DIM)) for _ in CATEGORY_NAMES]
        noise = [0.7 * _unit(nrng.normal(size=DIM)) for _ in self.items]
        self.vectors = np.asarray(
            [_unit(directions[it.category] + e) for it, e in zip(self.items, noise, strict=True)],
            dtype=np.float32,
        )
        quality = np.asarray([it.quality for it in self.items])
        n = len(self.items)
        self.stats = np.stack(
            [
                np.clip(0.3 + 0.5 * quality + nrng.normal(0, 0.05, n), 0, 1),
                np.clip(0.35 + 0.55 * quality + nrng.normal(0, 0.08, n), 0, 1),
                nrng.lognormal(0.0, 1.5, n) * (0.2 + quality),
            ],
            axis=1,
        ).astype(np.float32)
        self.vocab = Vocab()
        self.columns = Columns.of([record_of(it) for it in self.items], self.vocab)
        self.contexts = [UserContext.of(served_features(t, directions, nrng)) for t in self.users]
        self.seeds, self.co = co_engagement(self, rng)
        plays = {r.media_id: r.engagements for r in self.co.values()}
        self.plays = np.asarray([plays.get(it.media_id, 0) for it in self.items], np.float32)


def co_engagement(
    world: FeedWorld, rng: random.Random
) -> tuple[list[tuple[str, ...]], dict[str, CoRecord]]:
    """Each user's recent positive items, and every item's co-engagement record, from watch
    histories drawn with the users' planted affinities (through the flow's own logic)."""
    settings = Settings()
    states: dict[str, CoNeighbours] = {}
    seeds = []
    for taste in world.users:
        recent = RecentPositives(settings.co_history)
        for ts, item in enumerate(rng.sample(world.items, min(HISTORY_DRAWS, len(world.items)))):
            if rng.random() < affinity(rng, taste, item):
                visit = recent.positive(item.media_id, ts)
                if visit is None:
                    continue
                msgs: list[CoVisit | CoLink] = [visit, *links(visit)]
                for msg in msgs:
                    state = states.get(msg.media_id)
                    if state is None:
                        state = states[msg.media_id] = CoNeighbours(
                            settings.co_capacity, settings.co_list_size, 0, 1
                        )
                    state.on_event(msg)
        seeds.append(recent.items)
    return seeds, {m: state.record() for m, state in states.items()}


def record_of(item: Item) -> ItemRecord:
    """The normalised record serving keeps of a simulated item."""
    return ItemRecord(
        media_id=item.media_id, stamp=Stamp(item.published_at, 0),
        creator_id=item.creator.creator_id, content_type=CONTENT_TYPES[item.ctype],
        category=CATEGORY_NAMES[item.category], language=item.language,
        duration_s=float(item.duration_s), published_at=item.published_at,
    )  # fmt: skip


def served_features(
    taste: Taste, directions: Sequence[npt.NDArray[np.float64]], rng: np.random.Generator
) -> UserFeatures:
    """What the engagement flow would have stored for a user with these tastes."""
    mixed = sum((w * d for w, d in zip(taste.weights, directions, strict=True)), np.zeros(DIM))
    vector = _unit(mixed + 0.3 * _unit(rng.normal(size=DIM)))
    share = taste.video_share
    kind = "VIDEO" if share >= 0.7 else "AUDIO" if share <= 0.3 else "MIXED"
    top = taste.top_categories()
    return UserFeatures(
        engagements=50,
        vector=np.round(vector * 127).astype(np.int8).tobytes(),
        top_categories=tuple(top),
        genre_affinity_30m=tuple(top[:1]) if rng.random() < 0.5 else (),
        creators=hashes(c.creator_id for c in taste.favourites),
        language=taste.language,
        content_type=kind,
    )


def feed_traffic(
    world: FeedWorld,
    *,
    feeds_per_user: int,
    feed_size: int,
    candidates: int,
    seed: int,
    start_ms: int,
    gap_s: float = 900.0,
    order: Literal["ranked", "random"] = "ranked",
    model: RankerModel | None = None,
    decay: float = 0.8,
) -> list[Message]:
    """Impressions and the engagement that followed, in event-time order (see module doc)."""
    rng = random.Random(seed)
    ranker = model or default_model()
    out: list[Message] = []
    for u, taste in enumerate(world.users):
        ts = start_ms + int(rng.random() * gap_s * 1000)
        for n in range(feeds_per_user):
            served = _serve(world, u, rng, ts, candidates, feed_size, order, ranker)
            rid = f"{taste.user_id}-r{n}"
            impression = Impression(
                request_id=rid, user_id=taste.user_id, ts=ts, arm="sim",
                model_version=ranker.version, index_version="sim", items=served,
            )  # fmt: skip
            out.append((TOPIC_IMPRESSIONS, taste.user_id, ts, encode(impression).decode()))
            out.extend(_engage(world, taste, served, rng, ts, rid, decay))
            ts += int(gap_s * 1000 * (0.5 + rng.random()))
    out.sort(key=lambda m: m[2])
    return out


def _serve(
    world: FeedWorld,
    u: int,
    rng: random.Random,
    now_ms: int,
    candidates: int,
    feed_size: int,
    order: str,
    ranker: RankerModel,
) -> list[ImpressionItem]:
    ctx = world.contexts[u]
    assert ctx.vector is not None
    n_items = len(world.items)
    drawn = np.asarray(rng.sample(range(n_items), min(n_items, candidates * 4)))
    sims = world.vectors[drawn] @ ctx.vector
    n_ann = round(candidates * (1 - EXPLORE_SHARE))
    co = co_candidates([world.co.get(m) for m in world.seeds[u]])
    row_of = world.row_of
    co_rows = [row_of[m] for m in co.ranked(CO_CANDIDATES) if m in row_of]
    best = [i for i in drawn[np.argsort(-sims, kind="stable")[:n_ann]].tolist() if i not in co_rows]
    taken = {*co_rows, *best}
    rest = [i for i in drawn.tolist() if i not in taken]
    explore = rng.sample(rest, min(len(rest), candidates - n_ann))
    rows = np.asarray([*co_rows, *best, *explore])
    sources = [CO_ENGAGED] * len(co_rows) + [ANN] * len(best) + [EXPLORE] * len(explore)
    ids = [world.items[i].media_id for i in rows]
    pool = Pool(
        ids,
        np.asarray([SOURCE_CODE[s] for s in sources], dtype=np.int8),
        (world.vectors[rows] @ ctx.vector).astype(np.float32),
        world.columns.take(rows),
        collaborative(co.of(ids), world.plays[rows]) if co.score else None,
    )
    matrix = feature_matrix(ctx, pool, world.stats[rows], now_ms, FRESH_MS, world.vocab)
    scores = ranker.score(matrix)
    if order == "ranked":
        chosen = np.argsort(-scores, kind="stable")[:feed_size].tolist()
    else:
        chosen = rng.sample(range(len(rows)), min(feed_size, len(rows)))
    return [
        ImpressionItem(
            media_id=pool.ids[r],
            position=p,
            score=float(scores[r]),
            source=pool.source(r),
            features=[float(x) for x in matrix[r]],
        )
        for p, r in enumerate(chosen)
    ]


def _engage(
    world: FeedWorld,
    taste: Taste,
    served: list[ImpressionItem],
    rng: random.Random,
    ts: int,
    rid: str,
    decay: float,
) -> list[Message]:
    events: list[EngagementEvent] = []
    cursor, plays = ts + int(rng.uniform(1_000, 10_000)), 0

    def emit(kind: str, at: int, position: float | None, media_id: str) -> None:
        events.append(
            EngagementEvent(
                event_id=f"{rid}-e{len(events)}",
                event_type=kind,
                user_id=taste.user_id,
                media_id=media_id,
                ts=at,
                position_s=position,
            )
        )

    for slot in served:
        if plays >= MAX_PLAYS or rng.random() > (1 + slot.position) ** -decay:
            continue
        item = world.by_id[slot.media_id]
        a = affinity(rng, taste, item)
        if rng.random() >= a:
            if rng.random() < 0.3:
                emit("media_skipped", cursor, None, item.media_id)
            cursor += 2_000
            continue
        plays += 1
        f = min(max(a + rng.gauss(0.0, 0.2), 0.02), 1.0)
        watched = min(f * item.duration_s, MAX_VIEW_S)
        emit("media_started", cursor, 0.0, item.media_id)
        for s in range(HEARTBEAT_S, int(watched), HEARTBEAT_S):
            emit("media_progress", cursor + s * 1000, float(s), item.media_id)
        end = cursor + int(watched * 1000)
        if f >= 0.9:
            emit("media_completed", end, float(item.duration_s), item.media_id)
        else:
            emit("media_paused_early" if f < 0.3 else "media_stopped", end, watched, item.media_id)
        for kind, p in (
            ("media_liked", 0.5 * a * a),
            ("media_disliked", 0.4 * (1 - a) ** 2),
            ("media_shared", 0.05 * a),
            ("media_added_to_playlist", 0.05 * a),
        ):
            if rng.random() < p:
                emit(kind, end + 1_000, None, item.media_id)
        cursor = end + 3_000
    return [(TOPIC_ENGAGEMENT, taste.user_id, e.ts, encode(e).decode()) for e in events]
