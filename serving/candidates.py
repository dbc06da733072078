"""Candidate retrieval and filters: ~500 items blended from several sources, then cleaned.

Sources, in the order a duplicate is attributed: continue watching, co-engagement (what
other users went on to watch after the user's recent items, :mod:`serving.co_engagement`),
the behaviour space (items near the user's recent ones in vectors learned from
engagement, :mod:`serving.behaviour`), ANN on the user's content vector (the source for new
items and items nobody has engaged with yet), the cold-start model's list for a cold user's
cohort, fresh items (< 24 h) in the user's categories and type, trending in the user's cohort
(their categories and content type) and the global trending board, popular (the long-horizon
popularity boards of the user's categories, and of their content type or else of
everything), and exploration (boards and new items of categories the user has not shown
interest in). The user's
categories are the flows' top categories plus up to three more from the weekly weights.
Filters drop what must never be shown (removed or unknown items, consumed and disliked
items, the wrong content type when the request asked for one) and compute each survivor's
similarity to the user vector. Everything here reads in-process state only."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Final

import numpy as np
import numpy.typing as npt

from operators.keys import board_name, category_of, is_popular
from serving.behaviour import BehaviourMatch
from serving.caches import FreshItems, SideVectors, TrendingCache
from serving.catalogue import Catalogue
from serving.co_engagement import CoCandidates, collaborative
from serving.item_table import TYPE_CODES, Columns, ItemTable
from serving.ranking import (
    ANN,
    BEHAVIOUR,
    CO_ENGAGED,
    COHORT,
    CONTINUE,
    EXPLORE,
    FRESH,
    POPULAR,
    SOURCE_CODE,
    TRENDING,
    Matrix,
    Pool,
    UserContext,
)

ANN_SHARE: Final = 0.8  # of the candidate budget, when the user has a vector
CO_SHARE: Final = 0.4  # at most, of the candidate budget; ANN gets what it leaves of its share
MIN_ANN_SHARE: Final = 0.4  # content keeps this much: new items have no co-engagement yet
BEHAVIOUR_SHARE: Final = 0.2  # at most, of the candidate budget, from ANN's share too
PER_CATEGORY: Final = 20  # trending items per category board of the user
PER_TYPE: Final = 30
FRESH_PER_CATEGORY: Final = 10
FRESH_OVERALL: Final = 20
POPULAR_SHARE: Final = 0.2  # of the candidate budget: the long-horizon board of all / the type
POPULAR_PER_CATEGORY: Final = 10
EXPLORE_BOARDS: Final = 3
EXPLORE_PER_BOARD: Final = 8


@dataclass(frozen=True)
class Sources:
    """The in-process sources retrieval blends (besides the catalogue's ANN)."""

    catalogue: Catalogue
    table: ItemTable
    trending: TrendingCache
    fresh: FreshItems
    side: SideVectors


@dataclass
class Candidates:
    """Deduplicated candidate ids with the source that found each, and ANN similarities."""

    ids: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)  # codes of serving.ranking.SOURCES
    ann: dict[str, float] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add(self, ids: Iterable[str], source: str, limit: int | None = None) -> None:
        """Append unseen ids from one source (at most `limit` new ones)."""
        added, code = 0, SOURCE_CODE[source]
        seen = self._seen
        for media_id in ids:
            if limit is not None and added >= limit:
                return
            if media_id not in seen:
                seen.add(media_id)
                self.ids.append(media_id)
                self.sources.append(code)
                added += 1

    def add_hits(self, hits: list[tuple[str, float]]) -> None:
        """Append an ANN answer (one bulk step: it is most of the candidates)."""
        self.ann = dict(hits)
        fresh = [m for m in self.ann if m not in self._seen]
        self._seen.update(fresh)
        self.ids.extend(fresh)
        self.sources.extend([SOURCE_CODE[ANN]] * len(fresh))

    def __len__(self) -> int:
        return len(self.ids)


def retrieve(
    ctx: UserContext,
    src: Sources,
    budget: int,
    content_type: str | None,
    rng: random.Random,
    cohort: Sequence[str] = (),
    co: CoCandidates | None = None,
    beh: BehaviourMatch | None = None,
) -> Candidates:
    """Blend the sources into at most ~`budget` candidates (see module doc)."""
    out = Candidates()
    out.add(ctx.continue_ids, CONTINUE)
    co_ids = co.ranked(int(budget * CO_SHARE)) if co is not None else []
    out.add(co_ids, CO_ENGAGED)
    taken = len(co_ids)
    if beh is not None:
        before = len(out)
        out.add((m for m, _ in beh.hits), BEHAVIOUR, int(budget * BEHAVIOUR_SHARE))
        taken += len(out) - before
    if ctx.vector is not None:
        k = max(int(budget * ANN_SHARE) - taken, int(budget * MIN_ANN_SHARE))
        out.add_hits(src.catalogue.query(ctx.vector, k))
    out.add(cohort, COHORT)
    kind = content_type or ctx.content_type
    scale = 1 if ctx.vector is not None else 3  # without a vector, lean on the boards
    categories = ctx.retrieval_categories()
    for category in categories:
        fresh = src.fresh.newest(board_name(category=category))
        out.add(fresh, FRESH, FRESH_PER_CATEGORY * scale)
    fresh_all = src.fresh.newest(board_name(content_type=kind)) if kind else src.fresh.newest()
    out.add(fresh_all, FRESH, FRESH_OVERALL * scale)
    for category in categories:
        out.add(_board(src, board_name(category=category)), TRENDING, PER_CATEGORY * scale)
    if kind:
        out.add(_board(src, board_name(content_type=kind)), TRENDING, PER_TYPE * scale)
    out.add(_board(src, board_name()), TRENDING, PER_TYPE * scale)
    for category in categories:
        popular = board_name(category=category, popular=True)
        out.add(_board(src, popular), POPULAR, POPULAR_PER_CATEGORY * scale)
    popular = board_name(content_type=kind, popular=True)
    out.add(_board(src, popular), POPULAR, int(budget * POPULAR_SHARE))
    _explore(categories, src, out, rng, scale)
    return out


def _board(src: Sources, name: str) -> Iterable[str]:
    return (m for m, _ in src.trending.board(name))


def _explore(
    known: Sequence[str], src: Sources, out: Candidates, rng: random.Random, scale: int
) -> None:
    """Items from a few categories the user has not shown interest in."""
    names = [n for n in src.trending.names() if not is_popular(n) and category_of(n)]
    others = [n for n in names if category_of(n) not in known]
    for name in rng.sample(others, min(len(others), EXPLORE_BOARDS * scale)):
        out.add(_board(src, name), EXPLORE, EXPLORE_PER_BOARD)
        out.add(src.fresh.newest(name), EXPLORE, 2)


def last_resort(catalogue: Catalogue, direction: Matrix, k: int) -> list[str]:
    """Any live items (the neighbours of a random direction): a page must not stay empty."""
    return [m for m, _ in catalogue.query(direction, k)]


def apply_filters(
    ctx: UserContext,
    cands: Candidates,
    src: Sources,
    content_type: str | None,
    co: CoCandidates | None = None,
    beh: BehaviourMatch | None = None,
) -> Pool:
    """Drop unknown, removed, consumed, disliked and wrong-type items; attach their columns.

    A continue-watching item counts as consumed but stays (unless disliked): resuming it is
    the point.
    """
    rows = src.table.lookup(cands.ids)
    cols = src.table.columns()  # after the lookup: every row found is inside these arrays
    if len(cols) == 0:
        rows[:] = -1
        cols = Columns.empty(1)
    found = cols.take(np.maximum(rows, 0))  # the one gather from the big table
    keep = (rows >= 0) & found.live
    if content_type is not None:
        keep &= found.ctype == TYPE_CODES[content_type]
    sources = np.asarray(cands.sources, dtype=np.int8)
    if ctx.excluded.size:
        hashes = found.item_hash
        resumable = (sources == SOURCE_CODE[CONTINUE]) & ~np.isin(hashes, ctx.disliked)
        keep &= resumable | ~np.isin(hashes, ctx.excluded)
    kept = np.flatnonzero(keep)
    all_ids = cands.ids
    ids = [all_ids[i] for i in kept.tolist()]
    kept_cols = found.take(kept)
    collab = None
    if co is not None and co.score:
        collab = collaborative(co.of(ids), kept_cols.plays)
    behaviour = beh.features(ids) if beh is not None else None
    kept_sources = sources[kept]
    sims = _similarity(ctx, ids, kept_sources, cands, src)
    return Pool(ids, kept_sources, sims, kept_cols, collab, behaviour)


def _similarity(
    ctx: UserContext, ids: list[str], sources: npt.NDArray[np.int8], cands: Candidates, src: Sources
) -> Matrix:
    """Cosine with the user vector: from the ANN answer, else from the side vectors, else
    from the index (co-engaged items: a few hundred at most, one call), else 0."""
    vec = ctx.vector
    if vec is None or not ids:
        return np.zeros(len(ids), dtype=np.float32)
    sims = np.fromiter(map(cands.ann.get, ids, repeat(np.nan)), np.float32, len(ids))
    others = np.flatnonzero(np.isnan(sims)).tolist()
    sims[others] = 0.0
    if others:
        found, matrix = src.side.lookup([ids[n] for n in others])
        if found:
            sims[[others[n] for n in found]] = matrix @ vec
        unknown = np.setdiff1d(others, [others[n] for n in found])  # in neither
        learned = (SOURCE_CODE[CO_ENGAGED], SOURCE_CODE[BEHAVIOUR])
        wanted = unknown[np.isin(sources[unknown], learned)].tolist()
        if wanted:
            vectors = src.catalogue.vectors([ids[n] for n in wanted])
            rows = [n for n in wanted if ids[n] in vectors]
            if rows:
                sims[rows] = np.stack([vectors[ids[n]] for n in rows]) @ vec
    return sims  # items in none of them (continue watching) rank on their own features
