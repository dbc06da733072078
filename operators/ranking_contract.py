"""The ranking contract between training and serving: the features, their order, the model.

The ranker is a linear score over user × item features. Serving computes the features for
every candidate as one float32 matrix whose columns are :data:`FEATURES` in order
(:mod:`serving.ranking`), and scores it with one matrix-vector product; the learning flow
trains on rows built by the same code and publishes weights in the document format below
(:mod:`state.model_registry` stores it). Both sides import this module, so they cannot drift.

Document: JSON `{"version": str, "bias": float, "weights": {feature: float, ...}}`. Feature
names must be among :data:`FEATURES`; a feature the document leaves out weighs 0; an unknown
name or a non-finite number rejects the document (serving keeps the model it has and logs
why).

Example:
    >>> m = parse_model(b'{"version": "v7", "bias": 0.5, "weights": {"similarity": 2.0}}')
    >>> m.version, float(m.vector[FEATURES.index("similarity")]), float(m.vector.sum())
    ('v7', 2.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError

DEFAULT_VERSION: Final = "default"

# Column order of the feature matrix (serving.ranking.feature_matrix builds it).
FEATURES: Final = (
    "similarity",  # cosine of user vector and item vector (cold users: cohort list place)
    "category_affinity",  # 1, 0.6, 0.35 for the user's first, second, third category
    # (with weekly weights: half that, half the week's share / the user's top share)
    "session_genre",  # the item's category was watched in the last 30 minutes
    "creator_affinity",  # 1 / (1 + rank) among the user's top creators
    "type_match",  # +1 the user's preferred content type, -1 the other one, 0 mixed
    # (with weekly weights: half that, half the week's video lean 2·video − 1, signed by type)
    "language_match",  # the item is in the user's language
    "completion_rate",  # item completion rate (prior 0.5 before any view)
    "like_ratio",  # smoothed likes / (likes + dislikes)
    "trending",  # log-scaled trending score, 0..1
    "freshness",  # exp(-age / fresh window)
    "continue_watching",  # the user started this item and did not finish it
    # Appended last, so impression rows of earlier versions stay aligned column by column:
    "popularity",  # long-horizon popularity (decayed qualified views), log-scaled against
    # the top of the `popular:all` board, 0..1
    "collaborative",  # co-engagement with the user's recent items, normalised by both items'
    # engagement, the request's strongest 1 (serving.co_engagement.collaborative)
    "behaviour",  # inner product with the user's point in the behaviour space (their recent
    # items' vectors learned from engagement), the request's strongest 1 (operators.behaviour)
)

DEFAULT_WEIGHTS: Final = {
    "similarity": 3.0,
    "category_affinity": 1.0,
    "session_genre": 0.3,
    "creator_affinity": 0.8,
    "type_match": 0.8,
    "language_match": 0.3,
    "completion_rate": 0.5,
    "like_ratio": 0.5,
    "trending": 0.6,
    "freshness": 0.4,
    "continue_watching": 1.5,
    "popularity": 1.5,
    "collaborative": 4.0,
    "behaviour": 4.0,  # the same evidence (who engaged with what) seen through more users
}


class ModelFormatError(FeedflowError):
    """A weight document could not be read; whoever holds a model keeps it."""


class RankerDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A published weight document, as stored."""

    version: str
    weights: dict[str, float]
    bias: float = 0.0


class RankerModel:
    """Weights in column order, ready to multiply a feature matrix."""

    __slots__ = ("bias", "vector", "version")

    def __init__(self, version: str, weights: dict[str, float], bias: float = 0.0) -> None:
        self.version = version
        self.vector = np.asarray([weights.get(f, 0.0) for f in FEATURES], dtype=np.float32)
        self.bias = np.float32(bias)

    def score(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One score per row of a feature matrix (rows: candidates, columns: FEATURES)."""
        if matrix.ndim != 2 or matrix.shape[1] != len(FEATURES):
            want = f"(n, {len(FEATURES)})"
            raise ValueError(f"RankerModel.score: expected {want}, got {matrix.shape}")
        out: npt.NDArray[np.float32] = matrix @ self.vector + self.bias
        return out

    def score_without(
        self,
        matrix: npt.NDArray[np.float32],
        scores: npt.NDArray[np.float32],
        features: tuple[str, ...],
    ) -> npt.NDArray[np.float32]:
        """`scores` (of :meth:`score` on `matrix`) less some features' share of them."""
        cols = [FEATURES.index(f) for f in features]
        out: npt.NDArray[np.float32] = scores - matrix[:, cols] @ self.vector[cols]
        return out


def default_model() -> RankerModel:
    """The built-in weights, used until a version is published."""
    return RankerModel(DEFAULT_VERSION, DEFAULT_WEIGHTS)


def parse_model(raw: bytes) -> RankerModel:
    """A model from a published document.

    Raises:
        ModelFormatError: on malformed JSON, unknown feature names or non-finite numbers.
    """
    try:
        doc = msgspec.json.decode(raw, type=RankerDoc)
    except msgspec.DecodeError as exc:
        raise ModelFormatError(f"ranker weights: {exc}") from exc
    unknown = sorted(set(doc.weights) - set(FEATURES))
    if unknown:
        raise ModelFormatError(f"ranker weights {doc.version!r}: unknown features {unknown}")
    values = [doc.bias, *doc.weights.values()]
    if not all(math.isfinite(v) for v in values):
        raise ModelFormatError(f"ranker weights {doc.version!r}: non-finite value")
    if not doc.version or len(doc.version) > 128:
        raise ModelFormatError("ranker weights: version must be 1-128 characters")
    return RankerModel(doc.version, doc.weights, doc.bias)


def encode_model(version: str, weights: dict[str, float], bias: float = 0.0) -> bytes:
    """The published form of a model (what the learning flow writes).

    Example:
        >>> parse_model(encode_model("v1", {"trending": 1.0})).version
        'v1'
    """
    return msgspec.json.encode(RankerDoc(version=version, weights=weights, bias=bias))
