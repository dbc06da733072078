"""The co-engagement source: items people went on to watch after the user's recent ones.

The user's features name their last positively engaged items (newest first) by digest
(:attr:`operators.user_features.UserFeatures.co_recent`); each has a record written by the
engagement flow's co-engagement step (:mod:`operators.co_engagement`). A request reads the
records it does not hold fresh in one pipelined round trip after the features (the digests
come with the features, and a Redis Cluster spreads records over slots, so they cannot ride
in the features' own trip), bounded by the same short timeout; a record read less than
`ttl_s` ago is answered from a bounded in-process cache, so hot items cost nothing and a
record is never staler than that.

Scores: for each seed `s` (weight `1 / (1 + i)` for the i-th newest) and each neighbour `b`
of it, the guaranteed link count divided by `n_s ^ a`; the candidate's own engagement
`n_b ^ (1 - a)` divides it at ranking time (:func:`collaborative`), where the pool's columns
hold it. `a` is :data:`operators.co_engagement.ANCHOR_EXPONENT`. The anchor of a candidate is
the seed that contributed most, for `because_you_watched`.

Example:
    >>> from operators.co_engagement import CoRecord
    >>> recs = [CoRecord("a", 1, 1, (("x", 1000), ("y", 500))), CoRecord("b", 1, 4, (("y", 4000),))]
    >>> found = co_candidates(recs)
    >>> found.ranked(), found.anchor["y"]
    (['y', 'x'], 'b')
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt
import redis

from operators.co_engagement import ANCHOR_EXPONENT, WEIGHT_SCALE, CoRecord
from operators.feature_codecs import decode_co_record
from state.feature_store import StoreUnavailableError

log = logging.getLogger(__name__)
Matrix = npt.NDArray[np.float32]
_FAILURES = (redis.RedisError, OSError, StoreUnavailableError)


class CoSource(Protocol):
    """Where a request reads co-engagement records by item digest."""

    def fetch(self, digests: Sequence[bytes]) -> list[bytes | None]:
        """Packed records (stamp removed) in order, None where absent; raises when
        unreachable."""
        ...


class MemoryCoSource:
    """Digest → packed record, for tests; `down` makes it fail."""

    def __init__(self, values: Mapping[bytes, bytes]) -> None:
        self.values, self.down, self.reads = values, False, 0

    def fetch(self, digests: Sequence[bytes]) -> list[bytes | None]:
        """Packed records in order, None where absent; raises ConnectionError when `down`."""
        if self.down:
            raise redis.ConnectionError("memory source is down")
        self.reads += 1
        return [self.values.get(d) for d in digests]


class CoRecords:
    """Records by digest: cached for `ttl_s`, the rest read in one trip (see module doc).

    Args:
        source: where records are read.
        ttl_s: how long a record read is answered from the cache.
        max_items: cache bound (least recently used dropped first).
    """

    def __init__(
        self,
        source: CoSource,
        ttl_s: float = 0.5,
        max_items: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source, self._ttl, self._max, self._clock = source, ttl_s, max_items, clock
        self._cache: OrderedDict[bytes, tuple[float, CoRecord | None]] = OrderedDict()

    def get(self, digests: Sequence[bytes]) -> list[CoRecord | None]:
        """The records of `digests` in order (None: none yet, or Redis failed).

        Raises:
            StoreUnavailableError: Redis failed; the request goes on without the source.
        """
        now, cache = self._clock(), self._cache
        out: dict[bytes, CoRecord | None] = {}
        missing = []
        for d in digests:
            hit = cache.get(d)
            if hit is not None and hit[0] > now:
                out[d] = hit[1]
            else:
                missing.append(d)
        if missing:
            try:
                raw = self._source.fetch(missing)
            except _FAILURES as exc:
                raise StoreUnavailableError(f"co-engagement records: {exc}") from exc
            for d, value in zip(missing, raw, strict=True):
                out[d] = record = _decode(value)
                cache[d] = (now + self._ttl, record)
                cache.move_to_end(d)
            while len(cache) > self._max:
                cache.popitem(last=False)
        return [out[d] for d in digests]


def _decode(raw: bytes | None) -> CoRecord | None:
    if raw is None:
        return None
    try:
        return decode_co_record(raw)
    except (msgspec.DecodeError, ValueError) as exc:
        log.warning("unreadable co-engagement record (%d bytes): %s", len(raw), exc)
        return None


@dataclass
class CoCandidates:
    """Neighbours of the user's seeds: anchor-normalised score and the strongest anchor."""

    score: dict[str, float] = field(default_factory=dict)
    anchor: dict[str, str] = field(default_factory=dict)

    def ranked(self, limit: int | None = None) -> list[str]:
        """Candidates by score, best first (ties by id)."""
        best = sorted(self.score.items(), key=lambda kv: (-kv[1], kv[0]))
        return [m for m, _ in best[:limit]]

    def of(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """Scores of `ids` (0 where not a neighbour)."""
        get = self.score.get
        return np.fromiter((get(m, 0.0) for m in ids), np.float32, len(ids))


def co_candidates(records: Sequence[CoRecord | None]) -> CoCandidates:
    """Score every neighbour of the seeds' records (newest seed first; see module doc)."""
    out = CoCandidates()
    score, best = out.score, dict[str, float]()
    seeds = {r.media_id for r in records if r is not None}
    for i, rec in enumerate(records):
        if rec is None or not rec.neighbours:
            continue
        scale = 1.0 / (1 + i) / WEIGHT_SCALE / max(rec.engagements, 1) ** ANCHOR_EXPONENT
        for media_id, count in rec.neighbours:
            if media_id in seeds:
                continue
            part = count * scale
            score[media_id] = score.get(media_id, 0.0) + part
            if part > best.get(media_id, 0.0):
                best[media_id] = part
                out.anchor[media_id] = rec.media_id
    return out


def collaborative(raw: npt.NDArray[np.float32], plays: npt.NDArray[np.float32]) -> Matrix:
    """The ranking feature: scores divided by each candidate's engagement `^ (1 - a)`,
    scaled so the request's strongest is 1 (0 for all when none has co-engagement).

    Example:
        >>> raw = np.array([2.0, 1.0, 0.0], np.float32)
        >>> plays = np.array([16.0, 1.0, 3.0], np.float32)
        >>> [round(float(x), 3) for x in collaborative(raw, plays)]
        [0.871, 1.0, 0.0]
    """
    damped = raw / np.maximum(plays, 1.0) ** np.float32(1.0 - ANCHOR_EXPONENT)
    top = float(damped.max()) if damped.size else 0.0
    if not top > 0.0:
        return np.zeros(len(raw), dtype=np.float32)
    out: Matrix = (damped / np.float32(top)).astype(np.float32)
    return out
