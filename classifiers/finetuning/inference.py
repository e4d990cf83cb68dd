"""Emotion probabilities for audio files from a saved model directory (JSON + safetensors: no pickle is read).

Two kinds of directory, told apart by `model_kind(dir)`:

``finetuned``  written by `EmotionClassifier.save_pretrained` (`ser finetune` exports one per fold
               as `<fold>/model/`): config.json (labels, sample rate, normalisation, pooling, the
               backbone's transformers config) + model.safetensors; or, from `--adapter lora`, the
               LoRA adapters + head.safetensors on a named base model whose weights hash must
               match (`classifiers.finetuning.lora`; `--backbone DIR` where that base is now).
``probe``      written by `save_probe`: probe.json (backbone id, layer, statistic, classes, window
               length) + probe.safetensors (standardisation mean/scale, logistic-regression
               coef/intercept) + probe.sha256 (the sha256 of both, `sha256sum` format, verified
               before anything is parsed: one changed byte in any of the three is refused). Prediction runs the backbone (`featstore.backbones.runtime`), pools
               `hidden_states[layer]` over each file's frames as the feature store does (mean, std
               or mean+std; clips longer than `max_seconds` in near-equal windows), standardises
               and applies the linear model.

`predict(files, model_dir)` -> `[(file, {label: probability}), ...]` in the order given; a model
fine-tuned on emotion dimensions (`ser finetune --target avd`) gives `{arousal: value, ...}` on
[-1, 1] (its config.json's `dimensions`, `model_dimensions`), beside the class probabilities of a
multitask model.

Both kinds are validated when loaded: every config field (present, of the right type), the
weights file (readable safetensors, the expected tensors and shapes, finite values); anything
else is a one-line `PredictError` / `HeadError` naming the file and the fix, never NaN output.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classifiers.results.metrics import softmax
from featstore.audio import load_audio, model_audio, windows
from featstore.device import resolve_device
from featstore.errors import SerError, SerWarning
from featstore.options import STATS  # the pooled statistics a saved probe may name
from featstore.outputs import atomic_output, check_output, write_text
from featstore.serialize import dumps


def is_adapter_dir(directory: str | Path) -> bool:
    """Whether `directory` is an adapter export (LoRA adapters + head on a recorded base, `classifiers.finetuning.lora`)."""
    from classifiers.finetuning.heads import is_adapter_dir as _is_adapter

    return _is_adapter(directory)

PROBE_KIND = "ser-linear-probe"
PROBE_FORMAT_VERSION = 1
PROBE_CONFIG = "probe.json"
PROBE_WEIGHTS = "probe.safetensors"
PROBE_SUMS = "probe.sha256"


class PredictError(SerError):
    """A model directory that cannot be used for prediction; the message says why and what to pass."""


# -- saved linear probes -------------------------------------------------------------------------

@dataclass
class SavedProbe:
    """A standardise-then-logistic-regression probe over pooled hidden states of one layer.

    scaler_mean, scaler_scale: `(D,)`; coef: `(C, D)` (or `(1, D)` for two classes, as
    scikit-learn stores binary models); intercept: `(C,)` or `(1,)`; classes: C labels.
    """

    backbone_id: str
    layer: int
    stat: str
    classes: list[str]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    max_seconds: float = 30.0
    weights_sha256: str | None = None
    extra: dict = field(default_factory=dict)
    backbone_dir: str | None = None     # where to load the backbone from now (--backbone DIR); never saved
    directory: str | None = None        # the probe directory it was loaded from (for messages)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """features `(N, D)` -> scores `(N, C)` (`(N, 1)` for a binary model)."""
        x = (np.asarray(features, dtype=np.float64) - self.scaler_mean) / self.scaler_scale
        return x @ self.coef.T + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """features `(N, D)` -> probabilities `(N, C)` (softmax; sigmoid for a binary model)."""
        z = self.decision_function(features)
        if z.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        return softmax(z)


def save_probe(directory: str | Path, backbone_id: str, layer: int, stat: str, scaler_mean, scaler_scale,
               coef, intercept, classes: Sequence[str], *, max_seconds: float = 30.0,
               weights_sha256: str | None = None, extra: dict | None = None) -> Path:
    """Write a probe directory (probe.json + probe.safetensors) that `predict` and `load_probe` read.

    backbone_id: hub id or local directory of the backbone the features came from (a directory is
    recorded as its resolved absolute path, so the probe works from any working directory); layer: k of
    `hidden_states[k]`; stat: mean, std or mean+std (as `FeatureStore.pooled`); scaler_mean /
    scaler_scale: `(D,)` standardisation (None: none); coef `(C, D)` or `(1, D)`, intercept `(C,)` or
    `(1,)`: e.g. a fitted sklearn LogisticRegression's coef_ / intercept_; classes: the C labels in
    coef's row order. max_seconds: the store's window length; weights_sha256: the store's record
    of the backbone weights (prediction warns when the loaded weights differ; a local backbone that
    moved is found again by it, `featstore.backbones.runtime.locate_model`).
    """
    from safetensors.numpy import save_file

    from featstore.backbones.runtime import is_local_id

    if is_local_id(str(backbone_id)) and Path(backbone_id).expanduser().is_dir():
        backbone_id = Path(backbone_id).expanduser().resolve()

    probe = _validated(SavedProbe(
        backbone_id=str(backbone_id), layer=int(layer), stat=stat, classes=[str(c) for c in classes],
        scaler_mean=None if scaler_mean is None else np.asarray(scaler_mean, dtype=np.float64),
        scaler_scale=None if scaler_scale is None else np.asarray(scaler_scale, dtype=np.float64),
        coef=np.atleast_2d(np.asarray(coef, dtype=np.float64)),
        intercept=np.atleast_1d(np.asarray(intercept, dtype=np.float64)),
        max_seconds=float(max_seconds), weights_sha256=weights_sha256, extra=dict(extra or {}),
    ), Path(directory))
    directory = Path(directory)
    check_output(directory, option="--save-probe", directory=True)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_output(directory / PROBE_WEIGHTS) as tmp:
        save_file({"scaler_mean": probe.scaler_mean, "scaler_scale": probe.scaler_scale,
                   "coef": np.ascontiguousarray(probe.coef), "intercept": probe.intercept},
                  str(tmp), metadata={"ser_kind": PROBE_KIND})
    config = {
        "ser_kind": PROBE_KIND, "format_version": PROBE_FORMAT_VERSION, "backbone_id": probe.backbone_id,
        "layer": probe.layer, "stat": probe.stat, "classes": probe.classes, "n_features": int(probe.coef.shape[1]),
        "max_seconds": probe.max_seconds, "weights_sha256": probe.weights_sha256, "extra": probe.extra,
    }
    write_text(directory / PROBE_CONFIG, dumps(config, indent=1))
    seal_probe(directory)
    return directory


_SUM_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seal_probe(directory: str | Path) -> Path:
    """(Re)write `probe.sha256`: the sha256 of probe.json and probe.safetensors as they are now.
    `save_probe` calls it; call it yourself only after editing a probe on purpose."""
    directory = Path(directory)
    return write_text(directory / PROBE_SUMS, "".join(f"{_sha256(directory / name)}  {name}\n"
                                                      for name in (PROBE_CONFIG, PROBE_WEIGHTS)))


def verify_probe(directory: str | Path) -> None:
    """PredictError naming the file unless probe.json and probe.safetensors equal the digests in
    probe.sha256 (which must list exactly those two files)."""
    directory = Path(directory)
    sums = directory / PROBE_SUMS
    again = "save the probe again (ser probe --save-probe)"
    try:
        text = sums.read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise PredictError(f"{directory}: no checksums ({PROBE_SUMS}), so the probe cannot be verified; {again}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PredictError(f"{sums}: unreadable checksum file ({e}); {again}") from e
    lines = text.split("\n")
    matches = [_SUM_LINE.fullmatch(line) for line in lines[:-1]]
    recorded = {m.group(2): m.group(1) for m in matches if m}
    if lines[-1] or not all(matches) or len(matches) != 2 or set(recorded) != {PROBE_CONFIG, PROBE_WEIGHTS}:
        raise PredictError(f"{sums}: damaged checksum file (expected a sha256 line for each of {PROBE_CONFIG} and "
                           f"{PROBE_WEIGHTS}); {again}")
    for name in (PROBE_CONFIG, PROBE_WEIGHTS):
        try:
            actual = _sha256(directory / name)
        except OSError as e:
            raise PredictError(f"{directory / name}: cannot read it ({e.strerror}); {again}") from e
        if actual != recorded[name]:
            raise PredictError(f"{directory / name}: checksum mismatch with {PROBE_SUMS} (damaged or edited since it "
                               f"was saved); {again}")


def _validated(p: SavedProbe, where: Path) -> SavedProbe:
    """`p` with its shapes, values and classes checked (PredictError naming `where`); None scalers filled."""
    if p.stat not in STATS:
        raise PredictError(f"{where}: unknown statistic {p.stat!r}; use one of {', '.join(STATS)}")
    if len(set(p.classes)) != len(p.classes) or not all(p.classes):
        raise PredictError(f"{where}: classes {p.classes} must be distinct, non-empty names")
    if p.coef.ndim != 2 or p.intercept.ndim != 1:
        raise PredictError(f"{where}: coef must be 2-D (classes, features) and intercept 1-D, got shapes "
                           f"{p.coef.shape} and {p.intercept.shape}")
    c, d = p.coef.shape
    n = len(p.classes)
    if n < 2 or c not in (n, 1) or (c == 1 and n != 2):
        raise PredictError(f"{where}: coef has {c} rows for {n} classes {p.classes} (expected {n}, or 1 for 2 classes)")
    if p.intercept.shape != (c,):
        raise PredictError(f"{where}: intercept has shape {p.intercept.shape}, expected ({c},)")
    if p.scaler_mean is None:
        p.scaler_mean = np.zeros(d)
    if p.scaler_scale is None:
        p.scaler_scale = np.ones(d)
    if p.scaler_mean.shape != (d,) or p.scaler_scale.shape != (d,):
        raise PredictError(f"{where}: scaler mean/scale shapes {p.scaler_mean.shape}/{p.scaler_scale.shape} "
                           f"do not match the {d} features of coef")
    for name in ("coef", "intercept", "scaler_mean", "scaler_scale"):
        if not np.isfinite(getattr(p, name)).all():
            raise PredictError(f"{where}: {name} holds NaN or infinite values; refit and save the probe again")
    if not (p.scaler_scale > 0).all():
        raise PredictError(f"{where}: scaler scale must be positive")
    if not (np.isfinite(p.max_seconds) and p.max_seconds > 0):
        raise PredictError(f"{where}: max_seconds must be a positive number of seconds, got {p.max_seconds}")
    return p


def _config_field(config: dict, name: str, kinds: type | tuple, where: Path, default=...):
    """config[name], required unless `default` is given, of one of `kinds` (bool is never a number)."""
    if name not in config:
        if default is ...:
            raise PredictError(f"{where}: field {name!r} is missing; save the probe again (ser probe --save-probe)")
        return default
    value = config[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise PredictError(f"{where}: field {name!r} is {value!r}, not {' or '.join(k.__name__ for k in kinds)}; "
                           f"save the probe again (ser probe --save-probe)")
    return value


def load_probe(directory: str | Path, *, backbone: str | Path | None = None) -> SavedProbe:
    """Read a directory written by `save_probe`; every field and array is checked (PredictError naming the file).

    backbone: the directory to load the backbone from instead of the recorded one (`--backbone DIR`:
    a local model that moved); checked to exist here, before anything heavy.
    """
    from classifiers.finetuning.heads import HeadError, load_safetensors

    directory = Path(directory)
    _check_backbone_dir(backbone)
    cpath, wpath = directory / PROBE_CONFIG, directory / PROBE_WEIGHTS
    if not cpath.is_file() or not wpath.is_file():
        raise PredictError(f"{directory} is not a saved probe (needs {PROBE_CONFIG} and {PROBE_WEIGHTS})")
    verify_probe(directory)
    try:
        config = json.loads(cpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PredictError(f"{cpath}: not valid JSON ({e}); save the probe again (ser probe --save-probe)") from e
    if not isinstance(config, dict) or config.get("ser_kind") != PROBE_KIND:
        kind = config.get("ser_kind") if isinstance(config, dict) else None
        raise PredictError(f"{cpath}: not a ser probe (ser_kind={kind!r})")
    version = _config_field(config, "format_version", int, cpath)
    if version > PROBE_FORMAT_VERSION:
        raise PredictError(f"{directory}: probe format {version} is newer than this ser "
                           f"understands ({PROBE_FORMAT_VERSION}); upgrade ser")
    classes = _config_field(config, "classes", list, cpath)
    if not all(isinstance(c, str) for c in classes):
        raise PredictError(f"{cpath}: field 'classes' must list class names, got {classes!r}")
    try:
        arrays, meta = load_safetensors(wpath, framework="np")
    except HeadError as e:
        raise PredictError(str(e)) from e
    if meta.get("ser_kind") != PROBE_KIND:
        raise PredictError(f"{wpath}: not a ser probe's weights (metadata ser_kind={meta.get('ser_kind')!r}); "
                           f"save the probe again (ser probe --save-probe)")
    missing = [k for k in ("scaler_mean", "scaler_scale", "coef", "intercept") if k not in arrays]
    if missing:
        raise PredictError(f"{wpath}: tensor(s) {', '.join(missing)} missing; save the probe again")
    probe = _validated(SavedProbe(
        backbone_id=_config_field(config, "backbone_id", str, cpath), layer=_config_field(config, "layer", int, cpath),
        stat=_config_field(config, "stat", str, cpath), classes=classes,
        **{k: np.asarray(arrays[k], dtype=np.float64) for k in ("scaler_mean", "scaler_scale", "coef", "intercept")},
        max_seconds=float(_config_field(config, "max_seconds", (int, float), cpath, 30.0)),
        weights_sha256=_config_field(config, "weights_sha256", (str, type(None)), cpath, None),
        extra=_config_field(config, "extra", dict, cpath, {}),
        backbone_dir=None if backbone is None else str(Path(backbone).expanduser().resolve()), directory=str(directory),
    ), directory)
    n_features = _config_field(config, "n_features", int, cpath, probe.coef.shape[1])
    if n_features != probe.coef.shape[1]:
        raise PredictError(f"{cpath}: n_features is {n_features} but coef has {probe.coef.shape[1]} columns; "
                           f"save the probe again")
    return probe


def _check_backbone_dir(backbone: str | Path | None) -> None:
    """PredictError unless `backbone` is None or an existing directory (the `--backbone DIR` check)."""
    if backbone is not None and not Path(backbone).expanduser().is_dir():
        raise PredictError(f"--backbone {backbone}: no such directory; pass the directory that holds the backbone's "
                           f"config.json and weights")


# -- which kind --------------------------------------------------------------------------------

def model_kind(directory: str | Path) -> str:
    """"finetuned" or "probe"; raises PredictError for anything else."""
    from classifiers.finetuning.heads import is_classifier_dir

    directory = Path(directory)
    if not directory.is_dir():
        raise PredictError(f"model directory {directory} does not exist")
    if is_classifier_dir(directory):
        return "finetuned"
    if (directory / PROBE_CONFIG).is_file():
        return "probe"
    if (directory / "model").is_dir() and is_classifier_dir(directory / "model"):
        raise PredictError(f"{directory} is a fine-tuning fold directory; pass its model directory "
                           f"{directory / 'model'}")
    raise PredictError(f"{directory} is neither a fine-tuned ser model (config.json + model.safetensors from "
                       f"`ser finetune`) nor a saved probe ({PROBE_CONFIG} + {PROBE_WEIGHTS})")


def predict(files: Sequence[str | Path], model_dir: str | Path, *, batch_size: int = 8,
            device: str = "auto", backbone: str | Path | None = None) -> list[tuple[str, dict[str, float]]]:
    """Probabilities per label for every file, in the order given: `[(file, {label: p}), ...]`.

    model_dir: a fine-tuned model directory or a saved probe (see the module docstring). Files
    are read with `featstore.audio.load_audio` at the model's rate (an unreadable file raises an
    AudioError naming it). Batches are exact (padding does not change a clip's result).
    backbone: for a saved probe or an adapter export, the backbone's directory now (`--backbone DIR`),
    when the one it recorded moved and cannot be found by its weights hash; a fully fine-tuned model
    carries its own.
    """
    files = [str(f) for f in files]
    _check_backbone_dir(backbone)
    dev = resolve_device(device)
    kind = model_kind(model_dir)
    if kind == "finetuned" and backbone is not None and not is_adapter_dir(model_dir):
        raise PredictError(f"--backbone is for saved probes and adapter exports; the fine-tuned model in {model_dir} "
                           f"carries its own backbone weights: leave --backbone out")
    dims, values = [], np.zeros((len(files), 0))
    if kind == "finetuned":
        labels, probs, dims, values = _finetuned_outputs(files, Path(model_dir), batch_size, dev, backbone=backbone)
    else:
        probe = load_probe(model_dir, backbone=backbone)
        labels = probe.classes
        probs = (probe.predict_proba(probe_features(files, probe, batch_size=batch_size, device=dev)) if files
                 else np.zeros((0, len(labels))))
    for f, row, vals in zip(files, probs, values):
        if not np.isfinite(row).all() or not np.isfinite(vals).all():  # never a silent NaN row: a broken model
            raise PredictError(f"{f}: the model in {model_dir} gives non-finite "
                               f"{'values' if dims and not labels else 'probabilities'}; check the model")
    return [(f, {**{lab: float(p) for lab, p in zip(labels, row)}, **{d: float(v) for d, v in zip(dims, vals)}})
            for f, row, vals in zip(files, probs, values)]


def model_dimensions(model_dir: str | Path) -> list[str]:
    """The emotion dimensions a model directory regresses (`ser finetune --target`), read from its
    config.json without loading it; [] for classifiers and saved probes. In `predict`'s rows they are
    keys beside the class probabilities, their values on [-1, 1]."""
    from classifiers.finetuning.heads import is_classifier_dir

    if not is_classifier_dir(model_dir):
        return []
    try:
        return list(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("dimensions") or [])
    except (OSError, ValueError, AttributeError):
        return []


def prediction_records(rows: Sequence[tuple[str, dict[str, float]]], labels: Sequence[str],
                       model: str | Path, dims: Sequence[str] = ()) -> list[dict]:
    """`predict`'s rows as the records `ser predict` writes, in JSON and in CSV alike: `file`,
    `predicted`, `p_<label>` per label (in `labels`' order; none for a dimensions-only model), the
    value of each dimension in `dims` (on [-1, 1]), `model`."""
    return [{"file": str(f), **({"predicted": max(labels, key=p.get)} if labels else {}),
             **{f"p_{c}": float(p[c]) for c in labels}, **{d: float(p[d]) for d in dims},
             "model": str(model)} for f, p in rows]


def write_predictions_csv(path: str | Path, rows: Sequence[tuple[str, dict[str, float]]], labels: Sequence[str],
                          model: str | Path, dims: Sequence[str] = ()) -> Path:
    """`predict`'s rows as CSV (`prediction_records`' fields: file, predicted, p_<label> per label,
    <dim> per dimension, model), written whole or not at all.

    Check `path` with `featstore.outputs.check_output` before predicting; this writes it.
    """
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["file", *(["predicted"] if labels else []), *[f"p_{c}" for c in labels], *dims, "model"])
    for r in prediction_records(rows, labels, model, dims):
        w.writerow([repr(v) if isinstance(v, float) else v for v in r.values()])
    return write_text(path, buf.getvalue())


@dataclass
class Predictions:
    """What `predict_files` chose to show for a model: `rows` as `predict` gives them (kept to the
    outputs shown), `labels` (the classes, in the model's order; [] for a dimensions-only model or
    `target` naming dimensions), `dims` (dimensions, values on [-1, 1]) and the model directory.
    `records()`, `write_csv(path)` and `table()` are the JSON, CSV and table of `ser predict`."""

    rows: list[tuple[str, dict[str, float]]]
    labels: list[str]
    dims: list[str]
    model: Path

    def records(self) -> list[dict]:
        """One record per file: file, predicted, p_<class> per class, <dimension> per dimension, model."""
        return prediction_records(self.rows, self.labels, self.model, self.dims)

    def write_csv(self, path: str | Path) -> Path:
        """The records as CSV, written whole or not at all (check `path` before predicting)."""
        return write_predictions_csv(path, self.rows, self.labels, self.model, self.dims)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of strings: file, the predicted class, each class' probability and each
        dimension's value to 3 decimals."""
        head = ["file", *(["predicted"] if self.labels else []), *self.labels, *self.dims]
        return head, [[f, *([max(self.labels, key=p.get)] if self.labels else []),
                       *[f"{p[k]:.3f}" for k in self.labels + self.dims]] for f, p in self.rows]


def _has_classes(model_dir: Path) -> bool:
    """Whether a model directory predicts classes: a saved probe always; a fine-tuned model when its
    config.json lists labels (one fine-tuned only on dimensions lists none)."""
    config = model_dir / "config.json"
    if not config.is_file():
        return True
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("labels"))
    except (OSError, ValueError, AttributeError):
        return True           # an unreadable config is reported by `predict`'s validation, naming the file


def predict_files(files: Sequence[str | Path], model_dir: str | Path, *, target: str | None = None,
                  batch_size: int = 8, device: str = "auto", backbone: str | Path | None = None) -> Predictions:
    """`ser predict` as a function: `predict`'s rows for `files`, kept to what `target` names.

    target: None keeps every output the model has (its classes, and the dimensions of a model
    fine-tuned with `--target`); "emotion" keeps the classes; "arousal", "valence", "dominance" or
    "avd" keep those dimensions (`classifiers.runs.targets.TARGETS`). A target the model lacks is a
    one-line PredictError, raised before any audio is read.
    """
    from classifiers.runs.targets import TARGETS, TargetError

    model_dir = Path(model_dir)
    dims = model_dimensions(model_dir)
    wanted = None
    if target is not None:
        if target not in TARGETS:
            raise TargetError(f"unknown --target {target!r}; choose one of {', '.join(TARGETS)}")
        wanted = list(TARGETS[target])
        if not wanted and not _has_classes(model_dir):
            raise PredictError(f"--target emotion: {model_dir} regresses {', '.join(dims)} and has no classes")
        if missing := [d for d in wanted if d not in dims]:
            raise PredictError(f"--target {target}: {model_dir} predicts {', '.join(dims) or 'classes only'}, not "
                               f"{', '.join(missing)}")
    rows = predict(files, model_dir, batch_size=batch_size, device=device, backbone=backbone)
    labels = [k for k in rows[0][1] if k not in dims] if rows else []
    if wanted is not None:
        labels, dims = ([], wanted) if wanted else (labels, [])
        rows = [(f, {k: v for k, v in p.items() if k in labels or k in dims}) for f, p in rows]
    return Predictions(rows, labels, dims, model_dir)


def _order_by_length(waves: list[np.ndarray], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _predict_finetuned(files: list[str], model_dir: Path, batch_size: int, device: torch.device,
                       backbone: str | Path | None = None):
    """(labels, probabilities `(N, C)`) of a fine-tuned model directory's classes (`_finetuned_outputs`);
    a dimensions-only model (`ser finetune --target` without --multitask) has none: PredictError."""
    labels, probs, dims, _ = _finetuned_outputs(files, model_dir, batch_size, device, backbone=backbone)
    if not labels:
        raise PredictError(f"{model_dir} regresses {', '.join(dims)} and has no emotion classes to score; "
                           f"scoring its dimensions on a corpus (CCC per dimension) is not built yet: see "
                           f"<fold>/predictions.csv and finetune.json of its run, or `ser predict` for the values")
    return labels, probs


@torch.inference_mode()
def _finetuned_outputs(files: list[str], model_dir: Path, batch_size: int, device: torch.device,
                       backbone: str | Path | None = None):
    """(labels, probabilities `(N, C)`, dimensions, values `(N, T)` on [-1, 1]) of a fine-tuned model
    directory (C = 0 for a dimensions-only model, T = 0 for a classifier); an adapter export loads its
    base (recorded, found by its weights hash, or `backbone`) and refuses one with other weights.

    The inputs are the model's own, as in training (`classifiers.finetuning.finetune.clip_inputs`): normalised
    waveforms, or a log-mel model's features of each clip alone (Whisper: a clip longer than its 30 s
    window is judged on its first 30 s, with a warning)."""
    from classifiers.finetuning.finetune import clip_inputs, collate, max_window
    from classifiers.finetuning.heads import EmotionClassifier
    from featstore.backbones.runtime import normalize_waveform

    model = EmotionClassifier.from_pretrained(model_dir, device=device, backbone=backbone)
    sr, norm, front = model.config.sample_rate, model.config.do_normalize, model.front_end
    waves = [load_audio(f, sr) for f in files]
    if norm:
        waves = [normalize_waveform(w) for w in waves]
    window = max_window(front)
    long = [f for f, w in zip(files, waves) if window and len(w) > window]
    if long:
        warnings.warn(f"{len(long)} file(s) longer than the model's {window / sr:g} s window (e.g. {long[0]}): each "
                      f"is judged on its first {window / sr:g} s", SerWarning, stacklevel=3)
    probs = np.zeros((len(files), len(model.labels)))
    values = np.zeros((len(files), len(model.dimensions)))
    for rows in _order_by_length(waves, batch_size):
        batch = collate([clip_inputs(waves[i], front) for i in rows])
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        classes, dims = model.split_outputs(logits.double().cpu().numpy())
        if classes is not None:
            probs[rows] = softmax(classes)
        if dims is not None:
            values[rows] = dims
    return model.labels, probs, model.dimensions, values


def probe_features(files: Sequence[str | Path], probe: SavedProbe, *, batch_size: int = 8,
                   device: str = "auto") -> np.ndarray:
    """Pooled `hidden_states[probe.layer]` statistics of each file: `(N, D)` float64, as the store pools them."""
    from featstore.backbones.runtime import hidden_states, load_backbone, locate_model

    dev = resolve_device(device)
    where = locate_model(probe.backbone_id, probe.weights_sha256, backbone=probe.backbone_dir,
                         recorded_in=Path(probe.directory) / PROBE_CONFIG if probe.directory else None)
    backbone = load_backbone(where, device=dev)
    if not -backbone.num_layers <= probe.layer < backbone.num_layers:
        raise PredictError(f"probe layer {probe.layer} does not exist in {probe.backbone_id} "
                           f"(layers 0..{backbone.num_layers - 1})")
    if probe.weights_sha256 and probe.weights_sha256 != backbone.weights_sha256:
        warnings.warn(f"the weights of {where} differ from those the probe was trained on "
                      f"(sha256 {backbone.weights_sha256[:12]} vs {probe.weights_sha256[:12]}); predictions may be off", SerWarning, stacklevel=2)
    width = backbone.hidden_size * (2 if probe.stat == "mean+std" else 1)
    if probe.coef.shape[1] != width:
        raise PredictError(f"the probe expects {probe.coef.shape[1]} features, {probe.stat} of {probe.backbone_id} "
                           f"gives {width}; was it trained on another backbone or statistic?")
    pieces: list[tuple[int, np.ndarray]] = []
    for i, f in enumerate(files):
        wave = model_audio(f, backbone.sample_rate, backbone.receptive_field)
        # functionals (openSMILE) describe the whole clip, as in the store: never windowed
        cut = [wave] if backbone.input_kind == "functionals" else windows(
            wave, int(round(probe.max_seconds * backbone.sample_rate)), backbone.receptive_field)
        pieces += [(i, w) for w in cut]
    frames: list[list[np.ndarray]] = [[] for _ in files]
    for rows in _order_by_length([w for _, w in pieces], batch_size):
        states, lengths = hidden_states(backbone, [pieces[r][1] for r in rows], device=dev)
        layer = states[probe.layer].float().cpu().numpy()            # (batch, frames, hidden)
        for b, r in enumerate(rows):
            frames[pieces[r][0]].append(layer[b, : int(lengths[b])])
    out = np.zeros((len(files), width))
    for i, fr in enumerate(frames):
        x = np.concatenate(fr).astype(np.float64)                    # (frames, hidden)
        mean, std = x.mean(0), x.std(0)
        out[i] = {"mean": mean, "std": std, "mean+std": np.concatenate([mean, std])}[probe.stat]
    return out

