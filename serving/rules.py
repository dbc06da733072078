"""Business rules after the ranker: caps, cross-type discovery, exploration, new releases.

Separate from the model on purpose: the ranker orders by expected engagement, the rules shape
the page. Pure functions over a ranked :class:`serving.ranking.Pool`; no I/O.

- items the user started and did not finish come first (up to two);
- a new-release boost adds `new_boost × freshness` to the model score, and the best new item
  (published within the fresh window) gets a place;
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
    >>> pool = Pool([r.media_id for r in recs], recs, ["ann"] * 3, np.zeros(3, np.float32))
    >>> params = RuleParams(limit=2, max_per_category=1)
    >>> placed = apply_rules(UserContext(), pool, np.array([1.0, 3.0, 2.0]), np.zeros(3), params)
    >>> [pool.ids[p.row] for p in placed]
    ['m1', 'm2']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.ranking import ANN, CONTINUE, EXPLORE, FRESH, POPULAR, TRENDING, Pool, UserContext

NEW_THRESHOLD: Final = math.exp(-1.0)  # freshness above this: published within the window
CONTINUE_SLOTS: Final = 2
REASON_OF_SOURCE: Final = {
    FRESH: "new",
    TRENDING: "trending",
    POPULAR: "popular",
    EXPLORE: "explore",
}


@dataclass(frozen=True)
class RuleParams:
    """Page-shaping parameters of one request (defaults from settings)."""

    limit: int = 20
    max_per_category: int = 8
    max_per_creator: int = 3
    diversity: float = 0.2
    explore_share: float = 0.1
    new_boost: float = 0.5
    content_type: str | None = None  # VIDEO or AUDIO when the request asked for one


@dataclass(frozen=True, slots=True)
class Placed:
    """One item on the page: its row in the pool and its final score."""

    row: int
    score: float


class _Page:
    """The page being filled, with the counts the caps and quotas look at."""

    def __init__(self, pool: Pool, params: RuleParams, cross: npt.NDArray[np.bool_]) -> None:
        self.pool, self.params, self.cross = pool, params, cross
        self.rows: list[int] = []
        self.taken: set[int] = set()
        self.per_category: dict[str, int] = {}
        self.per_creator: dict[str, int] = {}
        self.cross_count = 0

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.params.limit

    def fits(self, row: int, cross_cap: int) -> bool:
        record = self.pool.records[row]
        return (
            row not in self.taken
            and self.per_category.get(record.category, 0) < self.params.max_per_category
            and self.per_creator.get(record.creator_id, 0) < self.params.max_per_creator
            and (not self.cross[row] or self.cross_count < cross_cap)
        )

    def add(self, row: int) -> None:
        record = self.pool.records[row]
        self.rows.append(row)
        self.taken.add(row)
        self.per_category[record.category] = self.per_category.get(record.category, 0) + 1
        self.per_creator[record.creator_id] = self.per_creator.get(record.creator_id, 0) + 1
        self.cross_count += bool(self.cross[row])

    def fill(self, order: list[int], want: int, cross_cap: int) -> None:
        """Add up to `want` rows of `order` that fit."""
        added = 0
        for row in order:
            if added >= want or self.full:
                return
            if self.fits(row, cross_cap):
                self.add(row)
                added += 1


def cross_type(ctx: UserContext, pool: Pool, params: RuleParams) -> npt.NDArray[np.bool_]:
    """Items of the content type the user does not prefer (none when no preference)."""
    if ctx.content_type is None or params.content_type is not None:
        return np.zeros(len(pool), dtype=bool)
    pref = ctx.content_type
    return np.fromiter((r.content_type != pref for r in pool.records), bool, len(pool))


def exploratory(ctx: UserContext, pool: Pool) -> list[bool]:
    """Items that widen the user's horizon: explore sources, or outside known categories."""
    known = ctx.categories
    if not known:
        return [s == EXPLORE for s in pool.sources]
    pairs = zip(pool.sources, pool.records, strict=True)
    return [s == EXPLORE or r.category not in known for s, r in pairs]


def apply_rules(
    ctx: UserContext,
    pool: Pool,
    scores: npt.NDArray[Any],
    fresh: npt.NDArray[Any],
    params: RuleParams,
) -> list[Placed]:
    """The page: rows of `pool` with final scores, best first (see module doc)."""
    if len(pool) == 0 or params.limit <= 0:
        return []
    final = np.asarray(scores, dtype=np.float64) + params.new_boost * np.asarray(fresh)
    order: list[int] = np.argsort(-final, kind="stable").tolist()
    cross = cross_type(ctx, pool, params)
    cross_cap = round(params.diversity * params.limit / 2) if cross.any() else params.limit
    page = _Page(pool, params, cross)
    resume = [r for r in order if pool.sources[r] == CONTINUE]
    page.fill(resume, CONTINUE_SLOTS, params.limit)
    new = [r for r in order if fresh[r] > NEW_THRESHOLD]
    page.fill(new, 1, cross_cap)
    page.fill([r for r in order if cross[r]], cross_cap, cross_cap)
    wide = exploratory(ctx, pool)
    explore_n = max(1, round(params.explore_share * params.limit)) if params.explore_share else 0
    page.fill([r for r in order if wide[r]], explore_n, cross_cap)
    page.fill(order, params.limit, cross_cap)
    for row in order:  # caps left the page short: fill in score order regardless
        if page.full:
            break
        if row not in page.taken:
            page.add(row)
    rows = sorted(page.rows, key=lambda r: -final[r])
    return [Placed(r, float(final[r])) for r in rows]


def reason(source: str, media_id: str, anchor: str | None) -> dict[str, str]:
    """Why an item is on the page (`type` plus the anchor item where there is one).

    Example:
        >>> reason("ann", "m2", "m1"), reason("fresh", "m3", None)
        ({'type': 'because_you_watched', 'anchor_media_id': 'm1'}, {'type': 'new'})
    """
    if source == CONTINUE:
        return {"type": "because_you_watched", "anchor_media_id": media_id}
    if source == ANN:
        if anchor is None:
            return {"type": "popular"}
        return {"type": "because_you_watched", "anchor_media_id": anchor}
    return {"type": REASON_OF_SOURCE.get(source, "popular")}
