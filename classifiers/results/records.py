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

from classifiers.results.metrics import mean_std, scores
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
    predictions: list = field(default_factory=list)    # `classifiers.results.predictions.block`s, per-utterance

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
        """One row per (train_set, test_set, classifier, layer): the headline and the fold view.

        Headline (`HEADLINE_KEYS`): `pooled` = UAR of all the setting's test predictions pooled over
        folds and seeds, with its 95% speaker CI (`ci_low`, `ci_high`, `ci_method`, `n_speakers`;
        None where there are no per-utterance predictions or fewer than 2 speakers), `wa_pooled`,
        `uar_pooled`, `macro_f1_pooled`, the classes scored (`labels`, `n_classes`) and `chance`
        (1/classes, the UAR of guessing). Beside it, per metric: `<m>` and `<m>_std`, the mean and
        population std over folds and seeds (`n` records, `n_folds`, `n_seeds`; one fold is a single
        split, whose std says nothing).
        """
        groups = defaultdict(list)
        for r in self.records:
            groups[(r["train_set"], r["test_set"], r["classifier"], r["layer"])].append(r)
        cols = _prediction_columns(self.predictions)
        rows = []
        for (train, test, clf, layer), recs in sorted(groups.items(), key=lambda kv: (kv[0][:3], _layer_key(kv[0][3]))):
            row = dict(train_set=train, test_set=test, classifier=clf, layer=layer, n=len(recs))
            for m in metrics:
                row[m], row[m + "_std"] = mean_std([r[m] for r in recs])
            row.update(headline(recs, cols, (train, test, clf, str(layer))))
            rows.append(row)
        return rows

    def best(self, metric: str = "uar", classifier: str | None = None, train_set: str | None = None) -> dict:
        """The summary row with the highest pooled `metric` (the headline; the mean over folds and
        seeds breaks ties)."""
        rows = [r for r in self.summary() if (classifier is None or r["classifier"] == classifier)
                and (train_set is None or r["train_set"] == train_set)]
        return max(rows, key=lambda r: (_num(r.get(metric + "_pooled")), _num(r[metric])))

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


HEADLINE_METRIC = "uar"
HEADLINE_KEYS = ("n_folds", "n_seeds", "labels", "n_classes", "chance", "headline", "pooled", "ci_low", "ci_high",
                 "ci_level", "ci_method", "n_speakers", "wa_pooled", "uar_pooled", "macro_f1_pooled")


def _num(value) -> float:
    """`value` as a float for ordering (None and NaN lowest)."""
    return float("-inf") if value is None or value != value else float(value)


def _layer_key(layer):
    """Numeric layers in numeric order, then the others ("e2e", "5+7") by name."""
    return (0, layer, "") if isinstance(layer, int) else (1, 0, str(layer))


def _prediction_columns(predictions) -> dict | None:
    """The predictions as one column dict (`classifiers.results.predictions.concat`), None when there are none."""
    if not predictions:
        return None
    from classifiers.results.predictions import concat

    return concat(predictions)


def chance_level(n_classes: int) -> float | None:
    """UAR of guessing uniformly among `n_classes` classes: 1/n_classes (None for no class)."""
    return 1.0 / n_classes if n_classes else None


def _summed_confusion(recs: Sequence[Record]) -> tuple[np.ndarray, list[str]]:
    """The records' confusion counts summed (label orders merged, as `ProbeResults.confusion`)."""
    labels = list(dict.fromkeys(lab for r in recs for lab in r["labels"]))
    total = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in recs:
        idx = [labels.index(lab) for lab in r["labels"]]
        total[np.ix_(idx, idx)] += np.asarray(r["confusion"], dtype=np.int64).reshape(len(idx), len(idx))
    return total, labels


def ci_method(interval) -> str:
    """How `interval` (a `classifiers.results.stats.Interval`) was obtained, in words."""
    method = getattr(interval, "method", None)
    unit = getattr(interval, "unit", "speaker")
    return str(method) if method else f"{unit} bootstrap"


def headline(recs: Sequence[Record], cols: dict | None = None, setting: tuple | None = None, *,
             metric: str = HEADLINE_METRIC, seed: int = 0) -> dict:
    """The headline of one setting's records (`HEADLINE_KEYS`, see `ProbeResults.summary`).

    cols: every per-utterance prediction (`classifiers.results.predictions.concat`); setting: (train_set,
    test_set, classifier, layer as text) selecting this setting's rows. The pooled scores and the
    speaker CI (`classifiers.results.stats.bootstrap_ci` through `classifiers.results.compare.interval`, as `ser
    results show`) come from those rows; without them, the pooled scores come from the records'
    summed confusion counts and a single record's own `ci` (`ser evaluate`), else no CI.
    """
    from classifiers.results.stats import METRICS, StatsError, metric_from_confusion

    folds, seeds = {r["fold"] for r in recs}, {r.get("seed", 0) for r in recs}
    from featstore.labels import canonical_order

    labels = canonical_order({lab for r in recs for lab in r["labels"]})
    out = dict(n_folds=len(folds), n_seeds=len(seeds), labels=labels, n_classes=len(labels),
               chance=chance_level(len(labels)), headline=metric, pooled=None, ci_low=None, ci_high=None,
               ci_level=None, ci_method=None, n_speakers=None)
    rows = None
    if cols is not None and setting is not None:
        from classifiers.results.compare import setting_rows

        rows = setting_rows(cols, setting)
        if not len(rows["id"]):
            rows = None
    if rows is not None:
        from classifiers.results.compare import interval, label_order
        from classifiers.results.stats import group_confusions

        order = label_order(rows)
        cm = group_confusions(rows["label"], rows["predicted"], None, order)[1].sum(0)
        out.update({f"{m}_pooled": _float(metric_from_confusion(cm, m)) for m in METRICS})
        out["n_speakers"] = len(set(rows["speaker"].tolist()))
        try:
            iv = interval(cols, setting, metric, seed)
        except StatsError as e:
            out["ci_method"] = f"none: {e}"
        else:
            out.update({f"{metric}_pooled": iv.value, "ci_low": iv.low, "ci_high": iv.high, "ci_level": iv.level,
                        "ci_method": ci_method(iv), "n_speakers": iv.n_groups})
    else:
        cm, order = _summed_confusion(recs)
        out.update({f"{m}_pooled": _float(metric_from_confusion(cm, m)) for m in METRICS})
        ci = recs[0].get("ci") if len(recs) == 1 and isinstance(recs[0].get("ci"), dict) else None
        if ci and ci.get("metric", metric) == metric:
            out.update(ci_low=ci.get("low"), ci_high=ci.get("high"), ci_level=ci.get("level"),
                       ci_method=ci.get("method") or f"{ci.get('unit', 'speaker')} bootstrap",
                       n_speakers=ci.get("n_groups"))
        else:
            out["ci_method"] = "none: no per-utterance predictions"
    out["pooled"] = out[f"{metric}_pooled"]
    return out


def _float(value) -> float | None:
    value = float(value)
    return None if value != value else value


CSV_FIELDS = ("train_set", "test_set", "classifier", "layer", "fold", "seed", "wa", "uar", "macro_f1",
              "n_train", "n_test", "C", "shuffled", "classes", "model")
# `<name>_summary.csv`: one row per setting, the headline first, the fold view beside it
SUMMARY_FIELDS = ("model", "train_set", "test_set", "classifier", "layer", "headline", "pooled", "ci_low", "ci_high",
                  "ci_level", "ci_method", "n_speakers", "folds_mean", "folds_std", "n_folds", "n_seeds", "n_classes",
                  "chance", "classes", "wa_pooled", "uar_pooled", "macro_f1_pooled", "wa", "wa_std", "uar", "uar_std",
                  "macro_f1", "macro_f1_std")


def summary_csv_rows(rows: Sequence[dict], model: str = "") -> list[dict]:
    """`ProbeResults.summary` rows as `SUMMARY_FIELDS` rows: `folds_mean`/`folds_std` are the
    headline metric's mean and std over folds and seeds, the std left empty for a single split."""
    out = []
    for r in rows:
        m = r.get("headline", HEADLINE_METRIC)
        single = r.get("n_folds", r.get("n", 1)) <= 1
        out.append(dict(r, model=model, folds_mean=r.get(m), folds_std=None if single else r.get(m + "_std"),
                        classes=";".join(r.get("labels") or [])))
    return out


def _csv_text(rows: Sequence[dict], fields: Sequence[str]) -> str:
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return buf.getvalue()


def to_frame(results, what: str = "summary", *, columns: Sequence[str] | None = None):
    """Results as a pandas DataFrame (pandas is optional: ResultsError, one line, when it is missing).

    results: a `ProbeResults` (what="summary": one row per setting, `SUMMARY_FIELDS`, the headline
    first; "records": one row per (setting, fold, seed) record, `CSV_FIELDS`; "predictions": one
    row per test prediction), a study's `classifiers.results.tables.PaperTable` (one row per cell), a list
    of dicts (registry runs, summary rows: one row each) or a dict of columns. columns: keep these,
    in this order. The files (CSV, Parquet) do not need pandas.
    """
    try:
        import pandas as pd
    except ImportError as e:
        raise ResultsError("DataFrames need pandas, which is not installed: pip install pandas") from e
    if hasattr(results, "long_rows"):                 # a study's PaperTable
        data, columns = results.long_rows(), columns or results.long_columns
    elif isinstance(results, ProbeResults):
        model = results.meta.get("model", "")
        if what == "summary":
            data, columns = summary_csv_rows(results.summary(), model), columns or SUMMARY_FIELDS
        elif what == "records":
            data = [dict(r, model=r.get("model") or model) for r in results.records]
            columns = columns or CSV_FIELDS
        elif what == "predictions":
            data = _prediction_columns(results.predictions) or {}
        else:
            raise ResultsError(f'to_frame(what={what!r}): expected "summary", "records" or "predictions"')
    else:
        data = results if isinstance(results, dict) else list(results)
    frame = pd.DataFrame(data)
    if columns is not None:
        frame = frame.reindex(columns=list(columns))
    return frame


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import xgboost

    import featstore

    return dict(ser=featstore.__version__, python=platform.python_version(), numpy=numpy.__version__,
                sklearn=sklearn.__version__, torch=torch.__version__, xgboost=xgboost.__version__)


def write_results(results: ProbeResults, out_dir: str | Path, name: str = "probe", *,
                  summary_csv: bool = False) -> tuple[Path, ...]:
    """Write `<name>.json` (meta, summary, records, dropped) and `<name>.csv` (one row per record,
    with its classes and chance), and with `summary_csv` `<name>_summary.csv` (one row per
    setting: the headline, pooled UAR with its speaker CI, beside the mean ± std over folds),
    each whole or not at all (temporary file, fsync, rename); return the paths."""
    from featstore.outputs import check_output, write_text
    from featstore.serialize import dumps

    out = Path(out_dir)
    jpath, cpath, spath = out / f"{name}.json", out / f"{name}.csv", out / f"{name}_summary.csv"
    check_output(out, directory=True)
    for path in (jpath, cpath, spath) if summary_csv else (jpath, cpath):
        check_output(path)
    meta = dict(results.meta, versions=versions(), written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    summary = results.summary()
    meta.setdefault("headline", f"pooled {HEADLINE_METRIC.upper()} over folds and seeds with its 95% speaker CI; "
                                "mean ± std over folds and seeds beside it")
    text = dumps(dict(meta=meta, summary=summary, dropped=results.dropped,
                      dropped_train=results.dropped_train, records=results.records), indent=1)
    per_record = [dict(r, model=meta.get("model", ""), store=";".join(meta.get("stores", [])),
                       protocol=meta.get("protocol", ""), n_classes=len(r.get("labels") or []),
                       chance=chance_level(len(r.get("labels") or []))) for r in results.records]
    write_text(jpath, text)
    write_text(cpath, _csv_text(per_record, CSV_FIELDS + ("store", "protocol", "n_classes", "chance")))
    if not summary_csv:
        return jpath, cpath
    write_text(spath, _csv_text(summary_csv_rows(summary, meta.get("model", "")), SUMMARY_FIELDS))
    return jpath, cpath, spath


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
    """A rich Table of `results.summary()`: one row per (training set, classifier, layer), the
    headline first (pooled UAR with its 95% speaker CI), the mean ± std over folds beside it, the
    classes and chance in the caption (or a column where settings differ), best marked."""
    rows = results.summary()
    sets = {(r["train_set"], r["test_set"]) for r in rows}
    clfs = {r["classifier"] for r in rows}
    if len(sets) == 1:
        (train, test), = sets
        title = f"{title} — train {train}" + (f" → test {test}" if test and test != train else "")
    if len(clfs) == 1:
        title = f"{title} ({next(iter(clfs))})"
    layers = {str(r["layer"]) for r in rows}
    if len(layers) == 1:                  # one layer: said once, in the title
        title = f"{title}, layer {next(iter(layers))}"
    lead = (["train → test"] if len(sets) > 1 else []) + (["classifier"] if len(clfs) > 1 else [])
    return headline_table(rows, lead=lambda r: ([f"{r['train_set']} → {r['test_set']}"] if len(sets) > 1 else [])
                          + ([r["classifier"]] if len(clfs) > 1 else []), lead_columns=lead,
                          title=title.strip(" —"), metric=metric, layer=len(layers) > 1)


def ci_text(r: dict) -> str:
    """"0.471 [0.402, 0.533]", or the pooled value and why it has no interval."""
    if r.get("pooled") is None:
        return "–"
    if r.get("ci_low") is None or r.get("ci_high") is None:
        return f"{r['pooled']:.3f} (no CI)"
    return f"{r['pooled']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def folds_text(r: dict, metric: str = HEADLINE_METRIC) -> str:
    """"0.468 ± 0.031" over folds and seeds, or "single split" (one fold: no std to show)."""
    if r.get("n_folds", r.get("n", 1)) <= 1:
        return "single split"
    return f"{r[metric]:.3f} ± {r[metric + '_std']:.3f}"


def classes_text(r: dict) -> str:
    """"6 (0.167)": classes scored and the chance UAR."""
    return f"{r.get('n_classes', 0)} ({r['chance']:.3f})" if r.get("chance") else f"{r.get('n_classes', 0)}"


def class_names(labels: Sequence[str], room: int = 72) -> str:
    """The class names, when they fit in `room` characters ("" otherwise)."""
    text = ", ".join(labels)
    return text if len(text) <= room else ""


def headline_caption(rows: Sequence[dict], *, what: str = "UAR pooled", folds: bool = True) -> str:
    """What the headline columns mean, with what is constant over `rows`: folds × seeds pooled,
    the CI method and speakers, the classes and chance."""
    if not rows:
        return ""

    def same(key):
        values = {str(r.get(key)) for r in rows}
        return rows[0].get(key) if len(values) == 1 else None

    nf, ns, spk, method = same("n_folds"), same("n_seeds"), same("n_speakers"), same("ci_method")
    if nf == 1:
        over = "a single split" + (f", {ns} seeds pooled" if ns and ns > 1 else "")
    else:
        over = f"pooled over {nf} folds × {ns} seed{'s' * (ns != 1)}" if nf and ns else "pooled over folds × seeds"
    if method and str(method).startswith("none"):
        ci = f"; no CI ({str(method)[len('none: '):]})"
    elif method:
        ci = f"; 95% CI: {method}" + (f" over {spk} speakers" if spk else "")
    else:
        ci = ""
    lines = [f"{what}: every test prediction scored at once ({over}){ci}."]
    if folds:
        lines.append("folds mean ± std: the score of each fold, averaged (population std); "
                     "a single split has no std.")
    labels = same("labels")
    if labels is not None and rows:
        names = class_names(labels)
        chance = rows[0].get("chance")
        lines.append(f"{len(labels)} classes{': ' + names if names else ''}; "
                     + (f"chance UAR {chance:.3f} (1/{len(labels)})." if chance else "no chance level."))
    else:
        lines.append("classes (chance UAR): classes scored, and 1/classes.")
    return "\n".join(lines)


def headline_table(rows: Sequence[dict], *, lead=lambda r: [], lead_columns: Sequence[str] = (), title: str = "",
                   metric: str = HEADLINE_METRIC, layer: bool = True, best: bool = True, others: bool = True):
    """Summary rows (`ProbeResults.summary`) as a rich Table: lead columns, layer, "UAR pooled [95%
    speaker CI]" (the headline), "UAR folds mean ± std" (left out when every row is a single
    split), "WA pooled", "macro-F1 pooled", and where they differ between rows the classes (with
    chance), speakers and folds × seeds; the rest is said in the caption. best: mark the row with
    the highest pooled `metric` per (train_set, test_set, classifier); others: False leaves out
    the WA and macro-F1 columns."""
    name = {"uar": "UAR", "wa": "WA", "macro_f1": "macro-F1"}
    head = name.get(HEADLINE_METRIC, HEADLINE_METRIC)

    def varies(key):
        return len({str(r.get(key)) for r in rows}) > 1

    multi = any(r.get("n_folds", r.get("n", 1)) > 1 for r in rows)
    extra = [(k, h, f) for k, h, f in (("n_classes", "classes (chance UAR)", classes_text),
                                       ("n_speakers", "speakers", lambda r: str(r.get("n_speakers") or "–")),
                                       ("n", "folds × seeds",
                                        lambda r: f"{r.get('n_folds', r['n'])} × {r.get('n_seeds', 1)}"))
             if varies(k) or (k == "n_classes" and varies("labels"))]
    cols = [*lead_columns, *(["layer"] if layer else []), f"{head} pooled [95% speaker CI]",
            *([f"{head} folds mean ± std"] if multi else []),
            *([f"{name['wa']} pooled", f"{name['macro_f1']} pooled"] if others else []),
            *[h for _, h, _ in extra]]
    t = table(*cols, title=title, caption=headline_caption(rows, what=f"{head} pooled", folds=multi) or None,
              caption_justify="left")
    top = {}
    for r in rows:
        key = (r["train_set"], r["test_set"], r["classifier"])
        score = (_num(r.get(metric + "_pooled")), _num(r.get(metric)))
        if key not in top or score > top[key][0]:
            top[key] = (score, r)
    marked = best and len(rows) > 1
    for r in rows:
        mark = marked and r is top[(r["train_set"], r["test_set"], r["classifier"])][1] and \
            sum(1 for x in rows if (x["train_set"], x["test_set"], x["classifier"]) ==
                (r["train_set"], r["test_set"], r["classifier"])) > 1
        cells = [*lead(r), *([f"{r['layer']}{' ★' if mark else ''}"] if layer else []), ci_text(r),
                 *([folds_text(r)] if multi else []),
                 *[("–" if r.get(m + "_pooled") is None else f"{r[m + '_pooled']:.3f}")
                   for m in (("wa", "macro_f1") if others else ())],
                 *[f(r) for _, _, f in extra]]
        t.add_row(*cells, style="bold green" if mark else None)
    at = len(lead_columns) + bool(layer)    # "0.471 [0.402, 0.533]" and "0.468 ± 0.031" kept whole where they fit
    t.columns[at].min_width = max((len(ci_text(r)) for r in rows), default=None)
    if multi:
        t.columns[at + 1].min_width = max(len(folds_text(r)) for r in rows)
    return t


#: a table whose cells would wrap to more lines than this is shown as `key: value` blocks instead
TALL_CELL = 6


def _plain(cell) -> str | None:
    """A cell's text (str or rich Text), None for any other renderable."""
    from rich.text import Text

    return cell.plain if isinstance(cell, Text) else cell if isinstance(cell, str) else None


def _word_lines(text, first: int, rest: int) -> list:
    """`text` (a rich Text, one line) cut at spaces into lines `first` cells wide, then `rest`
    wide; a word is never split: one wider than its line gets a line of its own."""
    import re

    from rich.cells import cell_len

    plain = text.plain
    lines, start, end = [], None, None
    for m in re.finditer(r"\S+", plain):
        room = first if not lines else rest
        if start is not None and cell_len(plain[start:m.end()]) > room:
            lines.append(text[start:end])
            start = None
        if start is None:
            start = m.start()
        end = m.end()
    if start is not None:
        lines.append(text[start:end])
    return lines


class _WordTable:
    """Mixed into rich's Table by `table`: while the terminal has room, every column gets at least
    its longest word (its whole lines in `no_wrap` columns), then, column by column, its
    `min_width` (e.g. "0.471 [0.402, 0.533]" kept on one line), so narrow terminals wrap cells at
    spaces instead of breaking words. When the terminal has no room for every column's longest
    word, or a cell would wrap to more than TALL_CELL lines, the table is printed as one
    `key: value` block per row instead (`_key_values`): no value is ever split mid-word or cut."""

    def _longest_words(self, console) -> list[int] | None:
        """Per column: its longest word (line, in `no_wrap` columns) plus padding; None when a
        cell is not text."""
        from rich.cells import cell_len

        out = []
        for c in self.columns:
            texts = [_plain(x) for x in (c.header, *c.cells)]
            if any(t is None for t in texts):
                return None
            parts = [line for x in texts for line in x.splitlines()] if c.no_wrap else \
                [w for x in texts for w in x.split()]
            out.append(max((cell_len(w) for w in parts), default=0) + self._get_padding_width(c._index))
        return out

    def _narrow(self, console, options) -> bool:
        """Whether this table reads better as `key: value` blocks in `options.max_width` cells."""
        from rich.text import Text

        if not self.columns or not self.rows or self.width is not None:
            return False
        try:
            hard = self._longest_words(console)
            if hard is None:
                return False
            room = options.max_width - self._extra_width
            if sum(hard) > room:
                return True
            widths = self._calculate_column_widths(console, options.update_width(room))
            for c, w in zip(self.columns, widths):
                if c.no_wrap:
                    continue
                inner = max(w - self._get_padding_width(c._index), 1)
                for cell in c.cells:
                    text = cell if isinstance(cell, Text) else Text(cell)
                    if sum(len(_word_lines(Text(line), inner, inner)) for line in text.plain.splitlines()) \
                            > TALL_CELL:
                        return True
        except AttributeError:           # another rich: keep its table
            return False
        return False

    def __rich_console__(self, console, options):
        if self._narrow(console, options):
            yield from self._key_values(console, options)
            return
        # a title or caption with a word wider than the table is written at the terminal's width
        # (rich would fold it at the table's)
        from rich.cells import cell_len
        from rich.style import Style

        try:
            room = options.max_width - self._extra_width
            inside = sum(self._calculate_column_widths(console, options.update_width(room))) + self._extra_width
        except AttributeError:
            inside = options.max_width
        outside = []
        for name, style in (("title", "table.title"), ("caption", "table.caption")):
            text = getattr(self, name)
            words = (_plain(text) or "").split()
            if words and max(cell_len(w) for w in words) > inside:
                outside.append((name, text, Style.pick_first(getattr(self, name + "_style"), style)))
        for name, _, _ in outside:
            setattr(self, name, None)
        try:
            title = next((x for x in outside if x[0] == "title"), None)
            if title:
                yield console.render_str(title[1], style=title[2], highlight=False) if isinstance(title[1], str) \
                    else title[1]
            yield from super().__rich_console__(console, options)
            caption = next((x for x in outside if x[0] == "caption"), None)
            if caption:
                yield console.render_str(caption[1], style=caption[2], highlight=False) \
                    if isinstance(caption[1], str) else caption[1]
        finally:
            for name, text, _ in outside:
                setattr(self, name, text)

    def _key_values(self, console, options):
        """The table as text: its title, then per row `header: value` lines (the first column's
        line first, the others indented, short ones sharing a line; a value's further lines
        indented more), blocks separated by a blank line, then the caption. Without headers, each row is one line
        `first cell: the other cells`."""
        from rich.cells import cell_len
        from rich.style import Style
        from rich.text import Text

        width = options.max_width

        def annotation(text, style, justify):
            rendered = console.render_str(text, style=style, highlight=False) if isinstance(text, str) else text
            rendered = rendered.copy()
            rendered.justify = justify
            return rendered

        if self.title:
            yield annotation(self.title, Style.pick_first(self.title_style, "table.title"), self.title_justify)
        heads = [" ".join((_plain(c.header) or "").split()) for c in self.columns]
        columns = [list(c.cells) for c in self.columns]
        for r, row in enumerate(self.rows):
            cells = [c[r] if r < len(c) else "" for c in columns]
            values = [x.copy() if isinstance(x, Text) else Text(x) for x in cells]
            if row.style:
                for v in values:
                    v.stylize(row.style)
            if not self.show_header:
                first, *rest = values
                pairs = [(first.plain, Text("  ").join(v for v in rest if v.plain))]
                indent = ""
            else:
                pairs = [(h, v) for h, v in zip(heads, values) if v.plain.strip()]
                indent = "  "
                if r and self.show_header:
                    yield Text("")
            packed = None                # short pairs after the first share a line, 3 spaces apart
            for k, (key, value) in enumerate(pairs):
                lead = ("" if k == 0 else indent) + (f"{key}: " if key else "")
                pair = Text.assemble(f"{key}: " if key else "", value)
                if k and "\n" not in value.plain and cell_len(indent) + cell_len(pair.plain) <= width:
                    if packed is not None and cell_len(packed.plain) + 3 + cell_len(pair.plain) <= width:
                        packed.append_text(Text.assemble("   ", pair))
                        continue
                    if packed is not None:
                        yield packed
                    packed = Text.assemble(indent, pair)
                    continue
                if packed is not None:
                    yield packed
                    packed = None
                hang = " " * (len(indent) + 2)
                lines = []
                for part in value.split("\n"):
                    room = width - (cell_len(lead) if not lines else len(hang))
                    got = _word_lines(part, room, width - len(hang))
                    if not lines and got and cell_len(got[0].plain) > room:   # the lead alone on its line
                        lines.append(Text(""))
                        got = _word_lines(part, width - len(hang), width - len(hang))
                    lines += got
                for i, line in enumerate(lines or [Text("")]):
                    if i == 0:
                        yield Text.assemble((lead.rstrip() if not line.plain else lead,
                                             Style(bold=True) if k == 0 and self.show_header else ""), line)
                    else:   # further lines hang under the key; a word wider than that starts at the edge
                        pad = hang if cell_len(line.plain) + len(hang) <= width else ""
                        yield Text.assemble(pad, line)
            if packed is not None:
                yield packed
        if self.caption:
            yield annotation(self.caption, Style.pick_first(self.caption_style, "table.caption"),
                             self.caption_justify)

    def _calculate_column_widths(self, console, options):
        from rich.cells import cell_len

        widths = super()._calculate_column_widths(console, options)
        try:
            hard, soft, body = [], [], []
            for c, w in zip(self.columns, widths):
                cells = [getattr(x, "plain", x) for x in (c.header, *c.cells)]
                texts = [x for x in cells if isinstance(x, str)]
                parts = [line for x in texts for line in x.splitlines()] if c.no_wrap else \
                    [w for x in texts for w in x.split()]
                pad = self._get_padding_width(c._index)
                hard.append(max((cell_len(w) for w in parts), default=0) + pad)
                soft.append(max(hard[-1], (c.min_width or 0) + pad))
                lines = [line for x in texts[1:] for line in x.splitlines()]   # the cells, not the header
                body.append(max([cell_len(x) + pad for x in lines] + [soft[-1]]) if len(texts) == len(cells) else w)
        except AttributeError:           # another rich: keep its widths
            return widths
        room = options.max_width
        if sum(hard) > room or (all(w >= f for w, f in zip(widths, soft)) and sum(widths) <= room):
            return widths
        floors = list(hard)
        for i, want in enumerate(soft):  # soft floors in column order, while they fit
            if sum(floors) - floors[i] + want <= room:
                floors[i] = want
        # headers wrap first (down to each column's widest cell), then cells: widest surplus first
        new = [min(max(w, b, f), room) for w, b, f in zip(widths, body, floors)]
        for lower in ([max(b, f) for b, f in zip(body, floors)], floors):
            while sum(new) > room:
                wide = [j for j in range(len(new)) if new[j] > lower[j]]
                if not wide:
                    break
                i = max(wide, key=lambda j: new[j] - lower[j])
                new[i] -= 1
        return new


def table(*columns, title: str = "", **kw):
    """A rich Table whose cells wrap at spaces, never breaking a word while the terminal has room
    for every column's longest word, and fold (rather than cut to "...") when it has not.

    columns: header strings, or rich `Column`s (kept as given).
    """
    from rich.table import Column, Table

    global _Table
    if _Table is None:
        _Table = type("Table", (_WordTable, Table), {})
    t = _Table(title=title, **kw)
    for c in columns:
        if isinstance(c, Column):
            c._index = len(t.columns)
            t.columns.append(c)
        else:
            t.add_column(c, overflow="fold")
    return t


_Table = None


def settings_tag(settings: dict) -> str:
    """8 hex digits naming a run's settings (same settings, same tag): sha256 of their JSON."""
    import hashlib

    from featstore.serialize import dumps

    return hashlib.sha256(dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def forced_dir(out: Path, force: bool) -> Path:
    """The folder a run writes into: `out`, or, for a forced re-run (`force`) whose default folder
    already holds the run registered before, the first free `out-2`, `out-3`, ... beside it: a forced
    re-run never replaces the files of the run registered before."""
    base, i = Path(out), 1
    out = base
    while force and out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """`out` as a results directory, checked before any work: refused when it already holds
    files, unless `overwrite` (results are never silently replaced). The writers create it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SerError(f"{out} already holds results; pass --overwrite to replace them, or another --out")
    return out


# -- a registered configuration as the study file cell that re-creates it -------------------------

#: a probe's registered configuration key -> its study file [[cells]] key (classifiers.runs.study.CELL_KEYS)
_PROBE_CELL_KEYS = {"corpus": "corpus", "train": "train", "test": "test", "protocol": "protocol", "layers": "layers",
                    "stat": "stat", "C": "C", "classes": "classes",
                    "shuffle_labels": "shuffle_labels", "classifier": "classifiers", "model": "models"}


def _toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value) -> str:
    """`value` (a registered configuration's JSON value) as a TOML value: strings quoted (JSON's
    escapes are TOML's), numbers exactly (`repr`), booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else {float("inf"): "inf", float("-inf"): "-inf"}.get(value, repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return json.dumps(str(value))


def study_cell(kind: str, config: dict) -> str:
    """A registered run's configuration as the study file `[[cells]]` entry that would re-create it.

    probe: the keys `ser study run` reads (`classifier` as `classifiers`, `model` as `models`; a
    probe option, `params`, as its own keys: class_weight, speaker_norm, early_stopping); keys
    that are None or an empty list are left out (their defaults). Other kinds: `kind = "..."` and
    their configuration as registered (a study file's cell of that kind). TOML has no null, so a
    None value is left out: it is each option's default."""
    lines = ["[[cells]]"]
    if kind == "probe":
        cell = {_PROBE_CELL_KEYS.get(k, k): v for k, v in config.items() if k not in ("params", "seeds")}
        if "seeds" in config:            # keyed as a count N (seeds 0..N-1) or the list: the cell's `seed` spec
            from featstore.options import seeds_spec

            n = config["seeds"]
            cell["seed"] = seeds_spec(list(range(n)) if isinstance(n, int) else list(n))
        cell.update(config.get("params") or {})
    else:
        lines.append(f"kind = {toml_value(kind)}")
        cell = dict(config)
    lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in cell.items() if v is not None and v != []]
    return "\n".join(lines)
