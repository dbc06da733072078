"""Business rules after the ranker: caps, cross-type discovery, exploration, new releases.

Separate from the model on purpose: the ranker orders by expected engagement, the rules shape
the page. Pure functions over a ranked :class:`serving.ranking.Pool`; no I/O.

- items the user started and did not finish come first (up to two);
- a new-release boost adds `new_boost × freshness` to the model score, and the best two new
  items (published within the fresh window) in the user's categories get a place, judged
  without the popularity they have not had time to earn;
- at most `max_per_category` items per category and `max_per_creator` per creator;
- `diversity` in [0, 1] steers cross-type discovery: a user who prefers one content type gets
  about `diversity × limit / 2` items of the other type, and no more;
- `explore_share` of the places go to items outside the user's known categories;
- when the caps leave the page short, it is filled in score order regardless: a feed is
  never shorter than the candidates allow.

Example:
    >>> import numpy as np
    >>> from operators.content import ItemRecord, Stamp
    >>> recs = [ItemRecord(media_id=f"m{i}", stamp=Stamp(0, i), category="news",
    ...                    creator_id=f"c{i}") for i in range(3)]
    >>> vocab = Vocab()
    >>> pool = Pool.of(recs, ["ann"] * 3, [0.0] * 3, vocab)
    >>> params = RuleParams(limit=2, max_per_category=1)
    >>> scores = np.array([1.0, 3.0, 2.0])
    >>> placed = apply_rules(UserContext(), pool, scores, np.zeros(3), params, vocab)
    >>> [pool.ids[p.row] for p in placed]
    ['m1', 'm2']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kernel.settings import DEFAULTS
from serving.item_table import TYPE_CODES, Vocab
from serving.ranking import (
    ANN,
    BEHAVIOUR,
    CO_ENGAGED,
    CONTINUE,
    EXPLORE,
    FRESH,
    POPULAR,
    SOURCE_CODE,
    TRENDING,
    Pool,
    UserContext,
)

NEW_THRESHOLD: Final = math.exp(-1.0)  # freshness above this: published within the window
CONTINUE_SLOTS: Final = 2
NEW_SLOTS: Final = 2
REASON_OF_SOURCE: Final = {
    FRESH: "new",
    TRENDING: "trending",
    POPULAR: "popular",
    EXPLORE: "explore",
}


@dataclass(frozen=True)
class RuleParams:
    """Page-shaping parameters of one request (defaults from settings)."""

    limit: int = DEFAULTS.feed_limit_default
    max_per_category: int = DEFAULTS.feed_max_per_category
    max_per_creator: int = DEFAULTS.feed_max_per_creator
    diversity: float = DEFAULTS.feed_diversity
    explore_share: float = DEFAULTS.feed_explore_share
    new_boost: float = DEFAULTS.feed_new_boost
    content_type: str | None = None  # VIDEO or AUDIO when the request asked for one


@dataclass(frozen=True, slots=True)
class Placed:
    """One item on the page: its row in the pool and its final score."""

    row: int
    score: float


class _Page:
    """The page being filled, with the counts the caps and quotas look at."""

    def __init__(self, pool: Pool, params: RuleParams, cross: list[bool], cross_cap: int):
        self.params, self.cross, self.cross_cap = params, cross, cross_cap
        self.categories: list[int] = pool.cols.category.tolist()
        self.creators: list[int] = pool.cols.creator.tolist()
        self.rows: list[int] = []
        self.taken: set[int] = set()
        self.per_category: dict[int, int] = {}
        self.per_creator: dict[int, int] = {}
        self.cross_count = 0

    def fill(self, order: list[int], want: int, capped: bool = True) -> None:
        """Add up to `want` rows of `order` that fit the caps (all of them if not `capped`)."""
        limit, added = self.params.limit, 0
        max_cat, max_creator = self.params.max_per_category, self.params.max_per_creator
        cross_cap = self.cross_cap if capped else limit
        per_cat, per_creator, cross = self.per_category, self.per_creator, self.cross
        for row in order:
            if added >= want or len(self.rows) >= limit:
                return
            if row in self.taken:
                continue
            cat, creator = self.categories[row], self.creators[row]
            if capped and (
                per_cat.get(cat, 0) >= max_cat
                or per_creator.get(creator, 0) >= max_creator
                or (cross[row] and self.cross_count >= cross_cap)
            ):
                continue
            self.rows.append(row)
            self.taken.add(row)
            per_cat[cat] = per_cat.get(cat, 0) + 1
            per_creator[creator] = per_creator.get(creator, 0) + 1
            self.cross_count += cross[row]
            added += 1


def cross_type(ctx: UserContext, pool: Pool, params: RuleParams) -> npt.NDArray[np.bool_]:
    """Items of the content type the user does not prefer (none when no preference)."""
    if ctx.content_type is None or params.content_type is not None:
        return np.zeros(len(pool), dtype=bool)
    out: npt.NDArray[np.bool_] = pool.cols.ctype != TYPE_CODES[ctx.content_type]
    return out


def exploratory(ctx: UserContext, pool: Pool, vocab: Vocab) -> npt.NDArray[np.bool_]:
    """Items that widen the user's horizon: explore sources, or outside known categories."""
    out: npt.NDArray[np.bool_] = pool.sources == SOURCE_CODE[EXPLORE]
    if ctx.categories:
        out |= ~np.isin(pool.cols.category, ctx.category_codes(vocab))
    return out


def _new_releases(
    ctx: UserContext, pool: Pool, fresh: npt.NDArray[Any], vocab: Vocab
) -> npt.NDArray[np.bool_]:
    """Items published within the fresh window, in the user's categories when known."""
    new: npt.NDArray[np.bool_] = np.asarray(fresh) > NEW_THRESHOLD
    if ctx.categories and new.any():
        new &= np.isin(pool.cols.category, ctx.category_codes(vocab))
    return new


def _head(order: npt.NDArray[np.intp], mask: npt.NDArray[np.bool_], n: int) -> list[int]:
    """The first `n` rows of `order` where `mask` holds (a few spare for the caps)."""
    rows: list[int] = order[mask[order]][: 4 * n + 8].tolist()
    return rows


def apply_rules(
    ctx: UserContext,
    pool: Pool,
    scores: npt.NDArray[Any],
    fresh: npt.NDArray[Any],
    params: RuleParams,
    vocab: Vocab,
    unproven: npt.NDArray[Any] | None = None,
) -> list[Placed]:
    """The page: rows of `pool` with final scores, best first (see module doc).

    `unproven`, when given, is each row's score without the terms a new release cannot have
    earned yet (its long-horizon popularity): the new-release slots go to the best new items
    by it, so an item published a minute ago is not judged against last week's audience.
    """
    if len(pool) == 0 or params.limit <= 0:
        return []
    boost = params.new_boost * np.asarray(fresh)
    final = np.asarray(scores, dtype=np.float64) + boost
    order = np.argsort(-final, kind="stable")
    new_order = order
    if unproven is not None:
        new_order = np.argsort(-(np.asarray(unproven, dtype=np.float64) + boost), kind="stable")
    cross = cross_type(ctx, pool, params)
    cross_cap = round(params.diversity * params.limit / 2) if cross.any() else params.limit
    page = _Page(pool, params, cross.tolist(), cross_cap)
    resume = pool.sources == SOURCE_CODE[CONTINUE]
    page.fill(_head(order, resume, CONTINUE_SLOTS), CONTINUE_SLOTS, capped=False)
    page.fill(_head(new_order, _new_releases(ctx, pool, fresh, vocab), NEW_SLOTS), NEW_SLOTS)
    page.fill(_head(order, cross, cross_cap), cross_cap)
    explore_n = max(1, round(params.explore_share * params.limit)) if params.explore_share else 0
    page.fill(_head(order, exploratory(ctx, pool, vocab), explore_n), explore_n)
    everything: list[int] = order.tolist()
    page.fill(everything, params.limit)
    page.fill(everything, params.limit, capped=False)  # caps left the page short
    rows = sorted(page.rows, key=lambda r: -final[r])
    return [Placed(r, float(final[r])) for r in rows]


def reason(source: str, media_id: str, anchor: str | None) -> dict[str, str]:
    """Why an item is on the page (`type` plus the anchor item where there is one).

    Example:
        >>> reason("ann", "m2", "m1"), reason("fresh", "m3", None)
        ({'type': 'because_you_watched', 'anchor_media_id': 'm1'}, {'type': 'new'})
        >>> reason("continue_watching", "m4", None), reason("ann", "m5", "m5")
        ({'type': 'continue_watching'}, {'type': 'popular'})
    """
    if source == CONTINUE:
        return {"type": "continue_watching"}
    if source in (ANN, CO_ENGAGED, BEHAVIOUR):
        if anchor is None or anchor == media_id:
            return {"type": "popular"}
        return {"type": "because_you_watched", "anchor_media_id": anchor}
    return {"type": REASON_OF_SOURCE.get(source, "popular")}
