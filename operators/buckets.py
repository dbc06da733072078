"""Counters in explicit event-time buckets over a sliding horizon (minutes, hours, days).

Bytewax's window operators slow down badly with many keys and tie watermarks to wall-clock
time, so per-key windows are plain arrays here: `count` buckets of `width_ms`, each holding
`fields` numbers, addressed by `bucket id % count`. A slot records which absolute bucket it
holds, so stale slots are reset lazily and a total at event time `now` only sums buckets inside
`(now − count × width, now]`. For any `now` at or past the newest event, the total does not
depend on the order events arrived in: an event old enough to find its slot taken by a newer
bucket is outside every such window anyway.

Example:
    >>> ring = BucketRing(width_ms=60_000, count=60, fields=1)
    >>> ring.add(0, 0), ring.add(59_000, 0), ring.add(3_600_000, 0)
    (True, True, True)
    >>> ring.total(0, now_ms=3_600_000)  # the first minute has left the hour
    1.0
"""

from __future__ import annotations

from array import array

RingSnapshot = tuple[bytes, bytes]


class BucketRing:
    """`count` event-time buckets of `width_ms`, `fields` float counters each.

    Args:
        width_ms: bucket width in milliseconds.
        count: number of buckets kept (the horizon is `count × width_ms`).
        fields: counters per bucket.
        resume: a value returned by :meth:`snapshot`, or None.
    """

    __slots__ = ("_ids", "_vals", "count", "fields", "width_ms")

    def __init__(self, width_ms: int, count: int, fields: int, resume: RingSnapshot | None = None):
        if width_ms <= 0 or count <= 0 or fields <= 0:
            raise ValueError(f"BucketRing: bad shape {width_ms=} {count=} {fields=}")
        self.width_ms = width_ms
        self.count = count
        self.fields = fields
        self._ids = array("q")
        self._vals = array("d")
        if resume is None:
            self._ids.extend([-1] * count)
            self._vals.extend([0.0] * (count * fields))
        else:
            self._ids.frombytes(resume[0])
            self._vals.frombytes(resume[1])
            if len(self._ids) != count or len(self._vals) != count * fields:
                raise ValueError("BucketRing: snapshot does not match the ring's shape")

    def add(self, ts_ms: int, field: int, amount: float = 1.0) -> bool:
        """Add `amount` to `field` of the bucket holding `ts_ms`.

        Returns:
            False when the bucket's slot already holds a newer bucket, i.e. the event is
            older than the horizon behind the newest event; nothing is added then.
        """
        base = self._slot(ts_ms)
        if base < 0:
            return False
        self._vals[base + field] += amount
        return True

    def add_row(self, ts_ms: int, row: tuple[float, ...]) -> bool:
        """Add one value to each field of the bucket holding `ts_ms` (see :meth:`add`)."""
        base = self._slot(ts_ms)
        if base < 0:
            return False
        vals = self._vals
        for i, amount in enumerate(row):
            vals[base + i] += amount
        return True

    def total(self, field: int, now_ms: int, span: int | None = None) -> float:
        """Sum of `field` over the last `span` buckets (default all) ending at `now_ms`."""
        newest = now_ms // self.width_ms
        oldest = newest - (self.count if span is None else min(span, self.count))
        ids, vals, fields = self._ids, self._vals, self.fields
        if fields == 1:
            return sum(v for held, v in zip(ids, vals, strict=True) if oldest < held <= newest)
        return sum(
            vals[slot * fields + field]
            for slot in range(self.count)
            if oldest < ids[slot] <= newest
        )

    def totals(self, now_ms: int, span: int | None = None) -> tuple[float, ...]:
        """:meth:`total` of every field, in one pass over the buckets."""
        newest = now_ms // self.width_ms
        oldest = newest - (self.count if span is None else min(span, self.count))
        fields, vals = self.fields, self._vals
        acc = [0.0] * fields
        for slot, held in enumerate(self._ids):
            if oldest < held <= newest:
                base = slot * fields
                for f in range(fields):
                    acc[f] += vals[base + f]
        return tuple(acc)

    def snapshot(self) -> RingSnapshot:
        """Plain immutable state: (bucket ids as int64 bytes, values as float64 bytes)."""
        return (self._ids.tobytes(), self._vals.tobytes())

    def _slot(self, ts_ms: int) -> int:
        bucket = ts_ms // self.width_ms
        slot = bucket % self.count
        held = self._ids[slot]
        if held != bucket:
            if held > bucket:
                return -1
            self._ids[slot] = bucket
            base = slot * self.fields
            for i in range(base, base + self.fields):
                self._vals[i] = 0.0
        return slot * self.fields
