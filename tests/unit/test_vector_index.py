"""One contract suite over both VectorIndex implementations, plus hnswlib-specific checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state.vector_index import ExactIndex, HnswIndex, VectorIndex, VectorIndexError

DIM = 16


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 50) -> np.ndarray:
    """Structured vectors: cluster centres plus noise, like encoder outputs of topical items."""
    centres = _unit(rng, clusters, dim)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * _unit(rng, n, dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


FACTORIES: dict[str, Callable[[], VectorIndex]] = {
    "exact": lambda: ExactIndex(DIM),
    "hnsw": lambda: HnswIndex(DIM, capacity=16, ef_search=64),
}


@pytest.fixture(params=sorted(FACTORIES))
def index(request) -> VectorIndex:
    return FACTORIES[request.param]()


def test_empty_index_answers_nothing(index):
    assert index.query(np.ones(DIM, dtype=np.float32) / 4, 10) == []
    assert len(index) == 0 and "a" not in index


def test_nearest_is_itself_with_score_one(index):
    vecs = _unit(np.random.default_rng(0), 50)
    ids = [f"m{i}" for i in range(50)]
    index.upsert(ids, vecs)
    for i in (0, 17, 49):
        (top, score), *_ = index.query(vecs[i], 5)
        assert top == ids[i] and score == pytest.approx(1.0, abs=1e-5)
    assert len(index) == 50 and "m3" in index


def test_k_larger_than_the_index_returns_everything_sorted(index):
    vecs = _unit(np.random.default_rng(1), 7)
    index.upsert([f"m{i}" for i in range(7)], vecs)
    hits = index.query(vecs[0], 500)
    scores = [s for _, s in hits]
    assert len(hits) == 7 and scores == sorted(scores, reverse=True)


def test_upsert_replaces_the_vector(index):
    e = np.eye(DIM, dtype=np.float32)
    index.upsert(["a", "b"], e[:2])
    index.upsert(["a"], e[2:3])
    assert index.query(e[2], 1)[0][0] == "a"
    assert index.query(e[1], 2)[0][0] == "b"
    assert np.allclose(index.vector("a"), e[2])
    assert len(index) == 2


def test_removed_item_is_never_returned_and_can_come_back(index):
    vecs = _unit(np.random.default_rng(2), 40)
    ids = [f"m{i}" for i in range(40)]
    index.upsert(ids, vecs)
    index.remove(["m5", "m6", "unknown"])
    for v in vecs:
        assert not {"m5", "m6"} & {i for i, _ in index.query(v, 40)}
    assert index.vector("m5") is None and "m5" not in index
    assert len(index) == 38 and sorted(index.ids()) == sorted(set(ids) - {"m5", "m6"})
    index.upsert(["m5"], vecs[5:6])
    assert index.query(vecs[5], 1)[0][0] == "m5" and len(index) == 39


def test_bad_shapes_are_refused(index):
    with pytest.raises(VectorIndexError, match="expected shape"):
        index.upsert(["a"], np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(VectorIndexError, match="duplicate"):
        index.upsert(["a", "a"], np.ones((2, DIM), dtype=np.float32))


def test_hnsw_recall_at_least_095_against_exact():
    rng = np.random.default_rng(7)
    vecs = clustered(rng, 5000, 32)
    ids = [f"m{i}" for i in range(5000)]
    hnsw, exact = HnswIndex(32, ef_search=200, threads=2), ExactIndex(32)
    hnsw.upsert(ids, vecs)
    exact.upsert(ids, vecs)
    queries = clustered(rng, 50, 32)
    recalls = []
    for q in queries:
        truth = {i for i, _ in exact.query(q, 100)}
        got = {i for i, _ in hnsw.query(q, 100)}
        recalls.append(len(truth & got) / len(truth))
    assert np.mean(recalls) >= 0.95


def test_hnsw_grows_compacts_and_round_trips(tmp_path):
    rng = np.random.default_rng(4)
    vecs = _unit(rng, 300)
    ids = [f"m{i}" for i in range(300)]
    idx = HnswIndex(DIM, capacity=16)
    for start in range(0, 300, 50):  # grows past its initial capacity
        idx.upsert(ids[start : start + 50], vecs[start : start + 50])
    idx.remove(ids[:100])
    assert idx.deleted_count == 100 and not idx.maybe_compact(0.5)
    idx.save(tmp_path)
    loaded = HnswIndex.load(tmp_path, DIM)
    assert len(loaded) == 200 and loaded.deleted_count == 100
    assert {i for i, _ in loaded.query(vecs[0], 300)} == set(ids[100:])
    assert loaded.maybe_compact(0.2)
    assert loaded.deleted_count == 0 and len(loaded) == 200
    assert np.allclose(loaded.vector("m150"), vecs[150], atol=1e-6)
    assert {i for i, _ in loaded.query(vecs[0], 300)} == set(ids[100:])


OPS = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "remove", "reload", "compact", "read"]),
        st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True),
        st.integers(0, 2**16),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_vectors_read_back_are_the_last_written_whatever_the_order_of_operations(
    ops, tmp_path_factory
):
    """Upserts, updates in place, removals, a save and load (its vectors read from the graph
    file, or item by item), compactions and reads in any order: every live item's vector
    read back is the one written last (the label-ordered copy and hnswlib never disagree)."""
    idx, model = HnswIndex(DIM, capacity=16), dict[str, np.ndarray]()
    for op, numbers, seed in ops:
        ids = [f"m{n}" for n in numbers]
        if op == "upsert":
            vecs = _unit(np.random.default_rng(seed), len(ids))
            idx.upsert(ids, vecs)
            model.update(zip(ids, vecs, strict=True))
        elif op == "remove":
            idx.remove(ids)
            for i in ids:
                model.pop(i, None)
        elif op == "reload":
            where = tmp_path_factory.mktemp("reload")
            idx.save(where)
            idx = HnswIndex.load(where, DIM, read_vectors=seed % 2 == 0)
        elif op == "compact":
            idx.compact()
        live = sorted(model)
        assert idx.live_of([*ids, *live]) == [i for i in [*ids, *live] if i in model]
        if live:
            assert np.array_equal(idx.vectors(live), np.stack([model[i] for i in live]))
        for i in ids:
            got = idx.vector(i)
            assert (got is None) == (i not in model)
            assert got is None or np.array_equal(got, model[i])


def test_a_graph_file_laid_out_otherwise_is_read_item_by_item(tmp_path, monkeypatch, caplog):
    rng = np.random.default_rng(6)
    vecs, ids = _unit(rng, 200), [f"m{i}" for i in range(200)]
    idx = HnswIndex(DIM, capacity=16)
    idx.upsert(ids, vecs)
    idx.save(tmp_path)
    fast = HnswIndex.load(tmp_path, DIM, read_vectors=True)
    assert np.array_equal(fast.vectors(ids), vecs) and not caplog.records
    monkeypatch.setattr("state.vector_index._GRAPH_HEADER", 100)  # a layout not hnswlib's
    slow = HnswIndex.load(tmp_path, DIM, read_vectors=True)
    assert "item by item" in caplog.text
    assert np.array_equal(slow.vectors(ids), vecs)
