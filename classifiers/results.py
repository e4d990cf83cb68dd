"""Probe results as files (JSON with everything needed to reproduce, CSV one row per record) and tables."""

from __future__ import annotations

import csv
import json
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifiers.metrics import mean_std, scores
from featstore.serialize import write_json


def make_record(*, layer, fold: str, y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                n_train: int, **extra) -> dict:
    """The one record every classifier writes: one scored (setting, layer, classifier, fold, seed).

    Keys: layer (int, or a string such as "e2e" / "mix:..."), fold, n_train, n_test, wa, uar,
    macro_f1, recall {label: recall}, confusion (nested lists, rows true), labels (scored label
    order), plus `extra` (classifier, seed, train_set, test_set, shuffled, C, ...).
    """
    s = scores(y_true, y_pred, labels)
    return dict(layer=layer, fold=str(fold), n_train=int(n_train), n_test=int(len(y_true)), **s, **extra)


@dataclass
class ProbeResults:
    """One record per (layer, classifier, fold, seed) plus what was dropped and how it was run."""

    records: list[dict] = field(default_factory=list)
    dropped: dict = field(default_factory=dict)      # fold -> {label: test rows dropped}
    meta: dict = field(default_factory=dict)

    def extend(self, other: ProbeResults) -> None:
        self.records.extend(other.records)
        self.dropped.update(other.dropped)

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
              "n_train", "n_test", "C", "shuffled")


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import xgboost

    import featstore

    return dict(ser=featstore.__version__, python=platform.python_version(), numpy=numpy.__version__,
                sklearn=sklearn.__version__, torch=torch.__version__, xgboost=xgboost.__version__)


def write_results(results: ProbeResults, out_dir: str | Path, name: str = "probe") -> tuple[Path, Path]:
    """Write `<name>.json` (meta, summary, records, dropped) and `<name>.csv`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(results.meta, versions=versions(), written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    jpath = out / f"{name}.json"
    write_json(jpath, dict(meta=meta, summary=results.summary(), dropped=results.dropped, records=results.records))
    cpath = out / f"{name}.csv"
    with cpath.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS + ("store", "protocol"), extrasaction="ignore")
        w.writeheader()
        for r in results.records:
            w.writerow(dict(r, store=";".join(meta.get("stores", [])), protocol=meta.get("protocol", "")))
    return jpath, cpath


def read_results(path: str | Path) -> ProbeResults:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return ProbeResults(records=data["records"], dropped=data.get("dropped", {}), meta=data.get("meta", {}))


def summary_table(results: ProbeResults, metric: str = "uar", title: str = ""):
    """A rich Table: one row per (training set, classifier, layer), mean ± std, best marked."""
    from rich.table import Table

    rows = results.summary()
    sets = {(r["train_set"], r["test_set"]) for r in rows}
    clfs = {r["classifier"] for r in rows}
    cols = (["train → test"] if len(sets) > 1 else []) + (["classifier"] if len(clfs) > 1 else [])
    if len(sets) == 1:
        (train, test), = sets
        title = f"{title} — train {train}" + (f" → test {test}" if test and test != train else "")
    if len(clfs) == 1:
        title = f"{title} ({next(iter(clfs))})"
    t = Table(*cols, "layer", "WA", "UAR", "macro-F1", "n", title=title.strip(" —"))
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
