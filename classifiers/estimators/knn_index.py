"""Exact cosine nearest-neighbour search with faiss: the search layer under `classifiers.runs.neighbors`.

`search` runs a faiss `IndexFlatIP` over L2-normalised rows (`normalize`), on a GPU when faiss
sees one and the CPU index otherwise, in query batches so memory stays bounded. Rows of the
query's own group (speaker) and the query itself can be excluded exactly: a query asks faiss for
k + (number of its excluded rows) neighbours, so after filtering at least k remain whenever the
database holds k eligible rows; when it holds fewer, the missing slots are index -1 /
similarity -inf.

faiss is an optional dependency (`faiss-cpu`, or `faiss-gpu` on a CUDA machine); without it,
every search raises a one-line `NeighborError` naming the package to install.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featstore.errors import SerError

GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger fetches run on the CPU index


class NeighborError(SerError, ValueError):
    """Inputs a neighbour search or analysis cannot use; the message names the fix."""


def faiss_module():
    """The faiss module, or a one-line error saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise NeighborError("nearest-neighbour search needs faiss, which is not installed: "
                            "pip install faiss-cpu (or faiss-gpu on a CUDA machine)") from e
    return faiss



def use_gpu() -> bool:
    """Whether searches can run on a GPU here: a faiss-gpu build with a GPU, or torch with CUDA."""
    return faiss_gpu() or torch_cuda()


def faiss_gpu() -> bool:
    """Whether faiss itself can build GPU indexes (a faiss-gpu build and at least one GPU)."""
    faiss = faiss_module()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def torch_cuda() -> bool:
    """Whether torch sees a CUDA GPU (imported only when asked: CPU searches never load torch)."""
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    """One faiss GPU resource object per process (creating one allocates scratch memory)."""
    faiss = faiss_module()
    return faiss.StandardGpuResources()


def normalize(X: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Rows of `X` (N, D), minus `center` (D,) if given, scaled to unit L2 norm: (N, D) float32.

    Zero rows stay zero (their similarity to everything is 0).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise NeighborError(f"features must be a 2-D (utterances, dims) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise NeighborError("features contain NaN or infinite values; re-extract the store or drop those rows")
    if center is not None:
        X = X - np.asarray(center, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass
class Neighbors:
    """k nearest neighbours per query, best first.

    index: (Q, k) int64 rows of the database, -1 where fewer than k eligible rows exist.
    sim:   (Q, k) float32 cosine similarity, -inf where index is -1.
    """

    index: np.ndarray
    sim: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(Q, k) bool: slots holding a real neighbour."""
        return self.index >= 0


class FlatIndex:
    """Exact inner-product search over unit rows: a faiss IndexFlatIP, on the GPU where possible.

    GPU: faiss's own GPU index with a faiss-gpu build; otherwise, with faiss-cpu beside a CUDA
    build of torch (faiss-gpu wheels are CUDA 12 only), the same flat search as one float32 matrix
    product and top-k on the GPU. The CPU index is kept for fetches larger than the GPU k-selection.
    """

    def __init__(self, database: np.ndarray, gpu: bool | None = None):
        from featstore.threads import threads

        faiss = faiss_module()
        faiss.omp_set_num_threads(threads())  # --threads / $SER_THREADS / the CPUs this process may use
        self.n, d = database.shape
        self.cpu = faiss.IndexFlatIP(d)
        self.cpu.add(database)
        self.gpu = self.torch_db = None
        if (use_gpu() if gpu is None else gpu) and self.n:
            if faiss_gpu():
                self.gpu = faiss.index_cpu_to_gpu(_gpu_resources(), 0, self.cpu)
            elif torch_cuda():
                import torch

                self.torch_db = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)).cuda()

    @property
    def on_gpu(self) -> str | None:
        """"faiss" or "torch" when searches run on the GPU, else None."""
        return "faiss" if self.gpu is not None else "torch" if self.torch_db is not None else None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims (Q, k) float32, index (Q, k) int64) of the k best rows, k <= n."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.torch_db is not None and k <= GPU_MAX_K:
            return self._torch_search(queries, k)
        index = self.gpu if self.gpu is not None and k <= GPU_MAX_K else self.cpu
        sims, idx = index.search(queries, k)
        return sims, idx.astype(np.int64, copy=False)

    def _torch_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from featstore.device import full_float32

        with torch.inference_mode(), full_float32(self.torch_db.device):  # no TF32: the same sums as faiss's
            sims = torch.from_numpy(queries).to(self.torch_db.device) @ self.torch_db.T
            top = torch.topk(sims, k, dim=1)
        return top.values.cpu().numpy(), top.indices.cpu().numpy().astype(np.int64, copy=False)


def value_codes(values: Sequence) -> tuple[np.ndarray, list]:
    """Integer codes (N,) of hashable values; None and "" (unknown) get -1. Returns (codes, names)."""
    names = sorted({v for v in values if v is not None and v != ""}, key=str)
    pos = {v: i for i, v in enumerate(names)}
    return np.fromiter((pos.get(v, -1) if v is not None and v != "" else -1 for v in values),
                       dtype=np.int64, count=len(values)), names


def first_valid(sims: np.ndarray, idx: np.ndarray, excluded: np.ndarray, k: int) -> Neighbors:
    """Keep, per row, the first k slots that are real (idx >= 0) and not `excluded`, in order."""
    keep = (idx >= 0) & ~excluded
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(idx))[:, None]
    ok = keep[rows, order]
    index = np.where(ok, idx[rows, order], -1)
    sim = np.where(ok, sims[rows, order], -np.inf).astype(np.float32)
    if index.shape[1] < k:  # database smaller than k
        pad = k - index.shape[1]
        index = np.pad(index, ((0, 0), (0, pad)), constant_values=-1)
        sim = np.pad(sim, ((0, 0), (0, pad)), constant_values=-np.inf)
    return Neighbors(index, sim)


def excluded_mask(idx: np.ndarray, query_rows: np.ndarray | None, db_groups: np.ndarray | None,
                   query_groups: np.ndarray | None) -> np.ndarray:
    """(Q, kf) bool: slots holding the query itself (`query_rows`) or a row of the query's group."""
    ex = np.zeros(idx.shape, dtype=bool)
    if query_rows is not None:
        ex |= idx == query_rows[:, None]
    if db_groups is not None:
        ex |= (db_groups[np.maximum(idx, 0)] == query_groups[:, None]) & (idx >= 0)
    return ex


def search(database: np.ndarray, queries: np.ndarray | None = None, k: int = 10, *,
           groups: Sequence | None = None, query_groups: Sequence | None = None,
           batch_size: int = 4096, gpu: bool | None = None) -> Neighbors:
    """Exact k nearest neighbours by inner product (cosine when rows are `normalize`d).

    database: (N, D). queries: (Q, D), or None to query the database with itself, in which case
    each row's own entry is excluded (by index, so duplicates of a row still count).
    groups: (N,) group (e.g. speaker) of each database row; with it, rows of the query's group
    are excluded too. query_groups: (Q,) groups of the queries (defaults to `groups` when
    queries is None). Exact: each batch fetches k + (most rows any of its queries excludes).
    batch_size: queries per call (bounds memory). gpu: None = on a GPU when one is usable (`use_gpu`).
    Returns `Neighbors` with index/sim of shape (Q, k).
    """
    if k < 1:
        raise NeighborError(f"k must be at least 1, got {k}")
    database = np.ascontiguousarray(database, dtype=np.float32)
    self_query = queries is None
    queries = database if self_query else np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise NeighborError(f"queries {queries.shape} and database {database.shape} must be 2-D with equal widths")
    db_groups = qg = None
    n_excluded = np.full(len(queries), 1 if self_query else 0, dtype=np.int64)
    if groups is not None:
        if query_groups is None and not self_query:
            raise NeighborError("groups of the database need query_groups for the queries")
        db_groups, qg, n_groups = shared_codes(groups, groups if query_groups is None else query_groups)
        if len(db_groups) != len(database) or len(qg) != len(queries):
            raise NeighborError(f"groups must have one entry per database row ({len(database)}) and "
                                f"query_groups one per query ({len(queries)})")
        in_db = np.bincount(db_groups[db_groups >= 0], minlength=n_groups)
        # a self query sits in its own group, so the group count already includes itself
        n_excluded = np.maximum(n_excluded, np.where(qg >= 0, in_db[np.maximum(qg, 0)], 0))
    index = FlatIndex(database, gpu)
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if index.n == 0:
        return Neighbors(out_idx, out_sim)
    for start in range(0, len(queries), batch_size):
        stop = min(start + batch_size, len(queries))
        kf = int(min(index.n, k + n_excluded[start:stop].max(initial=0)))
        sims, idx = index.search(queries[start:stop], kf)
        rows = np.arange(start, stop) if self_query else None
        ex = excluded_mask(idx, rows, db_groups, None if qg is None else qg[start:stop])
        nb = first_valid(sims, idx, ex, k)
        out_idx[start:stop], out_sim[start:stop] = nb.index, nb.sim
    return Neighbors(out_idx, out_sim)


def shared_codes(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of two value lists in one code space, and its size. Unknown values never match:
    -1 in `a`, -2 in `b`."""
    codes, names = value_codes(list(a) + list(b))
    ca, cb = codes[:len(a)], codes[len(a):].copy()
    cb[cb < 0] = -2
    return ca, cb, len(names)
