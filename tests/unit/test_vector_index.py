"""One contract suite over both VectorIndex implementations, plus hnswlib-specific checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

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
