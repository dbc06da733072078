"""Weekly per-user ranking weights: one user's week of engagement, shrunk to the week's prior.

A weekly run reads every engagement event of one ISO week (Monday 00:00 UTC to the next),
rebuilds views with the same sessionizer as the engagement flow, and tallies per user the
*positive engagement mass* of the week: a closed view weighs its playback signals plus the
duration-debiased watch score (:meth:`~operators.signals.SignalWeights.view_weight`), explicit
feedback its signal weight once per (item, signal); negative outcomes weigh 0 (they say what
the user did not want, not how much of a category they want). From the tallies:

- **categories**: the share of the user's mass per item category;
- **video**: the share of VIDEO in the mass of items of known type;
- **explore**: exploration appetite, the share of mass outside the user's three largest
  categories;
- **fresh**: appetite for new releases, the share of mass on items watched within
  :data:`FRESH_MS` of their publication.

Users with little data would get noisy weights, so every share is shrunk towards the week's
global prior (the mass-weighted share over all users of the week, an empirical-Bayes prior):
`p = (x + k · π) / (n + k)` with `x` the user's mass in the cell, `n` the user's mass, `π`
the prior share and `k` the prior strength (`FEEDFLOW_WEIGHTS_PRIOR_STRENGTH`, default 10: a
user with ten completed views' worth of engagement is half their own week, half the prior).
Explore and fresh are stored as ratios to the prior (1 = an average appetite), which is what
serving scales its exploration share and new-release boost by.

Example:
    >>> t = WeekTally()
    >>> t.add("news", "VIDEO", 3.0, fresh=False)
    >>> t.add("music", "AUDIO", 1.0, fresh=True)
    >>> prior = week_prior([t])
    >>> w = shrink(t, prior, strength=0.0)
    >>> w.categories, w.video, w.explore, w.fresh
    ((('news', 0.75), ('music', 0.25)), 0.75, 1.0, 1.0)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Final

import msgspec

WEEK_MS: Final = 7 * 86_400_000
FRESH_MS: Final = 86_400_000  # "new": watched within a day of publication (serving's window)
TOP_CATEGORIES: Final = 8  # categories kept per user (the rest weigh nothing in serving)
HOME_CATEGORIES: Final = 3  # mass outside a user's three largest categories is exploration
RATIO_BOUNDS: Final = (0.25, 4.0)
WEIGHTS_VERSION: Final = 1


def week_of(ts_ms: int) -> str:
    """The ISO week of an event time, as `YYYY-Www`.

    Example:
        >>> week_of(1_700_000_000_000)  # Tuesday 14 November 2023
        '2023-W46'
    """
    year, week, _ = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isocalendar()
    return f"{year}-W{week:02d}"


def week_span(week: str) -> tuple[int, int]:
    """Start and end (exclusive) of an ISO week in epoch ms, UTC.

    Raises:
        ValueError: if `week` is not `YYYY-Www` or names no such week.

    Example:
        >>> start, end = week_span("2023-W46")
        >>> datetime.fromtimestamp(start / 1000, tz=UTC).isoformat(), (end - start) // 3_600_000
        ('2023-11-13T00:00:00+00:00', 168)
    """
    try:
        year, wk = week.split("-W")
        monday = date.fromisocalendar(int(year), int(wk), 1)
    except ValueError:
        raise ValueError(f"week_span: {week!r} is not an ISO week like 2024-W07") from None
    if len(wk) != 2:
        raise ValueError(f"week_span: {week!r} is not an ISO week like 2024-W07")
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    start_ms = int(start.timestamp() * 1000)
    return start_ms, start_ms + WEEK_MS


def last_complete_week(now_ms: int, lateness_ms: int) -> str:
    """The newest week whose end, plus the allowed lateness, has passed by `now_ms`.

    Example:
        >>> start, _ = week_span("2023-W47")
        >>> last_complete_week(start + 3_600_000, 600_000), last_complete_week(start, 1)
        ('2023-W46', '2023-W45')
    """
    candidate = week_of(now_ms)
    while week_span(candidate)[1] + lateness_ms > now_ms:
        candidate = previous_week(candidate)
    return candidate


def week_seed(week: str) -> int:
    """The cohort model's seed for a week: the same on every run of that week, so a week
    recomputed (from the lake, after the topic's retention) gives the same lists.

    Example:
        >>> week_seed("2024-W10") == week_seed("2024-W10") != week_seed("2024-W11")
        True
    """
    return zlib.crc32(week.encode())


def previous_week(week: str) -> str:
    """The week before `week`.

    Example:
        >>> previous_week("2024-W01")
        '2023-W52'
    """
    return week_of(week_span(week)[0] - 1)


class WeekTally:
    """One user's positive engagement mass of a week, by category, type and freshness."""

    __slots__ = ("audio", "categories", "fresh", "mass", "video")

    def __init__(self) -> None:
        self.categories: dict[str, float] = {}
        self.video = self.audio = self.fresh = self.mass = 0.0

    def add(self, category: str | None, content_type: str | None, mass: float, fresh: bool) -> None:
        """Add `mass` (ignored unless positive) of one item's engagement."""
        if not mass > 0.0:
            return
        self.mass += mass
        if category is not None:
            self.categories[category] = self.categories.get(category, 0.0) + mass
        if content_type == "VIDEO":
            self.video += mass
        elif content_type == "AUDIO":
            self.audio += mass
        if fresh:
            self.fresh += mass

    def explore_mass(self) -> float:
        """Mass outside the user's :data:`HOME_CATEGORIES` largest categories.

        Engagement with items of unknown category counts as neither home nor exploration.
        """
        known = sorted(self.categories.values(), reverse=True)
        return sum(known[HOME_CATEGORIES:])


class WeekPrior(msgspec.Struct, frozen=True, kw_only=True):
    """The week's global shares (mass-weighted over users): what sparse users shrink to."""

    categories: dict[str, float]
    video: float
    explore: float
    fresh: float
    users: int
    mass: float


class UserWeights(msgspec.Struct, frozen=True, array_like=True):
    """One user's weekly weights, as stored per version (packed msgpack, ~60-120 bytes).

    Attributes:
        categories: shrunk category shares of the user's top categories, best first.
        video: shrunk share of VIDEO in the user's engagement (0.5: no lean either way).
        explore: exploration appetite relative to the week's average (1: average).
        fresh: appetite for new releases relative to the week's average.
        mass: the user's positive engagement mass in the week (the evidence).
    """

    categories: tuple[tuple[str, float], ...]
    video: float
    explore: float
    fresh: float
    mass: float
    version: int = WEIGHTS_VERSION


class PriorSums:
    """The sums a :class:`WeekPrior` is made of; sums of disjoint sets of users add up, so a
    week tallied in shards has one prior (equal to a single pass's within float rounding).

    Example:
        >>> a, b = WeekTally(), WeekTally()
        >>> a.add("news", "VIDEO", 3.0, fresh=False); b.add("talk", "AUDIO", 1.0, fresh=False)
        >>> both = PriorSums.of([a]).merge(PriorSums.of([b]))
        >>> both.prior() == PriorSums.of([a, b]).prior()
        True
    """

    __slots__ = ("categories", "explore", "fresh", "mass", "typed", "users", "video")

    def __init__(self) -> None:
        self.categories: dict[str, float] = {}
        self.video = self.typed = self.explore = self.fresh = self.mass = 0.0
        self.users = 0

    @classmethod
    def of(cls, tallies: Iterable[WeekTally]) -> PriorSums:
        """The sums over `tallies` (users with no positive mass do not count)."""
        sums = cls()
        categories = sums.categories
        for t in tallies:
            if t.mass <= 0.0:
                continue
            sums.users += 1
            sums.mass += t.mass
            for name, m in t.categories.items():
                categories[name] = categories.get(name, 0.0) + m
            sums.video += t.video
            sums.typed += t.video + t.audio
            sums.explore += t.explore_mass()
            sums.fresh += t.fresh
        return sums

    def merge(self, other: PriorSums) -> PriorSums:
        """Add `other`'s sums to these; returns self."""
        for name, m in other.categories.items():
            self.categories[name] = self.categories.get(name, 0.0) + m
        self.video += other.video
        self.typed += other.typed
        self.explore += other.explore
        self.fresh += other.fresh
        self.mass += other.mass
        self.users += other.users
        return self

    def prior(self) -> WeekPrior:
        """Mass-weighted global shares (neutral values for an empty week)."""
        total = sum(self.categories.values())
        mass, typed = self.mass, self.typed
        return WeekPrior(
            categories={c: m / total for c, m in sorted(self.categories.items())} if total else {},
            video=self.video / typed if typed else 0.5,
            explore=self.explore / mass if mass else 0.0,
            fresh=self.fresh / mass if mass else 0.0,
            users=self.users,
            mass=mass,
        )


def week_prior(tallies: Iterable[WeekTally]) -> WeekPrior:
    """Mass-weighted global shares of a week (neutral values for an empty week).

    Example:
        >>> a, b = WeekTally(), WeekTally()
        >>> a.add("news", "VIDEO", 3.0, fresh=False); b.add("talk", "AUDIO", 1.0, fresh=False)
        >>> p = week_prior([a, b])
        >>> p.categories, p.video, p.users
        ({'news': 0.75, 'talk': 0.25}, 0.75, 2)
    """
    return PriorSums.of(tallies).prior()


def _share(x: float, n: float, prior: float, k: float) -> float:
    return (x + k * prior) / (n + k) if n + k > 0.0 else prior


def _ratio(share: float, prior: float) -> float:
    if prior <= 0.0:
        return 1.0
    low, high = RATIO_BOUNDS
    return min(max(share / prior, low), high)


def shrink(tally: WeekTally, prior: WeekPrior, strength: float) -> UserWeights:
    """A user's weights: each share shrunk towards the prior with `strength` (see module doc).

    Example:
        >>> sparse, rich = WeekTally(), WeekTally()
        >>> sparse.add("news", None, 1.0, fresh=False); rich.add("news", None, 100.0, fresh=False)
        >>> prior = WeekPrior(categories={"news": 0.2, "talk": 0.8}, video=0.5, explore=0.1,
        ...                   fresh=0.1, users=2, mass=101.0)
        >>> [dict(shrink(t, prior, 10.0).categories)["news"] for t in (sparse, rich)]
        [0.273, 0.927]
    """
    k = max(strength, 0.0)
    known = sum(tally.categories.values())
    names = set(prior.categories) | set(tally.categories)
    shares = {
        c: _share(tally.categories.get(c, 0.0), known, prior.categories.get(c, 0.0), k)
        for c in names
    }
    top = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
    typed = tally.video + tally.audio
    explore = _share(tally.explore_mass(), tally.mass, prior.explore, k)
    fresh = _share(tally.fresh, tally.mass, prior.fresh, k)
    return UserWeights(
        categories=tuple((c, r) for c, p in top if (r := round(p, 3)) > 0.0),
        video=round(_share(tally.video, typed, prior.video, k), 3),
        explore=round(_ratio(explore, prior.explore), 3),
        fresh=round(_ratio(fresh, prior.fresh), 3),
        mass=round(tally.mass, 2),
    )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserWeights)


def encode_weights(weights: UserWeights) -> bytes:
    """Packed bytes of a user's weights."""
    return _encoder.encode(weights)


def decode_weights(payload: bytes) -> UserWeights:
    """A user's weights from packed bytes.

    Raises:
        ValueError: on a payload that is not a weights record, or has non-finite numbers.

    Example:
        >>> w = UserWeights(categories=(("news", 0.6),), video=0.2, explore=1.0, fresh=1.0,
        ...                 mass=3.0)
        >>> decode_weights(encode_weights(w)) == w
        True
    """
    try:
        weights = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"decode_weights: {exc}") from exc
    numbers = [weights.video, weights.explore, weights.fresh, *(p for _, p in weights.categories)]
    if not all(math.isfinite(x) for x in numbers):
        raise ValueError("decode_weights: non-finite value")
    return weights
