"""Weekly training snapshots: what each weekly run read, wrote and ran with, kept in the lake.

After a run completes, one JSON document goes to `<lake>/weekly/week=<week>/<version>.json`:

- `inputs`: where the week came from (`kafka`, `lake`, `file:<name>`), its bounds, and the
  counts of what was applied and what was not (invalid, erased, duplicates, late, outside);
- `outputs`: users written, a digest of every user's stored weights (order-free: the sum of
  each `(user, stored bytes)`'s SHA-256 prefix, read back from Redis, so it covers what
  serving reads), the week's prior and the cohort lists;
- `versions`: the weights version, Feedflow's, the lake's schema version, and the settings
  the computation depends on.

A week recomputed later from the lake (`feedflow weights run --from-lake --week W
--no-publish`) writes a document of its own; equal `weights_digest`s mean equal weights.
Nothing in it names a user, so it outlives the lake's retention and erasure has nothing to
remove.

Example:
    >>> a, b = digest([("u1", b"x"), ("u2", b"y")]), digest([("u2", b"y"), ("u1", b"x")])
    >>> a == b, len(a)
    (True, 32)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any, Final

import msgspec
import orjson

from feedflow import __version__
from kernel.settings import Settings
from operators.weekly_weights import week_span
from state.lake import Lake
from state.lake_schema import SCHEMA_VERSION
from state.redis_client import RedisClient
from state.weights_registry import WeightsRegistry, user_key

AUDIT_DIR: Final = "weekly"
_SETTINGS: Final = (
    "weights_prior_strength", "allowed_lateness_s", "dedup_window_s", "view_inactivity_s",
    "view_close_grace_s",
)  # fmt: skip
_MASK: Final = (1 << 128) - 1


def digest(users: Iterable[tuple[str, bytes]]) -> str:
    """An order-free digest of `(user_id, stored weights)` pairs (hex, 128 bits)."""
    total = 0
    for user_id, raw in users:
        h = hashlib.sha256(user_id.encode() + b"\0" + raw).digest()
        total = (total + int.from_bytes(h[:16], "big")) & _MASK
    return f"{total:032x}"


def stored_users(client: RedisClient, version: str) -> Iterable[tuple[str, bytes]]:
    """Every user's stored weights of `version`, as Redis holds them."""
    suffix = user_key("", version)[len("ff:{u:}") :]
    keys: list[bytes] = []
    for key in client.scan_iter(match=f"ff:{{u:*}}{suffix}", count=1000):
        keys.append(key)
        if len(keys) == 500:
            yield from _values(client, keys, suffix)
            keys = []
    yield from _values(client, keys, suffix)


def _values(client: RedisClient, keys: list[bytes], suffix: str) -> Iterable[tuple[str, bytes]]:
    pipe = client.pipeline(transaction=False)  # one GET each: the keys lie in many slots
    for key in keys:
        pipe.get(key)
    for key, raw in zip(keys, pipe.execute(), strict=True):
        if isinstance(raw, bytes):
            yield key.decode()[len("ff:{u:") : -len(suffix) - 1], raw


def write_snapshot(
    lake: Lake,
    client: RedisClient,
    registry: WeightsRegistry,
    settings: Settings,
    result: dict[str, Any],
) -> str:
    """Write the snapshot of a completed run (`result`: what the run reported); returns
    its path in the lake."""
    version, week = result["version"], result["week"]
    manifest = registry.get(version)
    start_ms, end_ms = week_span(week)
    counts = ("events", "invalid", "erased", "duplicates", "late", "outside_week")
    doc = {
        "version": version,
        "week": week,
        "written_ms": int(time.time() * 1000),
        "inputs": {"source": manifest.source, "from_ms": start_ms, "to_ms": end_ms}
        | {k: result.get(k) for k in counts},
        "outputs": {
            "users": manifest.users,
            "weights_digest": digest(stored_users(client, version)),
            "prior": msgspec.to_builtins(manifest.prior),
            "cohort_lists": {
                c: list(ids) for c, ids in sorted(registry.cohort_lists(version).items())
            },
        },
        "versions": {
            "feedflow": __version__,
            "lake_schema": SCHEMA_VERSION,
            "settings": {k: getattr(settings, k) for k in _SETTINGS},
        },
    }
    rel = f"{AUDIT_DIR}/week={week}/{version}.json"
    lake.put(rel, orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return rel


def read_snapshot(lake: Lake, week: str, version: str) -> dict[str, Any]:
    """A run's snapshot, as written."""
    doc: dict[str, Any] = orjson.loads(lake.get(f"{AUDIT_DIR}/week={week}/{version}.json"))
    return doc
