"""Nearest-neighbour analysis of stored features: which layers group utterances by what.

Exact cosine kNN with faiss (`IndexFlatIP` on L2-normalised rows; a GPU index when faiss sees
a GPU, the CPU index otherwise), queried in batches so memory stays bounded. On top of it, per
layer (`neighbor_analysis`):

- **Neighbour purity** of emotion, speaker, gender, language and corpus: the share of an
  utterance's k nearest neighbours (itself excluded) that agree with it, averaged over
  utterances, against **chance** = the agreement expected from k neighbours drawn at random
  from the same candidates (every other utterance), i.e. the mean over queries of
  (count of the query's value among the others) / (N - 1). Attributes that are constant or
  unknown everywhere are skipped; queries whose value is unknown are left out, and neighbours
  whose value is unknown count as disagreeing (the chance level counts them the same way).
  "emotion, other speakers" is emotion purity with all same-speaker neighbours excluded (and
  its chance computed over other speakers' utterances only).
- **kNN emotion classification, speaker-independent.** With `folds`, neighbours come only from
  each fold's training (and validation) utterances, so the numbers are comparable with the
  probes run on the same folds. Without folds, every same-speaker neighbour is excluded, which
  is exactly leave-one-speaker-out (`make_folds(..., "loso")`) computed in one search; records
  are reported per held-out speaker under the names `loso` would give. Same-speaker exclusion is
  applied in the fold case too, as a guard: on speaker-independent folds it removes nothing.
  Which one: with the standard folds the kNN numbers sit beside the probes' (same test
  speakers, same training pool); leave-one-speaker-out works for any mix of corpora and uses
  every other speaker. Both are speaker-independent; neither tunes anything on test speakers.
  Records and label harmonisation follow `classifiers.evaluate` (`ProbeResults`).
- **Cross-corpus / cross-language retrieval**: queries from corpus A, database corpus B, both
  restricted to the emotion labels they share (listed in each row); emotion purity against
  chance (the frequency of the query's label in B), plus kNN WA/UAR.

Centring: raw wav2vec2 hidden states share a large common direction, which makes all cosine
similarities high and neighbours noisy, so rows are centred before normalisation: by the mean
of all analysed utterances ("global", label-free), of each fold's training set (kNN
classification), and of each corpus (cross-corpus retrieval, so that channel offsets between
corpora do not decide the neighbours). `center=None` turns it off.

Same-speaker exclusion is exact: a query asks faiss for k + (number of its excluded rows)
neighbours, so after filtering at least k remain whenever the database holds k eligible rows;
when it holds fewer, the missing slots are index -1 / similarity -inf.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from classifiers.metrics import scores as _scores
from featstore import serialize
from featstore.corpora.base import Utterance
from featstore.errors import SerError
from featstore.labels import canonical_order

__all__ = [
    "Neighbors", "NeighborError", "normalize", "search", "knn_vote", "purity", "knn_evaluate",
    "cross_retrieval", "neighbor_analysis", "NeighborReport", "PurityRow", "CrossRow",
    "ATTRIBUTES", "use_gpu",
]

#: attribute name -> Utterance field. "emotion, other speakers" is derived (see module docstring).
ATTRIBUTES: dict[str, str] = {"emotion": "label", "speaker": "speaker", "gender": "gender",
                              "language": "language", "corpus": "corpus"}
EMOTION_OTHER_SPEAKERS = "emotion, other speakers"
GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger fetches run on the CPU index


class NeighborError(SerError, ValueError):
    """Inputs a neighbour search or analysis cannot use; the message names the fix."""


# ---------------------------------------------------------------------------------------------
# exact search
# ---------------------------------------------------------------------------------------------

def use_gpu() -> bool:
    """Whether faiss can build GPU indexes here (a faiss-gpu build and at least one GPU)."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    """One faiss GPU resource object per process (creating one allocates scratch memory)."""
    import faiss

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


class _Index:
    """A faiss IndexFlatIP over unit rows, on the GPU where possible (CPU copy kept for large k)."""

    def __init__(self, database: np.ndarray, gpu: bool | None = None):
        import faiss

        self.n, d = database.shape
        self.cpu = faiss.IndexFlatIP(d)
        self.cpu.add(database)
        self.gpu = None
        if (use_gpu() if gpu is None else gpu) and self.n:
            self.gpu = faiss.index_cpu_to_gpu(_gpu_resources(), 0, self.cpu)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims (Q, k) float32, index (Q, k) int64) of the k best rows, k <= n."""
        index = self.gpu if self.gpu is not None and k <= GPU_MAX_K else self.cpu
        sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return sims, idx.astype(np.int64, copy=False)


def _codes(values: Sequence) -> tuple[np.ndarray, list]:
    """Integer codes (N,) of hashable values; None and "" (unknown) get -1. Returns (codes, names)."""
    names = sorted({v for v in values if v is not None and v != ""}, key=str)
    pos = {v: i for i, v in enumerate(names)}
    return np.fromiter((pos.get(v, -1) if v is not None and v != "" else -1 for v in values),
                       dtype=np.int64, count=len(values)), names


def _first_valid(sims: np.ndarray, idx: np.ndarray, excluded: np.ndarray, k: int) -> Neighbors:
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


def _excluded_mask(idx: np.ndarray, query_rows: np.ndarray | None, db_groups: np.ndarray | None,
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
    batch_size: queries per faiss call (bounds memory). gpu: None = when faiss has a GPU.
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
        db_groups, qg, n_groups = _shared_codes(groups, groups if query_groups is None else query_groups)
        if len(db_groups) != len(database) or len(qg) != len(queries):
            raise NeighborError(f"groups must have one entry per database row ({len(database)}) and "
                                f"query_groups one per query ({len(queries)})")
        in_db = np.bincount(db_groups[db_groups >= 0], minlength=n_groups)
        # a self query sits in its own group, so the group count already includes itself
        n_excluded = np.maximum(n_excluded, np.where(qg >= 0, in_db[np.maximum(qg, 0)], 0))
    index = _Index(database, gpu)
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if index.n == 0:
        return Neighbors(out_idx, out_sim)
    for start in range(0, len(queries), batch_size):
        stop = min(start + batch_size, len(queries))
        kf = int(min(index.n, k + n_excluded[start:stop].max(initial=0)))
        sims, idx = index.search(queries[start:stop], kf)
        rows = np.arange(start, stop) if self_query else None
        ex = _excluded_mask(idx, rows, db_groups, None if qg is None else qg[start:stop])
        nb = _first_valid(sims, idx, ex, k)
        out_idx[start:stop], out_sim[start:stop] = nb.index, nb.sim
    return Neighbors(out_idx, out_sim)


def _shared_codes(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of two value lists in one code space, and its size. Unknown values never match:
    -1 in `a`, -2 in `b`."""
    codes, names = _codes(list(a) + list(b))
    ca, cb = codes[:len(a)], codes[len(a):].copy()
    cb[cb < 0] = -2
    return ca, cb, len(names)


# ---------------------------------------------------------------------------------------------
# votes and purity
# ---------------------------------------------------------------------------------------------

def knn_vote(neighbors: Neighbors, db_labels: np.ndarray, n_classes: int, weighting: str = "uniform") -> np.ndarray:
    """Predicted class codes (Q,) from neighbours' label codes `db_labels` (N,) in 0..n_classes-1.

    "uniform": majority vote, ties broken by the summed similarity of the tied classes' voters;
    "similarity": each neighbour votes with weight (1 + cosine) / 2. A query with no neighbour
    gets the database's most frequent class.
    """
    if weighting not in ("uniform", "similarity"):
        raise NeighborError(f"unknown kNN weighting {weighting!r}: use uniform or similarity")
    valid = neighbors.valid
    lab = np.where(valid, db_labels[np.maximum(neighbors.index, 0)], 0)
    sim = np.where(valid, neighbors.sim, 0.0).astype(np.float64)
    rows = np.repeat(np.arange(len(lab)), lab.shape[1])
    k = max(lab.shape[1], 1)
    if weighting == "uniform":
        votes = np.zeros((len(lab), n_classes))
        np.add.at(votes, (rows, lab.ravel()), valid.ravel().astype(float))
        tie = np.zeros((len(lab), n_classes))
        np.add.at(tie, (rows, lab.ravel()), sim.ravel())
        votes += (tie + k) / (2 * k + 1)  # in [0, 1): only orders classes with equal counts
    else:
        votes = np.zeros((len(lab), n_classes))
        np.add.at(votes, (rows, lab.ravel()), np.where(valid, (1 + sim) / 2, 0.0).ravel())
    pred = votes.argmax(1)
    empty = ~valid.any(1)
    if empty.any():
        pred[empty] = np.bincount(db_labels[db_labels >= 0], minlength=n_classes).argmax()
    return pred


def purity(neighbors: Neighbors, query_values: np.ndarray, db_values: np.ndarray, *,
           query_rows: np.ndarray | None = None, db_groups: np.ndarray | None = None,
           query_groups: np.ndarray | None = None) -> tuple[float, float, int]:
    """Neighbour purity and its chance level, as (purity, chance, number of queries counted).

    query_values (Q,) / db_values (N,): integer codes, -1 = unknown. Queries with an unknown
    value are skipped; unknown neighbours disagree. Chance for query i = share of its value among
    its candidates: the database minus `query_rows[i]` (itself, when the database is queried
    with itself) and minus the rows of its group when `db_groups`/`query_groups` are given,
    i.e. exactly the candidates the neighbour search drew from.
    """
    known = query_values >= 0
    if not known.any():
        return float("nan"), float("nan"), 0
    valid = neighbors.valid
    agree = (db_values[np.maximum(neighbors.index, 0)] == query_values[:, None]) & valid
    n_valid = valid.sum(1)
    use = known & (n_valid > 0)
    per_query = agree.sum(1)[use] / n_valid[use]
    V = int(max(db_values.max(initial=-1), query_values.max(initial=-1))) + 1
    count = np.bincount(db_values[db_values >= 0], minlength=V).astype(np.float64)
    v = np.maximum(query_values, 0)
    hits = count[v]                                 # candidates sharing the query's value ...
    pool = np.full(len(query_values), float(len(db_values)))   # ... among all candidates
    self_removed = np.zeros(len(query_values), dtype=bool)
    if db_groups is not None:
        G = int(max(db_groups.max(initial=-1), query_groups.max(initial=-1))) + 1
        g_ok = query_groups >= 0
        g = np.maximum(query_groups, 0)
        size = np.bincount(db_groups[db_groups >= 0], minlength=G).astype(np.float64)
        pair = np.zeros(G * V)
        both = (db_groups >= 0) & (db_values >= 0)
        np.add.at(pair, db_groups[both] * V + db_values[both], 1.0)
        hits = hits - np.where(g_ok, pair[g * V + v], 0.0)
        pool = pool - np.where(g_ok, size[g], 0.0)
        if query_rows is not None:
            self_removed = g_ok & (db_groups[query_rows] == query_groups)
    if query_rows is not None:
        hits = hits - ((db_values[query_rows] == query_values) & ~self_removed)
        pool = pool - ~self_removed
    chance = np.where(pool > 0, hits / np.maximum(pool, 1), np.nan)[use]
    return float(per_query.mean()) if len(per_query) else float("nan"), float(np.nanmean(chance)) if len(chance) else float("nan"), int(use.sum())


# ---------------------------------------------------------------------------------------------
# kNN classification and cross-corpus retrieval
# ---------------------------------------------------------------------------------------------

def _loso_name(speaker: str) -> str:
    return f"loso-{speaker}"


def knn_evaluate(X: np.ndarray, utterances: Sequence[Utterance], folds: Sequence | None = None, *,
                 k: int = 10, weighting: str = "uniform", center: str | None = "global", layer: int | None = None,
                 train_set: str = "", test_set: str = "", batch_size: int = 4096, gpu: bool | None = None):
    """Speaker-independent kNN emotion classification of pooled features `X` (N, D).

    folds: `featstore.folds.Fold`s (test rows query their fold's train + val rows), or None for
    leave-one-speaker-out by excluding same-speaker neighbours (one record per speaker, named as
    `make_folds(..., "loso")` names its folds). center: "global" (mean of the database rows:
    the fold's training rows, or all rows), or None. layer: stored in the records.
    Label harmonisation as in `classifiers.evaluate.probe_layers`: a fold scores only the classes
    of its database (training) rows; other test rows are dropped and counted in `dropped`.
    Returns `classifiers.evaluate.ProbeResults` whose records have probe_layers' keys (layer,
    fold, n_train, n_test, wa, uar, macro_f1, recall, confusion, labels, classifier="knn",
    seed=0 (kNN is deterministic), train_set, test_set, shuffled=False) plus k and weighting.
    """
    from classifiers.results import ProbeResults

    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(utterances):
        raise NeighborError(f"features have {len(X)} rows but there are {len(utterances)} utterances")
    labels = np.asarray([u.label for u in utterances], dtype=object)
    speakers = np.asarray([u.speaker for u in utterances], dtype=object)
    common = dict(k=k, weighting=weighting, layer=layer, train_set=train_set, test_set=test_set)
    if folds is None:
        Xn = normalize(X, X.mean(0) if center else None)
        return _loso_results(search(Xn, None, k, groups=speakers, batch_size=batch_size, gpu=gpu), labels, speakers,
                             **common)
    results = ProbeResults(meta={"classifier": "knn", "protocol": "folds", "k": k, "weighting": weighting, "center": center})
    for f in folds:
        train = np.asarray(f.train if f.val is None else np.union1d(f.train, f.val), dtype=np.int64)
        if not len(train):
            raise NeighborError(f"fold {f.name} has no training rows")
        classes = canonical_order(labels[train].tolist())
        keep = np.isin(labels[f.test], classes)
        test = np.asarray(f.test, dtype=np.int64)[keep]
        if (~keep).any():
            results.dropped[f.name] = dict(Counter(labels[f.test][~keep].tolist()))
        if not len(test):
            continue
        c = X[train].mean(0) if center else None
        nb = search(normalize(X[train], c), normalize(X[test], c), k, groups=speakers[train],
                    query_groups=speakers[test], batch_size=batch_size, gpu=gpu)
        codes, names = _codes(labels[train].tolist())
        pred = np.asarray(names, dtype=object)[knn_vote(nb, codes, len(names), weighting)]
        results.records.append(_knn_record(f.name, labels[test], pred, classes, len(train), **common))
    return results


def _loso_results(nb: Neighbors, labels: np.ndarray, speakers: np.ndarray, **common):
    """`knn_evaluate`'s leave-one-speaker-out results from neighbours of every row that exclude the
    row's speaker: one record per speaker, scored on the classes other speakers have."""
    from classifiers.results import ProbeResults

    codes, names = _codes(labels.tolist())
    pred = np.asarray(names, dtype=object)[knn_vote(nb, codes, len(names), common["weighting"])]
    results = ProbeResults(meta={"classifier": "knn", "protocol": "loso (same-speaker neighbours excluded)",
                                 "k": common["k"], "weighting": common["weighting"]})
    by_label = Counter(labels.tolist())
    for s in sorted(set(speakers.tolist())):
        rows = np.flatnonzero(speakers == s)
        own = Counter(labels[rows].tolist())
        classes = canonical_order(lab for lab in by_label if by_label[lab] > own.get(lab, 0))
        keep = np.isin(labels[rows], classes)
        if (~keep).any():
            results.dropped[_loso_name(s)] = dict(Counter(labels[rows][~keep].tolist()))
        if keep.any():
            results.records.append(_knn_record(_loso_name(s), labels[rows][keep], pred[rows][keep], classes,
                                               len(labels) - len(rows), **common))
    return results


def _knn_record(fold: str, y_true, y_pred, classes: list, n_train: int, *, k: int, weighting: str,
                layer, train_set: str, test_set: str) -> dict:
    rec = dict(layer=layer, fold=fold, n_train=int(n_train), n_test=int(len(y_true)))
    rec.update(_scores(list(y_true), list(y_pred), classes))
    rec.update(classifier="knn", seed=0, train_set=train_set, test_set=test_set, shuffled=False, k=k,
               weighting=weighting)
    return rec


@dataclass
class CrossRow:
    """Retrieval of corpus `database` neighbours for corpus `query` utterances at one layer."""

    layer: int
    query: str                 # query corpus
    database: str              # database corpus
    query_language: str
    database_language: str
    labels: list[str]          # the shared emotion labels counted (canonical order)
    dropped: list[str]         # labels of either corpus left out (not shared)
    purity: float
    chance: float
    wa: float
    uar: float
    n_queries: int
    n_database: int


def cross_retrieval(Xq: np.ndarray, query_utts: Sequence[Utterance], Xd: np.ndarray, db_utts: Sequence[Utterance],
                    k: int = 10, *, layer: int = -1, weighting: str = "uniform", center: str | None = "corpus",
                    batch_size: int = 4096, gpu: bool | None = None) -> CrossRow:
    """Emotion purity of database neighbours for queries from another corpus (or language).

    Xq (Q, D) / Xd (N, D): pooled features of the query and database utterances. Only labels
    present in both are kept, on both sides. center: "corpus" (each side centred by its own
    mean, over all its rows), "global" (one mean of both sides) or None. Chance = mean over
    queries of the frequency of the query's label in the (restricted) database.
    """
    q_labels = [u.label for u in query_utts]
    d_labels = [u.label for u in db_utts]
    shared = canonical_order(set(q_labels) & set(d_labels))
    dropped = canonical_order((set(q_labels) | set(d_labels)) - set(shared))
    qa, da = _one(query_utts, "corpus"), _one(db_utts, "corpus")
    ql, dl = _one(query_utts, "language"), _one(db_utts, "language")
    if not shared:
        raise NeighborError(f"corpora {qa} and {da} share no emotion label; nothing to retrieve")
    Xq, Xd = np.asarray(Xq, np.float32), np.asarray(Xd, np.float32)
    if center == "corpus":
        cq, cd = Xq.mean(0), Xd.mean(0)
    elif center == "global":
        cq = cd = np.concatenate([Xq, Xd]).mean(0)
    elif center is None:
        cq = cd = None
    else:
        raise NeighborError(f"unknown centring {center!r}: use corpus, global or None")
    keep_q = np.flatnonzero(np.isin(q_labels, shared))
    keep_d = np.flatnonzero(np.isin(d_labels, shared))
    pos = {lab: i for i, lab in enumerate(shared)}
    qc = np.array([pos[q_labels[i]] for i in keep_q], dtype=np.int64)
    dc = np.array([pos[d_labels[i]] for i in keep_d], dtype=np.int64)
    nb = search(normalize(Xd[keep_d], cd), normalize(Xq[keep_q], cq), k, batch_size=batch_size, gpu=gpu)
    p, chance, n = purity(nb, qc, dc)
    pred = knn_vote(nb, dc, len(shared), weighting)
    s = _scores([shared[i] for i in qc], [shared[i] for i in pred], shared)
    return CrossRow(layer, qa, da, ql, dl, shared, dropped, p, chance, s["wa"], s["uar"], n, len(keep_d))


def _one(utts: Sequence[Utterance], name: str) -> str:
    values = sorted({str(getattr(u, name)) for u in utts})
    return "+".join(values)


# ---------------------------------------------------------------------------------------------
# the analysis over layers
# ---------------------------------------------------------------------------------------------

@dataclass
class PurityRow:
    layer: int
    attribute: str
    purity: float
    chance: float
    n_queries: int
    n_values: int     # distinct known values of the attribute


@dataclass
class NeighborReport:
    """Everything `neighbor_analysis` measured. Plain data: JSON/CSV/plot writers below."""

    k: int
    layers: list[int]
    corpora: list[str]
    n_utterances: int
    protocol: str                      # "loso (same-speaker neighbours excluded)" or the fold names' protocol
    weighting: str
    center: str | None
    model: str = ""
    purity: list[PurityRow] = field(default_factory=list)
    knn: list[dict] = field(default_factory=list)       # per layer and fold: `knn_evaluate` records
    dropped: dict = field(default_factory=dict)         # kNN fold -> {label: test rows not scored}
    cross: list[CrossRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # attribute / "kNN" / "cross a->b" -> why not measured

    # -- summaries ------------------------------------------------------------------------------
    def probe_results(self):
        """The kNN records as `classifiers.evaluate.ProbeResults` (summary, best, confusion; the
        writers and plots of the other probes)."""
        from classifiers.results import ProbeResults

        return ProbeResults(records=list(self.knn), dropped=dict(self.dropped),
                            meta={"classifier": "knn", "protocol": self.protocol, "k": self.k,
                                  "weighting": self.weighting, "center": self.center})

    def attributes(self) -> list[str]:
        return list(dict.fromkeys(r.attribute for r in self.purity))

    def knn_summary(self) -> dict[int, dict[str, float]]:
        """layer -> mean and std over folds of wa, uar, macro_f1."""
        out = {}
        for layer in self.layers:
            recs = [r for r in self.knn if r["layer"] == layer]
            if recs:
                out[layer] = {f"{m}_{s}": float(getattr(np, s)([r[m] for r in recs]))
                              for m in ("wa", "uar", "macro_f1") for s in ("mean", "std")}
        return out

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """(columns, rows) for a layer x attribute table: "purity (chance)" cells, then kNN WA/UAR."""
        attrs = self.attributes()
        knn = self.knn_summary()
        cols = ["layer"] + attrs + (["kNN WA", "kNN UAR"] if knn else [])
        cell = {(r.layer, r.attribute): f"{r.purity:.3f} ({r.chance:.3f})" for r in self.purity}
        rows = []
        for layer in self.layers:
            row = [str(layer)] + [cell.get((layer, a), "-") for a in attrs]
            if knn:
                s = knn.get(layer)
                row += [f"{s['wa_mean']:.3f}", f"{s['uar_mean']:.3f}"] if s else ["-", "-"]
            rows.append(row)
        return cols, rows

    def cross_rows(self) -> tuple[list[str], list[list[str]]]:
        """(columns, rows) for the cross-corpus retrieval table, one row per layer and pair."""
        cols = ["layer", "query", "database", "labels", "purity", "chance", "kNN WA", "kNN UAR"]
        rows = [[str(r.layer), f"{r.query} ({r.query_language})", f"{r.database} ({r.database_language})",
                 ",".join(r.labels), f"{r.purity:.3f}", f"{r.chance:.3f}", f"{r.wa:.3f}", f"{r.uar:.3f}"]
                for r in self.cross]
        return cols, rows

    # -- writers --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["knn_summary"] = {str(k): v for k, v in self.knn_summary().items()}
        return serialize.clean(d)

    def write_json(self, path: str | Path) -> Path:
        return serialize.write_json(path, self.to_dict())

    def long_rows(self) -> Iterator[dict]:
        """Tidy rows: layer, measure, attribute, value, chance, n (one per number reported)."""
        for r in self.purity:
            yield dict(layer=r.layer, measure="purity", attribute=r.attribute, value=r.purity, chance=r.chance, n=r.n_queries)
        for layer, s in self.knn_summary().items():
            n = sum(r["n_test"] for r in self.knn if r["layer"] == layer)
            for m in ("wa", "uar", "macro_f1"):
                yield dict(layer=layer, measure=f"knn_{m}", attribute="emotion", value=s[f"{m}_mean"], chance="", n=n)
        for r in self.cross:
            pair = f"{r.query}->{r.database}"
            yield dict(layer=r.layer, measure="cross_purity", attribute=pair, value=r.purity, chance=r.chance, n=r.n_queries)
            yield dict(layer=r.layer, measure="cross_knn_uar", attribute=pair, value=r.uar, chance="", n=r.n_queries)

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["layer", "measure", "attribute", "value", "chance", "n"])
            w.writeheader()
            w.writerows(self.long_rows())
        return path

    def write(self, path: str | Path) -> Path:
        """Write by suffix: .json (everything), .csv (tidy rows) or .png (the plot)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            return self.write_json(path)
        if suffix == ".csv":
            return self.write_csv(path)
        if suffix == ".png":
            return self.plot(path)
        raise NeighborError(f"cannot write neighbour results to {path}: use a .json, .csv or .png name")

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """PNG: purity vs layer per attribute (solid) with its chance level (dashed, same colour);
        a second panel with kNN WA/UAR and cross-corpus emotion purity when those were measured."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        second = bool(self.knn or self.cross)
        fig, axes = plt.subplots(1, 2 if second else 1, figsize=(13 if second else 7, 5.6), squeeze=False)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        markers = "osD^vP*X"
        ax = axes[0, 0]
        for i, attr in enumerate(self.attributes()):
            rows = sorted((r for r in self.purity if r.attribute == attr), key=lambda r: r.layer)
            x = [r.layer for r in rows]
            c = colors[i % len(colors)]
            ax.plot(x, [r.purity for r in rows], "-", marker=markers[i % len(markers)], color=c, lw=2, ms=5,
                    alpha=0.85, label=attr)
            ax.plot(x, [r.chance for r in rows], "--", color=c, lw=1.2, alpha=0.8)
        ax.plot([], [], "--", color="gray", lw=1.2, label="chance (dashed, same colour)")
        ax.set(xlabel="layer (hidden_states index)", ylabel=f"share of the {self.k} nearest neighbours agreeing",
               ylim=(0, 1.02), title="neighbour purity per attribute")
        _finish_axes(ax, self.layers)
        if second:
            ax = axes[0, 1]
            s = self.knn_summary()
            if s:
                x = sorted(s)
                ax.plot(x, [s[k]["wa_mean"] for k in x], "o-", color="black", lw=2, ms=5, label="kNN WA")
                ax.plot(x, [s[k]["uar_mean"] for k in x], "s-", color="dimgray", lw=2, ms=5, label="kNN UAR")
                n_classes = len({lab for r in self.knn for lab in r.get("recall", {})}) or 1
                ax.axhline(1 / n_classes, color="dimgray", ls=":", lw=1.2, label=f"UAR chance (1/{n_classes})")
            pairs = list(dict.fromkeys((r.query, r.database) for r in self.cross))
            for j, (q, d) in enumerate(pairs):
                rows = sorted((r for r in self.cross if (r.query, r.database) == (q, d)), key=lambda r: r.layer)
                c = _PAIR_COLORS[j % len(_PAIR_COLORS)]
                langs = f"{rows[0].query_language}->{rows[0].database_language}"
                ax.plot([r.layer for r in rows], [r.purity for r in rows], "-", marker=markers[(j + 3) % len(markers)],
                        color=c, lw=1.6, ms=5, label=f"purity, {q} queries -> {d} ({langs})")
                ax.plot([r.layer for r in rows], [r.chance for r in rows], "--", color=c, lw=1.0, alpha=0.8)
            ax.set(xlabel="layer (hidden_states index)", ylabel="score", ylim=(0, 1.02),
                   title="emotion: speaker-independent kNN, cross-corpus retrieval")
            _finish_axes(ax, self.layers)
        corpora = "+".join(self.corpora)
        fig.suptitle(title or f"{self.model or 'features'} | {corpora} | N={self.n_utterances}, k={self.k} | "
                     f"kNN: {self.protocol}", fontsize=10.5)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130)
        plt.close(fig)
        return path


_PAIR_COLORS = ("#e377c2", "#bcbd22", "#17becf", "#8c564b", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")


def _finish_axes(ax, layers: Sequence[int]) -> None:
    step = max(1, int(np.ceil(len(layers) / 13)))
    ax.set_xticks(list(layers)[::step])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def _layer_source(features, layers: Sequence[int] | None, stat: str):
    """(layer list, function layer -> (N, D) array) for a FeatureStore, an (N, L, D) array or a dict."""
    if hasattr(features, "pooled") and hasattr(features, "num_layers"):
        all_layers = list(range(features.num_layers))
        get = lambda layer: features.pooled(layer, stat)  # noqa: E731
    elif isinstance(features, Mapping):
        all_layers = sorted(int(k) for k in features)
        get = lambda layer: np.asarray(features[layer])  # noqa: E731
    else:
        arr = np.asarray(features)
        if arr.ndim != 3:
            raise NeighborError(f"features must be a FeatureStore, a {{layer: (N, D)}} dict or an (N, layers, D) array; got shape {arr.shape}")
        all_layers = list(range(arr.shape[1]))
        get = lambda layer: arr[:, layer]  # noqa: E731
    if layers is None:
        return all_layers, get
    layers = [int(x) for x in layers]
    n = len(all_layers)
    resolved = []
    for x in layers:
        y = x % n if (-n <= x < n and x not in all_layers and not isinstance(features, Mapping)) else x
        if y not in all_layers:
            raise NeighborError(f"layer {x} is not available: layers are {all_layers[0]}..{all_layers[-1]}")
        resolved.append(y)
    return resolved, get


def neighbor_analysis(features, utterances: Sequence[Utterance] | None = None, layers: Sequence[int] | None = None,
                      k: int = 10, *, folds: Sequence | None = None, protocol: str | None = None,
                      weighting: str = "uniform", center: str | None = "global", cross: bool = True,
                      attributes: Sequence[str] = tuple(ATTRIBUTES), stat: str = "mean",
                      batch_size: int = 4096, gpu: bool | None = None) -> NeighborReport:
    """Neighbour purity, speaker-independent kNN accuracy and cross-corpus retrieval, per layer.

    features: a `FeatureStore` (its `pooled(layer, stat)` rows; `utterances` default to the
    store's), an (N, L, D) array or a {layer: (N, D)} dict aligned with `utterances`.
    layers: which layers (None = all; negative counts from the end). folds: speaker-independent
    `Fold`s for the kNN classification (e.g. `make_folds(utts, "standard")`); None = leave one
    speaker out by excluding same-speaker neighbours. protocol: a name for the folds in reports.
    cross: also retrieve across every ordered pair of corpora (when there are several).
    Returns a `NeighborReport`.
    """
    if utterances is None:
        utterances = getattr(features, "utterances", None)
        if utterances is None:
            raise NeighborError("utterances are required unless features is a FeatureStore")
    utterances = list(utterances)
    N = len(utterances)
    if N < 2:
        raise NeighborError(f"nearest-neighbour analysis needs at least 2 utterances, got {N}")
    if center not in ("global", None):
        raise NeighborError(f"unknown centring {center!r}: use global or None")
    unknown_attr = [a for a in attributes if a not in ATTRIBUTES and a != EMOTION_OTHER_SPEAKERS]
    if unknown_attr:
        raise NeighborError(f"unknown attributes {unknown_attr}; valid: {', '.join(ATTRIBUTES)}")
    layer_list, get = _layer_source(features, layers, stat)
    speakers = np.asarray([u.speaker for u in utterances], dtype=object)
    spk_codes, spk_query, _ = _shared_codes(list(speakers), list(speakers))
    report = NeighborReport(k=k, layers=layer_list, corpora=sorted({u.corpus for u in utterances}), n_utterances=N,
                            protocol=protocol or ("loso (same-speaker neighbours excluded)" if folds is None else "folds"),
                            weighting=weighting, center=center, model=getattr(features, "model_id", "") or "")
    # attribute codes; skip constant or unknown ones
    coded: dict[str, np.ndarray] = {}
    for a in attributes:
        codes, names = _codes([getattr(u, ATTRIBUTES[a]) for u in utterances])
        if len(names) == 0:
            report.skipped[a] = "unknown for every utterance"
        elif len(names) == 1:
            report.skipped[a] = f"constant ({names[0]})"
        else:
            coded[a] = codes
    emo_codes, emo_names = _codes([u.label for u in utterances])
    n_speakers = len(set(spk_codes.tolist()))
    with_emotion_xspk = "emotion" in coded and n_speakers > 1
    if len(emo_names) < 2:
        report.skipped["kNN"] = "fewer than 2 emotion labels"
    elif folds is None and n_speakers < 2:
        report.skipped["kNN"] = "leave-one-speaker-out needs at least 2 speakers; pass folds"
    n_spk_max = int(np.bincount(spk_codes[spk_codes >= 0]).max()) if (spk_codes >= 0).any() else 1
    kf = min(N, k + max(n_spk_max, 1))
    rows = np.arange(N)
    corpora = report.corpora
    corpus_set = "+".join(corpora)
    labels = np.asarray([u.label for u in utterances], dtype=object)
    by_corpus = {c: np.flatnonzero([u.corpus == c for u in utterances]) for c in corpora}
    for layer in layer_list:
        X = np.asarray(get(layer), dtype=np.float32)
        if X.shape[0] != N:
            raise NeighborError(f"layer {layer}: {X.shape[0]} feature rows for {N} utterances")
        Xn = normalize(X, X.mean(0) if center else None)
        index = _Index(Xn, gpu)
        own: list[Neighbors] = []
        other: list[Neighbors] = []
        for start in range(0, N, batch_size):
            stop = min(start + batch_size, N)
            sims, idx = index.search(Xn[start:stop], kf)
            q = rows[start:stop]
            own.append(_first_valid(sims, idx, _excluded_mask(idx, q, None, None), k))
            if with_emotion_xspk or folds is None:
                other.append(_first_valid(sims, idx, _excluded_mask(idx, q, spk_codes, spk_query[start:stop]), k))
        nb_self = Neighbors(np.concatenate([n.index for n in own]), np.concatenate([n.sim for n in own]))
        for a, codes in coded.items():
            p, c, n = purity(nb_self, codes, codes, query_rows=rows)
            report.purity.append(PurityRow(layer, a, p, c, n, int(codes.max()) + 1))
        if other:
            nb_other = Neighbors(np.concatenate([n.index for n in other]), np.concatenate([n.sim for n in other]))
        if with_emotion_xspk:
            p, c, n = purity(nb_other, emo_codes, emo_codes, query_rows=rows, db_groups=spk_codes, query_groups=spk_query)
            report.purity.append(PurityRow(layer, EMOTION_OTHER_SPEAKERS, p, c, n, len(emo_names)))
        if len(emo_names) > 1 and (folds is not None or n_speakers > 1):
            common = dict(k=k, weighting=weighting, layer=layer, train_set=corpus_set, test_set=corpus_set)
            if folds is None:
                res = _loso_results(nb_other, labels, speakers, **common)
            else:
                res = knn_evaluate(X, utterances, folds, center=center, batch_size=batch_size, gpu=gpu, **common)
            report.knn.extend(res.records)
            report.dropped.update(res.dropped)
        if cross and len(corpora) > 1:
            for a in corpora:
                for b in corpora:
                    if a == b:
                        continue
                    ia, ib = by_corpus[a], by_corpus[b]
                    try:
                        report.cross.append(cross_retrieval(
                            X[ia], [utterances[i] for i in ia], X[ib], [utterances[i] for i in ib], k, layer=layer,
                            weighting=weighting, center="corpus" if center else None, batch_size=batch_size, gpu=gpu))
                    except NeighborError as e:
                        report.skipped[f"cross {a}->{b}"] = str(e)
    return report
