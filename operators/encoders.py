"""Item encoders: content → one L2-normalised float32 vector, behind a small versioned protocol.

The default :class:`HashingEncoder` needs no model download: every token (a word, a tag, the
category, the creator, …) maps to a deterministic pseudo-random Gaussian vector seeded by
blake2b, each field's tokens are averaged, fields are weighted and summed, and the result is
normalised. Items that share tags, category, creator or words therefore land close together.
A model-backed encoder (MiniLM, the `minilm` extra) loads its weights from disk, so it lives
with the other adapters in :mod:`state.encoders`, which also names every encoder.

Example:
    >>> enc = HashingEncoder(dim=16)
    >>> enc.version
    'hashing-v1-d16'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError
from operators.content import ItemRecord, tokens
from operators.contracts import MediaPublished

Vector = npt.NDArray[np.float32]
HASHING: Final = "hashing-v1"
MINILM: Final = "minilm-l6-v2"
# Field weights of the hashing encoder: what makes two items "similar".
FIELD_WEIGHTS: Final = {
    "tag": 1.0,
    "category": 0.9,
    "creator": 0.8,
    "title": 0.8,
    "description": 0.4,
    "language": 0.3,
    "content_type": 0.2,
}
_TOKEN_CACHE_SIZE: Final = 200_000


class EncoderError(FeedflowError):
    """An encoder is unknown, misconfigured or its optional dependency is missing."""


class ContentDoc(NamedTuple):
    """What an encoder sees of an item: its normalised record and its raw text."""

    record: ItemRecord
    title: str
    description: str


class Encoder(Protocol):
    """Turns items into unit vectors. `version` changes whenever the vectors would."""

    @property
    def version(self) -> str:
        """Identifies the vector space; two versions never share an index."""
        ...

    @property
    def dim(self) -> int:
        """Vector length."""
        ...

    def encode(self, docs: Sequence[ContentDoc]) -> npt.NDArray[np.float32]:
        """Encode a batch into an `(n, dim)` float32 array of unit rows."""
        ...


def doc_of(event: MediaPublished, record: ItemRecord) -> ContentDoc:
    """The encoder input for a catalogue event."""
    return ContentDoc(record, event.title, event.description)


def normalise_rows(matrix: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    result: npt.NDArray[np.float32] = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return result


def upstream_vector(event: MediaPublished, encoder: Encoder) -> Vector | None:
    """The event's own embedding when it is in the active encoder's space, normalised."""
    if event.embedding is None or event.embedding_model != encoder.version:
        return None
    if len(event.embedding) != encoder.dim:
        return None
    vec: Vector = normalise_rows(np.asarray(event.embedding, dtype=np.float32)[None, :])[0]
    return vec if np.isfinite(vec).all() and vec.any() else None


class HashingEncoder:
    """Deterministic token-hashing encoder; no model, no download, ~10 µs per item."""

    def __init__(self, dim: int = 64, weights: dict[str, float] | None = None) -> None:
        if dim < 2:
            raise EncoderError(f"HashingEncoder: dim must be >= 2, got {dim}")
        self._dim = dim
        self._weights = dict(weights or FIELD_WEIGHTS)
        self._cache: dict[str, Vector] = {}

    @property
    def version(self) -> str:
        """`hashing-v1-d<dim>`."""
        return f"{HASHING}-d{self._dim}"

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._dim

    def token_vector(self, token: str) -> Vector:
        """The fixed Gaussian vector of one namespaced token (cached)."""
        vec = self._cache.get(token)
        if vec is None:
            seed = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
            vec = np.random.default_rng(seed).standard_normal(self._dim).astype(np.float32)
            if len(self._cache) >= _TOKEN_CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = vec
        return vec

    def _fields(self, doc: ContentDoc) -> dict[str, Sequence[str]]:
        rec = doc.record
        # Tags and text words share one namespace: a tag "jazz" matches the word "jazz".
        return {
            "tag": [f"w:{t}" for t in rec.tags],
            "category": [f"c:{rec.category}"],
            "creator": [f"u:{rec.creator_id}"],
            "title": [f"w:{t}" for t in tokens(doc.title)],
            "description": [f"w:{t}" for t in tokens(doc.description)],
            "language": [f"l:{rec.language}"],
            "content_type": [f"t:{rec.content_type}"],
        }

    def encode_one(self, doc: ContentDoc) -> Vector:
        """Encode one item."""
        acc = np.zeros(self._dim, dtype=np.float32)
        for field, toks in self._fields(doc).items():
            if toks:
                summed = np.sum([self.token_vector(t) for t in toks], axis=0)
                acc += (self._weights[field] / np.sqrt(len(toks))) * summed
        unit: Vector = normalise_rows(acc[None, :])[0]
        return unit

    def encode(self, docs: Sequence[ContentDoc]) -> npt.NDArray[np.float32]:
        """Encode a batch into unit rows."""
        out = np.empty((len(docs), self._dim), dtype=np.float32)
        for i, doc in enumerate(docs):
            out[i] = self.encode_one(doc)
        return out
