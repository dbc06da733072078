"""The cold-start model: matrix factorisation over cohorts, for users with too little history.

A user with fewer than five engagements has no taste of their own yet, but their cohort
(language, content type, device) does. The weekly run tallies each cohort's positive
engagement mass per item (:class:`CohortTally`), and :class:`CohortModel` factorises that
cohort × item matrix with River's `reco.BiasedMF` (the cohort plays the "user"): targets are
`log1p(mass)` for what the cohort engaged with and 0 for a few items drawn at random from the
candidates (implicit feedback needs negatives), so a sparse cohort borrows from cohorts that
engage alike instead of echoing its few views. It publishes, per cohort and per
generalisation of a cohort (any field replaced by `*`, the factors averaged by mass), the
top items by predicted score. Serving looks a cold user's cohort up from the most specific
key it can form down to `*|*|*` (:func:`lookup_order`).

Example:
    >>> tally = CohortTally()
    >>> for n in range(30):
    ...     tally.add(cohort_key("en", "VIDEO", "tv"), f"v{n % 3}", 1.0)
    ...     tally.add(cohort_key("es", "AUDIO", "phone"), f"a{n % 3}", 1.0)
    >>> lists = CohortModel(seed=1).fit(tally).top_lists(k=3)
    >>> sorted(lists["en|VIDEO|tv"]), sorted(lists["es|AUDIO|*"])
    (['v0', 'v1', 'v2'], ['a0', 'a1', 'a2'])
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from typing import Final

import numpy as np
import numpy.typing as npt
from river import optim, reco

ANY: Final = "*"
MAX_PAIRS: Final = 2_000_000  # (cohort, item) cells kept while tallying; the lightest go first
CANDIDATES: Final = 2_000  # items scored for the lists: the heaviest of the week
TOP_K: Final = 100  # items per published list
MASS_DIGITS: Final = 9  # masses are compared and trained on rounded to this many decimals
MIN_UPDATES: Final = 5_000
MAX_EPOCHS: Final = 200
MAX_FIELD: Final = 32


def _field(value: str | None) -> str:
    if not value:
        return ANY
    return value.replace("|", "/")[:MAX_FIELD]


def cohort_key(language: str | None, content_type: str | None, device: str | None) -> str:
    """The cohort of a context; an unknown field is `*`.

    Example:
        >>> cohort_key("en", "VIDEO", None)
        'en|VIDEO|*'
    """
    return f"{_field(language)}|{_field(content_type)}|{_field(device)}"


def lookup_order(
    language: str | None, content_type: str | None, device: str | None
) -> tuple[str, ...]:
    """Keys to try for a context, most specific first; content type outlasts language.

    Example:
        >>> lookup_order("en", "AUDIO", "phone")
        ('en|AUDIO|phone', 'en|AUDIO|*', '*|AUDIO|*', 'en|*|*', '*|*|*')
    """
    lang, kind, dev = _field(language), _field(content_type), _field(device)
    keys = (
        f"{lang}|{kind}|{dev}",
        f"{lang}|{kind}|{ANY}",
        f"{ANY}|{kind}|{ANY}",
        f"{lang}|{ANY}|{ANY}",
        f"{ANY}|{ANY}|{ANY}",
    )
    return tuple(dict.fromkeys(keys))


def generalisations(cohort: str) -> Iterator[str]:
    """Every key a cohort belongs to: itself with any of its fields replaced by `*`.

    Example:
        >>> sorted(generalisations("en|VIDEO|*"))
        ['*|*|*', '*|VIDEO|*', 'en|*|*', 'en|VIDEO|*']
    """
    fields = cohort.split("|")
    seen = set()
    for mask in itertools.product((False, True), repeat=len(fields)):
        key = "|".join(ANY if hide else f for f, hide in zip(fields, mask, strict=True))
        if key not in seen:
            seen.add(key)
            yield key


class CohortTally:
    """Positive engagement mass per (cohort, item), bounded to :data:`MAX_PAIRS` cells."""

    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        self.cells: dict[tuple[str, str], float] = {}
        self._max = max_pairs

    def add(self, cohort: str, media_id: str, mass: float) -> None:
        """Add positive `mass` (anything else is ignored)."""
        if not mass > 0.0:
            return
        key = (cohort, media_id)
        self.cells[key] = self.cells.get(key, 0.0) + mass
        if len(self.cells) > self._max:
            self._prune()

    def merge(self, other: CohortTally) -> CohortTally:
        """Add `other`'s cells (a tally of other users) to these; returns self."""
        cells = self.cells
        for key, mass in other.cells.items():
            cells[key] = cells.get(key, 0.0) + mass
        if len(cells) > self._max:
            self._prune()
        return self

    def _prune(self) -> None:
        """Keep the heaviest half: a heavy hitter survives, a one-off view of a tail item
        may not (the lists only ever show heavy items)."""
        keep = sorted(self.cells.items(), key=lambda kv: -kv[1])[: self._max // 2]
        self.cells = dict(keep)

    def cohorts(self) -> dict[str, float]:
        """Total mass per cohort."""
        out: dict[str, float] = {}
        for (cohort, _), mass in self.cells.items():
            out[cohort] = out.get(cohort, 0.0) + mass
        return out

    def items(self) -> dict[str, float]:
        """Total mass per item."""
        out: dict[str, float] = {}
        for (_, media), mass in self.cells.items():
            out[media] = out.get(media, 0.0) + mass
        return out


class CohortModel:
    """River BiasedMF over cohorts × items (see module doc).

    Args:
        n_factors: latent dimensions.
        epochs: passes over the tallied cells (more for a small week: at least
            :data:`MIN_UPDATES` updates, at most :data:`MAX_EPOCHS` passes).
        negatives: random unengaged items per engaged cell and epoch (target 0).
        seed: for the factor initialisation, the negatives and the order of the passes.
    """

    def __init__(
        self, n_factors: int = 8, epochs: int = 6, negatives: int = 2, seed: int = 0
    ) -> None:
        self.epochs, self.negatives, self.seed = epochs, negatives, seed
        self.mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(0.03),
            latent_optimizer=optim.SGD(0.03),
            l2_bias=0.001,
            l2_latent=0.001,
            seed=seed,
        )
        self.items: list[str] = []
        self.cohort_mass: dict[str, float] = {}
        self._members: dict[str, list[str]] = {}  # key -> the cohorts it generalises, in order
        self._latents = np.zeros((0, n_factors))
        self._bias = np.zeros(0)

    def fit(self, tally: CohortTally, candidates: int = CANDIDATES) -> CohortModel:
        """Train on the cells of the `candidates` heaviest items."""
        # Masses rounded to MASS_DIGITS: sums taken in another order (a week tallied in
        # shards) differ in their last bits, which must not reorder items or the training.
        by_item = {m: round(mass, MASS_DIGITS) for m, mass in tally.items().items()}
        self.items = sorted(by_item, key=lambda m: (-by_item[m], m))[:candidates]
        wanted = set(self.items)
        cells = sorted(
            (c, m, math.log1p(round(mass, MASS_DIGITS)))
            for (c, m), mass in tally.cells.items()
            if m in wanted
        )
        self.cohort_mass = {c: round(m, MASS_DIGITS) for c, m in sorted(tally.cohorts().items())}
        self._members = {}
        for cohort in self.cohort_mass:
            for key in dict.fromkeys(generalisations(cohort)):
                self._members.setdefault(key, []).append(cohort)
        rng = random.Random(self.seed)
        engaged = {(c, m) for c, m, _ in cells}
        epochs = min(max(self.epochs, math.ceil(MIN_UPDATES / max(len(cells), 1))), MAX_EPOCHS)
        for _ in range(epochs):
            rng.shuffle(cells)
            for cohort, media, target in cells:
                self.mf.learn_one(cohort, media, target)
                for _ in range(self.negatives):
                    other = self.items[int(rng.random() * len(self.items))]
                    if (cohort, other) not in engaged:
                        self.mf.learn_one(cohort, other, 0.0)
        mf = self.mf
        self._latents = np.asarray([mf.i_latents[m] for m in self.items], dtype=np.float64)
        self._bias = np.asarray([mf.i_biases[m] for m in self.items], dtype=np.float64)
        return self

    def scores(self, key: str) -> npt.NDArray[np.float64]:
        """Predicted score of every candidate item for a cohort or a generalisation of one."""
        mf = self.mf
        members = self._members.get(key, [])
        if not members or not self.items:
            return np.zeros(len(self.items))
        weights = np.asarray([self.cohort_mass[c] for c in members])
        weights /= weights.sum()
        user = weights @ np.asarray([mf.u_latents[c] for c in members], dtype=np.float64)
        bias = float(weights @ np.asarray([mf.u_biases[c] for c in members]))
        out: npt.NDArray[np.float64] = (
            mf.global_mean.get() + bias + self._bias + self._latents @ user
        )
        return out

    def top_lists(self, k: int = TOP_K) -> dict[str, tuple[str, ...]]:
        """The `k` best items of every cohort and every generalisation of one."""
        keys = sorted(self._members)
        out: dict[str, tuple[str, ...]] = {}
        for key in keys:
            scores = self.scores(key)
            order = np.argsort(-scores, kind="stable")[:k]
            out[key] = tuple(self.items[i] for i in order.tolist())
        return out
