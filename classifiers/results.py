"""Probe results as files (JSON with everything needed to reproduce, CSV one row per record) and tables."""

from __future__ import annotations

import csv
import json
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

from classifiers.metrics import mean_std, scores
from featstore.errors import SerError


class Record(TypedDict, total=False):
    """One scored (setting, layer, classifier, fold, seed); stored as a plain dict in JSON.

    layer       int stored layer (`hidden_states[k]`), or a string: "e2e" (fine-tuned), "5+7"
                (a learned mix of layers)
    fold        fold name (e.g. "luna-0", "ravdess->cremad", "loso-ravdess-03")
    n_train     training rows the model was fitted on (validation rows excluded)
    n_test      test rows scored
    wa          accuracy (weighted by class frequency)
    uar         unweighted average recall over the scored labels present in the test rows
    macro_f1    scikit-learn macro-F1 over the scored labels that occur in truth or prediction
    recall      {label: recall} for the scored labels present in the test rows
    confusion   (n_labels, n_labels) counts as nested lists, rows true, columns predicted
    labels      the scored label order (rows/columns of `confusion`)
    classifier  registry name ("logreg", "xgboost", "attention", "knn") or "finetune-<pooling>"
    seed        the run's seed (0 for the deterministic kNN)
    train_set   training corpora, comma-joined; test_set: test corpora, comma-joined
    shuffled    True for the shuffled-label control
    C           logreg's inverse regularisation (None elsewhere)
    classes     "train" (the fold's training classes), "shared" or "all" (see `harmonise`)
    """

    layer: int | str
    fold: str
    n_train: int
    n_test: int
    wa: float
    uar: float
    macro_f1: float
    recall: dict[str, float]
    confusion: list[list[int]]
    labels: list[str]
    classifier: str
    seed: int
    train_set: str
    test_set: str
    shuffled: bool
    C: float | None
    classes: str


def make_record(*, layer, fold: str, y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                n_train: int, **extra) -> Record:
    """The one record builder every classifier uses (see `Record` for the keys).

    y_true, y_pred: (n_test,) labels; labels: the scored label order. `extra` holds the other
    `Record` keys (classifier, seed, train_set, test_set, shuffled, C, ...) and any
    classifier-specific ones (k, best_epoch, layer_weights, ...).
    """
    s = scores(y_true, y_pred, labels)
    layer = int(layer) if isinstance(layer, (int, np.integer)) else layer
    return Record(layer=layer, fold=str(fold), n_train=int(n_train), n_test=int(len(y_true)), **s, **extra)


CLASS_POLICIES = ("shared", "all")


@dataclass
class Harmonised:
    """One fold after label harmonisation.

    classes: labels the model is trained on and predicts among (canonical order)
    train:   (n_train,) training rows kept; test: (n_test,) test rows scored
    scored:  the scored label order of the records (classes, plus test-only labels under "all")
    dropped: {label: test rows not scored}; dropped_train: {label: training rows left out}
    """

    classes: list[str]
    train: np.ndarray
    test: np.ndarray
    scored: list[str]
    dropped: dict[str, int]
    dropped_train: dict[str, int]


def harmonise(labels: Sequence[str], train: Sequence[int], test: Sequence[int], *, policy: str | None = None,
              shared: set[str] | None = None) -> Harmonised:
    """The one label harmonisation of every classifier (logreg, XGBoost, attention, kNN).

    labels: (N,) label of every row; train, test: row indices of one fold.
    policy None: the model learns the fold's training classes; test rows of other classes are
    dropped (within-corpus folds, where a class missing from training is an accident).
    "shared": training and test restricted to `shared` (the classes both sides declare, see
    `declared_labels`); training rows of other classes are left out, test rows dropped.
    "all": the model as trained on every training row; every test row is scored, over the
    training classes plus the test-only ones (which it can never predict).
    """
    from featstore.labels import canonical_order

    labels = np.asarray(labels, dtype=object)
    train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    if policy not in (None, *CLASS_POLICIES):
        raise ValueError(f"unknown class policy {policy!r}: use {', '.join(CLASS_POLICIES)}")
    dropped_train: dict[str, int] = {}
    if policy == "shared":
        if shared is None:
            raise ValueError("policy 'shared' needs the shared label set")
        keep = np.isin(labels[train], sorted(shared))
        dropped_train = dict(Counter(labels[train][~keep].tolist()))
        train = train[keep]
    classes = canonical_order(labels[train].tolist())
    if policy == "all":
        return Harmonised(classes, train, test, canonical_order(set(classes) | set(labels[test].tolist())), {},
                          dropped_train)
    keep = np.isin(labels[test], classes)
    return Harmonised(classes, train, test[keep], classes, dict(Counter(labels[test][~keep].tolist())),
                      dropped_train)


def declared_labels(corpora: Sequence[str], utterances: Sequence | None = None) -> set[str]:
    """The canonical labels the corpora declare: `set(get_corpus(name).labels.values())` for each
    registered corpus, the labels present in `utterances` of that corpus for CSV corpora (whose
    label set is their data). Never the labels that happen to occur in one test fold."""
    from featstore.corpora import CORPORA
    from featstore.corpora.csvcorpus import CsvCorpus

    out: set[str] = set()
    for name in corpora:
        corpus = CORPORA.get(name)
        if corpus is not None and not isinstance(corpus, CsvCorpus):
            out |= set(corpus.labels.values())
        else:
            out |= {u.label for u in (utterances or []) if u.corpus == name}
    return out


@dataclass
class ProbeResults:
    """One record per (layer, classifier, fold, seed) plus what was dropped and how it was run."""

    records: list[Record] = field(default_factory=list)
    dropped: dict = field(default_factory=dict)        # fold -> {label: test rows dropped}
    meta: dict = field(default_factory=dict)
    dropped_train: dict = field(default_factory=dict)  # fold -> {label: training rows left out ("shared")}
    predictions: list = field(default_factory=list)    # `classifiers.predictions.block`s, per-utterance

    def extend(self, other: ProbeResults) -> None:
        self.records.extend(other.records)
        self.predictions.extend(other.predictions)
        self.dropped.update(other.dropped)
        self.dropped_train.update(other.dropped_train)

    def add(self, fold: str, h: Harmonised) -> None:
        """Count what harmonising `fold` left out."""
        if h.dropped:
            self.dropped[fold] = dict(h.dropped)
        if h.dropped_train:
            self.dropped_train[fold] = dict(h.dropped_train)

    def summary(self, metrics: Sequence[str] = ("wa", "uar", "macro_f1")) -> list[dict]:
        """Mean and std over folds and seeds, per (train_set, test_set, classifier, layer)."""
        groups = defaultdict(list)
        for r in self.records:
            groups[(r["train_set"], r["test_set"], r["classifier"], r["layer"])].append(r)
        rows = []
        for (train, test, clf, layer), recs in sorted(groups.items(), key=lambda kv: (kv[0][:3], kv[0][3])):
            row = dict(train_set=train, test_set=test, classifier=clf, layer=layer, n=len(recs))
            for m in metrics:
                row[m], row[m + "_std"] = mean_std([r[m] for r in recs])
            rows.append(row)
        return rows

    def best(self, metric: str = "uar", classifier: str | None = None, train_set: str | None = None) -> dict:
        """The summary row with the highest mean `metric`."""
        rows = [r for r in self.summary() if (classifier is None or r["classifier"] == classifier)
                and (train_set is None or r["train_set"] == train_set)]
        return max(rows, key=lambda r: r[metric])

    def confusion(self, layer: int, classifier: str, train_set: str | None = None) -> tuple[np.ndarray, list[str]]:
        """Confusion counts summed over folds and seeds for one layer, and the label order."""
        recs = [r for r in self.records if r["layer"] == layer and r["classifier"] == classifier
                and (train_set is None or r["train_set"] == train_set)]
        labels = list(dict.fromkeys(lab for r in recs for lab in r["labels"]))
        total = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for r in recs:
            idx = [labels.index(lab) for lab in r["labels"]]
            total[np.ix_(idx, idx)] += np.asarray(r["confusion"])
        return total, labels


CSV_FIELDS = ("train_set", "test_set", "classifier", "layer", "fold", "seed", "wa", "uar", "macro_f1",
              "n_train", "n_test", "C", "shuffled", "classes", "model")


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import xgboost

    import featstore

    return dict(ser=featstore.__version__, python=platform.python_version(), numpy=numpy.__version__,
                sklearn=sklearn.__version__, torch=torch.__version__, xgboost=xgboost.__version__)


def write_results(results: ProbeResults, out_dir: str | Path, name: str = "probe") -> tuple[Path, Path]:
    """Write `<name>.json` (meta, summary, records, dropped) and `<name>.csv`, each whole or not at
    all (temporary file, fsync, rename); return both paths."""
    import io

    from featstore.outputs import check_output, write_text
    from featstore.serialize import dumps

    out = Path(out_dir)
    jpath, cpath = out / f"{name}.json", out / f"{name}.csv"
    check_output(out, directory=True)
    for path in (jpath, cpath):
        check_output(path)
    meta = dict(results.meta, versions=versions(), written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    text = dumps(dict(meta=meta, summary=results.summary(), dropped=results.dropped,
                      dropped_train=results.dropped_train, records=results.records), indent=1)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS + ("store", "protocol"), extrasaction="ignore")
    w.writeheader()
    for r in results.records:
        w.writerow(dict(r, model=meta.get("model", ""), store=";".join(meta.get("stores", [])),
                        protocol=meta.get("protocol", "")))
    write_text(jpath, text)
    write_text(cpath, buf.getvalue())
    return jpath, cpath


class ResultsError(SerError):
    """A results file (probe.json, evaluate.json, finetune.json) that cannot be read back."""


def read_results(path: str | Path) -> ProbeResults:
    """The `ProbeResults` of a file `write_results` wrote; a missing, damaged or foreign file (invalid
    JSON, records of the wrong shape or types) is one ResultsError line naming it."""
    path = Path(path)
    again = "re-run the command that wrote it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ResultsError(f"{path} is gone; {again}") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not valid JSON ({e}); {again}") from e
    except OSError as e:
        raise ResultsError(f"{path}: cannot read it ({e.strerror}); check the file") from e
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ResultsError(f"{path}: not a ser results file (no list of records); {again}")
    for i, r in enumerate(data["records"]):
        why = _bad_record(r)
        if why:
            raise ResultsError(f"{path}: record {i} is damaged ({why}); {again}")
    extras = {k: data.get(k, {}) for k in ("dropped", "meta", "dropped_train")}
    for k, v in extras.items():
        if not isinstance(v, dict):
            raise ResultsError(f"{path}: {k!r} is {type(v).__name__}, not an object; {again}")
    return ProbeResults(records=data["records"], **extras)


def _bad_record(r) -> str:
    """Why `r` is not a record `summary`, `confusion` and the report can use ("" when it is)."""
    if not isinstance(r, dict):
        return f"a {type(r).__name__}, not an object"
    checks = [("layer", lambda v: isinstance(v, (int, str)) and not isinstance(v, bool), "a layer"),
              ("fold", lambda v: isinstance(v, str), "text"), ("classifier", lambda v: isinstance(v, str), "text"),
              ("train_set", lambda v: isinstance(v, str), "text"), ("test_set", lambda v: isinstance(v, str), "text"),
              ("labels", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of labels")]
    checks += [(m, lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)), "a number")
               for m in ("wa", "uar", "macro_f1")]
    for key, ok, what in checks:
        if key not in r:
            return f"{key!r} missing"
        if not ok(r[key]):
            return f"{key!r} is {_short(r[key])}, not {what}"
    if "seed" in r and (not isinstance(r["seed"], int) or isinstance(r["seed"], bool)):
        return f"'seed' is {_short(r['seed'])}, not an integer"
    n = len(r["labels"])
    cm = r.get("confusion")
    if not (isinstance(cm, list) and len(cm) == n and all(isinstance(row, list) and len(row) == n and all(
            isinstance(x, int) and not isinstance(x, bool) for x in row) for row in cm)):
        return f"'confusion' is not a {n}x{n} table of counts"
    return ""


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def summary_table(results: ProbeResults, metric: str = "uar", title: str = ""):
    """A rich Table: one row per (training set, classifier, layer), mean ± std, best marked."""
    rows = results.summary()
    sets = {(r["train_set"], r["test_set"]) for r in rows}
    clfs = {r["classifier"] for r in rows}
    cols = (["train → test"] if len(sets) > 1 else []) + (["classifier"] if len(clfs) > 1 else [])
    if len(sets) == 1:
        (train, test), = sets
        title = f"{title} — train {train}" + (f" → test {test}" if test and test != train else "")
    if len(clfs) == 1:
        title = f"{title} ({next(iter(clfs))})"
    t = table(*cols, "layer", "WA", "UAR", "macro-F1", "n", title=title.strip(" —"))
    best = {}
    for r in rows:
        key = (r["train_set"], r["test_set"], r["classifier"])
        if key not in best or r[metric] > best[key][metric]:
            best[key] = r
    for r in rows:
        mark = r is best[(r["train_set"], r["test_set"], r["classifier"])]
        cells = [f"{r[m]:.3f}±{r[m + '_std']:.3f}" for m in ("wa", "uar", "macro_f1")]
        lead = ([f"{r['train_set']} → {r['test_set']}"] if len(sets) > 1 else []) + \
               ([r["classifier"]] if len(clfs) > 1 else [])
        t.add_row(*lead, f"{r['layer']}{' ★' if mark else ''}", *cells, str(r["n"]),
                  style="bold green" if mark else None)
    return t


def table(*columns, title: str = "", **kw):
    """A rich Table whose cells wrap (fold) instead of being cut to "..." on narrow terminals.

    columns: header strings, or rich `Column`s (kept as given).
    """
    from rich.table import Column, Table

    t = Table(title=title, **kw)
    for c in columns:
        if isinstance(c, Column):
            t.columns.append(c)
        else:
            t.add_column(c, overflow="fold")
    return t


def settings_tag(settings: dict) -> str:
    """8 hex digits naming a run's settings (same settings, same tag): sha256 of their JSON."""
    import hashlib

    from featstore.serialize import dumps

    return hashlib.sha256(dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """`out` as a results directory, checked before any work: refused when it already holds
    files, unless `overwrite` (results are never silently replaced). The writers create it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SerError(f"{out} already holds results; pass --overwrite to replace them, or another --out")
    return out
