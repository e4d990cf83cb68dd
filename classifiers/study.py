"""Registered probe runs and study files: a whole comparison declared in one TOML file.

`registered_probe` is `ser probe` with the run registry: an identical configuration over identical
stores returns the registered run (unless `force`); a new run is registered with its scores and
predictions. `run_study` runs every cell of a study file that way (extracting missing stores
when the corpus root is known), skips cells already registered, and writes the HTML report.

A study file (see examples/diary-study.toml):

    [study]
    name = "diary"                  # the report's title
    models = ["facebook/wav2vec2-base"]
    classifiers = ["logreg"]
    layers = "all"                  # as --layer
    seeds = 3
    [[cells]]                       # one cell per comparison: a probe invocation
    corpus = "ravdess"              # tested on its speaker-independent folds ...
    train = ["ravdess", "ravdess,emodb", "ravdess,emodb,emovo"]   # ... trained on each of these
    protocol = "luna5"
    [[cells]]
    train = ["ravdess"]
    test = "cremad"                 # cross-corpus
    classes = "shared"

Every [[cells]] key overrides the [study] default of the same name; each cell runs once per
model and classifier.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featstore.errors import SerError

#: the `run_probe` options that make a probe's configuration (and its registry key)
CONFIG_KEYS = ("corpus", "train", "test", "classifier", "layers", "protocol", "stat", "seeds", "C", "classes",
               "shuffle_labels", "model")
CELL_KEYS = ("corpus", "train", "test", "protocol", "stat", "seeds", "C", "classes", "layers", "classifiers",
             "models", "shuffle_labels")


class StudyError(SerError):
    """A study file that cannot be run (the message names the file and the key)."""


# -- what each key's value must be: one row per key, checked before anything runs ------------------------------

def _text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _texts(v) -> bool:
    return _text(v) or (isinstance(v, list) and len(v) > 0 and all(_text(x) for x in v))


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_LAYER_SPEC = re.compile(r"\s*(all|\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*)\s*")


def _layers(v) -> bool:
    if isinstance(v, list):
        return len(v) > 0 and all(_whole(x) and x >= 0 for x in v)
    return (_whole(v) and v >= 0) or (isinstance(v, str) and _LAYER_SPEC.fullmatch(v) is not None)


def _plain_name(v) -> bool:
    """A file name of its own: no directory part, not '.' or '..', nothing a file system would refuse."""
    return (_text(v) and v == v.strip() and len(v) <= 200 and v not in (".", "..")
            and not any(c in v for c in "/\\\0:") and not v.startswith("-"))


#: key -> (check, what a valid value is). [study] and [[cells]] share the rows.
KEY_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (_plain_name, 'a plain name for the report file (no "/", "\\", ":" or "..", not starting with "-"), '
                          'e.g. "diary"'),
    "corpus": (_text, 'a corpus name, e.g. "ravdess"'),
    "train": (_texts, 'a training set or a list of them, e.g. ["ravdess", "ravdess,emodb"]'),
    "test": (_text, 'a test corpus (or comma-separated corpora), e.g. "cremad"'),
    "protocol": (_text, 'a protocol name, e.g. "luna5"'),
    "stat": (lambda v: v in ("mean", "std", "mean+std"), '"mean", "std" or "mean+std"'),
    "seeds": (lambda v: _whole(v) and v >= 1, "a whole number of seeds, 1 or more, e.g. 3"),
    "C": (lambda v: (_whole(v) or isinstance(v, float)) and math.isfinite(v) and v > 0,
          "a finite number above 0, e.g. 1.0 (leave it out to search C)"),
    "classes": (_text, '"shared", "all" or a comma-separated list of labels'),
    "layers": (_layers, '"all", a layer number (0 or more), or layers such as "6,12", "3-9" or [6, 12]'),
    "classifiers": (_texts, 'a classifier name or a list of them, e.g. ["logreg", "xgboost"]'),
    "models": (_texts, 'a model (hub id or local directory) or a list of them'),
    "shuffle_labels": (lambda v: isinstance(v, bool), "true or false"),
    "report": (_text, 'an .html file, e.g. "results/diary.html"'),
    "cache": (_text, "a directory"),
    "db": (_text, "a registry file, e.g. \"results/ser.db\""),
}


def _shown(v) -> str:
    """A TOML value as the user wrote it, more or less (strings quoted, lists bracketed)."""
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(v)


def _check_types(path: Path, where: str, table: dict) -> None:
    for key, value in table.items():
        check, expected = KEY_TYPES.get(key, (None, ""))
        if check is not None and not check(value):
            raise StudyError(f"{path}: {where} {key} = {_shown(value)}: expected {expected}")


@dataclass
class Registered:
    """One probe configuration: its registry row, its results, and whether it was re-used."""

    run: dict
    results: object
    reused: bool
    files: list[Path] = field(default_factory=list)


def command_line() -> str:
    return shlex.join(["ser", *sys.argv[1:]])


def _needed(corpus: str | None, train: Sequence[str], test: str | None) -> list[str]:
    sets = [c for t in (train or [corpus]) for c in t.split(",") if c]
    return list(dict.fromkeys(sets + [c for c in (test or corpus or "").split(",") if c]))


def fingerprints(cache, model: str, corpora: Sequence[str]) -> list[dict]:
    """`store_fingerprint` of each corpus' store for `model`."""
    from classifiers.probe import store_for
    from classifiers.registry import store_fingerprint
    from featstore.store import open_store

    return [store_fingerprint(open_store(store_for(cache, model, c))) for c in corpora]


def registered_files(run: dict) -> bool:
    """Whether a registered run's results file is still there (a deleted one is run again)."""
    return _results_json(run).exists()


def _results_json(run: dict) -> Path:
    return Path(run["out"]) / {"finetune": "finetune.json", "evaluate": "evaluate.json"}.get(run["kind"], "probe.json")


def load_registered(run: dict):
    """The `ProbeResults` of a registered run, read back from its files (predictions included)."""
    from classifiers.predictions import read_predictions
    from classifiers.results import read_results

    json_path = _results_json(run)
    if not json_path.exists():
        raise SerError(f"run {run['id']}: {json_path} is gone; re-run its command: {run['command']}")
    results = read_results(json_path)
    if run.get("predictions"):
        if not Path(run["predictions"]).exists():
            raise SerError(f"run {run['id']}: its predictions {run['predictions']} are gone (the scores and their "
                           f"intervals need them); re-run its command: {run['command']}")
        cols = read_predictions(run["predictions"], sha256=run.get("predictions_sha256") or None)
        results.predictions = [{k: v.tolist() for k, v in cols.items()}]
    return results


def registered_probe(corpus: str | None, *, model: str, cache, registry, force: bool = False,
                     train: Sequence[str] | None = None, test: str | None = None, layers: str = "all",
                     classifier: str = "logreg", protocol: str | None = None, stat: str = "mean", seeds: int = 1,
                     C: float | None = None, classes: str | None = None, shuffle_labels: bool = False,
                     out=None, overwrite: bool = False, device: str | None = None, progress: bool = False,
                     command: str = "", params: dict | None = None) -> Registered:
    """`run_probe` on one test corpus, through the registry `registry` (a `Registry`).

    The configuration (CONFIG_KEYS) and the fingerprints of the stores read make the run's key:
    a registered run with the same key is returned (reused=True) unless `force`. Otherwise the
    probe runs, writes its files (`out`, default `default_out`) and is registered.
    """
    from classifiers.probe import default_out, run_probe
    from classifiers.registry import run_key
    from featstore.config import default_protocol

    protocol = protocol or (default_protocol(corpus) if corpus else None)
    train = list(train or [])
    config = dict(corpus=corpus, train=train, test=test, classifier=classifier, layers=layers, protocol=protocol,
                  stat=stat, seeds=seeds, C=C, classes=classes, shuffle_labels=shuffle_labels, model=model)
    if params:  # probe options join the key only when set, so runs registered without them keep their key
        config["params"] = dict(sorted(params.items()))
    stores = fingerprints(cache, model, _needed(corpus, train, test))
    found = None if force else registry.find("probe", config, stores)
    if found is not None and registered_files(found):
        return Registered(found, load_registered(found), reused=True)
    settings = {k: v for k, v in config.items() if k != "model"}
    if out is None:
        out = default_out("probe", corpus or f"{'+'.join(train)}-to-{test}", model, settings)
        base, i = out, 1
        while force and out.exists():  # a forced re-run never replaces the files of the run registered before
            i += 1
            out = base.with_name(f"{base.name}-{i}")
    try:
        run = run_probe(corpus, layers=layers, classifier=classifier, protocol=protocol, stat=stat,
                        train=train or None, test=[test] if test else None, seeds=seeds, model=model, cache=cache,
                        out=out, C=C, device=device, shuffle_labels=shuffle_labels, classes=classes,
                        overwrite=overwrite, progress=progress, params=params)
        predictions = next((f for f in run.files if f.suffix == ".parquet"), None)
        run_id = registry.register(kind="probe", config=config, stores=stores, results=run.results,
                                   command=command, out=out, predictions=predictions)
    except BaseException:
        registry.release(run_key("probe", config, stores))  # a failed run never blocks an identical one
        raise
    return Registered(registry.run(run_id), run.results, reused=False, files=run.files)


# ---------------------------------------------------------------------------------------------
# study files
# ---------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One probe configuration of a study."""

    model: str
    classifier: str
    options: dict

    def describe(self) -> str:
        o = self.options
        where = (f"train {' | '.join(o['train'])}" if o.get("train") else "") + \
                (f" → {o['test']}" if o.get("test") else f" on {o.get('corpus')}")
        classes = f", classes {o['classes']}" if o.get("classes") else ""
        return f"{self.classifier}, {self.model}: {where.strip()}{classes}"


def read_study(path: str | Path) -> tuple[dict, list[Cell]]:
    """The study file's [study] table and its cells (one per [[cells]] x model x classifier)."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StudyError(f"cannot read the study file {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path} is not valid TOML ({e})") from e
    head = data.get("study", {})
    if not isinstance(head, dict):
        raise StudyError(f"{path}: study = {_shown(head)}: expected a [study] table")
    unknown = sorted(set(head) - set(CELL_KEYS) - {"name", "cache", "db", "report"})
    if unknown:
        raise StudyError(f"{path}: unknown [study] key(s) {', '.join(unknown)}; use {', '.join(CELL_KEYS)}")
    _check_types(path, "[study]", head)
    if not data.get("cells"):
        raise StudyError(f"{path} declares no [[cells]]; add at least one (see examples/diary-study.toml)")
    if not isinstance(data["cells"], list):
        raise StudyError(f"{path}: cells = {_shown(data['cells'])}: expected [[cells]] tables, one per comparison")
    cells = []
    for i, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict):
            raise StudyError(f"{path}: cell {i + 1} = {_shown(raw)}: expected a table of keys (a [[cells]] section)")
        bad = sorted(set(raw) - set(CELL_KEYS))
        if bad:
            raise StudyError(f"{path}: cell {i + 1} has unknown key(s) {', '.join(bad)}; use {', '.join(CELL_KEYS)}")
        _check_types(path, f"cell {i + 1}", raw)
        merged = {**{k: v for k, v in head.items() if k in CELL_KEYS}, **raw}
        if not merged.get("corpus") and not merged.get("train"):
            raise StudyError(f"{path}: cell {i + 1} names neither corpus nor train")
        models = _as_list(merged.pop("models", None)) or [None]
        classifiers = _as_list(merged.pop("classifiers", None)) or ["logreg"]
        merged["train"] = _as_list(merged.get("train"))
        if "layers" in merged:
            layers = merged["layers"]
            merged["layers"] = ",".join(map(str, layers)) if isinstance(layers, list) else str(layers)
        if "C" in merged:
            merged["C"] = float(merged["C"])  # as `ser probe --C 1` registers it
        cells.extend(Cell(m, c, dict(merged)) for m, c in itertools.product(models, classifiers))
    return head, cells


def _as_list(value) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def ensure_store(cache, model: str, corpus: str, *, device: str = "auto", progress: bool = False) -> bool:
    """Extract `corpus` with `model` into `cache` unless its store is there; True if it extracted."""
    from classifiers.probe import store_for
    from featstore.config import resolve_root
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.store import StoreError

    try:
        store_for(cache, model, corpus)
        return False
    except StoreError:
        pass
    extract_manifest(load_manifest(corpus, resolve_root(corpus)), model=model, cache=cache, device=device,
                     progress=progress)
    return True


def run_study(path: str | Path, *, cache, registry, default_model: str, force: bool = False,
              device: str | None = None, report: str | Path | None = None,
              on_cell: Callable[[Cell, Registered], None] | None = None, progress: bool = False):
    """Run every cell of the study file `path`; return (cells' `Registered`s, report path).

    Cells already registered are re-used (unless `force`); missing stores are extracted first
    (the corpus root must be configured, see `ser config`). The report (default
    `results/study-<name>.html`) holds every cell's run.
    """
    from classifiers.report import write_report

    head, cells = read_study(path)
    report_path(path, head, report)  # a bad report path fails before any work
    done = []
    for cell in cells:
        model = cell.model or default_model
        o = dict(cell.options)
        for c in _needed(o.get("corpus"), o.get("train"), o.get("test")):
            ensure_store(cache, model, c, device=device or "auto", progress=progress)
        reg = registered_probe(o.pop("corpus", None), model=model, cache=cache, registry=registry, force=force,
                               classifier=cell.classifier, device=device, progress=progress,
                               command=command_line(), **o)
        done.append(reg)
        if on_cell:
            on_cell(cell, reg)
    page = write_report([(r.run, r.results) for r in done], report_path(path, head, report),
                        title=f"study {head.get('name', Path(path).stem)}")
    return done, page


def report_path(path: str | Path, head: dict, report: str | Path | None = None) -> Path:
    """Where a study's report goes: `report` (--report), the file's `report` key, or
    results/study-<name>.html; checked as an output (an .html file, not a directory or a system path)."""
    from featstore.outputs import check_output, inside

    if report is not None:
        return check_output(report, option="--report", suffixes=(".html", ".htm"))
    if head.get("report"):
        return check_output(head["report"], option=f"{path}: [study] report", suffixes=(".html", ".htm"))
    name = head.get("name", Path(path).stem)
    if not _plain_name(name):  # a file stem is a plain name, a [study] name was checked by read_study
        raise StudyError(f"{path}: [study] name = {_shown(name)}: expected {KEY_TYPES['name'][1]}")
    out = inside("results", f"study-{name}.html", what=f"{path}: the report of study")
    return check_output(out, option=f"{path}: the report", suffixes=(".html",))
