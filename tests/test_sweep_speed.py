"""The yardstick of issue 23 item 4's "the same results, faster": `bench/probe.py --stability` compares a sweep
with itself on features jittered by one float32 ulp, and with a saved run; these tests keep that yardstick honest
(the jitter is exactly one ulp, a saved run reads back whole, every kind of difference is counted)."""

from __future__ import annotations

import numpy as np

from bench.probe import compare_cells, load_cells, luna5_folds, run_cells, save_cells, synthetic_ravdess, ulp_jitter


def test_jitter_moves_every_entry_by_exactly_one_ulp_both_ways_and_is_seeded():
    X = np.random.default_rng(0).standard_normal((50, 3, 7)).astype(np.float32) * 100
    J = ulp_jitter(X, 1)
    assert J.dtype == np.float32 and J.shape == X.shape
    up, down = np.nextafter(X, np.float32(np.inf)), np.nextafter(X, np.float32(-np.inf))
    assert np.all((J == up) | (J == down)) and (J == up).any() and (J == down).any()
    np.testing.assert_array_equal(J, ulp_jitter(X, 1))
    assert not np.array_equal(J, ulp_jitter(X, 2))


def test_a_saved_run_reads_back_whole_and_equals_itself(tmp_path):
    from classifiers.runs.crossval import probe_layers

    X, utts = synthetic_ravdess(n_layers=2, dim=8)
    cells = run_cells(probe_layers(X, utts, luna5_folds(utts), [0, 1], Cs=(0.1, 1.0)))
    assert len(cells) == 10 and all(len(c["pred"]) == len(c["proba"]) for c in cells.values())
    save_cells(tmp_path / "run.npz", cells)
    back = load_cells(tmp_path / "run.npz")
    assert compare_cells(cells, back).startswith("same C 10/10, same search beyond the grid 10/10, test predictions "
                                                 "differ 0/2880, max |d proba| 0.000")


def test_every_kind_of_difference_is_counted():
    def cell(C, uar, pred, proba, beyond=()):
        return {"C": C, "uar": uar, "beyond": beyond, "bound": False, "ids": ["a", "b"], "pred": pred,
                "proba": np.array(proba, dtype=np.float32)}

    a = {(0, "f0"): cell(1.0, 0.5, ["x", "y"], [[0.9, 0.1], [0.2, 0.8]], (10.0,)),
         (0, "f1"): cell(0.1, 0.6, ["x", "x"], [[0.6, 0.4], [0.7, 0.3]])}
    b = {(0, "f0"): cell(10.0, 0.5, ["x", "x"], [[0.9, 0.1], [0.6, 0.4]], (10.0, 100.0)),
         (0, "f1"): cell(0.1, 0.58, ["x", "x"], [[0.6, 0.4], [0.7, 0.3]])}
    line = compare_cells(a, b)
    assert line.startswith("same C 1/2, same search beyond the grid 1/2, test predictions differ 1/4, "
                           "max |d proba| 0.400, max |d UAR| 2.00p per cell, 1.00p per layer mean")
    assert compare_cells(a, {(0, "f0"): a[0, "f0"]}).startswith("different cells")


def test_the_matrix_product_count_is_two_m_n_k_per_product_and_nothing_else():
    """`--selection-cost`'s floor rests on this count: a product of (m, k) by (k, n) is 2 m n k flops."""
    import torch

    from bench.probe import matmul_gflop

    a, b = torch.ones(64, 32), torch.ones(32, 16)
    gflop, secs, out = matmul_gflop(lambda: (a @ b, a.exp(), (a @ b) @ torch.ones(16, 8)))
    assert gflop * 1e9 == 2 * 64 * 32 * 16 * 2 + 2 * 64 * 16 * 8
    assert secs >= 0 and out[0].shape == (64, 16)
