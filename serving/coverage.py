"""Catalogue coverage: how many distinct items the feed served over the last seven days.

Every serving replica notes the ids it serves (a set in memory, off the request's Redis
path); its refresher adds them once a round to one Redis HyperLogLog per UTC day
(`PFADD ff:{coverage}:served:<date>`, kept eight days) and reads the seven days' union back
(`PFCOUNT` of the day keys, one slot by the hash tag, so a Redis Cluster takes it too). All
replicas feed the same days, so the count is the platform's, within HyperLogLog's ~0.8 %.
Divided by the catalogue's size (`feedflow_index_items{role="reader"}`) it is the coverage
the alert watches.

Example:
    >>> day_key(1_764_892_800_000)
    'ff:{coverage}:served:2025-12-05'
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from kernel.metrics import SERVED_DISTINCT

DAY_MS: Final = 86_400_000
DAYS: Final = 7
KEEP_S: Final = 8 * 86_400
MAX_PENDING: Final = 200_000  # ids noted between two rounds; beyond, a round is overdue
PFADD_BATCH: Final = 10_000


def day_key(ts_ms: int) -> str:
    """The HyperLogLog of the UTC day of `ts_ms`."""
    day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"ff:{{coverage}}:served:{day}"


class ServedItems:
    """Ids served since the last round, and their upkeep in Redis."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def note(self, ids: Iterable[str]) -> None:
        """Ids of one served page (called on the request path: a set update)."""
        with self._lock:
            if len(self._pending) < MAX_PENDING:
                self._pending.update(ids)

    def flush(self, client: Any, now_ms: int) -> int:
        """Add what was served to today's HyperLogLog and set the seven days' distinct count;
        returns that count. Ids are put back if Redis fails, for the next round."""
        with self._lock:
            pending, self._pending = self._pending, set()
        key = day_key(now_ms)
        try:
            if pending:
                ids = list(pending)
                pipe = client.pipeline(transaction=False)
                for n in range(0, len(ids), PFADD_BATCH):
                    pipe.pfadd(key, *ids[n : n + PFADD_BATCH])
                pipe.expire(key, KEEP_S)
                pipe.execute()
            days = [day_key(now_ms - n * DAY_MS) for n in range(DAYS)]
            distinct = int(client.pfcount(*days))
        except Exception:
            with self._lock:
                if len(self._pending) < MAX_PENDING:
                    self._pending.update(pending)
            raise
        SERVED_DISTINCT.set(distinct)
        return distinct
