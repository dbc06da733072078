"""The signal table: what each kind of engagement says about a user's taste.

Signals are bits of one small int, so a view or an item can carry a set of them in one field.
Playback signals come from telemetry (and from the seconds actually consumed: `completed`
above 90 %, `abandoned` below 30 %); explicit signals come from feedback events. Weights are
configurable through :class:`~kernel.settings.Settings` (`signal_*` fields); the defaults
follow the platform's signal table: completed strongest positive; replay, liked, shared
strong positive; playlist and subscription strong affinity; started weak positive; paused early (and
abandoned) mild negative; disliked and skipped moderate negative.

Example:
    >>> w = SignalWeights()
    >>> mask = bit("completed") | bit("started")
    >>> names(mask)
    ('started', 'completed')
    >>> round(w.total(mask), 2)
    1.1
"""

from __future__ import annotations

from typing import Final

import msgspec

from kernel.settings import Settings

SIGNALS: Final = (
    "started",
    "completed",
    "replay",
    "paused_early",
    "abandoned",
    "skipped",
    "liked",
    "disliked",
    "shared",
    "playlist",
    "subscribed",
)
_BITS: Final = {name: 1 << i for i, name in enumerate(SIGNALS)}

PLAYBACK_MASK: Final = sum(
    _BITS[n] for n in ("started", "completed", "replay", "paused_early", "abandoned", "skipped")
)
EXPLICIT_MASK: Final = sum(
    _BITS[n] for n in ("liked", "disliked", "shared", "playlist", "subscribed")
)
NEGATIVE_PLAYBACK_MASK: Final = _BITS["paused_early"] | _BITS["abandoned"] | _BITS["skipped"]

# Event type -> the signal it carries by itself (derived ones are added by the sessionizer).
EVENT_SIGNAL: Final = {
    "media_started": "started",
    "media_replay": "replay",
    "media_paused_early": "paused_early",
    "media_skipped": "skipped",
    "media_liked": "liked",
    "media_disliked": "disliked",
    "media_shared": "shared",
    "media_added_to_playlist": "playlist",
    "subscription_to_creator": "subscribed",
}


def bit(name: str) -> int:
    """The bit of one signal.

    Example:
        >>> bit("started"), bit("completed")
        (1, 2)
    """
    try:
        return _BITS[name]
    except KeyError:
        raise ValueError(f"signals.bit: unknown signal {name!r}; known: {SIGNALS}") from None


def names(mask: int) -> tuple[str, ...]:
    """The signal names set in `mask`, in table order.

    Example:
        >>> names(bit("liked") | bit("replay"))
        ('replay', 'liked')
    """
    return tuple(n for n in SIGNALS if mask & _BITS[n])


class SignalWeights(msgspec.Struct, frozen=True, kw_only=True):
    """Weights of the signal table; `watch` scales the duration-debiased watch score."""

    started: float = 0.1
    completed: float = 1.0
    replay: float = 0.8
    paused_early: float = -0.2
    abandoned: float = -0.2
    skipped: float = -0.5
    liked: float = 0.8
    disliked: float = -0.5
    shared: float = 0.8
    playlist: float = 0.7
    subscribed: float = 0.7
    watch: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> SignalWeights:
        """The weights configured in `settings` (`signal_<name>` fields)."""
        return cls(**{name: getattr(settings, f"signal_{name}") for name in (*SIGNALS, "watch")})

    def of(self, name: str) -> float:
        """The weight of one signal by name."""
        bit(name)  # validates
        return float(getattr(self, name))

    def total(self, mask: int) -> float:
        """Sum of the weights of every signal set in `mask`."""
        return sum(float(getattr(self, n)) for n in SIGNALS if mask & _BITS[n])

    def view_weight(self, mask: int, watch_score: float) -> float:
        """How much one closed view moves a user's taste, from its playback side only.

        Playback signals of the view plus `watch × (2 q − 1)`, where `q` is the view's
        duration-debiased watch quantile: a watch above the median for items of that length
        pulls the user towards the item, one below pushes away. Explicit signals (liked, …)
        are left out: they arrive as feedback events and are applied once per item on their
        own, so a like during a view is not counted twice.

        Example:
            >>> SignalWeights().view_weight(bit("started") | bit("completed"), 1.0)
            1.6
        """
        return self.total(mask & PLAYBACK_MASK) + self.watch * (2.0 * watch_score - 1.0)
