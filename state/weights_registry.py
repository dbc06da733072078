"""Weekly weight versions in Redis: per-user weights, cohort lists, manifests, active pointer.

A weekly run is one version, `<week>.<n>` (`2024-W07.3`). Its data is written first, the
manifest then says `complete` with its counts, and only then may the active pointer name it:

- `ff:{u:<user_id>}:w:<version>` — one user's packed
  :class:`~operators.weekly_weights.UserWeights`, in the user's own hash slot, so serving
  reads it in the same round trip as the user's features;
- `ff:{weights}:cohorts:<version>` — hash: cohort key → packed list of media ids (the
  cold-start model's lists, :mod:`operators.cold_start`);
- `ff:{weights}:versions` — hash: version → packed :class:`Manifest` (state `writing`,
  `complete` or `failed`; counts; the week's prior; when its data expires);
- `ff:{weights}:active` — the version serving uses;
- `ff:{weights}:summary:<version>` — a run's counts and prior, staged by the members of a
  run done as a Bytewax cluster (:mod:`feedflow.weights_flow`) for the command that marks
  it complete.

A run that dies leaves its manifest `writing` (or `failed`, with the error, when it could
say so) and the pointer where it was. `publish` and `rollback` move the pointer in one
optimistic transaction that re-checks the target's manifest, so the pointer only ever names a
complete version whose data is still there. Per-version data expires `ttl_s` after its run
(`FEEDFLOW_WEIGHTS_TTL_DAYS`, 35 by default: the last five weekly versions can be published
again); manifests are never deleted, so every run stays on record for audit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec
import redis

from kernel.errors import FeedflowError
from operators.weekly_weights import UserWeights, WeekPrior, decode_weights, encode_weights
from state.redis_client import RedisClient

ACTIVE_KEY: Final = "ff:{weights}:active"
VERSIONS_KEY: Final = "ff:{weights}:versions"
SEQUENCE_KEY: Final = "ff:{weights}:seq"
WRITING: Final = "writing"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
BATCH: Final = 1_000
MAX_ERROR: Final = 500
_list_encoder = msgspec.msgpack.Encoder()
_list_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


class WeightsStateError(FeedflowError):
    """A weights version is missing, not complete, expired, or has no predecessor."""


def user_key(user_id: str, version: str) -> str:
    """The key of one user's weights in one version (the user's hash slot).

    Example:
        >>> user_key("alice", "2024-W07.3")
        'ff:{u:alice}:w:2024-W07.3'
    """
    return f"ff:{{u:{user_id}}}:w:{version}"


def cohorts_key(version: str) -> str:
    """The hash of a version's cohort lists.

    Example:
        >>> cohorts_key("2024-W07.3")
        'ff:{weights}:cohorts:2024-W07.3'
    """
    return f"ff:{{weights}}:cohorts:{version}"


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What one run wrote, and whether it finished."""

    version: str
    seq: int
    week: str
    state: str
    created_ms: int
    expires_ms: int
    source: str = ""
    strength: float = 0.0
    completed_ms: int = 0
    users: int = 0
    events: int = 0
    cohorts: int = 0
    prior: WeekPrior | None = None
    error: str = ""


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What the members of a clustered run computed, for :meth:`WeightsRegistry.complete`."""

    users: int
    events: int
    invalid: int
    erased: int
    late: int
    outside: int
    cohorts: int
    prior: WeekPrior
    duplicates: int = 0  # client retries counted once


def summary_key(version: str) -> str:
    """Where a clustered run stages its :class:`RunSummary`.

    Example:
        >>> summary_key("2024-W07.3")
        'ff:{weights}:summary:2024-W07.3'
    """
    return f"ff:{{weights}}:summary:{version}"


def encode_list(media_ids: Iterable[str]) -> bytes:
    """Packed form of one cohort list."""
    return _list_encoder.encode(tuple(media_ids))


def decode_list(payload: bytes) -> tuple[str, ...]:
    """A cohort list from its packed form.

    Example:
        >>> decode_list(encode_list(["m1", "m2"]))
        ('m1', 'm2')
    """
    return _list_decoder.decode(payload)


def read_active(client: RedisClient) -> str | None:
    """The version serving uses, or None before the first publish (one GET, no retry)."""
    raw = client.get(ACTIVE_KEY)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else None


def read_completed_ms(client: RedisClient, version: str) -> int:
    """When `version`'s run completed (epoch ms; 0 when it has no manifest)."""
    raw = client.hget(VERSIONS_KEY, version)
    if not isinstance(raw, bytes):
        return 0
    return msgspec.msgpack.decode(raw, type=Manifest).completed_ms


def read_cohort_lists(
    client: RedisClient, version: str
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Every readable cohort list of a version, and the keys of the unreadable ones."""
    raw: dict[bytes, bytes] = client.hgetall(cohorts_key(version))  # type: ignore[assignment]
    lists: dict[str, tuple[str, ...]] = {}
    unreadable: list[str] = []
    for key, value in raw.items():
        name = key.decode(errors="replace")
        try:
            lists[name] = decode_list(value)
        except (msgspec.DecodeError, ValueError):
            unreadable.append(name)
    return lists, unreadable


class WeightsRegistry:
    """Versions of weekly weights (see module doc).

    Args:
        client: Redis.
        ttl_s: how long a version's per-user data and cohort lists are kept.
        clock: wall-clock seconds (injected for tests).
    """

    def __init__(
        self, client: RedisClient, ttl_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._client, self._ttl, self._clock = client, ttl_s, clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- reading -----------------------------------------------------------------------

    def active(self) -> str | None:
        """The version serving uses, or None before the first publish."""
        return read_active(self._client)

    def manifests(self) -> dict[str, Manifest]:
        """Every run on record, by version."""
        raw: dict[bytes, bytes] = self._client.hgetall(VERSIONS_KEY)  # type: ignore[assignment]
        return {k.decode(): msgspec.msgpack.decode(v, type=Manifest) for k, v in raw.items()}

    def get(self, version: str) -> Manifest:
        """One version's manifest.

        Raises:
            WeightsStateError: if no run wrote `version`.
        """
        raw = self._client.hget(VERSIONS_KEY, version)
        if not isinstance(raw, bytes):
            raise WeightsStateError(f"weights version {version!r} is not on record")
        return msgspec.msgpack.decode(raw, type=Manifest)

    def user_weights(self, user_id: str, version: str | None = None) -> UserWeights | None:
        """One user's weights in `version` (the active one by default), if any."""
        version = version or self.active()
        if version is None:
            return None
        raw = self._client.get(user_key(user_id, version))
        return decode_weights(raw) if isinstance(raw, bytes) else None

    def cohort_lists(self, version: str) -> dict[str, tuple[str, ...]]:
        """Every cohort list of a version.

        Raises:
            WeightsStateError: a list of the version cannot be read.
        """
        lists, unreadable = read_cohort_lists(self._client, version)
        if unreadable:
            raise WeightsStateError(f"weights {version}: unreadable cohort lists {unreadable}")
        return lists

    def status(self) -> dict[str, Any]:
        """Active version and every run, newest first, as plain data."""
        active, now = self.active(), self._now_ms()
        runs = sorted(self.manifests().values(), key=lambda m: -m.seq)
        return {
            "active": active,
            "versions": [
                {
                    "version": m.version,
                    "week": m.week,
                    "state": m.state,
                    "active": m.version == active,
                    "expired": m.expires_ms <= now,
                    "users": m.users,
                    "events": m.events,
                    "cohorts": m.cohorts,
                    "created_ms": m.created_ms,
                    "completed_ms": m.completed_ms,
                    "expires_ms": m.expires_ms,
                    "source": m.source,
                    **({"error": m.error} if m.error else {}),
                }
                for m in runs
            ],
        }

    # -- a run -------------------------------------------------------------------------

    def begin(self, week: str, source: str, strength: float) -> Manifest:
        """Register a new version in state `writing`."""
        seq = int(self._client.incr(SEQUENCE_KEY))
        now = self._now_ms()
        manifest = Manifest(
            version=f"{week}.{seq}",
            seq=seq,
            week=week,
            state=WRITING,
            created_ms=now,
            expires_ms=now + self._ttl * 1000,
            source=source,
            strength=strength,
        )
        self._put(manifest)
        return manifest

    def write_users(self, version: str, weights: Iterable[tuple[str, UserWeights]]) -> int:
        """Write per-user weights of a `writing` version in batches; returns how many.

        Raises:
            WeightsStateError: if Redis refused a write.
        """
        self._require(version, WRITING)
        written = 0
        pipe = self._client.pipeline(transaction=False)
        for user_id, w in weights:
            pipe.set(user_key(user_id, version), encode_weights(w), ex=self._ttl)
            if len(pipe) >= BATCH:
                written += self._flush(pipe, version)
        return written + self._flush(pipe, version)

    def _flush(self, pipe: Any, version: str) -> int:
        replies = pipe.execute()
        if not all(replies):
            raise WeightsStateError(f"weights {version}: Redis refused a per-user write")
        return len(replies)

    def write_cohorts(self, version: str, lists: Mapping[str, Iterable[str]]) -> int:
        """Write the cohort lists of a `writing` version; returns how many."""
        self._require(version, WRITING)
        key = cohorts_key(version)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        if lists:
            pipe.hset(key, mapping={c: encode_list(ids) for c, ids in lists.items()})
            pipe.expire(key, self._ttl)
        pipe.execute()
        return len(lists)

    def stage(self, version: str, summary: RunSummary) -> None:
        """Keep a `writing` version's summary for the command that completes it."""
        self._require(version, WRITING)
        self._client.set(summary_key(version), msgspec.msgpack.encode(summary), ex=self._ttl)

    def staged(self, version: str) -> RunSummary | None:
        """The summary staged for `version` (None: none was)."""
        raw = self._client.get(summary_key(version))
        if not isinstance(raw, bytes):
            return None
        return msgspec.msgpack.decode(raw, type=RunSummary)

    def complete(
        self, version: str, users: int, events: int, cohorts: int, prior: WeekPrior
    ) -> Manifest:
        """Mark a `writing` version complete, with its counts (the pointer does not move)."""
        manifest = msgspec.structs.replace(
            self._require(version, WRITING),
            state=COMPLETE,
            completed_ms=self._now_ms(),
            users=users,
            events=events,
            cohorts=cohorts,
            prior=prior,
        )
        self._put(manifest)
        return manifest

    def fail(self, version: str, error: str) -> None:
        """Record why a run failed (it can then never be published)."""
        manifest = self.get(version)
        if manifest.state == WRITING:
            self._put(msgspec.structs.replace(manifest, state=FAILED, error=error[:MAX_ERROR]))

    # -- the pointer -------------------------------------------------------------------

    def publish(self, version: str) -> str | None:
        """Make a complete, unexpired version active atomically; returns the previous one.

        Raises:
            WeightsStateError: if `version` is unknown, not complete or expired.
        """
        for _ in range(10):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(ACTIVE_KEY, VERSIONS_KEY)
                    self._publishable(self.get(version))
                    previous = self.active()
                    pipe.multi()
                    pipe.set(ACTIVE_KEY, version)
                    pipe.execute()
                    return previous
                except redis.WatchError:
                    continue
        raise WeightsStateError(f"weights publish {version}: the registry kept changing")

    def rollback(self) -> tuple[str, str]:
        """Make the newest complete, unexpired version older than the active one active.

        Returns:
            (the version left, the version now active).

        Raises:
            WeightsStateError: with no active version, or none older to go back to.
        """
        active = self.active()
        if active is None:
            raise WeightsStateError("weights rollback: no version is active")
        current = self.get(active)
        now = self._now_ms()
        older = [
            m
            for m in self.manifests().values()
            if m.seq < current.seq and m.state == COMPLETE and m.expires_ms > now
        ]
        if not older:
            raise WeightsStateError(
                f"weights rollback: no complete, unexpired version older than {active}"
            )
        target = max(older, key=lambda m: m.seq).version
        self.publish(target)
        return active, target

    # -- helpers -----------------------------------------------------------------------

    def _publishable(self, manifest: Manifest) -> None:
        if manifest.state != COMPLETE:
            raise WeightsStateError(
                f"weights version {manifest.version} is {manifest.state}, not complete"
            )
        if manifest.expires_ms <= self._now_ms():
            raise WeightsStateError(f"weights version {manifest.version}: its data expired")

    def _require(self, version: str, state: str) -> Manifest:
        manifest = self.get(version)
        if manifest.state != state:
            raise WeightsStateError(f"weights version {version} is {manifest.state}, not {state}")
        return manifest

    def _put(self, manifest: Manifest) -> None:
        self._client.hset(VERSIONS_KEY, manifest.version, msgspec.msgpack.encode(manifest))
