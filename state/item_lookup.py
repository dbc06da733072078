"""Item metadata for the engagement flow: a bounded per-worker cache over the item store.

The engagement flow is keyed by user; the catalogue lives in Redis, written by the content
flow. Each worker keeps what it looked up for `ttl_s` (a removed or changed item is noticed
within that time), remembers misses for a shorter time (an item published a moment ago is
found soon after), and evicts the oldest entries beyond `max_items`. Vectors come from the
active index version, so user vectors live in the same space as the index.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from operators.item_info import ItemInfo
from state.feature_store import retry
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry
from state.item_store import ItemStore
from state.redis_client import RedisClient


class CachedItemLookup:
    """`ItemLookup` for flows: `lookup(media_id) -> ItemInfo | None`.

    Args:
        store: the Redis item store.
        registry: where the active index version is read (refreshed every `ttl_s`).
        ttl_s: how long a found item is trusted.
        miss_ttl_s: how long an unknown item is remembered as unknown.
        max_items: entries kept per worker.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        store: ItemStore,
        registry: IndexRegistry,
        ttl_s: float = 60.0,
        miss_ttl_s: float = 2.0,
        max_items: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._registry = store, registry
        self._ttl, self._miss_ttl, self._max = ttl_s, miss_ttl_s, max_items
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ItemInfo | None]] = OrderedDict()
        self._version: str | None = None
        self._version_until = -1.0

    def __call__(self, media_id: str) -> ItemInfo | None:
        """The item's info and active-index vector (None: unknown or removed); cached for `ttl_s`,
        misses for `miss_ttl_s`."""
        now = self._clock()
        hit = self._cache.get(media_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = self._fetch(media_id, now)
        self._cache[media_id] = (now + (self._ttl if info else self._miss_ttl), info)
        self._cache.move_to_end(media_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return info

    def _fetch(self, media_id: str, now: float) -> ItemInfo | None:
        if now >= self._version_until:
            self._version = retry(self._registry.active, 5, 0.2, "redis")
            self._version_until = now + self._ttl
        found = retry(lambda: self._store.features([media_id], self._version), 5, 0.2, "redis")
        if found[0] is None:
            return None
        return ItemInfo.from_record(found[0].record, found[0].vector)


def job_lookup(client: RedisClient) -> CachedItemLookup:
    """The item-store lookup of a batch job (weekly runs): an hour's cache, up to 1M items."""
    keys = IndexKeys()
    return CachedItemLookup(
        ItemStore(client, keys), IndexRegistry(client, keys), ttl_s=3600.0, max_items=1_000_000
    )
