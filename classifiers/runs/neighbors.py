"""Nearest-neighbour analysis of stored features: which layers group utterances by what.

Exact cosine kNN comes from `classifiers.estimators.knn_index` (faiss; its names are re-exported here).
On top of it, per layer (`neighbor_analysis`):

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
  Records and label harmonisation are every probe's (`classifiers.results.records.make_record`,
  `harmonise`); the registry's "knn" classifier runs `knn_evaluate`.
- **Cross-corpus / cross-language retrieval**: queries from corpus A, database corpus B, both
  restricted to the emotion labels they share (listed in each row); emotion purity against
  chance (the frequency of the query's label in B), plus kNN WA/UAR.

Centring: raw wav2vec2 hidden states share a large common direction, which makes all cosine
similarities high and neighbours noisy, so rows are centred before normalisation: by the mean
of all analysed utterances ("global", label-free), of each fold's training set (kNN
classification), and of each corpus (cross-corpus retrieval, so that channel offsets between
corpora do not decide the neighbours). `center=None` turns it off. Plots: `classifiers.results.plots`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from classifiers.estimators.knn_index import (
    FlatIndex,
    NeighborError,
    Neighbors,
    excluded_mask,
    faiss_module,
    first_valid,
    normalize,
    search,
    shared_codes,
    use_gpu,
    value_codes,
)
from classifiers.results.metrics import scores as _scores
from classifiers.results.records import HEADLINE_KEYS, ci_text
from featstore import serialize
from featstore.corpora.base import Utterance
from featstore.errors import SerError
from featstore.labels import canonical_order

__all__ = [
    "Neighbors", "NeighborError", "normalize", "search", "knn_vote", "purity", "knn_evaluate",
    "cross_retrieval", "neighbor_analysis", "NeighborReport", "PurityRow", "CrossRow",
    "ATTRIBUTES", "use_gpu", "analyse_cached", "registered_neighbors", "neighbors_config", "NeighborRun",
    "read_report",
]

#: attribute name -> Utterance field. "emotion, other speakers" is derived (see module docstring).
ATTRIBUTES: dict[str, str] = {"emotion": "label", "speaker": "speaker", "gender": "gender",
                              "language": "language", "corpus": "corpus"}
EMOTION_OTHER_SPEAKERS = "emotion, other speakers"


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
                 train_set: str = "", test_set: str = "", policy: str | None = None, shared: set[str] | None = None,
                 batch_size: int = 4096, gpu: bool | None = None):
    """Speaker-independent kNN emotion classification of pooled features `X` (N, D).

    folds: `featstore.folds.Fold`s (test rows query their fold's train + val rows), or None for
    leave-one-speaker-out by excluding same-speaker neighbours (one record per speaker, named as
    `make_folds(..., "loso")` names its folds). center: "global" (mean of the database rows:
    the fold's training rows, or all rows), or None. layer: stored in the records.
    Labels are harmonised by `classifiers.results.records.harmonise(policy, shared)` with the database
    (training) rows as a fold's training rows, as for every probe.
    Returns `ProbeResults` of `classifiers.results.records.make_record` records (classifier="knn",
    seed=0: kNN is deterministic) plus k and weighting.
    """
    from classifiers.results.records import ProbeResults, harmonise

    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(utterances):
        raise NeighborError(f"features have {len(X)} rows but there are {len(utterances)} utterances")
    labels = np.asarray([u.label for u in utterances], dtype=object)
    speakers = np.asarray([u.speaker for u in utterances], dtype=object)
    common = dict(k=k, weighting=weighting, layer=layer, train_set=train_set, test_set=test_set)
    if folds is None:
        Xn = normalize(X, X.mean(0) if center else None)
        return _loso_results(search(Xn, None, k, groups=speakers, batch_size=batch_size, gpu=gpu), labels, speakers,
                             utterances=utterances, **common)
    results = ProbeResults(meta={"classifier": "knn", "protocol": "folds", "k": k, "weighting": weighting, "center": center})
    for f in folds:
        database = np.asarray(f.train if f.val is None else np.union1d(f.train, f.val), dtype=np.int64)
        if not len(database):
            raise NeighborError(f"fold {f.name} has no training rows")
        h = harmonise(labels, database, f.test, policy=policy, shared=shared)
        results.add(f.name, h)
        if not len(h.test):
            continue
        train, test = h.train, h.test
        c = X[train].mean(0) if center else None
        nb = search(normalize(X[train], c), normalize(X[test], c), k, groups=speakers[train],
                    query_groups=speakers[test], batch_size=batch_size, gpu=gpu)
        codes, names = value_codes(labels[train].tolist())
        pred = np.asarray(names, dtype=object)[knn_vote(nb, codes, len(names), weighting)]
        results.records.append(_knn_record(f.name, labels[test], pred, h.scored, len(train), classes=policy or "train",
                                           **common))
        results.predictions.append(_knn_block(utterances, test, pred, f.name, **common))
    return results


def _loso_results(nb: Neighbors, labels: np.ndarray, speakers: np.ndarray, utterances=None, **common):
    """`knn_evaluate`'s leave-one-speaker-out results from neighbours of every row that exclude the
    row's speaker: one record per speaker, harmonised with the other speakers as training rows."""
    from classifiers.results.records import ProbeResults, harmonise

    codes, names = value_codes(labels.tolist())
    pred = np.asarray(names, dtype=object)[knn_vote(nb, codes, len(names), common["weighting"])]
    results = ProbeResults(meta={"classifier": "knn", "protocol": "loso (same-speaker neighbours excluded)",
                                 "k": common["k"], "weighting": common["weighting"]})
    for s in sorted(set(speakers.tolist())):
        own = speakers == s
        h = harmonise(labels, np.flatnonzero(~own), np.flatnonzero(own))
        results.add(_loso_name(s), h)
        if len(h.test):
            results.records.append(_knn_record(_loso_name(s), labels[h.test], pred[h.test], h.scored, len(h.train),
                                               classes="train", **common))
            if utterances is not None:
                results.predictions.append(_knn_block(utterances, h.test, pred[h.test], _loso_name(s), **common))
    return results


def _knn_block(utterances, rows, pred, fold: str, *, layer, train_set: str, test_set: str, **_) -> dict:
    """Per-utterance kNN predictions (votes are not probabilities: no p_ columns)."""
    from classifiers.results.predictions import block

    return block(utterances, rows, pred, layer=layer, fold=fold, seed=0, classifier="knn", train_set=train_set,
                 test_set=test_set)


def _knn_record(fold: str, y_true, y_pred, labels: list, n_train: int, *, k: int, weighting: str,
                layer, train_set: str, test_set: str, classes: str) -> dict:
    from classifiers.results.records import make_record

    return make_record(layer=layer, fold=fold, y_true=list(y_true), y_pred=list(y_pred), labels=labels,
                       n_train=n_train, classifier="knn", seed=0, train_set=train_set, test_set=test_set,
                       shuffled=False, C=None, classes=classes, k=k, weighting=weighting)


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
    uar_low: float | None = None       # 95% speaker CI of `uar` (queries' speakers; None under 2 speakers)
    uar_high: float | None = None
    ci_method: str | None = None
    n_speakers: int | None = None      # query speakers

    @property
    def chance_uar(self) -> float:
        """UAR of guessing among the shared classes: 1/classes."""
        return 1.0 / len(self.labels)


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
    truth, guess = [shared[i] for i in qc], [shared[i] for i in pred]
    s = _scores(truth, guess, shared)
    ci = _uar_interval(truth, guess, [str(query_utts[i].speaker) for i in keep_q], shared)
    return CrossRow(layer, qa, da, ql, dl, shared, dropped, p, chance, s["wa"], s["uar"], n, len(keep_d), **ci)


def _uar_interval(y_true, y_pred, speakers, labels) -> dict:
    """The 95% speaker CI of the UAR (`classifiers.results.stats.bootstrap_ci`) as CrossRow fields."""
    from classifiers.results.records import ci_method
    from classifiers.results.stats import StatsError, bootstrap_ci

    try:
        iv = bootstrap_ci(y_true, y_pred, groups=speakers, labels=labels, metric="uar", seed=0)
    except StatsError as e:
        return dict(ci_method=f"none: {e}", n_speakers=len(set(speakers)))
    return dict(uar_low=iv.low, uar_high=iv.high, ci_method=ci_method(iv), n_speakers=iv.n_groups)


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
    # kNN per-utterance predictions (`classifiers.results.predictions.block`s): the pooled scores and their CI
    predictions: list = field(default_factory=list, repr=False)

    # -- summaries ------------------------------------------------------------------------------
    def probe_results(self):
        """The kNN records as `classifiers.runs.crossval.ProbeResults` (summary, best, confusion; the
        writers and plots of the other probes)."""
        from classifiers.results.records import ProbeResults

        return ProbeResults(records=list(self.knn), dropped=dict(self.dropped),
                            meta={"classifier": "knn", "protocol": self.protocol, "k": self.k,
                                  "weighting": self.weighting, "center": self.center},
                            predictions=list(self.predictions))

    def attributes(self) -> list[str]:
        return list(dict.fromkeys(r.attribute for r in self.purity))

    def knn_summary(self) -> dict[int, dict]:
        """layer -> the kNN headline (`classifiers.results.records.HEADLINE_KEYS`: pooled UAR over folds
        with its 95% speaker CI, classes, chance) and the mean and std over folds of wa, uar,
        macro_f1 (`<m>_mean`, `<m>_std`)."""
        out = {}
        rows = {r["layer"]: r for r in self.probe_results().summary()} if self.knn else {}
        for layer in self.layers:
            recs = [r for r in self.knn if r["layer"] == layer]
            if recs:
                out[layer] = {f"{m}_{s}": float(getattr(np, s)([r[m] for r in recs]))
                              for m in ("wa", "uar", "macro_f1") for s in ("mean", "std")}
                out[layer].update({k: rows[layer].get(k) for k in HEADLINE_KEYS} if layer in rows else {})
        return out

    def table_rows(self, knn: bool = True) -> tuple[list[str], list[list[str]]]:
        """(columns, rows) for a layer x attribute table: "purity (chance)" cells, then (with
        `knn`) the kNN headline (pooled UAR with its 95% speaker CI, `knn_caption` says how) and
        the kNN UAR mean ± std over folds."""
        from classifiers.results.records import folds_text

        attrs = self.attributes()
        knn = self.knn_summary() if knn else {}
        cols = ["layer"] + [f"{a} purity (chance)" for a in attrs] + \
            (["kNN UAR pooled [95% speaker CI]", "kNN UAR folds mean ± std"] if knn else [])
        cell = {(r.layer, r.attribute): f"{r.purity:.3f} ({r.chance:.3f})" for r in self.purity}
        rows = []
        for layer in self.layers:
            row = [str(layer)] + [cell.get((layer, a), "-") for a in attrs]
            if knn:
                s = knn.get(layer)
                row += [ci_text(s), folds_text(dict(s, uar=s["uar_mean"], uar_std=s["uar_std"]))] if s else ["-", "-"]
            rows.append(row)
        return cols, rows

    def knn_caption(self) -> str:
        """What the kNN columns of `table_rows` mean: pooling, CI method and speakers, classes, chance."""
        from classifiers.results.records import headline_caption

        rows = list(self.knn_summary().values())
        return headline_caption(rows, what="kNN UAR pooled") if rows else ""

    def cross_rows(self) -> tuple[list[str], list[list[str]]]:
        """(columns, rows) for the cross-corpus retrieval table, one row per layer and pair (each a
        single split: no std): classes and chance, purity and its chance, the kNN UAR with its 95%
        CI over the query speakers, kNN WA."""
        cols = ["layer", "query", "database", "classes (chance UAR)", "purity (chance)",
                "kNN UAR [95% speaker CI]", "kNN WA"]
        rows = [[str(r.layer), f"{r.query} ({r.query_language})", f"{r.database} ({r.database_language})",
                 f"{len(r.labels)} ({r.chance_uar:.3f}): {', '.join(r.labels)}", f"{r.purity:.3f} ({r.chance:.3f})",
                 ci_text(dict(pooled=r.uar, ci_low=r.uar_low, ci_high=r.uar_high)), f"{r.wa:.3f}"]
                for r in self.cross]
        return cols, rows

    # -- writers --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions")              # per-utterance rows: the predictions file's job, not the JSON's
        d["knn_summary"] = {str(k): v for k, v in self.knn_summary().items()}
        for row, r in zip(d["cross"], self.cross):
            row["chance_uar"] = r.chance_uar
        return serialize.clean(d)

    def write_json(self, path: str | Path) -> Path:
        return serialize.write_json(path, self.to_dict())

    def long_rows(self) -> Iterator[dict]:
        """Tidy rows: layer, measure, attribute, value, chance, n (one per number reported)."""
        for r in self.purity:
            yield dict(layer=r.layer, measure="purity", attribute=r.attribute, value=r.purity, chance=r.chance, n=r.n_queries)
        for layer, s in self.knn_summary().items():
            n = sum(r["n_test"] for r in self.knn if r["layer"] == layer)
            yield dict(layer=layer, measure="knn_uar_pooled", attribute="emotion", value=s.get("pooled"),
                       chance=s.get("chance"), n=n, ci_low=s.get("ci_low"), ci_high=s.get("ci_high"),
                       ci_method=s.get("ci_method"), n_classes=s.get("n_classes"))
            for m in ("wa", "uar", "macro_f1"):          # means over folds
                yield dict(layer=layer, measure=f"knn_{m}", attribute="emotion", value=s[f"{m}_mean"],
                           chance=s.get("chance") if m == "uar" else "", n=n, n_classes=s.get("n_classes"))
        for r in self.cross:
            pair = f"{r.query}->{r.database}"
            yield dict(layer=r.layer, measure="cross_purity", attribute=pair, value=r.purity, chance=r.chance, n=r.n_queries)
            yield dict(layer=r.layer, measure="cross_knn_uar", attribute=pair, value=r.uar, chance=r.chance_uar,
                       n=r.n_queries, ci_low=r.uar_low, ci_high=r.uar_high, ci_method=r.ci_method,
                       n_classes=len(r.labels))

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["model", "layer", "measure", "attribute", "value", "chance", "n",
                                              "ci_low", "ci_high", "ci_method", "n_classes"])
            w.writeheader()
            w.writerows(dict(r, model=self.model) for r in self.long_rows())
        return path

    def write(self, path: str | Path) -> Path:
        """Write by suffix: .json (everything), .csv (tidy rows) or .png, .pdf, .svg (the plot)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            return self.write_json(path)
        if suffix == ".csv":
            return self.write_csv(path)
        if suffix in (".png", ".pdf", ".svg"):
            return self.plot(path, formats=suffix[1:])
        raise NeighborError(f"cannot write neighbour results to {path}: use a .json, .csv, .png, .pdf or .svg name")

    def plot(self, path: str | Path, title: str | None = None, formats: str | Sequence[str] | None = None) -> Path:
        """`classifiers.results.plots.neighbor_plot` as `path`'s stem in each of `formats` (default: the
        current figure formats, png); returns the first file."""
        from classifiers.results.plots import neighbor_plot

        return neighbor_plot(self, path, title, formats=formats)


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
                      batch_size: int = 4096, gpu: bool | None = None, progress=None) -> NeighborReport:
    """Neighbour purity, speaker-independent kNN accuracy and cross-corpus retrieval, per layer.

    features: a `FeatureStore` (its `pooled(layer, stat)` rows; `utterances` default to the
    store's), an (N, L, D) array or a {layer: (N, D)} dict aligned with `utterances`.
    layers: which layers (None = all; negative counts from the end). folds: speaker-independent
    `Fold`s for the kNN classification (e.g. `make_folds(utts, "standard")`); None = leave one
    speaker out by excluding same-speaker neighbours. protocol: a name for the folds in reports.
    cross: also retrieve across every ordered pair of corpora (when there are several).
    progress: called once per layer analysed. Returns a `NeighborReport`.
    """
    if utterances is None:
        utterances = getattr(features, "utterances", None)
        if utterances is None:
            raise NeighborError("utterances are required unless features is a FeatureStore")
    utterances = list(utterances)
    N = len(utterances)
    if N < 2:
        raise NeighborError(f"nearest-neighbour analysis needs at least 2 utterances, got {N}")
    if not 1 <= k < N:
        raise NeighborError(f"--k {k}: each utterance has {N - 1} others; use a k from 1 to {N - 1}")
    if center not in ("global", None):
        raise NeighborError(f"unknown centring {center!r}: use global or None")
    unknown_attr = [a for a in attributes if a not in ATTRIBUTES and a != EMOTION_OTHER_SPEAKERS]
    if unknown_attr:
        raise NeighborError(f"unknown attributes {unknown_attr}; valid: {', '.join(ATTRIBUTES)}")
    layer_list, get = _layer_source(features, layers, stat)
    speakers = np.asarray([u.speaker for u in utterances], dtype=object)
    spk_codes, spk_query, _ = shared_codes(list(speakers), list(speakers))
    report = NeighborReport(k=k, layers=layer_list, corpora=sorted({u.corpus for u in utterances}), n_utterances=N,
                            protocol=protocol or ("loso (same-speaker neighbours excluded)" if folds is None else "folds"),
                            weighting=weighting, center=center, model=getattr(features, "model_id", "") or "")
    # attribute codes; skip constant or unknown ones
    coded: dict[str, np.ndarray] = {}
    for a in attributes:
        codes, names = value_codes([getattr(u, ATTRIBUTES[a]) for u in utterances])
        if len(names) == 0:
            report.skipped[a] = "unknown for every utterance"
        elif len(names) == 1:
            report.skipped[a] = f"constant ({names[0]})"
        else:
            coded[a] = codes
    emo_codes, emo_names = value_codes([u.label for u in utterances])
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
        index = FlatIndex(Xn, gpu)
        own: list[Neighbors] = []
        other: list[Neighbors] = []
        for start in range(0, N, batch_size):
            stop = min(start + batch_size, N)
            sims, idx = index.search(Xn[start:stop], kf)
            q = rows[start:stop]
            own.append(first_valid(sims, idx, excluded_mask(idx, q, None, None), k))
            if with_emotion_xspk or folds is None:
                other.append(first_valid(sims, idx, excluded_mask(idx, q, spk_codes, spk_query[start:stop]), k))
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
                res = _loso_results(nb_other, labels, speakers, utterances=utterances, **common)
            else:
                res = knn_evaluate(X, utterances, folds, center=center, batch_size=batch_size, gpu=gpu, **common)
            report.knn.extend(res.records)
            report.predictions.extend(res.predictions)
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
        if progress:
            progress()
    return report


def analyse_cached(corpora: Sequence[str] | None, *, layers: str = "all", k: int = 10, stat: str = "mean",
                   model: str, cache: str | Path = "cache", out: str | Path | None = None, overwrite: bool = False,
                   progress: bool = False) -> tuple[NeighborReport, list[Path]]:
    """`ser neighbors` without the registry: `neighbor_analysis` of the cached features of `corpora`
    (None: every corpus cached for `model`), written as neighbors.json / .csv / _purity.png into `out`
    (default: a directory named by corpora, model, layers, k, stat and a hash of them), which is
    refused when it already holds files unless `overwrite`. Returns (report, files written).
    `registered_neighbors` is the same analysis through the run registry."""
    from classifiers.results.records import check_out
    from featstore.store import cached_corpora

    _check_k(k)
    names = list(corpora or []) or cached_corpora(cache, model)
    out = check_out(out or _default_out(names, layers, k, stat, model), overwrite)
    report = _analyse(names, layers=layers, k=k, stat=stat, model=model, cache=cache, progress=progress)
    return report, _write_report(report, out)


# ---------------------------------------------------------------------------------------------
# registered runs: an identical configuration over identical stores shows the registered run
# ---------------------------------------------------------------------------------------------

#: the kNN records of a neighbours run as `ProbeResults` files (`write_results` name), beside neighbors.json
KNN_NAME = "knn"


@dataclass
class NeighborRun:
    """One registered `ser neighbors` run: its registry row, report, kNN results, whether re-used."""

    run: dict
    report: NeighborReport
    results: object                    # the kNN `ProbeResults` (predictions included)
    reused: bool
    files: list[Path] = field(default_factory=list)


def _complete_figures(run: dict, report: NeighborReport) -> list[Path]:
    """The purity plot of a registered run in the current formats its folder lacks (drawn from its
    report, nothing computed again); a folder that cannot be written keeps what it has, with one warning."""
    import warnings

    from classifiers.results.plots import current_formats, figure_paths

    out = Path(run["out"])
    missing = [f for f in current_formats() if not (out / f"neighbors_purity.{f}").exists()]
    if not missing or not out.is_dir():
        return []
    try:
        return figure_paths(report.plot(out / "neighbors_purity.png", formats=missing), missing)
    except (OSError, SerError) as e:
        warnings.warn(f"run {run['id']}: its purity plot as {', '.join(missing)} could not be drawn in {out} "
                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); its scores are unchanged",
                      stacklevel=2)
        return []


def neighbors_config(corpora: Sequence[str], *, layers: str = "all", k: int = 10, stat: str = "mean",
                     model: str) -> dict:
    """A neighbours run's configuration as the registry keys it: the options, and the analysis
    settings `ser neighbors` fixes (leave-one-speaker-out kNN, uniform votes, global centring)."""
    return dict(corpora=list(corpora), layers=layers, k=k, stat=stat, model=model, protocol="loso",
                weighting="uniform", center="global")


def _check_k(k: int) -> None:
    if k < 1:
        raise NeighborError(f"--k must be at least 1, got {k}")
    faiss_module()  # a missing optional dependency fails before any work


def _default_out(names: Sequence[str], layers: str, k: int, stat: str, model: str) -> Path:
    from classifiers.runs.runpaths import default_out

    return default_out("neighbors", "+".join(names), model, dict(corpora=list(names), layers=layers, k=k, stat=stat))


def _analyse(names: Sequence[str], *, layers: str, k: int, stat: str, model: str, cache, progress: bool,
             weighting: str = "uniform", center: str | None = "global") -> NeighborReport:
    from classifiers.runs.progress import progress_bar
    from classifiers.runs.runpaths import store_for
    from featstore.store import open_store, parse_layers

    fs = open_store(*[store_for(cache, model, c) for c in names])
    layer_list = parse_layers(layers, fs.num_layers)
    with progress_bar(len(layer_list), f"neighbours {'+'.join(names)}: layer", progress) as advance:
        return neighbor_analysis(fs, layers=layer_list, k=k, stat=stat, weighting=weighting, center=center,
                                 progress=advance)


def _write_report(report: NeighborReport, out: Path) -> list[Path]:
    from classifiers.results.plots import figure_paths

    return [report.write(out / "neighbors.json"), report.write(out / "neighbors.csv"),
            *figure_paths(report.plot(out / "neighbors_purity.png"))]


def _knn_results(report: NeighborReport, names: Sequence[str], model: str):
    results = report.probe_results()
    results.meta.update(corpus="+".join(names), model=model)
    return results


def read_report(path: str | Path, predictions: Sequence = ()) -> NeighborReport:
    """The `NeighborReport` a neighbors.json holds (`predictions`: the kNN prediction blocks, which
    the JSON leaves to the predictions file); a damaged or foreign file is one NeighborError line."""
    import json

    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        d.pop("knn_summary", None)
        purity_rows = [PurityRow(**p) for p in d.pop("purity")]
        cross = [CrossRow(**{key: v for key, v in c.items() if key != "chance_uar"}) for c in d.pop("cross")]
        return NeighborReport(**d, purity=purity_rows, cross=cross, predictions=list(predictions))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise NeighborError(f"{path}: cannot read the registered neighbours report ({e}); run again with --force") from e


def _registered_here(run: dict) -> bool:
    from classifiers.results.runfiles import registered_files

    return registered_files(run) and (Path(run["out"]) / "neighbors.json").is_file()


def registered_neighbors(corpora: Sequence[str] | None, *, layers: str = "all", k: int = 10, stat: str = "mean",
                         model: str, cache: str | Path = "cache", registry, force: bool = False,
                         out: str | Path | None = None, overwrite: bool = False, progress: bool = False,
                         command: str = "") -> NeighborRun:
    """`ser neighbors` through the registry `registry` (a `classifiers.results.registry.Registry`).

    The configuration (`neighbors_config`) and the fingerprints of the stores read make the run's
    key: a registered run with the same key whose files are still there is returned (reused=True,
    nothing written) unless `force`. Otherwise the analysis runs, writes neighbors.json / .csv /
    _purity.png plus the kNN records (knn.json, knn.csv, knn_summary.csv) and per-utterance
    predictions (knn_predictions.parquet) into `out` (default: named by the settings; a forced
    re-run takes a new folder, never the registered run's), and is registered as kind
    "neighbors" (scores: the kNN records; purity stays in neighbors.json). A user-chosen `out`
    that already holds files is refused unless `overwrite`.
    """
    from classifiers.results.predictions import write_predictions
    from classifiers.results.records import check_out, write_results
    from classifiers.results.registry import run_key
    from classifiers.results.runfiles import fingerprints, load_registered
    from featstore.store import cached_corpora

    _check_k(k)
    names = list(corpora or []) or cached_corpora(cache, model)
    config = neighbors_config(names, layers=layers, k=k, stat=stat, model=model)
    stores = fingerprints(cache, model, names)
    found = None if force else registry.find("neighbors", config, stores)
    if found is not None and _registered_here(found):
        results = load_registered(found)
        report = read_report(Path(found["out"]) / "neighbors.json", results.predictions)
        return NeighborRun(found, report, results, reused=True, files=_complete_figures(found, report))
    try:
        if out is None:
            from classifiers.results.records import forced_dir

            out = forced_dir(_default_out(names, layers, k, stat, model), force)
        out = check_out(out, overwrite)
        report = _analyse(names, layers=layers, k=k, stat=stat, model=model, cache=cache, progress=progress,
                          weighting=config["weighting"], center=config["center"])
        results = _knn_results(report, names, model)
        files = _write_report(report, out) + list(write_results(results, out, KNN_NAME, summary_csv=True))
        predictions = None
        if results.predictions:
            predictions = write_predictions(results.predictions, out / f"{KNN_NAME}_predictions.parquet")
            files.append(predictions)
        run_id = registry.register(kind="neighbors", config=config, stores=stores, results=results,
                                   command=command, out=out, predictions=predictions)
    except BaseException:
        registry.release(run_key("neighbors", config, stores))  # a failed run never blocks an identical one
        raise
    return NeighborRun(registry.run(run_id), report, results, reused=False, files=files)
