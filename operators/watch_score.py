"""Duration-debiased watch score (D2Q-style): a watch time's quantile among similar items.

Raw watch time favours long items and watch fraction favours short ones. D2Q (Zhan et al.,
KDD 2022) instead scores a view by the quantile of its watch time among views of items of
similar duration. A learned, drifting reference would make replays of old data disagree with
the live run, so the reference here is fixed and versioned: for each log-duration bucket the
watch fraction `f` of a view follows a Kumaraswamy(1, b) distribution,
`F(f) = 1 − (1 − f) ** b`, with `b` chosen so that the bucket's median fraction is the value
in :data:`MEDIAN_FRACTION` (short clips are mostly watched through, long items mostly not).
Items of unknown duration are scored on absolute seconds against an exponential reference
with median :data:`UNKNOWN_MEDIAN_S`. Replace the table by one fitted offline on the
platform's logs (same shape) and bump :data:`REFERENCE_VERSION` when it changes.

Example:
    Half of a 30-second clip is a weak watch; half of a one-hour show is a strong one.

    >>> round(watch_score(15.0, 30.0), 2), round(watch_score(1800.0, 3600.0), 2)
    (0.37, 0.88)
"""

from __future__ import annotations

import bisect
import math
from typing import Final

REFERENCE_VERSION: Final = 1
# Bucket upper edges in seconds: <15 s, 15–30 s, 30–60 s, 1–2 min, 2–5, 5–10, 10–20, 20–40,
# 40–60 min, 1–2 h, ≥ 2 h.
DURATION_EDGES_S: Final = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0, 7200.0)
MEDIAN_FRACTION: Final = (0.85, 0.75, 0.65, 0.55, 0.45, 0.38, 0.32, 0.27, 0.23, 0.20, 0.17)
UNKNOWN_MEDIAN_S: Final = 120.0
# Kumaraswamy(1, b) has median 1 − 2 ** (−1 / b); solve for b.
_EXPONENT: Final = tuple(-1.0 / math.log2(1.0 - m) for m in MEDIAN_FRACTION)


def duration_bucket(duration_s: float) -> int:
    """Index of the log-duration bucket of an item.

    Example:
        >>> duration_bucket(10.0), duration_bucket(90.0), duration_bucket(5 * 3600.0)
        (0, 3, 10)
    """
    return bisect.bisect_right(DURATION_EDGES_S, duration_s)


def watch_score(consumed_s: float, duration_s: float | None) -> float:
    """Quantile in [0, 1] of `consumed_s` among views of items of similar duration.

    Args:
        consumed_s: distinct seconds of the item actually played in the view.
        duration_s: the item's duration; None or non-positive when unknown.

    Example:
        >>> round(watch_score(27.0, 60.0), 3)  # 45 % of a 1-min clip: below its median
        0.405
        >>> round(watch_score(1080.0, 3600.0), 3)  # 30 % of an hour: above its median
        0.67
        >>> watch_score(120.0, None)
        0.5
    """
    if consumed_s <= 0.0:
        return 0.0
    if duration_s is None or duration_s <= 0.0:
        return 1.0 - float(2.0 ** (-consumed_s / UNKNOWN_MEDIAN_S))
    fraction = consumed_s / duration_s
    if fraction >= 1.0:
        return 1.0
    return 1.0 - float((1.0 - fraction) ** _EXPONENT[duration_bucket(duration_s)])
