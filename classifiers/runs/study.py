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

A cell's `kind` (default "probe") is any run kind the registry holds: "probe" (with `target` and
`alpha`, a dimensional probe: `classifiers.runs.dimensional`), "matrix" (`probe.registered_matrix`),
"neighbors" (`neighbors.registered_neighbors`), "finetune" (`registered_finetune`) or "evaluate"
(`evaluate.evaluate_model`). It takes exactly the keys of that kind (`kind_keys`, derived from those
functions' signatures and `FinetuneConfig`); a [study] key is the default of the cells whose kind
has it. `ser results show ID` prints any registered run as the cell that re-creates it.

    [[cells]]
    kind = "matrix"
    corpora = ["ravdess", "emodb", "cremad"]
    layer = 12

The study ends with its paper table (`classifiers.results.tables`): rows model x training set, columns
test corpus or layer, each cell the pooled UAR with its 95% speaker CI, a dagger where a cell
differs from its column's reference after Holm; printed, written beside the report as .md, .tex
(booktabs) and .csv, and leading the report. `table = {rows = ["model", "train"], columns = "test",
layer = 12}` in [study] chooses the pivot (default: what varies across the cells).

Figures: `formats = ["png", "pdf"]` in [study] (or `ser study run --format png,pdf`) writes every
run's figures in those formats; a registered run re-used gets the formats its folder lacks.

Where the cells run: `executor = "local"` (default: one after another, in this process),
`"local:N"`, `"dask://HOST:PORT"` or `"slurm"` (with an [executor] table), in [study] or as
`ser study run --executor`. On a Dask executor the study is a task graph (`plan_study`): one
extraction task per missing (model, corpus) store, one task per cell depending on the stores it
reads; workers write each run's folder whole (a temporary name renamed into place) and this
process registers each run as its task finishes (`classifiers.runs.executor`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifiers.results.runfiles import (  # noqa: F401 - re-exported: callers import them from here too
    Registered,
    _needed,
    _results_json,
    command_line,
    fingerprints,
    load_registered,
    registered_files,
)
from classifiers.runs.probe import (  # noqa: F401 - re-exported: registered probe runs were imported from here
    complete_figures,
    probe_config,
    registered_probe,
)
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


def _layers(v) -> bool:
    if isinstance(v, list):
        return len(v) > 0 and all(_whole(x) and x >= 0 for x in v)
    from classifiers.runs.configs import layer_spec_problem

    return (_whole(v) and v >= 0) or (isinstance(v, str) and layer_spec_problem(v) is None)


def _seed_spec(v) -> bool:
    from featstore.options import seed_spec_problem

    return seed_spec_problem(v) is None


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
    "seed": (lambda v: (_whole(v) and v >= 0) or (isinstance(v, str) and _seed_spec(v)),
             'a seed or seeds, one run each: 0, "0-4" or "0,2,5"'),
    "seeds": (lambda v: _whole(v) and v >= 1, "a whole number of seeds, 1 or more, e.g. 3 (deprecated: seed = \"0-2\")"),
    "C": (lambda v: (_whole(v) or isinstance(v, float)) and math.isfinite(v) and v > 0,
          "a finite number above 0, e.g. 1.0 (leave it out to search C)"),
    "classes": (_text, '"shared", "all" or a comma-separated list of labels'),
    "layers": (_layers, '"all", a layer number (0 or more), or layers such as "6,12", "3-9" or [6, 12]'),
    "classifiers": (_texts, 'a classifier name or a list of them, e.g. ["logreg", "xgboost"]'),
    "models": (_texts, 'a model (hub id or local directory) or a list of them'),
    "shuffle_labels": (lambda v: isinstance(v, bool), "true or false"),
    "corpora": (_texts, 'corpora, e.g. ["ravdess", "emodb"] (or "ravdess,emodb")'),
    "layer": (lambda v: (_whole(v) and v >= 0) or (isinstance(v, str) and v.strip().isdigit()),
              "one layer number, e.g. 12"),
    "k": (lambda v: _whole(v) and v >= 1, "a whole number of neighbours, 1 or more, e.g. 10"),
    "model": (_text, "a model (hub id or local directory)"),
    "classifier": (_text, 'a classifier name, e.g. "logreg"'),
    "model_dir": (_text, "a saved probe (ser probe --save-probe) or a fine-tuned model directory"),
    "model_sha256": (_text, "the model's digest, as ser results show prints it"),
    "backbone": (_text, "a local backbone directory"),
    "fold": (lambda v: _text(v) or _whole(v), 'a fold name or index, e.g. "luna-0"'),
    "maps": (lambda v: isinstance(v, dict) and all(_text(k) and _text(x) for k, x in v.items()),
             'a table of class renames, e.g. {calm = "neutral"}'),
    "drop": (_texts, 'a class or a list of classes, e.g. ["surprise"]'),
    "target": (_text, '"emotion", "arousal", "valence", "dominance" or "avd"'),
    "alpha": (lambda v: (_whole(v) or isinstance(v, float)) and math.isfinite(v) and v > 0,
              "a finite number above 0, e.g. 1.0 (leave it out to search alpha)"),
    "class_weight": (lambda v: v == "balanced", '"balanced" (or leave it out)'),
    "speaker_norm": (lambda v: isinstance(v, bool), "true or false"),
    "early_stopping": (lambda v: isinstance(v, bool), "true or false"),
    "report": (_text, 'an .html file, e.g. "results/diary.html"'),
    "cache": (_text, "a directory"),
    "db": (_text, "a registry file, e.g. \"team/ser.db\""),
    "formats": (lambda v: _formats_problem(v) is None, '"png", "pdf", "svg" or several, e.g. ["png", "pdf"] '
                                                        'or "png,pdf"'),
    "executor": (lambda v: isinstance(v, str) and _executor_problem(v) is None,
                 '"local", "local:N", "dask://HOST:PORT" or "slurm"'),
}


def _formats_problem(v) -> str | None:
    from classifiers.results.plots import FigureFormatError, parse_formats

    if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
        return "not a string or a list of strings"
    try:
        parse_formats(v)
    except FigureFormatError as e:
        return str(e)
    return None


def _executor_problem(v: str) -> str | None:
    from classifiers.runs.executor import executor_problem

    return executor_problem(v)


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
class Rerun:
    """`rerun`'s answer: the registered run re-executed, the new run, and whether every score is equal."""

    before: dict
    after: Registered
    identical: bool
    largest: float             # the largest |difference| between matching score rows (0.0 when identical)


def _store_changes(before: Sequence[dict], now: Sequence[dict]) -> list[str]:
    """What differs between the store fingerprints a run was registered with and the stores now."""
    changes = []
    for old, new in zip(before, now):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if keys:
            changes.append(f"{old.get('corpus', '?')}: " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}"
                                                                     for k in keys[:3]))
    if len(before) != len(now):
        changes.append(f"{len(before)} store(s) registered, {len(now)} now")
    return changes


def rerun(run: dict, *, cache, registry, device: str | None = None, progress: bool = False) -> Rerun:
    """Execute a registered probe, matrix (categorical or dimensional) or neighbors run again from
    its stored configuration (`classifiers.runs.configs`: `from_key`), into a new folder, and say whether its scores are identical (issue 22, item 4).
    The stores must still match the fingerprints the run was registered with; what changed is one
    SerError line."""
    from classifiers.runs.configs import CONFIGS
    from featstore.store import StoreError

    if run["kind"] not in CONFIGS:
        raise SerError(f"run {run['id']} is a {run['kind']} run; ser results rerun re-executes "
                       f"{', '.join(CONFIGS)} runs (run again with its command: {run['command']})")
    config = CONFIGS[run["kind"]].from_key(run["config"])
    if run["kind"] == "evaluate" and config.key()["model_sha256"] != run["config"].get("model_sha256"):
        raise SerError(f"run {run['id']}: the model in {config.model_dir} changed since it was registered (its "
                       f"content digest differs); a re-run would not be the same run")
    try:
        now = config.current_stores(cache)
    except (StoreError, OSError) as e:
        raise SerError(f"run {run['id']}: its stores cannot be read now ({e}); it cannot be re-run as registered") from e
    changed = _store_changes(run["stores"], now)
    if changed:
        raise SerError(f"run {run['id']}: its stores changed since it was registered ({'; '.join(changed)}); a re-run "
                       f"would not be the same run (run its command for a new one: {run['command']})")
    common = dict(cache=cache, registry=registry, force=True, progress=progress, command=f"ser results rerun {run['id']}")
    if run["kind"] == "neighbors":
        nb = config.run(**common)
        after = Registered(nb.run, nb.results, reused=False, files=list(nb.files))
    elif run["kind"] == "evaluate":
        res = config.run(device=device or "auto", **common)
        after = Registered(registry.run(res.run_id), res.results, reused=False, files=list(res.files))
    else:
        after = config.run(device=device, **common)
        after = after[0] if run["kind"] == "matrix" else after

    def rows(run_id):
        return {(r["train_set"], r["test_set"], r["layer"], r["classifier"], r["fold"], r["seed"], r["metric"]):
                r["value"] for r in registry.scores(run_id)}

    old, new = rows(run["id"]), rows(after.run["id"])
    common = set(old) & set(new)
    largest = max((abs(old[k] - new[k]) for k in common if old[k] is not None and new[k] is not None), default=0.0)
    return Rerun(run, after, identical=old == new, largest=float(largest))


# ---------------------------------------------------------------------------------------------
# study files
# ---------------------------------------------------------------------------------------------

#: the settings a [[cells]] entry may not give: where a run goes and how it is computed, not what
#: it computes (the study decides them: --cache, --db, --device, --force, default folders)
RUNTIME_KEYS = frozenset({"cache", "registry", "force", "out", "overwrite", "device", "progress", "command", "params",
                          "root", "config"})
#: fine-tuning settings that never change a score: a registered fine-tune differing only in these is the same run
FINETUNE_UNSCORED = ("progress", "plots", "resume", "logging_steps", "report_to", "num_workers", "device")
#: what a kind's cell multiplies over: `models` (each model a run) for kinds with `model`,
#: `classifiers` for kinds with `classifier`
MULTIPLIERS = {"model": "models", "classifier": "classifiers"}


def _signature(fn) -> list[str]:
    """The options of `fn` a cell may give: its parameters less what the study decides (RUNTIME_KEYS)."""
    import inspect

    return [k for k in inspect.signature(fn).parameters if k not in RUNTIME_KEYS]


def _probe_params() -> list[str]:
    """The probe options a cell gives as its own keys (registered as `params`): every classifier's."""
    from classifiers.runs.crossval import PROBE_OPTIONS

    return list(dict.fromkeys(k for keys in PROBE_OPTIONS.values() for k in keys))


def _finetune_fields() -> list[str]:
    """`FinetuneConfig`'s fields: `ser finetune`'s options, the model and the device (a cell's own
    device wins over `ser study run --device`)."""
    from dataclasses import fields

    from classifiers.finetuning.finetune import FinetuneConfig

    return [f.name for f in fields(FinetuneConfig)]


def neighbors_fixed() -> dict:
    """The analysis settings `ser neighbors` fixes (in its registered config, so a cell printed by
    `ser results show` names them): a cell may repeat them, never change them."""
    from classifiers.runs.neighbors import neighbors_config

    given = set(_signature(neighbors_config))
    return {k: v for k, v in neighbors_config([], model="").items() if k not in given}


def kind_keys(kind: str, *, dimensional: bool = False) -> list[str]:
    """The keys a [[cells]] entry of `kind` may use: its configuration's fields
    (`classifiers.runs.configs.ProbeConfig`, `MatrixConfig`, `NeighborsConfig`, `FinetuneConfig` +
    `registry.finetune_config`; evaluate: `evaluate_model`'s options less what the study decides,
    RUNTIME_KEYS), with `model`/`classifier` as the lists `models`/`classifiers` a cell multiplies over.

    probe and matrix: `target` and `alpha` route a cell to the dimensional probe or matrix
    (`dimensional=True`: the keys a dimensional cell may use)."""
    from classifiers.results.registry import check_kind

    check_kind(kind)
    if kind in ("probe", "matrix"):
        from classifiers.runs.configs import CONFIGS

        keys = CONFIGS[kind].cell_keys(dimensional=dimensional)
        if kind == "probe" and not dimensional:
            keys.append("seeds")      # deprecated: a count N, read as seed = "0-(N-1)" with one warning
    elif kind == "neighbors":
        from classifiers.runs.configs import NeighborsConfig

        keys = NeighborsConfig.cell_keys() + list(neighbors_fixed())
    elif kind == "finetune":
        from classifiers.results.registry import finetune_config

        keys = _finetune_fields() + _signature(finetune_config)
    else:
        from classifiers.runs.configs import EvaluateConfig

        keys = EvaluateConfig.cell_keys() + ["model_sha256"]   # the model's digest, as `ser results show` prints it
    keys = list(dict.fromkeys(keys))
    if kind == "probe":   # a probe cell says `models` and `classifiers` only (as `ser results show` prints it)
        keys = [MULTIPLIERS.get(k, k) for k in keys]
    else:
        keys += [MULTIPLIERS[k] for k in keys if k in MULTIPLIERS]
    return ["kind", *keys]


def _closest(key: str, keys: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.5) or difflib.get_close_matches(
        key.lower(), [k.lower() for k in keys], n=1, cutoff=0.0)
    return next((k for k in keys if k.lower() == near[0].lower()), near[0]) if near else keys[0]


@dataclass
class Cell:
    """One run of a study: its kind, model, classifier and the options of that kind's function."""

    model: str | None
    classifier: str
    options: dict
    kind: str = "probe"
    index: int = 0                       # its [[cells]] entry, counted from 1 (0: not from a file)

    @property
    def dimensional(self) -> bool:
        """A dimensional probe or matrix (a `target` other than emotion: scored by CCC)."""
        return self.kind in DIMENSIONAL_KINDS and str(self.options.get("target") or "emotion").lower() != "emotion"

    def describe(self) -> str:
        o = self.options
        model = self.model or "the default model"
        if self.kind == "matrix":
            target = f" ({o['target']})" if self.dimensional else ""
            return f"matrix {self.classifier}{target}, {model}: {' × '.join(o['corpora'])}, layer {o['layer']}"
        if self.kind == "neighbors":
            return f"neighbors, {model}: {', '.join(o.get('corpora') or []) or 'every cached corpus'}"
        if self.kind == "finetune":
            extra = [c for c in o.get("train") or [] if c != o.get("corpus")]
            return f"finetune, {model}: {'+'.join([o.get('corpus') or '?', *extra])}"
        if self.kind == "evaluate":
            return f"evaluate {o['model_dir']} on {o['corpus']}" + (f" ({o['fold']})" if o.get("fold") else "")
        where = (f"train {' | '.join(o['train'])}" if o.get("train") else "") + \
                (f" → {o['test']}" if o.get("test") else f" on {o.get('corpus')}")
        classes = f", classes {o['classes']}" if o.get("classes") else ""
        target = f" ({o['target']})" if self.dimensional else ""
        return f"{self.classifier}{target}, {model}: {where.strip()}{classes}"


from classifiers.runs.configs import PARAM_DEFAULTS  # noqa: E402 - a probe option at its default is left out of `params`

#: the kinds a `target` (arousal, valence, dominance, avd) makes dimensional
DIMENSIONAL_KINDS = ("probe", "matrix")

#: the [study] keys that are no cell's option
STUDY_ONLY = ("name", "cache", "db", "report", "executor", "table", "formats")


def study_keys() -> list[str]:
    """Every key a [study] table may hold: its own, and any kind's cell key (a default for the cells of the
    kinds that have it)."""
    from classifiers.results.registry import KINDS

    keys = [k for kind in KINDS for k in kind_keys(kind)[1:]]
    return list(dict.fromkeys([*STUDY_ONLY, *keys]))


def read_study(path: str | Path) -> tuple[dict, list[Cell]]:
    """The study file's [study] table and its cells (one per [[cells]] x model x classifier).

    A cell's `kind` (default "probe") chooses the keys it may use (`kind_keys`); an unknown key is one
    StudyError line naming the file, the cell, the key and the closest key of that kind. A [study]
    key is the default of every cell whose kind has it."""
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
    allowed = study_keys()
    unknown = [k for k in head if k not in allowed]
    if unknown:
        raise StudyError(f"{path}: unknown [study] key {unknown[0]!r} (did you mean {_closest(unknown[0], allowed)!r}?)")
    _check_types(path, "[study]", head)
    if "table" in head:  # the paper table's pivot
        from classifiers.results.tables import spec_problem

        problem = spec_problem(head["table"])
        if problem:
            raise StudyError(f"{path}: [study] table {problem}")
    if "executor" in data:
        from classifiers.runs.executor import ExecutorError, check_executor_table

        try:
            check_executor_table(data["executor"])
        except ExecutorError as e:
            raise StudyError(f"{path}: {e}") from e
    if not data.get("cells"):
        raise StudyError(f"{path} declares no [[cells]]; add at least one (see examples/diary-study.toml)")
    if not isinstance(data["cells"], list):
        raise StudyError(f"{path}: cells = {_shown(data['cells'])}: expected [[cells]] tables, one per comparison")
    cells = []
    for i, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict):
            raise StudyError(f"{path}: cell {i + 1} = {_shown(raw)}: expected a table of keys (a [[cells]] section)")
        cells.extend(_read_cell(path, i + 1, raw, head))
    return head, cells


def _read_cell(path: Path, n: int, raw: dict, head: dict) -> list[Cell]:
    """The cells of the n-th [[cells]] entry `raw` (one per model x classifier), checked."""
    from classifiers.results.registry import KINDS

    kind = raw.get("kind", "probe")
    if kind not in KINDS:
        raise StudyError(f"{path}: cell {n} kind = {_shown(kind)}: expected one of {', '.join(KINDS)}")
    where = f"cell {n}" + ("" if kind == "probe" else f" ({kind})")
    keys = kind_keys(kind)
    bad = [k for k in raw if k not in keys]
    if bad:
        raise StudyError(f"{path}: {where} has unknown key {bad[0]!r} (did you mean {_closest(bad[0], keys)!r}? a "
                         f"{kind} cell takes {', '.join(keys[1:])})")
    _check_types(path, where, raw)
    dimensional = kind in DIMENSIONAL_KINDS and str(raw.get("target", head.get("target", "emotion"))).lower() != "emotion"
    if dimensional:
        from classifiers.runs.targets import target_dimensions

        keys = kind_keys(kind, dimensional=True)
        wrong = [k for k in raw if k not in keys]
        if wrong:
            raise StudyError(f"{path}: {where} target = {_shown(raw.get('target', head.get('target')))} runs a "
                             f"regressor on one training set: leave out {', '.join(wrong)}")
        try:
            target_dimensions(raw.get("target", head.get("target")))
        except SerError as e:
            raise StudyError(f"{path}: {where}: {e}") from e
    elif "alpha" in raw:
        raise StudyError(f"{path}: {where} alpha is ridge's penalty for a dimensional target (target = \"arousal\", "
                         f"\"valence\", \"dominance\" or \"avd\"); the emotion probe's penalty is C")
    merged = {**{k: v for k, v in head.items() if k in keys and k not in STUDY_ONLY}, **raw}
    merged.pop("kind", None)
    if kind in DIMENSIONAL_KINDS and not dimensional:
        merged.pop("target", None)       # target = "emotion": the categorical run, which has no target option
    for single, plural in MULTIPLIERS.items():
        if single in raw and plural in raw:
            raise StudyError(f"{path}: {where} gives both {single} and {plural}; keep one")
        if single in merged:            # a cell's own model/classifier wins over the [study] lists
            merged.pop(plural, None)
            merged[plural] = merged.pop(single)
    models = _as_list(merged.pop("models", None)) or [None]
    classifiers = _as_list(merged.pop("classifiers", None)) or [""]
    try:
        options = _cell_options(kind, merged, dimensional)
    except SerError as e:
        raise StudyError(f"{path}: {where}: {str(e).splitlines()[0]}") from e
    params = {k: options.pop(k) for k in _probe_params() if k in options} if kind == "probe" else {}
    params = {k: v for k, v in params.items() if v != PARAM_DEFAULTS.get(k)}   # as `ser probe` keys them
    cells = []
    for m, c in itertools.product(models, classifiers):
        o = dict(options)
        if kind in DIMENSIONAL_KINDS:
            c = c or "logreg"
            if dimensional and c == "logreg":
                c = "ridge"                  # as `ser probe --target`: the default regressor
        if params:
            from classifiers.runs.crossval import check_params

            try:
                o["params"] = check_params(c, params)
            except SerError as e:
                raise StudyError(f"{path}: {where}: {str(e).splitlines()[0]}") from e
        cells.append(Cell(m, c, o, kind=kind, index=n))
    if kind == "finetune":
        for cell in cells:               # its settings checked now, not after the cells before it ran
            try:
                finetune_settings(cell, cell.model or "model")
            except SerError as e:
                raise StudyError(f"{path}: {where}: {str(e).splitlines()[0]}") from e
    return cells


def _cell_options(kind: str, o: dict, dimensional: bool) -> dict:
    """A cell's keys as its kind's function takes them (lists, layer specs, floats as the CLI gives them)."""
    o = dict(o)
    if "layers" in o:
        o["layers"] = ",".join(map(str, o["layers"])) if isinstance(o["layers"], list) else str(o["layers"])
    if "C" in o:
        o["C"] = float(o["C"])               # as `ser probe --C 1` registers it
    if "alpha" in o:
        o["alpha"] = float(o["alpha"])
    if kind == "probe":
        o["train"] = _as_list(o.get("train"))
        if "seeds" in o:
            o["seed"] = _old_seeds(o.pop("seeds"), o)
        if not o.get("corpus") and not o.get("train"):
            raise StudyError("names neither corpus nor train")
        if dimensional and len(o["train"]) > 1:
            raise StudyError(f"a dimensional target trains on one training set, not {len(o['train'])}; join corpora "
                             f"that train together with commas (\"a,b\")")
    elif kind == "matrix":
        if "layer" not in o or len(_as_list(o.get("corpora"))) < 2:
            raise StudyError("a matrix cell needs corpora (two or more) and one layer, e.g. corpora = [\"ravdess\", "
                             "\"emodb\"], layer = 12")
        o["corpora"] = [c for x in _as_list(o["corpora"]) for c in x.split(",") if c]
        o["layer"] = str(o["layer"])
    elif kind == "neighbors":
        o["corpora"] = [c for x in _as_list(o.get("corpora")) for c in x.split(",") if c]
        fixed = neighbors_fixed()
        for k, v in fixed.items():
            if k in o and o.pop(k) != v:
                raise StudyError(f"{k} is fixed by ser neighbors at {_shown(v)}; leave it out")
    elif kind == "finetune":
        if not o.get("corpus"):
            raise StudyError("a finetune cell needs corpus (the corpus whose folds it tests on)")
        o["train"] = [c for x in _as_list(o.get("train")) for c in x.split(",") if c and c != o["corpus"]]
    else:
        if not o.get("model_dir") or not o.get("corpus"):
            raise StudyError("an evaluate cell needs model_dir (a saved probe or fine-tuned model) and corpus")
        o["drop"] = _as_list(o.get("drop"))
        if "fold" in o:
            o["fold"] = str(o["fold"])
    return o


def _old_seeds(n: int, o: dict) -> str:
    """A cell's deprecated `seeds = N` (seeds 0..N-1) as its `seed` spec, with one warning."""
    import warnings

    from featstore.options import seeds_spec

    if "seed" in o:
        raise StudyError("gives both seed and seeds (its old spelling, a count); keep seed")
    spec = seeds_spec(list(range(n)))
    warnings.warn(f'seeds = {n} is deprecated: write seed = "{spec}" (the old key goes in the next release)',
                  stacklevel=2)
    return spec


def _as_list(value) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def ensure_store(cache, model: str, corpus: str, *, device: str = "auto", progress: bool = False) -> bool:
    """Extract `corpus` with `model` into `cache` unless its store is there; True if it extracted."""
    from classifiers.runs.runpaths import store_for
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


def finetune_settings(cell: Cell, model: str):
    """(`FinetuneConfig`, the other keys: corpus, train, protocol) of a finetune cell."""
    from classifiers.finetuning.finetune import FinetuneConfig

    o = dict(cell.options)
    rest = {k: o.pop(k) for k in ("corpus", "train", "protocol") if k in o}
    return FinetuneConfig(model=model, **o), rest


def _same_finetune(registered: dict, config: dict) -> bool:
    """Whether a registered fine-tune's configuration equals `config` in every setting that changes a score."""
    import json

    from featstore.serialize import dumps

    def scored(c: dict) -> dict:
        return {k: v for k, v in json.loads(dumps(c)).items() if k not in FINETUNE_UNSCORED}

    return scored(registered) == scored(config)


def _model_hashes(model: str) -> set:
    """The weights hashes a fine-tune of `model` may have recorded for its base (weights, and weights +
    front-end); empty for a hub id (its files are not looked up here)."""
    from featstore.modelfiles import weights_hash

    p = Path(model).expanduser()
    if not p.is_dir():
        return set()
    try:
        return {weights_hash(p), weights_hash(p, front_end=True)}
    except OSError:
        return set()


def registered_finetune(corpus: str, *, model: str, registry, train: Sequence[str] = (), protocol: str | None = None,
                        force: bool = False, device: str | None = None, progress: bool = False, command: str = "",
                        out=None, **options) -> Registered:
    """`ser finetune` through the registry, as `registered_probe` runs a probe: a registered fine-tune
    with the same settings (every `FinetuneConfig` field that changes a score, the corpora and
    protocol) over the same data (utterances and folds, `registry.finetune_stores`) and base
    weights (a local model's hash; a hub id by its name) whose folder is still there is returned
    (reused=True, nothing trained) unless `force`. Otherwise the run trains (into `out`, default
    `finetune.default_run_dir`, resuming what an interrupted run left there; with `force`, a new
    folder beside it) and is registered.
    The corpora's roots come from `ser config` (`featstore.config.resolve_root`)."""
    from types import SimpleNamespace

    from classifiers.finetuning.finetune import FinetuneConfig, default_run_dir, finetune_data
    from classifiers.finetuning.finetune import finetune as run_finetune
    from classifiers.results.records import forced_dir
    from classifiers.results.registry import finetune_config, finetune_stores, register_finetune

    config = FinetuneConfig(model=model, progress=progress, **({"device": device} if device else {}), **options)
    data = finetune_data(corpus, train=train, protocol=protocol, progress=False)
    utts, folds, protocol, extra = data.utterances, data.folds, data.protocol, data.extra
    wanted = finetune_config(config, corpus=corpus, train=extra, protocol=protocol)
    if not force and registry.path.is_file():
        data = finetune_stores(SimpleNamespace(folds=[]), utts, folds, model)[1:]
        hashes = _model_hashes(model)
        for run in reversed(registry.runs(kind="finetune")):
            base = run["stores"][0] if run["stores"] else {}
            if (_same_finetune(run["config"], wanted) and run["stores"][1:] == data
                    and base.get("model_id") == model and (not hashes or base.get("weights_sha256") in hashes)
                    and registered_files(run)):
                return Registered(run, load_run(run), reused=True)
    if out is None:
        # forced: trained afresh in a new folder, never resumed from the registered one
        out = forced_dir(default_run_dir("+".join([corpus, *extra]), protocol, config), force)
    res = run_finetune(utts, folds, config, out_dir=out, protocol=protocol)
    run_id = register_finetune(registry, res, utts, folds, config, corpus=corpus, train=extra, protocol=protocol,
                               command=command)
    if run_id is None:
        raise SerError(f"the fine-tune of {model} on {corpus} scored no fold (see {out}); nothing was registered")
    run = registry.run(run_id)
    return Registered(run, load_run(run), reused=False, files=[Path(p) for p in res.files.values()])


def is_dimensional(run: dict) -> bool:
    """Whether a registered run is a dimensional probe or matrix (`classifiers.runs.dimensional`: scored by CCC)."""
    return run.get("kind") in DIMENSIONAL_KINDS and (run.get("config") or {}).get("target", "emotion") != "emotion"


def load_run(run: dict):
    """A registered run's results read back: a `DimensionalRun` for a dimensional probe, a
    `DimensionalMatrix` for a dimensional matrix, else the `ProbeResults` of `load_registered`."""
    from classifiers.finetuning.finetune import is_dimension_only, read_dimension_scores

    if is_dimension_only(run):      # a fine-tune (or its evaluation) on dimensions only: CCC per dimension
        return read_dimension_scores(run)
    if is_dimensional(run):
        from classifiers.results.records import ResultsError
        from classifiers.runs.dimensional import read_dimensional, read_matrix

        try:
            return read_matrix(run["out"]) if run["kind"] == "matrix" else read_dimensional(run["out"])
        except (OSError, ValueError, KeyError) as e:
            raise ResultsError(f"run {run['id']}: its results in {run['out']} cannot be read ({e}); re-run its "
                               f"command: {run['command']}") from e
    return load_registered(run)


def headline(reg: Registered) -> str:
    """One line for a cell's run: its best pooled score and where ("best UAR 0.412 at layer 6",
    "best mean CCC 0.310 at layer 3")."""
    if hasattr(reg.results, "rows"):          # finetune.DimensionScores
        return reg.results.headline()
    if is_dimensional(reg.run) and reg.run["kind"] == "matrix":
        m = reg.results
        own = [m.cells[(c, c)].get("ccc_pooled") for c in m.corpora]
        return (f"layer {m.meta.get('layer')}, mean CCC on each corpus' own folds "
                + ", ".join("–" if v is None else f"{v:.3f}" for v in own))
    if is_dimensional(reg.run):
        best = reg.results.best()
        return f"best mean CCC {best['ccc_pooled']:.3f} at layer {best['layer']}"
    best = reg.results.best()
    return f"best UAR {best['uar']:.3f} at layer {best['layer']}"


def run_cell(cell: Cell, *, cache, registry, default_model: str, force: bool = False, device: str | None = None,
             progress: bool = False, command: str = "") -> Registered:
    """Run one study cell of any kind through the registry (a registered identical run is re-used
    unless `force`), extracting the stores it reads first when missing (the corpus root known)."""
    model = cell.model or default_model
    o = dict(cell.options)
    common = dict(registry=registry, force=force, progress=progress, command=command)
    if cell.kind == "evaluate":
        return _evaluate_cell(cell, o, cache=cache, device=device, **common)
    if cell.kind == "finetune":   # the cell's own device and progress win over the study's
        common["progress"] = progress and o.pop("progress", True)
        return registered_finetune(o.pop("corpus"), model=model, device=o.pop("device", None) or device, **common, **o)
    needed = (_needed(o.get("corpus"), o.get("train"), o.get("test")) if cell.kind == "probe"
              else list(o.get("corpora") or []))
    for c in needed:
        ensure_store(cache, model, c, device=device or "auto", progress=progress)
    config = cell_config(cell, model)
    if cell.kind == "neighbors":
        nb = config.run(cache=cache, **common)
        return Registered(nb.run, nb.results, reused=nb.reused, files=list(nb.files))
    reg = config.run(cache=cache, device=device, **common)
    return reg[0] if cell.kind == "matrix" else reg


def cell_config(cell: Cell, model: str | None = None):
    """The `classifiers.runs.configs` configuration of a probe, matrix or neighbors cell (checked on construction)."""
    from classifiers.runs.configs import CONFIGS

    o = dict(cell.options)
    o.update(o.pop("params", None) or {})
    if cell.kind != "neighbors":
        o["classifier"] = cell.classifier or None
    return CONFIGS[cell.kind](model=model or cell.model, **o)


def _evaluate_cell(cell: Cell, o: dict, *, cache, registry, force, device, progress, command) -> Registered:
    """An evaluate cell: its `classifiers.runs.configs.EvaluateConfig` run with the registry; `model_sha256`
    (as `ser results show` prints it) must still be the model's digest."""
    from classifiers.runs.configs import EvaluateConfig

    sha = o.pop("model_sha256", None)
    config = EvaluateConfig(model_dir=Path(o.pop("model_dir")).expanduser(), **o)
    now = config.key()["model_sha256"]       # a missing or foreign folder is one line
    if sha is not None and sha != now:
        raise StudyError(f"{cell.describe()}: the model in {config.model_dir} is not the one registered (model_sha256 "
                         f"{sha} != {now} now); drop model_sha256 to score the model as it is")
    res = config.run(cache=cache, device=device or "auto", registry=registry, command=command, force=force)
    run = registry.run(res.run_id)
    results = res.results if res.reused is None else load_registered(run)
    return Registered(run, results, reused=res.reused is not None, files=list(res.files))

def study_cache(path: str | Path, head: dict, cache=None) -> Path:
    """The feature cache of a study: `cache` (--cache) when given, else the file's [study] cache, else
    the configured default (`ser config`)."""
    from featstore.config import default_cache

    if cache is not None:
        return Path(cache)
    return Path(head["cache"]).expanduser() if head.get("cache") else default_cache()


def study_registry(path: str | Path, head: dict, db=None):
    """The run registry of a study: `db` (--db) when given, else the file's [study] db, else $SER_DB,
    else the registry's own default (`Registry()`)."""
    from classifiers.results.registry import Registry

    if db is None:
        db = Path(head["db"]).expanduser() if head.get("db") else os.environ.get("SER_DB") or None
    return Registry(db) if db is not None else Registry()


def run_study(path: str | Path, *, cache=None, registry=None, default_model: str, force: bool = False,
              device: str | None = None, report: str | Path | None = None,
              on_cell: Callable[[Cell, Registered], None] | None = None, progress: bool = False,
              executor: str | None = None, on_fail: Callable[[Cell, str], None] | None = None,
              on_start: Callable[[str], None] | None = None, on_table: Callable | None = None,
              formats: str | Sequence[str] | None = None):
    """Run every cell of the study file `path`; return (cells' `Registered`s, report path).

    Cells of every kind (`Cell.kind`: probe, matrix, neighbors, finetune, evaluate) run through the
    registry (`run_cell`); cells already registered are re-used (unless `force`); missing stores are
    extracted first (the corpus root must be configured, see `ser config`). The report (default
    study-<name>.html in the results root) holds every cell's run.

    cache / registry: the feature cache and the `Registry` (default: the file's [study] cache and
    db, see `study_cache` and `study_registry`).

    executor: `--executor` (default: the file's [study] executor, else "local"). "local" runs the
    cells here one after another (a failure stops the study); a Dask executor runs the task graph
    of `plan_study` on its workers: `on_start(dashboard link)` first, `on_cell` as each cell is
    registered (in the order they finish), `on_fail(cell, one line)` for a cell that failed while
    the others go on. The report then holds the cells that have a run (None when none has).

    The study's paper table (`study_outputs`) leads the report and is written beside it as .md,
    .tex and .csv; `on_table(PaperTable, [those files])` gets it (e.g. to print it).

    formats: the runs' figure formats (`--format`; default the file's [study] formats, else png);
    registered runs re-used get the formats their folders lack (`complete_figures`).
    """
    from classifiers.results.plots import figure_formats

    head, _ = read_study(path)
    cache = study_cache(path, head, cache)
    registry = registry if registry is not None else study_registry(path, head)
    with figure_formats(formats if formats is not None else head.get("formats")):
        return _run_study(path, cache=cache, registry=registry, default_model=default_model, force=force,
                          device=device, report=report, on_cell=on_cell, progress=progress, executor=executor,
                          on_fail=on_fail, on_start=on_start, on_table=on_table)


def _run_study(path, *, cache, registry, default_model, force, device, report, on_cell, progress, executor,
               on_fail, on_start, on_table):
    from classifiers.results.tables import check_table_paths
    from classifiers.runs.executor import parse_executor

    head, cells = read_study(path)
    check_table_paths(report_path(path, head, report))  # a bad report path fails before any work
    spec = parse_executor(executor if executor is not None else head.get("executor"))
    if spec.distributed:
        other = next((c for c in cells if c.kind != "probe" or c.dimensional), None)
        if other is not None:
            raise StudyError(f"{path}: cell {other.index} ({'dimensional probe' if other.dimensional else other.kind}: "
                             f"{other.describe()}): the {spec} executor runs emotion probe cells only; run this "
                             f"study with --executor local")
        return _run_distributed(path, head, cells, spec, executor_table(path), cache=cache, registry=registry,
                                default_model=default_model, force=force, device=device, report=report,
                                on_cell=on_cell, on_fail=on_fail, on_start=on_start, progress=progress,
                                on_table=on_table)
    done = []
    for cell in cells:
        try:
            reg = run_cell(cell, cache=cache, registry=registry, default_model=default_model, force=force,
                           device=device, progress=progress, command=command_line())
        except SerError as e:             # the cell that failed named first; the cells before it stay registered
            raise StudyError(f"{path}: cell {cell.index} ({cell.describe()}): {e}") from e
        done.append(reg)
        if on_cell:
            on_cell(cell, reg)
    return done, study_outputs(path, head, done, report, on_table=on_table)


def study_outputs(path: str | Path, head: dict, done: Sequence[Registered], report: str | Path | None = None, *,
                  on_table: Callable | None = None) -> Path:
    """The study's paper table (`classifiers.results.tables.study_table`, as [study] table asks) written beside
    its report as .md, .tex and .csv, then the report, led by the table with each run folded below;
    return the report's path. A table the runs cannot fill is one TableError line, after the report
    (without the table) is written: the runs stay registered, so fixing the table re-computes nothing.
    The table holds the emotion probe cells (`classifiers.results.tables.tabulated`); the report holds every cell, whatever
    its kind; a study with no probe cell gets the report alone."""
    from classifiers.results.report import write_report
    from classifiers.results.tables import TableError, study_table, tabulated, write_table

    name = head.get("name", Path(path).stem)
    out = report_path(path, head, report)
    runs = [(r.run, r.results) for r in done]
    if not any(tabulated(run) for run, _ in runs):   # no cell the paper table holds: the report alone
        return write_report(runs, out, title=f"study {name}", fold=True)
    try:
        paper = study_table(runs, head.get("table"), title=f"study {name}: UAR [95% speaker CI]",
                            where=f"{path}: [study] table")
    except TableError as e:
        write_report(runs, out, title=f"study {name}", fold=True)
        raise TableError(f"{e}; the runs are registered, so running the study again re-computes nothing") from e
    files = write_table(paper, out, label=f"tab:{re.sub(r'[^A-Za-z0-9:-]+', '-', str(name))}")
    page = write_report(runs, out, title=f"study {name}", lead=paper.html("the study's table: UAR [95% speaker CI]"),
                        fold=True)
    if on_table:
        on_table(paper, files)
    return page


def report_path(path: str | Path, head: dict, report: str | Path | None = None) -> Path:
    """Where a study's report goes: `report` (--report), the file's `report` key, or
    study-<name>.html in the results root (`featstore.config.results_root`); checked as an output (an .html file, not a directory or a system path)."""
    from featstore.outputs import check_output, inside

    if report is not None:
        return check_output(report, option="--report", suffixes=(".html", ".htm"))
    if head.get("report"):
        return check_output(head["report"], option=f"{path}: [study] report", suffixes=(".html", ".htm"))
    name = head.get("name", Path(path).stem)
    if not _plain_name(name):  # a file stem is a plain name, a [study] name was checked by read_study
        raise StudyError(f"{path}: [study] name = {_shown(name)}: expected {KEY_TYPES['name'][1]}")
    from featstore.config import results_root

    out = inside(results_root(), f"study-{name}.html", what=f"{path}: the report of study")
    return check_output(out, option=f"{path}: the report", suffixes=(".html",))


# ---------------------------------------------------------------------------------------------
# a study as a task graph (Dask executors)
# ---------------------------------------------------------------------------------------------

#: written into each run folder a worker makes: the run key, so a folder finished but not registered
#: (the client stopped first) is registered on the next run instead of computed again
RUN_MARKER = ".ser-run.json"


def executor_table(path: str | Path) -> dict:
    """The study file's [executor] table ({} when it has none)."""
    import tomllib

    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return dict(data.get("executor", {}))


def _model_for_workers(model: str) -> str:
    """A local model directory as an absolute path (workers start elsewhere); a hub id unchanged."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def extract_task(c: dict, *deps) -> dict:
    """Task "extract": one (model, corpus[, shard]) store, written by this task alone."""
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest

    manifest = load_manifest(c["corpus"], c["root"], progress=False)
    res = extract_manifest(manifest, model=c["model"], cache=c["cache"], device=c.get("device") or "auto",
                           progress=False, **c.get("options", {}))
    return dict(store=str(res.store), corpus=c["corpus"], extracted=res.extracted, already=res.already,
                skipped=len(res.skipped), up_to_date=res.up_to_date, audio_seconds=res.audio_seconds,
                frames_added=list(res.frames_added))


def probe_task(c: dict, *deps) -> dict:
    """Task "probe": one cell's probe run, its folder written whole at `c["out"]` (a temporary
    folder renamed into place), its results returned for the client to register."""
    from classifiers.results.plots import figure_formats
    from classifiers.results.registry import run_key
    from classifiers.runs.probe import run_probe
    from featstore.outputs import write_text
    from featstore.serialize import dumps

    stores = fingerprints(c["cache"], c["model_path"], c["needed"])
    key = run_key("probe", c["config"], stores)
    out = Path(c["out"])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with figure_formats(c.get("formats")):   # the client's formats: a worker process has its own context
            run = run_probe(c["corpus"], model=c["model_path"], cache=c["cache"], out=tmp, device=c.get("device"),
                            progress=False, **c["options"])
        run.results.meta["model"] = c["config"]["model"]  # as the sequential run records it
        write_text(tmp / RUN_MARKER, dumps(dict(key=key, kind="probe"), sort_keys=True))
        try:
            os.rename(tmp, out)               # whole or not at all; an empty folder is replaced
        except OSError as e:
            if _marker_key(out) != key:
                raise SerError(f"{out} already holds results of another run; move it away and re-run") from e
            shutil.rmtree(tmp, ignore_errors=True)  # the same run, finished there by an earlier attempt
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    predictions = next((out / f.name for f in run.files if f.suffix == ".parquet"), None)
    results = run.results
    results.predictions = []                  # read back from the folder: only scores travel
    return dict(run_key=key, stores=stores, out=str(out), predictions=str(predictions or ""), results=results)


@dataclass
class CellPlan:
    """One distinct probe configuration of a study: the cells asking for it, and what it needs."""

    cells: list[Cell]
    model: str
    corpus: str | None
    options: dict
    config: dict
    needed: list[str]
    task: str = ""
    key: str = ""
    stores: list = field(default_factory=list)
    out: Path | None = None
    failed: str = ""


def plan_study(cells: Sequence[Cell], *, cache, default_model: str, device: str | None = None):
    """The task graph of a study: (cell plans, extraction tasks, {(model, corpus): plan-time failure}).

    One extraction task per (model, corpus) whose store is missing and whose root is known (each
    store written by exactly one task); one plan per distinct probe configuration, depending on
    the extraction tasks of the stores it reads. Nothing runs and the registry is not read. Only
    emotion probe cells are planned: cells of other kinds (and dimensional probes) run in this
    process (`run_cell`).
    """
    from classifiers.runs.executor import Task
    from classifiers.runs.runpaths import store_for
    from featstore.backbones.runtime import model_slug
    from featstore.config import resolve_root
    from featstore.store import StoreError

    cache = Path(cache).resolve()
    token = uuid.uuid4().hex[:6]              # two studies on one scheduler never share a task key
    plans: dict[str, CellPlan] = {}
    extracts: dict[tuple[str, str], Task] = {}
    broken: dict[tuple[str, str], str] = {}
    for cell in cells:
        if cell.kind != "probe" or cell.dimensional:
            continue                         # other kinds run on the local executor (`run_cell`)
        model = cell.model or default_model
        o = dict(cell.options)
        corpus = o.pop("corpus", None)
        config = probe_config(corpus, model=model, classifier=cell.classifier, **o)
        ident = json.dumps(config, sort_keys=True, default=str)
        if ident in plans:
            plans[ident].cells.append(cell)
            continue
        needed = _needed(corpus, config["train"], config.get("test"))
        plan = CellPlan([cell], model, corpus, o, config, needed)
        plans[ident] = plan
        for c in needed:
            if (model, c) in extracts or (model, c) in broken:
                continue
            try:
                store_for(cache, _model_for_workers(model), c)
                continue
            except StoreError:
                pass
            try:
                root = resolve_root(c)
            except SerError as e:
                broken[(model, c)] = f"no store of {c} for {model} and no corpus root to extract it from: " \
                                     f"{str(e).splitlines()[0]}"
                continue
            extracts[(model, c)] = Task(f"extract-{model_slug(model)}-{c}-{token}", "extract",
                                        dict(corpus=c, root=str(Path(root).resolve()), model=_model_for_workers(model),
                                             cache=str(cache), device=device or "auto"),
                                        label=f"extract {c} with {model}", priority=EXTRACT_PRIORITY)
    for i, plan in enumerate(plans.values()):
        plan.task = f"probe-{i}-{token}"
        problems = [broken[(plan.model, c)] for c in plan.needed if (plan.model, c) in broken]
        plan.failed = problems[0] if problems else ""
    return list(plans.values()), list(extracts.values()), broken


def _cell_out(plan: CellPlan, force: bool, taken: set) -> tuple[Path, bool]:
    """(the run folder for `plan`, whether it already holds this very run, finished but not registered)."""
    from classifiers.runs.runpaths import default_out

    o = plan.config
    settings = {k: v for k, v in o.items() if k != "model"}
    base = default_out("probe", plan.corpus or f"{'+'.join(o['train'])}-to-{o['test']}", plan.model,
                       settings).resolve()
    out, i = base, 1
    while True:
        if out not in taken:
            if not out.exists() or (out.is_dir() and not any(out.iterdir())):
                return out, False
            if plan.key and not force and _marker_key(out) == plan.key:
                return out, True
        i += 1
        out = base.with_name(f"{base.name}-{i}")


def _marker_key(out: Path) -> str | None:
    try:
        return json.loads((out / RUN_MARKER).read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


class _Bar:
    """One rich bar over a study's cells, its description counting each kind of task."""

    def __init__(self, total: int, kinds: dict[str, int], enabled: bool):
        self.kinds = {k: [0, n] for k, n in kinds.items() if n}
        self.failed = 0
        self.progress = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True))
            self.progress.start()
            self.tid = self.progress.add_task(self._text(), total=total)

    def _text(self) -> str:
        parts = [f"{k} {d}/{n}" for k, (d, n) in self.kinds.items()]
        return "cells: " + ", ".join(parts) + (f", {self.failed} failed" if self.failed else "")

    def done(self, kind: str, cells: int, failed: bool = False) -> None:
        if kind in self.kinds:
            self.kinds[kind][0] += 1
        self.failed += int(failed) * cells
        if self.progress is not None:
            self.progress.update(self.tid, advance=cells, description=self._text())

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _count(spec: str, default: int) -> int:
    """How many layers a layer spec ("6,12", "3-9", "all") names; `default` where it cannot say."""
    total = 0
    for part in str(spec).split(","):
        a, _, b = part.strip().partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            return default
        total += int(b) - int(a) + 1 if b else 1
    return max(total, 1)


def cell_cost(plan: CellPlan) -> float:
    """A cell's relative cost before it runs: seeds x (outer folds - 1) x layers x training sets (k
    folds each train on (k-1)/k of the rows; the fold count read from the protocol where it says
    it, else 5; "all" layers taken as 25). Cell tasks start longest first: on 2 workers, 8 cells of
    costs 1..8 in file order end 20% later than the same cells longest first (greedy list
    scheduling; longest first is within 4/3 of the best)."""
    o = plan.options
    protocol = str(plan.config.get("protocol") or "")
    k = protocol.split(":", 1)[1] if protocol.startswith("speaker-kfold:") else protocol[4:] if protocol.startswith(
        "luna") else ""
    folds = int(k) if k.isdigit() else 5
    from featstore.options import parse_seeds

    return float(len(parse_seeds(o.get("seed", "0"))) * max(folds - 1, 1) * _count(o.get("layers", "all"), 25)
                 * max(len(plan.config.get("train") or []), 1))


#: extraction tasks unblock cells: they start before any cell that is ready
EXTRACT_PRIORITY = 1e12


def _run_distributed(path, head, cells, spec, table, *, cache, registry, default_model, force, device, report,
                     on_cell, on_fail, on_start, progress, on_table=None):
    """`run_study` on a Dask executor: plan, skip what is registered, run the rest, register as tasks finish."""
    from classifiers.results.plots import current_formats
    from classifiers.results.records import read_results
    from classifiers.results.registry import run_key
    from classifiers.runs.executor import Task, gpu_workers, open_client, require_dask, run_tasks

    require_dask()                             # a missing extra is one line before any work
    cache = Path(cache).resolve()
    plans, extracts, _ = plan_study(cells, cache=cache, default_model=default_model, device=device)
    by_cell: dict[int, Registered] = {}
    order = {id(c): i for i, c in enumerate(cells)}
    command = command_line()

    def registered(plan: CellPlan, reg: Registered) -> None:
        if reg.reused:
            reg.files = complete_figures(reg.run, reg.results)
        for j, cell in enumerate(plan.cells):
            r = reg if j == 0 else Registered(reg.run, reg.results, reused=True)
            by_cell[order[id(cell)]] = r
            if on_cell:
                on_cell(cell, r)

    def failed(plan: CellPlan, why: str) -> None:
        if plan.key:
            registry.release(plan.key)
        for cell in plan.cells:
            if on_fail:
                on_fail(cell, why)

    def register(plan: CellPlan, stores, results, out: Path, predictions) -> Registered:
        found = None if force else registry.find("probe", plan.config, stores)
        if found is not None and registered_files(found):
            if Path(found["out"]).resolve() != Path(out).resolve():
                shutil.rmtree(out, ignore_errors=True)   # computed meanwhile by another process: ours goes
            return Registered(found, load_registered(found), reused=True)
        run_id = registry.register(kind="probe", config=plan.config, stores=stores, results=results,
                                   command=command, out=out, predictions=predictions or None)
        run = registry.run(run_id)
        return Registered(run, load_registered(run), reused=False)

    todo, taken = [], set()
    extract_of = {(t.config["corpus"], t.config["model"]): t.key for t in extracts}
    try:
        for plan in plans:                     # what is registered (or finished) is not run again
            if plan.failed:
                failed(plan, plan.failed)
                continue
            deps = tuple(extract_of[(c, _model_for_workers(plan.model))] for c in plan.needed
                         if (c, _model_for_workers(plan.model)) in extract_of)
            if not deps:
                plan.stores = fingerprints(cache, _model_for_workers(plan.model), plan.needed)
                plan.key = run_key("probe", plan.config, plan.stores)
                found = None if force else registry.find("probe", plan.config, plan.stores)
                if found is not None and registered_files(found):
                    registered(plan, Registered(found, load_registered(found), reused=True))
                    continue
            plan.out, finished = _cell_out(plan, force, taken)
            taken.add(plan.out)
            if finished:                       # its folder is whole: register it, compute nothing
                pred = plan.out / "probe_predictions.parquet"
                reg = register(plan, plan.stores, read_results(plan.out / "probe.json"), plan.out,
                               pred if pred.exists() else None)
                reg.adopted = not reg.reused
                registered(plan, reg)
                continue
            todo.append((plan, deps))
        used = {d for _, deps in todo for d in deps}
        graph = [t for t in extracts if t.key in used]
        plan_of = {}
        for plan, deps in todo:
            o = dict(plan.options)
            test = o.pop("test", None)
            graph.append(Task(plan.task, "probe", dict(
                corpus=plan.corpus, model_path=_model_for_workers(plan.model), cache=str(cache), device=device,
                needed=plan.needed, config=plan.config, out=str(plan.out), formats=list(current_formats()),
                options=dict(o, classifier=plan.config["classifier"], protocol=plan.config["protocol"],
                             test=[test] if test else None)),
                deps=deps, label=plan.cells[0].describe(), priority=cell_cost(plan)))
            plan_of[plan.task] = plan
        if graph:
            bar = None
            with open_client(spec, table) as client:
                if on_start:
                    on_start(client.dashboard_link)
                if gpu_workers(client) and (device or "auto") != "cpu":
                    for t in graph:
                        if t.kind == "extract":
                            t.resources = {"GPU": 1}
                cells_left = sum(len(p.cells) for p in plan_of.values())
                bar = _Bar(cells_left, {"extract": sum(t.kind == "extract" for t in graph), "probe": cells_left},
                           progress)

                def done(outcome) -> None:
                    plan = plan_of.get(outcome.task.key)
                    if plan is None:           # an extraction: its cells follow (a failed one fails them)
                        bar.done(outcome.task.kind, 0)
                        return
                    if not outcome.ok:
                        failed(plan, outcome.error)
                        bar.done("probe", len(plan.cells), failed=True)
                        return
                    r = outcome.result
                    try:
                        reg = register(plan, r["stores"], r["results"], Path(r["out"]), r["predictions"])
                    except SerError as e:
                        failed(plan, str(e).splitlines()[0])
                        bar.done("probe", len(plan.cells), failed=True)
                        return
                    registered(plan, reg)
                    bar.done("probe", len(plan.cells))

                try:
                    run_tasks(graph, client=client, on_done=done)
                finally:
                    bar.close()
    finally:
        registry.release()                     # claims of cells not registered (failed, interrupted)
    done_runs = [by_cell[i] for i in sorted(by_cell)]
    page = None
    if done_runs:
        page = study_outputs(path, head, done_runs, report, on_table=on_table)
    return done_runs, page
