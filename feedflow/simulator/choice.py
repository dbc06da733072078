"""What a user plays next and how much they like it, from their planted tastes.

Choice mirrors a feed: mostly items from categories the user likes (drawn by taste weight), some
from favourite creators, some exploration; content type by the user's VIDEO/AUDIO mix; among a
few candidates, the user's language, favourite creators and item quality win. Affinity turns
the same tastes into a number in (0, 1) that drives how a view goes (see `playback`).
"""

from __future__ import annotations

import math
import random
from typing import Final

from feedflow.simulator.catalogue import AUDIO, VIDEO, Item, Pools
from feedflow.simulator.tastes import Taste

FAVOURITE_SHARE: Final = 0.2
EXPLORE_SHARE: Final = 0.08
CANDIDATES: Final = 3


def choose_item(rng: random.Random, taste: Taste, pools: Pools) -> Item | None:
    """Draw the next item for a user; None only when nothing is published at all."""
    ctype = VIDEO if rng.random() < taste.video_share else AUDIO
    r = rng.random()
    if r < FAVOURITE_SHARE and taste.favourites:
        mine = pools.by_creator[
            taste.favourites[int(r / FAVOURITE_SHARE * len(taste.favourites))].idx
        ]
        if mine:
            return mine[int(rng.random() * len(mine))]
    n_categories = len(taste.weights)
    if r < FAVOURITE_SHARE + EXPLORE_SHARE:
        category = int(rng.random() * n_categories)
    else:
        category = taste.category_of(rng.random())
    pool = pools.kind(category, ctype) or pools.kind(category, 1 - ctype)
    if not pool:
        pool = _any_pool(rng, pools, ctype)
        if not pool:
            return None
    return _best_of(rng, taste, pool)


def _any_pool(rng: random.Random, pools: Pools, ctype: int) -> list[Item]:
    """Any live pool, of the wanted content type if one exists, from a random start."""
    kinds = pools.by_kind
    start = int(rng.random() * len(kinds))
    fallback: list[Item] = []
    for i in range(len(kinds)):
        pool = kinds[(start + i) % len(kinds)]
        if pool:
            if pool[0].ctype == ctype:
                return pool
            fallback = fallback or pool
    return fallback


def _best_of(rng: random.Random, taste: Taste, pool: list[Item]) -> Item:
    best, best_score = pool[0], -1.0
    favourites = taste.favourites
    for _ in range(CANDIDATES):
        item = pool[int(rng.random() * len(pool))]
        score = item.quality + (1.0 if item.language == taste.language else 0.0)
        if item.creator in favourites:
            score += 0.5
        if score > best_score:
            best, best_score = item, score
    return best


def affinity(rng: random.Random, taste: Taste, item: Item) -> float:
    """How much this user enjoys this item this time, in (0, 1).

    Category weight dominates; favourite creator, content type, language and quality adjust
    it, and a little noise makes each view different.
    """
    relative = taste.weights[item.category] * len(taste.weights)
    score = 1.3 * math.log(max(relative, 0.03)) + 0.3
    if item.creator in taste.favourites:
        score += 1.2
    share = taste.video_share if item.ctype == VIDEO else 1.0 - taste.video_share
    score += 2.5 * (share - 0.5)
    if item.language != taste.language:
        score -= 0.5 if item.language == "en" else 1.5
    score += item.quality - 0.5 + rng.gauss(0.0, 0.6)
    return 1.0 / (1.0 + math.exp(-score))
