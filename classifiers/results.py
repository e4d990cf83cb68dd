"""Probe results as files (JSON with everything needed to reproduce, CSV one row per record) and tables."""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path

from classifiers.evaluate import ProbeResults
from featstore.serialize import write_json

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
