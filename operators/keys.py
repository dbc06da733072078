"""Names that one process writes and another reads: the boards.

A board is a ranked list of items for everyone, for one content type or for one category;
trending boards rank by trending score, `popular:` boards by long-horizon popularity. The
engagement flow names the boards an item belongs to (:func:`operators.item_stats.ranking_keys`),
serving names the ones it reads; both build the names here, so a typo cannot silently empty a
candidate source. (Redis keys are the stores' business: :mod:`state`.)

Example:
    >>> board_name(), board_name(content_type="AUDIO")
    ('all', 'type:AUDIO')
    >>> board_name(category="news", popular=True)
    'popular:category:news'
    >>> category_of("popular:category:news"), category_of("type:AUDIO")
    ('news', None)
"""

from __future__ import annotations

from typing import Final

ALL: Final = "all"
POPULAR_PREFIX: Final = "popular:"
TYPE_PREFIX: Final = "type:"
CATEGORY_PREFIX: Final = "category:"


def board_name(
    *, content_type: str | None = None, category: str | None = None, popular: bool = False
) -> str:
    """The board of a category, else of a content type, else everyone's."""
    prefix = POPULAR_PREFIX if popular else ""
    if category:
        return f"{prefix}{CATEGORY_PREFIX}{category}"
    if content_type:
        return f"{prefix}{TYPE_PREFIX}{content_type}"
    return prefix + ALL


def is_popular(name: str) -> bool:
    """True for a long-horizon popularity board."""
    return name.startswith(POPULAR_PREFIX)


def category_of(name: str) -> str | None:
    """The category a board ranks, or None for a type's or everyone's board."""
    bare = name.removeprefix(POPULAR_PREFIX)
    return bare[len(CATEGORY_PREFIX) :] if bare.startswith(CATEGORY_PREFIX) else None
