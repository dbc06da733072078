"""The index benchmark runs in a small mode and its vectors are realistic enough to recall."""

from __future__ import annotations

import numpy as np

from feedflow.bench.index_bench import bench_size, catalogue_vectors, run_index_bench


def test_catalogue_vectors_are_unit_and_clustered():
    v = catalogue_vectors(2000, 32)
    assert v.shape == (2000, 32) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # Structured, not uniform: a typical item has much closer neighbours than random pairs.
    sims = v[:200] @ v.T
    np.fill_diagonal(sims[:, :200], -1)
    assert np.median(sims.max(axis=1)) > 0.6 and np.median(sims) < 0.15


def test_small_bench_reports_every_figure_and_recalls():
    small = bench_size(3000, dim=32, m=16, ef_construction=100, ef=600, queries=20, threads=1)
    assert small["recall_at_500"] >= 0.95
    for key in ("build_s", "snapshot_bytes_per_item", "snapshot_load_s", "hnsw_k500"):
        assert key in small
    assert small["recall_at_500_min"] <= small["recall_at_500_p5"] <= small["recall_at_500"]
    report = run_index_bench([3000], quick=True, queries=10, dim=16, ms=[8, 12], efs=[500, 600])
    rows = report["retrieval"]
    assert [(r["m"], r["ef_search"]) for r in rows] == [(8, 500), (8, 600), (12, 500), (12, 600)]
    assert rows[0]["items"] == 3000 and "freshness_kafka" not in report
