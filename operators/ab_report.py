"""Per-arm outcomes of served feeds, and the statistics of `feedflow ab report`.

Attribution (event time): an engagement event counts for the most recent impression of the
same user, shown at most `window_ms` before it, that served the event's item (last touch: an
item served twice is credited once). Per arm:

- **CTR**: impressions of which at least one served item was played (any playback telemetry
  but an auto-play skip) over impressions;
- **completion rate**: played (impression, item) pairs with a `media_completed` over played
  pairs;
- **watch seconds per impression**: seconds played (re-plays counted again), rebuilt from the
  telemetry by the engagement flow's own :class:`operators.consumption.View`, over impressions.

Statistics, standard library only: a two-proportion z-test on CTR (each arm against the
control) and a sample-ratio-mismatch chi-square test of users per arm against the configured
split. The z-test treats impressions as independent; one user's impressions are not quite,
so read p-values near alpha with care (the SRM test counts users, the unit of assignment).

Example:
    >>> z = two_proportion_z_test(130, 1000, 100, 1000)
    >>> round(z.z, 2), round(z.p_value, 3)
    (2.1, 0.035)
    >>> srm = srm_check({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5})
    >>> srm.p_value, srm.mismatch
    (1.0, False)
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final, NamedTuple

from operators.consumption import KIND, View, observation
from operators.contracts import PLAYBACK_TYPES, EngagementEvent, Impression

SRM_ALPHA: Final = 0.001  # the usual threshold: an SRM means the assignment or logging broke
PLAYED: Final = PLAYBACK_TYPES - {"media_skipped"}
COMPLETED: Final = "media_completed"


@dataclass(slots=True)
class _Shown:
    """One impression as attribution needs it (the items' features are not kept)."""

    ts: int
    arm: str
    media: frozenset[str]
    views: dict[str, View] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)


@dataclass
class ArmOutcome:
    """What one arm's impressions led to."""

    arm: str
    impressions: int = 0
    users: int = 0
    clicks: int = 0  # impressions with at least one served item played
    plays: int = 0  # (impression, item) pairs played
    completions: int = 0  # played pairs completed
    watch_s: float = 0.0

    @property
    def ctr(self) -> float:
        """Plays per impression (0 before any impression)."""
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def completion_rate(self) -> float:
        """Completions per play (0 before any play)."""
        return self.completions / self.plays if self.plays else 0.0

    @property
    def watch_s_per_impression(self) -> float:
        """Seconds watched per impression (0 before any impression)."""
        return self.watch_s / self.impressions if self.impressions else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The outcomes as plain data (JSON-ready)."""
        return {
            "impressions": self.impressions,
            "users": self.users,
            "clicks": self.clicks,
            "ctr": round(self.ctr, 6),
            "plays": self.plays,
            "completions": self.completions,
            "completion_rate": round(self.completion_rate, 6),
            "watch_s_per_impression": round(self.watch_s_per_impression, 3),
        }


class Attribution:
    """Impressions first (:meth:`add_impression`), then engagement (:meth:`add_event`)."""

    def __init__(self, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError(f"Attribution: window_ms must be > 0, got {window_ms}")
        self.window_ms = window_ms
        self._by_user: dict[str, list[_Shown]] = defaultdict(list)
        self._sorted = True
        self.attributed = 0

    def add_impression(self, imp: Impression) -> None:
        """Note a served feed, to credit the plays that follow it."""
        shown = self._by_user[imp.user_id]
        if shown and shown[-1].ts > imp.ts:
            self._sorted = False
        shown.append(_Shown(imp.ts, imp.arm, frozenset(i.media_id for i in imp.items)))

    def add_event(self, ev: EngagementEvent) -> None:
        """Credit a playback event to the impression that led to it, if any."""
        if ev.event_type not in PLAYED or ev.media_id is None:
            return
        shown = self._impression_of(ev.user_id, ev.media_id, ev.ts)
        if shown is None:
            return
        self.attributed += 1
        view = shown.views.get(ev.media_id)
        if view is None:
            view = shown.views[ev.media_id] = View(ev.media_id, ev.ts)
        if ev.position_s is not None:
            obs = observation(ev.ts, KIND[ev.event_type], ev.position_s, ev.from_position_s)
            view.insert(obs, cutoff_ms=0)
        if ev.event_type == COMPLETED:
            shown.completed.add(ev.media_id)

    def _impression_of(self, user_id: str, media_id: str, ts: int) -> _Shown | None:
        shown = self._by_user.get(user_id)
        if not shown:
            return None
        if not self._sorted:
            for impressions in self._by_user.values():
                impressions.sort(key=lambda s: s.ts)
            self._sorted = True
        at = bisect.bisect_right(shown, ts, key=lambda s: s.ts)
        for candidate in reversed(shown[max(0, at - 64) : at]):  # bounded look-back
            if candidate.ts < ts - self.window_ms:
                return None
            if media_id in candidate.media:
                return candidate
        return None

    def outcomes(self) -> dict[str, ArmOutcome]:
        """Per-arm totals of everything added so far."""
        out: dict[str, ArmOutcome] = {}
        users: dict[str, set[str]] = defaultdict(set)
        for user, shown in self._by_user.items():
            for s in shown:
                arm = out.get(s.arm) or out.setdefault(s.arm, ArmOutcome(s.arm))
                users[s.arm].add(user)
                arm.impressions += 1
                arm.clicks += bool(s.views)
                arm.plays += len(s.views)
                arm.completions += len(s.completed & s.views.keys())
                arm.watch_s += sum(v.dwell_ds() for v in s.views.values()) / 10
        for name, arm in out.items():
            arm.users = len(users[name])
        return out


def attribute(
    impressions: Iterable[Impression], events: Iterable[EngagementEvent], window_ms: int
) -> dict[str, ArmOutcome]:
    """Per-arm outcomes of `impressions` given the `events` that followed them."""
    attribution = Attribution(window_ms)
    for imp in impressions:
        attribution.add_impression(imp)
    for ev in events:
        attribution.add_event(ev)
    return attribution.outcomes()


class ZTest(NamedTuple):
    """Two-proportion z-test of a treatment rate against a control rate."""

    treatment: float
    control: float
    uplift: float  # relative: treatment / control - 1 (0 when the control rate is 0)
    z: float
    p_value: float  # two-sided
    ci_low: float  # of the absolute difference, at the test's alpha (unpooled)
    ci_high: float


def two_proportion_z_test(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05) -> ZTest:
    """Whether `x_t / n_t` differs from `x_c / n_c`: a pooled z test, two-sided p.

    Raises:
        ValueError: with an empty group.
    """
    if n_t <= 0 or n_c <= 0:
        raise ValueError(f"two_proportion_z_test: empty group (n_t={n_t}, n_c={n_c})")
    p_t, p_c = x_t / n_t, x_c / n_c
    pooled = (x_t + x_c) / (n_t + n_c)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    diff = p_t - p_c
    z = diff / se if se > 0 else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2))
    half = NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(
        p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c
    )
    uplift = p_t / p_c - 1 if p_c > 0 else 0.0
    return ZTest(p_t, p_c, uplift, z, p_value, diff - half, diff + half)


def chi2_sf(x: float, df: int) -> float:
    """P(X ≥ x) for a chi-square variable with integer `df` ≥ 1 (closed forms).

    Example:
        >>> round(chi2_sf(3.841, 1), 4), round(chi2_sf(5.991, 2), 4)
        (0.05, 0.05)
    """
    if df < 1:
        raise ValueError(f"chi2_sf: df must be ≥ 1, got {df}")
    if x <= 0:
        return 1.0
    y = x / 2
    if df % 2 == 0:  # Q(k, y) = e^-y Σ_{i<k} y^i / i!
        terms = (math.exp(i * math.log(y) - y - math.lgamma(i + 1)) for i in range(df // 2))
        return min(1.0, sum(terms))
    # Q(k + 1/2, y) = erfc(√y) + Σ_{i=1..k} y^(i-1/2) e^-y / Γ(i + 1/2)
    tail = sum(
        math.exp((i - 0.5) * math.log(y) - y - math.lgamma(i + 0.5)) for i in range(1, df // 2 + 1)
    )
    return min(1.0, math.erfc(math.sqrt(y)) + tail)


class SrmCheck(NamedTuple):
    """Sample-ratio-mismatch test: observed units per arm against the expected shares."""

    chi2: float
    df: int
    p_value: float
    mismatch: bool  # p below SRM_ALPHA, or units in arms the config does not have
    unexpected: tuple[str, ...]


def srm_check(
    observed: Mapping[str, int], expected: Mapping[str, float], alpha: float = SRM_ALPHA
) -> SrmCheck:
    """Chi-square goodness of fit of `observed` counts to `expected` shares (summing to 1)."""
    unexpected = tuple(sorted(a for a, n in observed.items() if n and a not in expected))
    total = sum(observed.get(a, 0) for a in expected)
    if total == 0 or len(expected) < 2:
        return SrmCheck(0.0, max(len(expected) - 1, 0), 1.0, bool(unexpected), unexpected)
    chi2 = sum(
        (observed.get(arm, 0) - share * total) ** 2 / (share * total)
        for arm, share in expected.items()
    )
    df = len(expected) - 1
    p_value = chi2_sf(chi2, df)
    return SrmCheck(chi2, df, p_value, p_value < alpha or bool(unexpected), unexpected)


def build_report(
    outcomes: Mapping[str, ArmOutcome],
    expected: Mapping[str, float],
    control: str,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The report as plain data: per-arm outcomes, CTR tests against `control`, the SRM."""
    arms = {name: outcomes[name].as_dict() for name in sorted(outcomes)}
    comparisons = []
    base = outcomes.get(control)
    for name in sorted(outcomes):
        arm = outcomes[name]
        if name == control or base is None or not base.impressions or not arm.impressions:
            continue
        test = two_proportion_z_test(
            arm.clicks, arm.impressions, base.clicks, base.impressions, alpha
        )
        comparisons.append(
            {
                "arm": name,
                "control": control,
                "metric": "ctr",
                "ctr": round(test.treatment, 6),
                "control_ctr": round(test.control, 6),
                "uplift": round(test.uplift, 6),
                "diff_ci": [round(test.ci_low, 6), round(test.ci_high, 6)],
                "z": round(test.z, 4),
                "p_value": test.p_value,
                "significant": test.p_value < alpha,
            }
        )
    srm = srm_check({n: o.users for n, o in outcomes.items()}, expected)
    return {
        "alpha": alpha,
        "control": control,
        "arms": arms,
        "comparisons": comparisons,
        "srm": {
            "unit": "users",
            "expected_share": dict(expected),
            "chi2": round(srm.chi2, 4),
            "df": srm.df,
            "p_value": srm.p_value,
            "alpha": SRM_ALPHA,
            "mismatch": srm.mismatch,
            "unexpected_arms": list(srm.unexpected),
        },
    }
