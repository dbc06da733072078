"""What the engagement logic needs to know about an item, and how it asks for it.

The engagement flow is keyed by user, the catalogue by item, so the per-user logic reads item
metadata through an injected :data:`ItemLookup` (a per-worker cache over the feature store in
the flow, a dict in tests), the same way it gets its clock. Nothing about an item is copied
into per-user state, which keeps snapshots small.

Example:
    >>> catalogue = {"m1": ItemInfo(media_id="m1", duration_s=60.0, category="news")}
    >>> lookup = lookup_from(catalogue)
    >>> lookup("m1").category, lookup("nope")
    ('news', None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from operators.content import UNKNOWN, ItemRecord


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """Item metadata as the content flow stores it; every field but the id may be unknown.

    `vector` is the item's unit-norm content embedding (float32), the one the index holds.
    """

    media_id: str
    duration_s: float | None = None
    content_type: str | None = None
    category: str | None = None
    creator_id: str | None = None
    language: str | None = None
    published_at: int | None = None
    vector: npt.NDArray[np.float32] | None = None

    @classmethod
    def from_record(
        cls, record: ItemRecord, vector: npt.NDArray[np.float32] | None = None
    ) -> ItemInfo | None:
        """Adapt the content flow's stored record (None for a removed item)."""
        if record.removed:
            return None

        def known(value: str) -> str | None:
            return None if value == UNKNOWN else value

        return cls(
            media_id=record.media_id,
            duration_s=record.duration_s or None,
            content_type=known(record.content_type),
            category=known(record.category),
            creator_id=known(record.creator_id),
            language=known(record.language),
            published_at=record.published_at or None,
            vector=vector,
        )


ItemLookup = Callable[[str], ItemInfo | None]


def lookup_from(items: Mapping[str, ItemInfo]) -> ItemLookup:
    """An :data:`ItemLookup` over an in-memory mapping (tests, oracles, small catalogues)."""
    return items.get


def no_items(media_id: str) -> ItemInfo | None:
    """An :data:`ItemLookup` that knows nothing (every item's metadata unknown)."""
    del media_id
    return None
