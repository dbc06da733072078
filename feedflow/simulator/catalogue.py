"""The simulated catalogue: creators, VIDEO and AUDIO items, their `media.published` payloads.

Items are structured records (category, creator, content type, language, duration, a latent
quality); their titles, descriptions and tags are drawn from the category's vocabulary when the
item is published, so the same seed gives the same text. :class:`Pools` is the live index
viewers pick from: an item enters it when published and leaves it when removed.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

import orjson

from feedflow.simulator.vocabulary import (
    AUDIO_FORMATS,
    CATEGORIES,
    CONTENT_LANGUAGES,
    DESCRIPTION_TEMPLATES,
    SERIES_FORMATS,
    SERIES_TEMPLATES,
    TITLE_TEMPLATES,
    VIDEO_FORMATS,
    Format,
)

CONTENT_TYPES: Final = ("VIDEO", "AUDIO")
VIDEO: Final = 0
AUDIO: Final = 1
ITEMS_PER_CREATOR: Final = 12
HOME_CATEGORY_SHARE: Final = 0.85
PAST_WINDOW_MS: Final = 30 * 86_400_000
PUBLISH: Final = 0
REMOVE: Final = 1


class Creator:
    """A channel or podcast: one home category, one content type, one language."""

    __slots__ = ("category", "creator_id", "ctype", "idx", "language")

    def __init__(self, idx: int, creator_id: str, category: int, ctype: int, language: str):
        self.idx, self.creator_id, self.category = idx, creator_id, category
        self.ctype, self.language = ctype, language


class Item:
    """One catalogue item; `pool_pos`/`creator_pos` are its slots in :class:`Pools`."""

    __slots__ = (
        "category",
        "creator",
        "creator_pos",
        "ctype",
        "duration_s",
        "fmt",
        "idx",
        "language",
        "media_id",
        "pool_pos",
        "published_at",
        "quality",
    )

    def __init__(self, idx: int, media_id: str, creator: Creator, category: int, fmt: Format):
        self.idx, self.media_id, self.creator, self.category = idx, media_id, creator, category
        self.ctype, self.language, self.fmt = creator.ctype, creator.language, fmt
        self.duration_s = 0
        self.quality = 0.0
        self.published_at = 0
        self.pool_pos = self.creator_pos = -1


class Catalogue:
    """All creators and items of a world, in creation order (initial items first)."""

    def __init__(self, creators: list[Creator], items: list[Item], initial: int) -> None:
        self.creators = creators
        self.items = items
        self.initial = initial  # items[:initial] exist before the span starts


def build_creators(rng: random.Random, seed: int, items: int) -> list[Creator]:
    """About one creator per dozen items, each with a home category, content type, language."""
    return [_creator(rng, seed, i) for i in range(max(4, round(items / ITEMS_PER_CREATOR)))]


def build_catalogue(
    rng: random.Random, seed: int, creators: list[Creator], initial: int, arriving: int
) -> Catalogue:
    """`initial + arriving` items by `creators`; publication times are set by the caller.

    Example:
        >>> r = random.Random(1)
        >>> cat = build_catalogue(r, 1, build_creators(r, 1, 20), initial=20, arriving=5)
        >>> len(cat.items), cat.items[0].media_id
        (25, 's1-m000000')
    """
    # A few prolific creators publish most items (Pareto weights).
    cum = _cumulative([rng.paretovariate(1.2) for _ in creators])
    items = []
    for idx in range(initial + arriving):
        creator = creators[_pick(rng, cum)]
        category = creator.category
        if rng.random() > HOME_CATEGORY_SHARE:
            category = rng.randrange(len(CATEGORIES))
        formats = AUDIO_FORMATS if creator.ctype == AUDIO else VIDEO_FORMATS
        fmt = rng.choices([f for f, _ in formats], [w for _, w in formats])[0]
        item = Item(idx, f"s{seed}-m{idx:06d}", creator, category, fmt)
        item.duration_s = round(math.exp(rng.uniform(math.log(fmt.min_s), math.log(fmt.max_s))))
        item.quality = rng.random()
        items.append(item)
    return Catalogue(creators, items, initial)


def _creator(rng: random.Random, seed: int, idx: int) -> Creator:
    category = rng.randrange(len(CATEGORIES))
    ctype = AUDIO if rng.random() < CATEGORIES[category].audio_share else VIDEO
    language = rng.choices([c for c, _ in CONTENT_LANGUAGES], [w for _, w in CONTENT_LANGUAGES])[0]
    return Creator(idx, f"s{seed}-c{idx:05d}", category, ctype, language)


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def _pick(rng: random.Random, cum: list[float]) -> int:
    return min(bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def media_payload(rng: random.Random, item: Item) -> str:
    """The `media.published` payload of a newly published item, with generated text."""
    cat = CATEGORIES[item.category]
    nouns = rng.sample(cat.nouns, 4)
    words = {
        "adj": rng.choice(cat.adjectives),
        "Adj": rng.choice(cat.adjectives).capitalize(),
        "noun": nouns[0],
        "Noun": nouns[0].capitalize(),
        "noun2": nouns[1],
        "noun3": nouns[2],
        "noun4": nouns[3],
        "n": str(rng.randint(1, 250)),
    }
    templates: tuple[str, ...] = TITLE_TEMPLATES
    if item.fmt.name in SERIES_FORMATS:
        templates += SERIES_TEMPLATES
    tags = [*rng.sample(cat.tags, rng.randint(2, 4)), item.fmt.name]
    body = {
        "media_id": item.media_id,
        "status": "published",
        "creator_id": item.creator.creator_id,
        "content_type": CONTENT_TYPES[item.ctype],
        "title": rng.choice(templates).format(**words),
        "description": rng.choice(DESCRIPTION_TEMPLATES).format(**words),
        "category": cat.name,
        "tags": tags,
        "language": item.language,
        "duration_s": float(item.duration_s),
        "published_at": item.published_at,
    }
    return orjson.dumps(body).decode()


def removal_payload(item: Item) -> str:
    """The `media.published` payload that takes an item out of every feed."""
    body = {
        "media_id": item.media_id,
        "status": "removed",
        "creator_id": item.creator.creator_id,
        "content_type": CONTENT_TYPES[item.ctype],
        "category": CATEGORIES[item.category].name,
        "published_at": item.published_at,
    }
    return orjson.dumps(body).decode()


def schedule_media(
    rng: random.Random, catalogue: Catalogue, start_ms: int, end_ms: int, removals: int
) -> list[tuple[int, int, Item]]:
    """Set publication times and return the in-span `(ts, kind, item)` changes in time order.

    Initial items get `published_at` in the 30 days before `start_ms`; arriving items are
    published at uniform times inside the span (kind 0), and `removals` initial items are
    removed at uniform times inside it (kind 1).
    """
    items = catalogue.items
    past = sorted(
        start_ms - rng.randrange(60_000, PAST_WINDOW_MS) for _ in range(catalogue.initial)
    )
    for item, ts in zip(items[: catalogue.initial], past, strict=True):
        item.published_at = ts
    span = max(end_ms - start_ms, 1)
    changes = []
    for item in items[catalogue.initial :]:
        item.published_at = start_ms + rng.randrange(span)
        changes.append((item.published_at, PUBLISH, item))
    if catalogue.initial:
        for idx in rng.sample(range(catalogue.initial), min(removals, catalogue.initial)):
            changes.append((start_ms + rng.randrange(span), REMOVE, items[idx]))
    changes.sort(key=lambda change: (change[0], change[1], change[2].idx))
    return changes


class Pools:
    """Published, not removed items by (category, content type) and by creator.

    Removal swaps the last element into the freed slot, so adding, removing and drawing an
    item are O(1).
    """

    def __init__(self, n_categories: int, n_creators: int) -> None:
        self.by_kind: list[list[Item]] = [[] for _ in range(n_categories * 2)]
        self.by_creator: list[list[Item]] = [[] for _ in range(n_creators)]
        self.size = 0

    def kind(self, category: int, ctype: int) -> list[Item]:
        """Live items of one category and content type (do not mutate)."""
        return self.by_kind[category * 2 + ctype]

    def add(self, item: Item) -> None:
        """Make an item available to viewers."""
        pool = self.by_kind[item.category * 2 + item.ctype]
        item.pool_pos = len(pool)
        pool.append(item)
        mine = self.by_creator[item.creator.idx]
        item.creator_pos = len(mine)
        mine.append(item)
        self.size += 1

    def remove(self, item: Item) -> None:
        """Withdraw an item; views already playing it finish normally."""
        if item.pool_pos < 0:
            return
        _swap_remove(self.by_kind[item.category * 2 + item.ctype], item.pool_pos, "pool_pos")
        _swap_remove(self.by_creator[item.creator.idx], item.creator_pos, "creator_pos")
        item.pool_pos = item.creator_pos = -1
        self.size -= 1


def _swap_remove(pool: list[Item], pos: int, slot: str) -> None:
    last = pool.pop()
    if pos < len(pool):
        pool[pos] = last
        setattr(last, slot, pos)
