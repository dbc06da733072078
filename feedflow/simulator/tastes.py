"""Simulated users and their planted, latent tastes (the ground truth of a run).

A user has category weights (sparse: a few categories dominate), favourite creators in their
top categories, a VIDEO/AUDIO mix, a language and country, devices, a typical session length,
a number of sessions a day and an hour-of-day habit. Viewers act on these; :func:`ground_truth`
exports them so tests and evaluations can check they are recoverable from the emitted events.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from functools import cache
from typing import Any, Final

from feedflow.simulator.catalogue import AUDIO, CONTENT_TYPES, VIDEO, Creator
from feedflow.simulator.vocabulary import (
    AUDIO_DEVICES,
    CATEGORY_NAMES,
    COUNTRIES,
    DIURNAL,
    VIDEO_DEVICES,
)

DAY_S: Final = 86_400
TASTE_CONCENTRATION: Final = 0.35  # Dirichlet alpha: small means a few dominant categories
TOP_CATEGORIES: Final = 3
HABIT_SHARE: Final = 0.5  # how much of a user's hourly activity follows their own habit hour


class Taste:
    """One user's planted tastes and habits. Read-only once built."""

    __slots__ = (
        "country",
        "cum_weights",
        "devices",
        "favourites",
        "idx",
        "language",
        "peak_hour",
        "profile",
        "session_s",
        "sessions_per_day",
        "user_id",
        "utc_offset",
        "video_share",
        "weights",
    )

    def __init__(self, idx: int, user_id: str) -> None:
        self.idx, self.user_id = idx, user_id
        self.weights: tuple[float, ...] = ()
        self.cum_weights: list[float] = []
        self.video_share = 0.5
        self.country, self.language, self.utc_offset = "US", "en", 0
        self.devices: tuple[str, str] = ("web", "web")  # (for VIDEO, for AUDIO)
        self.favourites: tuple[Creator, ...] = ()
        self.session_s = 1200.0  # mean playback budget of one session
        self.sessions_per_day = 1.5
        self.peak_hour = 20  # local hour
        self.profile: tuple[float, ...] = (1.0,) * 24  # activity by UTC hour, mean 1

    def top_categories(self, k: int = TOP_CATEGORIES) -> list[str]:
        """The names of the k categories with the largest planted weight."""
        order = sorted(range(len(self.weights)), key=lambda c: (-self.weights[c], c))
        return [CATEGORY_NAMES[c] for c in order[:k]]

    def preferred_content_type(self) -> str:
        """VIDEO when the user's mix leans to video, else AUDIO."""
        return CONTENT_TYPES[VIDEO if self.video_share >= 0.5 else AUDIO]

    def category_of(self, u: float) -> int:
        """The category a uniform draw `u` in [0, 1) falls on, by taste weight."""
        return min(bisect_right(self.cum_weights, u), len(self.weights) - 1)


def build_users(rng: random.Random, seed: int, n: int, creators: list[Creator]) -> list[Taste]:
    """Draw `n` users with tastes consistent with the catalogue's creators.

    Example:
        >>> from feedflow.simulator.catalogue import build_creators
        >>> users = build_users(random.Random(2), 1, 3, build_creators(random.Random(1), 1, 200))
        >>> users[0].user_id, round(sum(users[0].weights), 6)
        ('s1-u000000', 1.0)
    """
    by_category: list[list[Creator]] = [[] for _ in CATEGORY_NAMES]
    for creator in creators:
        by_category[creator.category].append(creator)
    countries = list(COUNTRIES)
    country_w = [COUNTRIES[c][0] for c in countries]
    users = []
    for idx in range(n):
        t = Taste(idx, f"s{seed}-u{idx:06d}")
        _draw_weights(rng, t)
        # Most people clearly lean one way; a few are mixed.
        t.video_share = min(max(rng.betavariate(0.5, 0.5) * 0.9 + 0.05, 0.02), 0.98)
        t.country = rng.choices(countries, country_w)[0]
        _, t.utc_offset, languages = COUNTRIES[t.country]
        t.language = rng.choice(languages)
        t.devices = (rng.choice(VIDEO_DEVICES), rng.choice(AUDIO_DEVICES))
        t.session_s = min(math.exp(rng.gauss(math.log(1500.0), 0.6)), 4 * 3600.0)
        t.sessions_per_day = min(math.exp(rng.gauss(math.log(1.5), 0.5)), 8.0)
        t.peak_hour = rng.choices(range(24), DIURNAL)[0]
        t.profile = activity_profile(t.utc_offset, t.peak_hour)
        t.favourites = _favourites(rng, t, by_category)
        users.append(t)
    return users


def _draw_weights(rng: random.Random, t: Taste) -> None:
    raw = [rng.gammavariate(TASTE_CONCENTRATION, 1.0) + 1e-9 for _ in CATEGORY_NAMES]
    total = sum(raw)
    t.weights = tuple(w / total for w in raw)
    acc, cum = 0.0, []
    for w in t.weights:
        acc += w
        cum.append(acc)
    cum[-1] = 1.0
    t.cum_weights = cum


def _favourites(
    rng: random.Random, t: Taste, by_category: list[list[Creator]]
) -> tuple[Creator, ...]:
    """One to four creators from the user's top two categories, in their language if possible."""
    top = sorted(range(len(t.weights)), key=lambda c: (-t.weights[c], c))[:2]
    pool = [c for cat in top for c in by_category[cat]]
    own = [c for c in pool if c.language == t.language]
    pool = own if len(own) >= 2 else pool
    preferred = VIDEO if t.video_share >= 0.5 else AUDIO
    fitting = [c for c in pool if c.ctype == preferred]
    pool = fitting if len(fitting) >= 2 else pool
    if not pool:
        return ()
    return tuple(rng.sample(pool, min(len(pool), rng.randint(1, 4))))


@cache
def activity_profile(utc_offset: int, peak_hour: int) -> tuple[float, ...]:
    """Relative activity by UTC hour (mean 1): the audience curve mixed with a habit bump.

    Example:
        >>> p = activity_profile(0, 20)
        >>> round(sum(p) / 24, 6), max(range(24), key=p.__getitem__)
        (1.0, 20)
    """
    mean_d = sum(DIURNAL) / 24
    bump = [
        math.exp(-0.5 * (min(abs(h - peak_hour), 24 - abs(h - peak_hour)) / 1.5) ** 2)
        for h in range(24)
    ]
    mean_b = sum(bump) / 24
    local = [
        (1 - HABIT_SHARE) * DIURNAL[h] / mean_d + HABIT_SHARE * bump[h] / mean_b for h in range(24)
    ]
    return tuple(local[(h + utc_offset) % 24] for h in range(24))


def ground_truth(users: list[Taste]) -> list[dict[str, Any]]:
    """The planted tastes of every user, as plain JSON-ready data."""
    return [
        {
            "user_id": t.user_id,
            "category_weights": {
                name: round(w, 6) for name, w in zip(CATEGORY_NAMES, t.weights, strict=True)
            },
            "top_categories": t.top_categories(),
            "video_share": round(t.video_share, 6),
            "preferred_content_type": t.preferred_content_type(),
            "language": t.language,
            "country": t.country,
            "favourite_creators": [c.creator_id for c in t.favourites],
            "session_minutes": round(t.session_s / 60, 2),
            "sessions_per_day": round(t.sessions_per_day, 3),
            "peak_hour_local": t.peak_hour,
            "utc_offset_h": t.utc_offset,
        }
        for t in users
    ]
