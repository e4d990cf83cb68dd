"""Benchmark the exact kNN of `classifiers.estimators.knn_index` (faiss) against scikit-learn's brute force.

Random float32 features (seeded), all-vs-all k nearest neighbours by cosine similarity, self
excluded, measured in one process on the same data:

  (a) ser search             `classifiers.estimators.knn_index.search` (normalise, faiss IndexFlatIP on a GPU
                             when faiss has one, batched queries, self exclusion)
  (b) sklearn cosine         NearestNeighbors(metric="cosine", algorithm="brute"), k + 1, self dropped
  (c) sklearn euclidean      NearestNeighbors(algorithm="brute") on the L2-normalised rows (same
                             ranking as cosine), k + 1, self dropped

Prints wall times, the ratio of each scikit-learn variant to (a), and neighbour agreement: the
share of (query, neighbour) pairs both return, and of rows whose k neighbours match in order.
Not part of the test suite.

    python bench/neighbors.py [--n 10000] [--dim 1024] [--k 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def timed(fn, repeat: int):
    """(best wall seconds of `repeat` runs, last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """(Q, k + 1) neighbours including the query itself -> (Q, k) without it."""
    rows = np.arange(len(idx))[:, None]
    keep = idx != rows
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(share of neighbour pairs in both, share of rows identical in order)."""
    shared = np.mean([len(np.intersect1d(x, y)) / len(x) for x, y in zip(a, b)])
    return float(shared), float((a == b).all(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    from classifiers.estimators.knn_index import normalize, search, use_gpu

    X = np.random.default_rng(args.seed).standard_normal((args.n, args.dim), dtype=np.float32)
    k = args.k
    print(f"data: {args.n} x {args.dim} float32 (seed {args.seed}), all-vs-all k={k}, self excluded")
    print(f"faiss {faiss.__version__} ({'GPU' if use_gpu() else 'CPU'} index, {faiss.omp_get_max_threads()} threads), "
          f"scikit-learn {sklearn.__version__}, CPUs visible: {os.cpu_count()}, best of {args.repeat}")

    t_ser, nb = timed(lambda: search(normalize(X), None, k), args.repeat)
    t_cos, (_, idx_cos) = timed(lambda: NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute")
                                .fit(X).kneighbors(X), args.repeat)
    Xn = normalize(X)
    t_euc, (_, idx_euc) = timed(lambda: NearestNeighbors(n_neighbors=k + 1, algorithm="brute")
                                .fit(Xn).kneighbors(Xn), args.repeat)
    idx_cos, idx_euc = drop_self(idx_cos, k), drop_self(idx_euc, k)

    print(f"{'method':<34}{'seconds':>9}{'x slower than ser':>19}{'pairs shared':>14}{'rows identical':>16}")
    print(f"{'(a) ser search (faiss IndexFlatIP)':<34}{t_ser:>9.2f}{1.0:>19.2f}{1.0:>14.4f}{1.0:>16.4f}")
    for name, t, idx in (("(b) sklearn brute, cosine", t_cos, idx_cos), ("(c) sklearn brute, euclidean/unit", t_euc, idx_euc)):
        shared, rows = agreement(nb.index, idx)
        print(f"{name:<34}{t:>9.2f}{t / t_ser:>19.2f}{shared:>14.4f}{rows:>16.4f}")
    best_sk = min(t_cos, t_euc)
    verdict = "meets" if best_sk / t_ser >= 3 else "misses"
    print(f"speed-up over the faster scikit-learn variant: {best_sk / t_ser:.2f}x ({verdict} the 3x target)")


if __name__ == "__main__":
    main()
