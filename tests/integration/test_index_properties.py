"""Property: whatever the publish/update/remove sequence, a reader answers like exact search."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.content import Stamp, record_of
from operators.contracts import MediaPublished, encode
from operators.encoders import HashingEncoder, doc_of
from state.index_keys import IndexKeys
from state.index_reader import IndexReader
from state.index_replica import IndexParams
from state.index_writer import Change, IndexWriter
from state.snapshots import DirSnapshotStore
from state.vector_index import ExactIndex

pytestmark = pytest.mark.integration
DIM = 16
PARAMS = IndexParams(ef_search=64, snapshot_every_s=3600, compaction_share=0.3)
IDS = st.sampled_from([f"m{i}" for i in range(12)])
TAGS = st.lists(st.sampled_from(["jazz", "rock", "news", "kids", "live"]), max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), IDS, TAGS, st.integers(0, 5)),
        st.tuples(st.just("remove"), IDS, st.just([]), st.integers(0, 5)),
        st.tuples(st.just("snapshot"), IDS, st.just([]), st.just(0)),
        st.tuples(st.just("restart_reader"), IDS, st.just([]), st.just(0)),
    ),
    max_size=40,
)
_runs = itertools.count()


def _event(op, media_id, tags, at):
    if op == "remove":
        return MediaPublished(media_id=media_id, status="removed")
    return MediaPublished(
        media_id=media_id,
        creator_id="c",
        content_type="VIDEO",
        title=media_id,
        category="cat",
        tags=tags,
        duration_s=1.0,
        published_at=1_000 + at,
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_reader_matches_exact_index_over_any_sequence(redis_client, tmp_path, ops):
    keys = IndexKeys(f"p{time.time_ns()}-{next(_runs)}")
    store = DirSnapshotStore(tmp_path / keys.prefix)
    writer = IndexWriter.open(redis_client, store, PARAMS, keys, "hashing-v1", DIM)
    reader = IndexReader(redis_client, store, keys, PARAMS, version_check_s=0.0)
    reader.load()
    model: dict[str, tuple[tuple[int, int], MediaPublished]] = {}  # the last accepted event
    for offset, (op, media_id, tags, at) in enumerate(ops, start=1):
        if op == "snapshot":
            writer.snapshot()
        elif op == "restart_reader":
            reader = IndexReader(redis_client, store, keys, PARAMS, version_check_s=0.0)
            reader.load()
        else:
            event = _event(op, media_id, tags, at)
            writer.apply([Change(event, encode(event), 0, offset)])
            old = model.get(media_id)
            stamp = (event.published_at or (old[0][0] if old else 0), offset)
            if old is None or stamp > old[0]:
                model[media_id] = (stamp, event)
        reader.poll()
    # The oracle: the model's accepted events, encoded afresh and searched exactly.
    encoder, exact = HashingEncoder(DIM), ExactIndex(DIM)
    live = sorted(m for m, (_, e) in model.items() if e.status != "removed")
    if live:
        docs = [doc_of(e, record_of(e, Stamp(*at_seq))) for at_seq, e in (model[m] for m in live)]
        exact.upsert(live, encoder.encode(docs))
    assert sorted(m for m in live if reader.item(m)) == live and len(reader) == len(live)
    for media_id in live:
        query = exact.vector(media_id)
        got, want = reader.query(query, 50), exact.query(query, 50)
        assert {m for m, _ in got} == {m for m, _ in want}
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
