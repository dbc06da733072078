"""Content understanding and the hashing encoder."""

from __future__ import annotations

import numpy as np
import pytest

from operators.content import (
    ItemRecord,
    Stamp,
    is_newer,
    normalise_category,
    normalise_content_type,
    normalise_language,
    normalise_tags,
    pack_record,
    record_of,
    stamp_of,
    unpack_record,
)
from operators.contracts import MediaPublished
from operators.encoders import (
    ContentDoc,
    EncoderError,
    HashingEncoder,
    doc_of,
    upstream_vector,
)
from state.encoders import make_encoder


def _doc(title, tags=(), category="music", creator="c1", description="", lang="en"):
    rec = ItemRecord(
        media_id="m",
        stamp=Stamp(0, 0),
        creator_id=creator,
        content_type="AUDIO",
        category=category,
        tags=normalise_tags(list(tags)),
        language=lang,
    )
    return ContentDoc(rec, title, description)


def test_taxonomy_is_normalised():
    assert normalise_category(" Science_Nature ") == "science-nature"
    assert normalise_category("") == "unknown"
    assert normalise_category("Música") == "musica"
    assert normalise_tags(["#Jazz", "jazz", "Live Music", " ", "#"]) == ("jazz", "live-music")
    assert normalise_language("pt-BR") == "pt"
    assert normalise_language("English!") == "unknown"
    assert normalise_content_type("video") == "VIDEO"
    assert normalise_content_type("podcast") == "unknown"


def test_record_round_trips_and_removal_is_a_tombstone():
    ev = MediaPublished(
        media_id="m1",
        creator_id="c",
        content_type="VIDEO",
        category="Sports",
        tags=["Football"],
        language="en-GB",
        duration_s=30.0,
        published_at=1000,
    )
    rec = record_of(ev, stamp_of(ev, 7, None))
    assert (rec.category, rec.tags, rec.language, rec.stamp) == (
        "sports",
        ("football",),
        "en",
        Stamp(1000, 7),
    )
    assert unpack_record(pack_record(rec)) == rec
    gone = MediaPublished(media_id="m1", status="removed")
    stamp = stamp_of(gone, 9, rec.stamp)
    assert stamp == Stamp(1000, 9) and record_of(gone, stamp).removed


def test_older_event_never_replaces_newer():
    assert is_newer(Stamp(5, 1), None)
    assert is_newer(Stamp(5, 2), Stamp(5, 1))
    assert not is_newer(Stamp(5, 1), Stamp(5, 1))  # a replay is not newer
    assert not is_newer(Stamp(4, 9), Stamp(5, 1))  # an older published_at loses


def test_vectors_are_unit_deterministic_and_dim_from_settings():
    enc = make_encoder("hashing-v1", 32)
    a = enc.encode([_doc("jazz night", ["jazz"])])
    b = HashingEncoder(32).encode([_doc("jazz night", ["jazz"])])
    assert a.shape == (1, 32) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a, b)
    assert enc.version == "hashing-v1-d32"


def test_similar_items_are_closer_than_unrelated():
    enc = HashingEncoder(64)
    base = _doc("Live jazz from the village", ["jazz", "live"], "music", "c1")
    similar = _doc("Jazz trio live session", ["jazz", "trio"], "music", "c1")
    same_creator = _doc("Sunday sermon", ["talk"], "religion", "c1")
    unrelated = _doc("Premier league highlights", ["football"], "sports", "c9", lang="es")
    v = enc.encode([base, similar, same_creator, unrelated])
    sims = v[1:] @ v[0]
    assert sims[0] > sims[1] > sims[2]
    assert sims[0] > 0.5 and sims[2] < 0.3


def test_similarity_holds_over_many_random_pairs():
    rng = np.random.default_rng(3)
    enc = HashingEncoder(64)
    words = [f"w{i}" for i in range(300)]
    wins = 0
    for _ in range(200):
        topic = list(rng.choice(words, 5))
        a = _doc(" ".join(topic[:3]), topic[3:], "cat-a", "c1")
        b = _doc(" ".join(topic[1:4]), topic[3:], "cat-a", "c2")
        other = list(rng.choice(words, 5))
        c = _doc(" ".join(other[:3]), other[3:], "cat-b", "c3")
        va, vb, vc = enc.encode([a, b, c])
        wins += float(va @ vb) > float(va @ vc)
    assert wins >= 195


def test_upstream_embedding_used_only_for_the_active_version():
    enc = HashingEncoder(4)
    ev = MediaPublished(media_id="m", embedding=[3.0, 0, 4.0, 0], embedding_model=enc.version)
    assert np.allclose(upstream_vector(ev, enc), [0.6, 0, 0.8, 0])
    other = MediaPublished(media_id="m", embedding=[1.0, 0, 0, 0], embedding_model="other")
    assert upstream_vector(other, enc) is None
    wrong_dim = MediaPublished(media_id="m", embedding=[1.0], embedding_model=enc.version)
    assert upstream_vector(wrong_dim, enc) is None
    zero = MediaPublished(media_id="m", embedding=[0.0] * 4, embedding_model=enc.version)
    assert upstream_vector(zero, enc) is None
    rec = record_of(ev, Stamp(0, 0))
    assert doc_of(ev, rec).record is rec


def test_unknown_encoder_is_refused():
    with pytest.raises(EncoderError, match="unknown encoder"):
        make_encoder("word2vec", 64)


def test_settings_know_every_encoder_and_its_dimension() -> None:
    from kernel.settings import ENCODER_DIMS
    from state.encoders import _FACTORIES

    assert set(ENCODER_DIMS) == set(_FACTORIES)
    for name, dim in ENCODER_DIMS.items():
        encoder = make_encoder(name, 48)
        assert encoder.dim == (dim or 48), name
