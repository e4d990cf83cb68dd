"""End-to-end fine-tuning over speaker-independent folds, on the Hugging Face Trainer.

`finetune(utterances, folds, FinetuneConfig(model=..., epochs=...), out_dir=...)` trains one
`EmotionClassifier` (backbone + pooling head, classifiers.finetuning.heads) per fold and evaluates it on that
fold's test speakers. `FinetuneConfig` holds every hyper-parameter of a run: it is the function's
settings, the plan saved in each fold directory, the resume check and the `ser finetune` options.

- model selection on a *validation* set of training speakers (`featstore.folds.validation_split`,
  unless the folds already carry `val`), never on the test fold: the checkpoint with the best
  validation UAR is restored at the end (`load_best_model_at_end`);
- mixed precision on CUDA (bf16 where supported, else fp16), gradient accumulation, batches
  grouped by length (clip durations from the manifest), a checkpoint per epoch;
- resumable: a fold directory holding checkpoints resumes from the last one; a finished fold
  (same plan) is read back instead of retrained, so an interrupted 5-fold run goes on where
  it stopped; `resume=False` discards unfinished folds' checkpoints but never finished work;
  `default_run_dir` names a run folder by a hash of its settings;
- repeatable: the seed fixes the head's initialisation, the data order, the validation speakers
  and every augmentation draw (per seed, epoch and utterance);
- cross-corpus honest: when the test corpora do not declare every trained class (a RAVDESS model
  on CREMA-D, which has no calm/surprise), the scores with predictions restricted to the shared
  classes are reported beside the plain ones, and the training-only classes are named;
- dimensions (`target` = arousal | valence | dominance | avd, issue 25): the model regresses the
  ratings, each corpus' scale mapped onto [-1, 1] (`featstore.corpora.base.dimension_array`), with
  the CCC loss (`classifiers.finetuning.heads.masked_ccc_loss`; clips without a rating are left out, counted
  and said), and the checkpoint with the best mean CCC on the validation speakers is restored;
  `multitask` = W > 0 learns the classes too, loss = (1 - W) x cross-entropy + W x CCC loss.
  Test scores: CCC, Pearson r and RMSE per dimension (`dimension_scores`), with the jackknife-t
  interval over test speakers (`dimension_intervals`, `classifiers.estimators.regression.ccc_interval`).

Layout of `out_dir`:

    <fold>/plan.json              the settings the fold was trained with (resume checks them)
    <fold>/checkpoint-<step>/     Trainer checkpoints: the model as config.json + model.safetensors
                                  (a LoRA run's: the adapters and the head only, `lora.trained_state`)
                                  and the arguments as training_args.json, but also the Trainer's
                                  own optimizer.pt, scheduler.pt and rng_state.pth, which ARE
                                  pickles (transformers loads them with torch.load(weights_only=True)
                                  when resuming, which refuses arbitrary objects); resume only
                                  checkpoints you wrote
    <fold>/model/                 the selected model, no pickle: EmotionClassifier.from_pretrained,
                                  `ser predict`, and transformers' AutoModelForAudioClassification
                                  (config.json, model.safetensors, preprocessor_config.json; heads
                                  other than mean / layer-weighted add modeling_ser.py + pooling.py
                                  for trust_remote_code); README.md is its model card (base model
                                  and weights hash, corpora, folds, test scores with speaker CIs,
                                  training settings). With `adapter` (LoRA, classifiers.finetuning.lora) it
                                  holds the adapters (adapter_model.safetensors, peft's) and the
                                  head (head.safetensors) only, naming the base model and its
                                  weights sha256, and needs ser to load
    <fold>/predictions.csv        test utterances: id, speaker, label, prediction, probabilities; with a
                                  target true_<dim> and pred_<dim> (on [-1, 1]); no class columns
                                  for a dimensions-only target
    <fold>/fold_result.json       test metrics, confusion, validation score, log history
    finetune.json, finetune.csv   one record per fold (WA / UAR / macro-F1, confusion, validation
                                  score, ...) in the probes' format (classifiers.results.records), with the
                                  mean ± std over folds in the JSON's summary; with a target, the
                                  records carry ccc, ccc_/pearson_/rmse_<dim> and meta.dimension_summary
                                  the pooled CCC per dimension with its speaker CI (a dimensions-only
                                  run: that is the summary, in finetune_summary.csv too)
    predictions.parquet           every fold's predictions in one file (classifiers.results.predictions)
    confusion.png                 summed test-fold confusion; learning_curves.png from the logs
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import pickle
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from classifiers.finetuning.augment import Compose, augment_rng, describe_augment, parse_augment
from classifiers.finetuning.wordswap import bind_word_swap
from classifiers.results.metrics import mean_std, scores, softmax
from classifiers.results.plots import literal_text, save_figure
from classifiers.results.records import declared_labels
from featstore import serialize
from featstore.audio import load_audio
from featstore.corpora.base import Utterance
from featstore.device import DEVICE_HELP, check_device, resolve_device
from featstore.errors import SerError, SerWarning
from featstore.folds import Fold, make_folds, validation_split
from featstore.labels import canonical_order

if TYPE_CHECKING:
    import torch

# torch, transformers and the model code are imported where used: `ser` builds its finetune
# options from FinetuneConfig at start-up, which must stay light


class FinetuneError(SerError):
    """Fine-tuning settings or an output directory that cannot be used; the message says why."""


# -- the configuration ---------------------------------------------------------------------------

#: how a resumed run treats a changed field: must-match refuses, may-change goes on (training
#: length, logging: a finished fold is trained on), ignored never makes a fold stale
ON_RESUME = ("must-match", "may-change", "ignored")


def _param(default, help: str, *, on_resume: str = "must-match", saved: bool = True, cli: bool = True):
    """A FinetuneConfig field: its default, its one help text (here and in `ser finetune --help`),
    how resuming treats a change, whether plan.json records it and whether it is a CLI option."""
    assert on_resume in ON_RESUME, on_resume
    return field(default=default, metadata=dict(help=help, on_resume=on_resume, saved=saved, cli=cli))


@dataclass
class FinetuneConfig:
    """Every hyper-parameter of a fine-tuning run (one object, SpeechBrain-style).

    Saved fields make up `plan.json` in each fold directory (with `labels` resolved to the trained
    classes and `augment` in canonical form); resuming compares them by `on_resume`. Fields
    marked `cli` are the `ser finetune` options (`--head-lr` for `head_lr`), with the help below.
    Values are checked on construction (`FinetuneError` naming the option).
    """

    model: str | None = _param(None, "Hub id or local directory of the pretrained backbone (default: config "
                                     "`model`, else facebook/wav2vec2-base).", cli=False)
    epochs: float = _param(6.0, "Training epochs.", on_resume="may-change")
    max_steps: int | None = _param(None, "Optimiser steps; when given, wins over --epochs.", on_resume="may-change")
    freeze: str = _param("feature-encoder", "Frozen part: none, feature-encoder, layers:N (CNN + first N "
                                            "transformer layers) or backbone.")
    adapter: str | None = _param(None, "Parameter-efficient fine-tuning: lora[:r=8,alpha=16,dropout=0,targets=q,v] "
                                       "trains LoRA adapters on the encoder's attention projections (q, k, v, o) and "
                                       "the head, everything else frozen; exports hold the adapters and head only "
                                       "(pip install 'ser[lora]').")
    pooling: str = _param("mean", "Pooling head: mean, attention, layer-weighted or bilstm.")
    augment: str | None = _param(None, "Training-set augmentation, e.g. chunk-permute,noise or speed:0.9/1.0/1.1@0.5.")
    ctc_model: str | None = _param(None, "CTC model for --augment word-swap (Wav2Vec2ForCTC hub id or directory; "
                                         "default: $SER_CTC_MODEL, else one per language).")
    seed: int = _param(0, "Random seed: head initialisation, data order, validation speakers, augmentation draws.")
    lr: float = _param(3e-5, "Learning rate (backbone, and the head unless --head-lr).")
    head_lr: float | None = _param(None, "Learning rate of the pooling head and classifier (default: --lr).")
    batch_size: int = _param(8, "Utterances per batch.")
    grad_accum: int = _param(1, "Batches accumulated per optimiser step.")
    labels: tuple[str, ...] | None = _param(
        None, "Classes to learn, comma-separated (default: every training label); other utterances are left out.")
    target: str = _param("emotion", "What to learn: emotion (the classes) or arousal, valence, dominance, avd (all "
                                     "three), regressed with the CCC loss on ratings mapped to [-1, 1]; model "
                                     "selection then by the validation speakers' mean CCC.")
    multitask: float = _param(0.0, "With --target: learn the classes too, loss = (1 - W) x cross-entropy + W x CCC "
                                   "loss (0: the dimensions only).")
    val_fraction: float = _param(0.1, "Fraction of training speakers held out for validation (model selection).")
    val_speakers: int | None = _param(None, "Number of validation speakers, instead of --val-fraction.")
    max_duration: float | None = _param(None, "Crop training clips longer than S seconds at random (bounds GPU memory).")
    warmup: float = _param(0.1, "Linear warm-up: a fraction of the steps (< 1) or a step count.")
    weight_decay: float = _param(0.0, "AdamW weight decay.")
    dropout: float = _param(0.1, "Dropout before the classifier.")
    logging_steps: int | None = _param(None, "Log the training loss every N steps (default: 4 times an epoch).",
                                       on_resume="may-change")
    report_to: str = _param("none", "none, tensorboard, wandb, or a comma-separated list.", on_resume="ignored")
    num_workers: int = _param(0, "Data-loading worker processes.", on_resume="ignored")
    device: str = _param("auto", DEVICE_HELP, on_resume="ignored", cli=False)
    fold: str = _param("all", "all, a fold index or a fold name.", saved=False)
    resume: bool = _param(True, "Go on from the last checkpoint and skip finished folds; --no-resume starts "
                                "unfinished folds afresh (their checkpoints discarded) and keeps finished folds.",
                          saved=False)
    progress: bool = _param(True, "Progress bars and training logs.", saved=False)
    plots: bool = _param(True, "Write confusion.png and learning_curves.png.", saved=False)

    def __post_init__(self):
        if isinstance(self.labels, str):
            self.labels = [s.strip() for s in self.labels.split(",") if s.strip()]
        self.labels = tuple(dict.fromkeys(self.labels)) if self.labels else None
        if self.augment is not None and not isinstance(self.augment, str):
            self.augment = describe_augment(parse_augment(self.augment))
        if not isinstance(self.report_to, str):
            self.report_to = ",".join(self.report_to)
        self.fold, self.device = str(self.fold), check_device(self.device)
        self.target = str(self.target).strip().lower()
        from classifiers.finetuning.lora import parse_adapter

        spec = parse_adapter(self.adapter)
        self.adapter = None if spec is None else spec.describe()
        self._check()
        if not self.model:
            from featstore.config import default_model

            self.model = default_model()
        self.model = str(self.model)

    def _check(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise FinetuneError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {what}")

        from classifiers.finetuning.lora import require_peft

        parse_augment(self.augment)
        require_peft(self.adapter)
        need(self.max_steps is not None or self.epochs > 0, "epochs", "must be positive")
        for name in ("max_steps", "val_speakers", "logging_steps"):
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "must be at least 1")
        need(self.batch_size >= 1, "batch_size", "must be at least 1")
        need(self.grad_accum >= 1, "grad_accum", "must be at least 1")
        need(self.lr > 0, "lr", "must be positive")
        need(self.head_lr is None or self.head_lr > 0, "head_lr", "must be positive")
        need(0 < self.val_fraction < 1, "val_fraction", "must lie strictly between 0 and 1")
        need(self.max_duration is None or self.max_duration > 0, "max_duration", "must be positive (seconds)")
        need(self.warmup >= 0, "warmup", "must be a fraction of the steps (< 1) or a step count, not negative")
        need(self.weight_decay >= 0, "weight_decay", "must not be negative")
        need(0 <= self.dropout < 1, "dropout", "must lie in [0, 1)")
        need(self.num_workers >= 0, "num_workers", "must not be negative")
        gpu = self.device.partition(":")[2]
        need(gpu in ("", "0"), "device", f"the Hugging Face Trainer trains on the first visible GPU only: run "
                                          f"CUDA_VISIBLE_DEVICES={gpu} ser finetune ... --device cuda")
        need(self.labels is None or len(self.labels) >= 2, "labels", "fine-tuning needs at least 2 classes")
        from classifiers.runs.targets import TARGETS

        need(self.target in TARGETS, "target", f"choose one of {', '.join(TARGETS)}")
        need(0 <= self.multitask < 1, "multitask", "must lie in [0, 1): the CCC loss' weight beside the cross-entropy")
        need(self.multitask == 0 or self.target != "emotion", "multitask",
             "weights a CCC loss on emotion dimensions: give --target arousal, valence, dominance or avd too")
        need(self.labels is None or self.target == "emotion" or self.multitask > 0, "labels",
             f"picks classes, but --target {self.target} without --multitask learns the dimensions only: add "
             f"--multitask W to learn both, or leave --labels out")
        targets = [n.strip() for n in self.report_to.split(",") if n.strip()]
        if targets != ["none"]:
            from transformers.integrations.integration_utils import (
                INTEGRATION_TO_CALLBACK,
                get_available_reporting_integrations,
            )

            unknown = [n for n in targets if n not in {"all", "none", *INTEGRATION_TO_CALLBACK}]
            need(not unknown, "report_to", f"unknown {', '.join(unknown)}: use none, all, or a comma-separated list "
                                           f"of {', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
            missing = [n for n in targets if n in INTEGRATION_TO_CALLBACK and n not in
                       get_available_reporting_integrations()]
            need(not missing, "report_to", f"{', '.join(missing)} is not installed here: pip install it, or leave "
                                           f"--report-to out")
        from classifiers.finetuning.heads import POOLINGS, parse_freeze

        need(self.pooling in POOLINGS, "pooling", f"choose one of {', '.join(POOLINGS)}")
        parse_freeze(self.freeze, 10**6)  # spelling only; the model's depth is checked when it is loaded

    def plan(self, classes: Sequence[str]) -> dict:
        """The saved fields as plan.json holds them: `labels` = the trained classes, `augment` canonical."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["saved"]}
        out.update(labels=list(classes), augment=describe_augment(parse_augment(self.augment)))
        return serialize.plain(out)

    @property
    def dims(self) -> list[str]:
        """The dimensions `target` names ([] for emotion categories)."""
        from classifiers.runs.targets import target_dimensions

        return list(target_dimensions(self.target))

    @property
    def classify(self) -> bool:
        """Whether the run learns the classes (emotion, or a multitask target)."""
        return not self.dims or self.multitask > 0

    def report_targets(self) -> str | list[str]:
        """`report_to` as TrainingArguments takes it."""
        names = [s.strip() for s in self.report_to.split(",") if s.strip()]
        return names[0] if len(names) == 1 else names


#: plan keys that may change between a run and its resumption (derived from FinetuneConfig)
RESUMABLE_CHANGES = tuple(f.name for f in fields(FinetuneConfig) if f.metadata["on_resume"] != "must-match")
_IGNORED = {f.name for f in fields(FinetuneConfig) if f.metadata["on_resume"] == "ignored"}


def plan_changes(old: dict, new: dict, *, allowed: Sequence[str] = ()) -> list[str]:
    """Keys whose values differ between a stored plan and this run's, except `allowed` ones.

    A saved field missing from `old` (a plan written before the field existed) counts as its
    default, so older run directories are still recognised.
    """
    defaults = serialize.plain({f.name: f.default for f in fields(FinetuneConfig) if f.metadata["saved"]})
    old = {**{k: defaults[k] for k in new if k not in old and k in defaults and k != "labels"}, **old}
    return sorted(k for k in set(old) | set(new) if k not in allowed and old.get(k) != new.get(k))


# -- data ----------------------------------------------------------------------------------------

class AudioDataset:
    """Utterances as `{"input_values": (samples,) float32, "labels": int}` items, or for log-mel
    models (`front_end`, `EmotionClassifier.front_end`) `{"input_features", "frame_lengths", "labels"}`
    (`clip_inputs`: the features computed once per clip, here, not per batch).

    Training sets (`train=True`) apply `augment` with a generator keyed by (seed, epoch, index)
    and crop clips longer than `max_samples` at a random (equally keyed) offset; `epoch` is set
    by the trainer's callback before each epoch. Waveforms are normalised per clip when
    `do_normalize`, before padding, as at prediction time. A model with a longest window (Whisper:
    30 s) gets training clips cropped to it at random, and the first window of longer
    validation / test clips.
    """

    def __init__(self, utterances: Sequence[Utterance], label_ids: dict[str, int], sample_rate: int,
                 do_normalize: bool, *, train: bool = False, augment: Compose | None = None,
                 seed: int = 0, max_samples: int | None = None, front_end=None, targets: np.ndarray | None = None):
        self.utterances = list(utterances)
        self.label_ids = label_ids
        # (n, T) dimension ratings on [-1, 1], NaN = none (`dimension_array`); items get "dimensions"
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32).reshape(len(self.utterances), -1)
        self.sample_rate = sample_rate
        self.do_normalize = do_normalize
        self.train = train
        self.augment = augment or Compose()
        self.seed = seed
        self.front_end = front_end
        window = max_window(front_end)
        self.max_samples = min(x for x in (max_samples, window) if x) if (max_samples or window) else None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utterances)

    def lengths(self) -> list[int]:
        """Approximate lengths in samples (from the manifest's durations), for length grouping."""
        return [max(1, int(u.duration * self.sample_rate)) for u in self.utterances]

    def __getitem__(self, i: int) -> dict:
        from featstore.backbones.runtime import normalize_waveform

        u = self.utterances[i]
        wave = load_audio(u.path, self.sample_rate, start=u.start, end=u.end)
        if self.train:
            rng = augment_rng(self.seed, self.epoch, i)
            if self.augment:
                wave = self.augment(wave, rng, u)
            if self.max_samples and len(wave) > self.max_samples:
                start = int(rng.integers(0, len(wave) - self.max_samples + 1))
                wave = wave[start:start + self.max_samples]
        if self.do_normalize:
            wave = normalize_waveform(wave)
        item = clip_inputs(wave, self.front_end)
        if self.label_ids:                # a dimensions-only model has no classes
            item["labels"] = self.label_ids[u.label]
        if self.targets is not None:
            item["dimensions"] = self.targets[i]
        return item


def max_window(front_end) -> int | None:
    """The longest clip in samples a log-mel front-end takes (Whisper: 30 s), else None."""
    seconds = getattr(front_end, "max_seconds", None)
    return int(round(seconds * front_end.sample_rate)) if seconds else None


def clip_inputs(wave: np.ndarray, front_end=None) -> dict:
    """One clip's model inputs: `{"input_values": wave}` (already normalised where the model says so) for
    waveform models; for log-mel ones (`front_end`, `featstore.backbones.logmel`) the model's own features of
    the clip alone, computed by extraction's own code (`LogMelFrontEnd.batch` of the one clip), and its real
    output frames: `{"input_features": array, "frame_lengths": int}`, plus `attention_mask` over the input
    frames where the model takes one (w2v-BERT: its extractor pads a clip to an even number of fbank frames
    and masks the extra one). A clip longer than the front-end's window (Whisper: 30 s) keeps its first window."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if front_end is None:
        return {"input_values": wave}
    window = max_window(front_end)
    features, mask, frames = front_end.batch([wave[:window] if window else wave])
    item = {"input_features": features[0].numpy().astype(np.float32, copy=False), "frame_lengths": int(frames[0])}
    if mask is not None:
        item["attention_mask"] = mask[0].numpy()
    return item


def collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of items: input_values `(batch, samples)`, attention_mask `(batch, samples)`, labels `(batch,)`.

    Log-mel items (`clip_inputs`): input_features stacked (Whisper's are all 30 s long), or zero-padded
    along their first (frame) axis with their attention_mask `(batch, frames)` over the input frames
    (w2v-BERT), and frame_lengths `(batch,)`, the real output frames pooling and the loss see."""
    import torch

    if "input_features" in items[0]:
        return _collate_features(items)
    n = max(len(it["input_values"]) for it in items)
    values = torch.zeros(len(items), n, dtype=torch.float32)
    mask = torch.zeros(len(items), n, dtype=torch.long)
    for i, it in enumerate(items):
        k = len(it["input_values"])
        values[i, :k] = torch.from_numpy(it["input_values"])
        mask[i, :k] = 1
    batch = {"input_values": values, "attention_mask": mask}
    return _targets(items, batch)


def _targets(items: Sequence[dict], batch: dict) -> dict:
    """Add the items' targets to a batch: labels `(batch,)` class ids, dimensions `(batch, T)` float32."""
    import torch

    if "labels" in items[0]:
        batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
    if "dimensions" in items[0]:
        batch["dimensions"] = torch.from_numpy(np.stack([np.asarray(it["dimensions"], np.float32) for it in items]))
    return batch


def _collate_features(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """`collate` of log-mel items."""
    import torch

    feats = [it["input_features"] for it in items]
    batch = {"frame_lengths": torch.tensor([it["frame_lengths"] for it in items], dtype=torch.long)}
    if "attention_mask" not in items[0]:
        batch["input_features"] = torch.from_numpy(np.stack(feats))
    else:
        n = max(len(f) for f in feats)
        values = torch.zeros(len(feats), n, *feats[0].shape[1:], dtype=torch.float32)
        mask = torch.zeros(len(feats), n, dtype=torch.long)
        for i, (f, it) in enumerate(zip(feats, items)):
            values[i, :len(f)] = torch.from_numpy(f)
            mask[i, :len(f)] = torch.from_numpy(np.asarray(it["attention_mask"], dtype=np.int64))
        batch.update(input_features=values, attention_mask=mask)
    return _targets(items, batch)


# -- metrics -------------------------------------------------------------------------------------

def _compute_metrics(classes: list[str], dims: Sequence[str] = ()):
    """The Trainer's metrics of the validation speakers: wa / uar / macro_f1 of the classes, and with
    `dims` `dimension_scores` (ccc, the mean over dimensions, is then the selection metric)."""
    c = len(classes)

    def compute(eval_pred) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        logits = np.asarray(logits)
        ids = eval_pred.label_ids
        labels, targets = (ids if classes and dims else (None, ids) if dims else (ids, None))
        out = {}
        if classes:
            names = np.asarray(classes)
            s = scores(names[np.asarray(labels)], names[logits[:, :c].argmax(-1)], classes)
            out.update(wa=s["wa"], uar=s["uar"], macro_f1=s["macro_f1"])
        if dims:
            out.update(dimension_scores(np.asarray(targets), logits[:, c:], dims))
        return out
    return compute


def dimension_scores(truth: np.ndarray, pred: np.ndarray, dims: Sequence[str]) -> dict:
    """ccc_<dim>, pearson_<dim>, rmse_<dim> (`classifiers.estimators.regression.scores`) of each dimension over the
    rows rated on it (NaN truth left out), and ccc, their mean over dimensions; NaN for a dimension
    with fewer than 2 rated rows. truth, pred `(n, T)` in `dims` order."""
    from classifiers.estimators.regression import scores as regression_scores

    truth, pred = np.asarray(truth, float).reshape(len(truth), -1), np.asarray(pred, float).reshape(len(pred), -1)
    out: dict = {}
    for t, d in enumerate(dims):
        known = np.isfinite(truth[:, t])
        s = (regression_scores(truth[known, t], pred[known, t], [d]) if known.sum() >= 2 else
             {f"{m}_{d}": float("nan") for m in ("ccc", "pearson", "rmse")})
        out.update({f"{m}_{d}": s[f"{m}_{d}"] for m in ("ccc", "pearson", "rmse")})
    out["ccc"] = float(np.mean([out[f"ccc_{d}"] for d in dims]))
    return out


# -- labels and scores ---------------------------------------------------------------------------

def score_test(truth: Sequence[str], probs: np.ndarray, classes: Sequence[str],
               shared: Sequence[str]) -> tuple[list[str], dict, dict | None]:
    """Predictions and scores of a test fold; probs `(N, C)` in `classes` order.

    Returns (predicted labels, `scores(...)` over `classes`, restricted) where restricted holds
    wa / uar / macro_f1 with predictions restricted to `shared` (the classes the training and
    test corpora both declare) and those labels, or None when every class is shared.
    """
    classes = list(classes)
    predicted = [classes[k] for k in np.asarray(probs).argmax(-1)]
    s = scores(truth, predicted, classes)
    if len(shared) == len(classes):
        return predicted, s, None
    cols = [classes.index(c) for c in shared]
    r = scores(truth, [shared[k] for k in np.asarray(probs)[:, cols].argmax(-1)], list(shared))
    return predicted, s, {"labels": list(shared), **{k: r[k] for k in ("wa", "uar", "macro_f1")}}


@dataclass
class FoldResult:
    """One fold's outcome on its test speakers."""

    fold: str
    train_set: str                    # training corpora, "+"-joined
    test_set: str                     # test corpora, "+"-joined
    n_train: int
    n_val: int
    n_test: int
    val_speakers: list[str]
    metrics: dict                     # wa, uar, macro_f1 on the test fold
    recall: dict                      # label -> recall on the test fold (labels present there)
    confusion: list[list[int]]        # (labels, labels), rows true, columns predicted
    best_val_uar: float | None
    best_checkpoint: str | None
    global_step: int
    model_dir: str
    seconds: float
    log_history: list[dict] = field(default_factory=list, repr=False)
    dropped: dict = field(default_factory=dict)  # test label -> utterances left out (class not trained)
    resumed_from_step: int | None = None  # global step of the checkpoint training went on from
    # trained classes the test corpora do not declare (cross-corpus: calm/surprise on CREMA-D), and
    # wa/uar/macro_f1 with predictions restricted to the shared classes (with those labels)
    training_only: list[str] = field(default_factory=list)
    restricted: dict | None = None
    y_true: list[str] = field(default_factory=list, repr=False)   # test labels, predictions.csv order
    y_pred: list[str] = field(default_factory=list, repr=False)   # predicted labels, same order
    # what training cost: parameters trained / in the model, and peak memory (`peak_memory_kind`:
    # "cuda" = torch.cuda.max_memory_allocated during the fold, "rss" = the process' peak resident
    # set size so far, resource.getrusage), in MiB
    trainable_params: int | None = None
    total_params: int | None = None
    peak_memory_mib: float | None = None
    peak_memory_kind: str | None = None
    # with --target: the dimensions learnt ([] for categories), the validation speakers' mean CCC of
    # the selected checkpoint (the selection metric then), and the utterances left out unrated
    dimensions: list[str] = field(default_factory=list)
    best_val_ccc: float | None = None
    unrated: dict = field(default_factory=dict)


@dataclass
class FinetuneResult:
    """All folds of a `finetune` run, their mean ± std, and the files written."""

    out_dir: Path
    labels: list[str]
    folds: list[FoldResult]
    summary: dict                     # metric -> {"mean": .., "std": ..} over folds (population std)
    plan: dict
    files: dict[str, Path] = field(default_factory=dict)

    def headline(self) -> list[dict]:
        """`classifiers.results.records.ProbeResults.summary` of the run (one row): pooled UAR over the test
        folds with its 95% speaker CI, classes, chance, beside the mean ± std over folds."""
        return to_probe_results(self).summary()

    def table(self) -> list[dict]:
        """Plain rows (fold, n_test, wa, uar, macro_f1) plus "mean" and "std" rows (over folds)."""
        keys = list(self.summary)
        rows = [{"fold": f.fold, "n_test": f.n_test, **{k: f.metrics[k] for k in keys}} for f in self.folds]
        for stat in ("mean", "std"):
            rows.append({"fold": stat, "n_test": None, **{k: self.summary[k][stat] for k in keys}})
        return rows

    @property
    def dimensions(self) -> list[str]:
        """The dimensions the run learnt ([] for categories)."""
        return list(self.plan.get("target") and _target_dims(self.plan["target"]) or [])

    def dimension_summary(self) -> dict:
        """dim -> `dimension_intervals` of every fold's test predictions pooled (each fold's model on its own
        test speakers), with the mean and std over folds of each fold's CCC beside it; {} for categories."""
        dims = self.dimensions
        parts = [read_dimension_predictions(path, dims) for f in self.folds
                 if (path := self.out_dir / _fold_dir_name(f.fold) / "predictions.csv").exists()]
        if not dims or not parts:
            return {}
        truth, pred = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        out = dimension_intervals(truth, pred, [s for p in parts for s in p[2]], dims)
        for d in dims:
            mean, std = mean_std([f.metrics[f"ccc_{d}"] for f in self.folds])
            out[d].update(ccc_folds_mean=mean, ccc_folds_std=std, n_folds=len(self.folds))
        return out


# -- the trainer ---------------------------------------------------------------------------------

def _trainer_class():
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochCallback(TrainerCallback):
        """Tells the training set which epoch it serves (augmentation draws depend on it)."""

        def __init__(self, dataset: AudioDataset):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.dataset.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))

    class SerTrainer(Trainer):
        """Trainer with length grouping from known durations; checkpoints hold the model as
        safetensors and the arguments as JSON (the Trainer's optimizer.pt, scheduler.pt and
        rng_state.pth stay pickles, read back with torch.load(weights_only=True))."""

        def __init__(self, *args, group_by_length: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.group_by_length = group_by_length
            self.add_callback(EpochCallback(self.train_dataset))
            if self.args.disable_tqdm:  # quiet means quiet: no log dicts printed either
                self.remove_callback(PrinterCallback)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self.group_by_length:
                return super()._get_train_sampler(train_dataset)
            # durations come from the manifest: no audio is read to group batches
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=dataset.lengths())

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            # config.json + model.safetensors (each checkpoint loads with from_pretrained) and the
            # arguments as JSON instead of Trainer's pickled training_args.bin. A LoRA run's checkpoints
            # hold what it trains only (adapters + head): the frozen base is the one it started from
            output_dir = Path(output_dir or self.args.output_dir)
            if self.model.config.adapter is not None:
                from classifiers.finetuning.lora import trained_state

                state_dict = trained_state(self.model, state_dict)
            self.model.save_pretrained(output_dir, state_dict=state_dict, transformers=False)
            (output_dir / "training_args.json").write_text(self.args.to_json_string(), encoding="utf-8")

        def _issue_warnings_after_load(self, load_result) -> None:
            # resuming / restoring the best checkpoint of a LoRA run: the frozen base weights are absent on
            # purpose (they are in the model already); a missing trained tensor is still reported
            if self.model.config.adapter is not None:
                from classifiers.finetuning.lora import trained_state

                kept = set(trained_state(self.model))
                load_result = type(load_result)([k for k in load_result.missing_keys if k in kept],
                                                load_result.unexpected_keys)
            super()._issue_warnings_after_load(load_result)

    return SerTrainer


def _mixed_precision(device: str) -> dict:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    if torch.cuda.is_bf16_supported():
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def _last_checkpoint(fold_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not fold_dir.is_dir():
        return None
    last = get_last_checkpoint(str(fold_dir))
    return Path(last) if last else None


# -- folds and labels ----------------------------------------------------------------------------

def _select_folds(folds: Sequence[Fold], fold: str | int) -> list[Fold]:
    if fold in ("all", None):
        return list(folds)
    names = [f.name for f in folds]
    if isinstance(fold, str) and fold in names:
        return [folds[names.index(fold)]]
    try:
        k = int(fold)
    except (TypeError, ValueError):
        raise FinetuneError(f"unknown fold {fold!r}; use all, an index 0..{len(folds) - 1} or a name "
                            f"({', '.join(names)})") from None
    if not 0 <= k < len(folds):
        raise FinetuneError(f"fold index {k} out of range: there are {len(folds)} folds (0..{len(folds) - 1})")
    return [folds[k]]


def _fold_dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-+" else "_" for c in name)


def _indices_digest(fold: Fold, utterances: Sequence[Utterance]) -> str:
    h = hashlib.sha256()
    for part in (fold.train, fold.val, fold.test):
        ids = [] if part is None else [utterances[int(i)].id for i in part]
        h.update("\n".join(ids).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# -- the run -------------------------------------------------------------------------------------

@dataclass
class _Split:
    """One fold's utterances after label filtering, and what the test corpora share with training."""

    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    dropped: dict                     # test label -> utterances left out (class not trained)
    shared: list[str]                 # trained classes the test corpora declare too, in class order
    # with --target: each part's ratings `(n, T)` on [-1, 1], NaN = none (`dimension_array`)
    train_y: np.ndarray | None = None
    val_y: np.ndarray | None = None
    test_y: np.ndarray | None = None
    unrated: dict = field(default_factory=dict)   # part -> utterances left out for want of a rating


def finetune(utterances: Sequence[Utterance], folds: Sequence[Fold] | str = "standard",
             config: FinetuneConfig | None = None, *, out_dir: str | Path, callbacks: Sequence = (),
             protocol: str = "") -> FinetuneResult:
    """Fine-tune `config.model` end to end on every selected fold and test it on the fold's test speakers.

    utterances: the records the folds index (length N). folds: `Fold`s from featstore.folds
    (make_folds / multi_corpus_folds / cross_corpus_folds) or a protocol name for `make_folds`
    (e.g. "luna5", "standard"). Folds without `val` get one from `validation_split(fraction=
    config.val_fraction, n_speakers=config.val_speakers, seed=config.seed)`. config: every
    hyper-parameter (`FinetuneConfig`; default: its defaults). Utterances with labels outside
    the trained classes are dropped (training) or counted in `FoldResult.dropped` (test).
    callbacks: extra `transformers.TrainerCallback`s (e.g. EarlyStoppingCallback). protocol: the
    name of the protocol `folds` came from, for the model cards and results (default: `folds` when
    it is a name).

    Returns a `FinetuneResult` and writes the files listed in the module docstring.
    """
    from transformers.utils import logging as hf_logging

    config = config or FinetuneConfig()
    resolve_device(config.device)     # a missing GPU is an error here, not a CPU run in disguise
    utterances = list(utterances)
    protocol = folds if isinstance(folds, str) else protocol
    if isinstance(folds, str):
        folds = make_folds(utterances, folds, seed=config.seed)
    selected = _select_folds(list(folds), config.fold)
    classes = _classes(utterances, selected, config.labels) if config.classify else []
    ratings = _ratings(utterances, selected, config) if config.dims else None
    plan = config.plan(classes)
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    if not config.progress:
        hf_logging.set_verbosity_error()
    results: list[FoldResult] = []
    try:
        for f in selected:
            fold_dir = out_dir / _fold_dir_name(f.name)
            fold_plan = {**plan, "fold": f.name, "fold_digest": _indices_digest(f, utterances)}
            split = _split(utterances, f, classes, config, ratings)
            done = _prepare_fold_dir(fold_dir, fold_plan, config.resume)
            if done is None:
                done = _train_fold(fold_dir, fold_plan, split, classes, config, callbacks,
                                   run_info={"protocol": protocol, "folds": [x.name for x in folds]})
            elif classes and not done.y_true:   # written before predictions were kept: rescored from its CSV
                done = _rescore(done, fold_dir / "predictions.csv", classes, split.shared)
            results.append(done)
    finally:
        hf_logging.set_verbosity(verbosity)
    run = FinetuneResult(out_dir=out_dir, labels=classes, folds=results, summary=summarize(results),
                         plan={**plan, "protocol": protocol})
    run.files = write_results(run, plots=config.plots)
    return run


def _classes(utterances: Sequence[Utterance], selected: Sequence[Fold], labels: Sequence[str] | None) -> list[str]:
    """The trained classes: `labels`, or every label of the selected training (and validation) sets."""
    train_labels = {utterances[int(i)].label for f in selected for part in (f.train, f.val)
                    if part is not None for i in part}
    classes = canonical_order(train_labels) if labels is None else list(labels)
    missing = [c for c in classes if c not in train_labels]
    if missing:
        raise FinetuneError(f"labels {', '.join(missing)} have no training utterances in the selected folds "
                            f"(training labels: {', '.join(canonical_order(train_labels))})")
    if len(classes) < 2:
        raise FinetuneError(f"fine-tuning needs at least 2 classes, the training sets have {classes}")
    return classes


def _ratings(utterances: Sequence[Utterance], selected: Sequence[Fold], config: FinetuneConfig) -> np.ndarray:
    """`(N, T)` ratings of `config.dims` for every utterance, each corpus' scale mapped onto [-1, 1]
    (`featstore.corpora.base.dimension_array`), NaN where missing; one line when none of the selected
    folds' utterances is rated."""
    from featstore.corpora.base import dimension_array

    Y = dimension_array(utterances, config.dims)
    used = sorted({int(i) for f in selected for part in (f.train, f.val, f.test) if part is not None for i in part})
    if not np.isfinite(Y[used]).any():
        corpora = ", ".join(sorted({utterances[i].corpus for i in used}))
        raise FinetuneError(f"--target {config.target}: no utterance of {corpora} carries {'/'.join(config.dims)} "
                            f"ratings; fine-tune on a corpus with dimensions (iemocap, msppodcast, mspimprov, a CSV "
                            f"corpus with arousal,valence,dominance columns) or leave --target out")
    return Y


def _split(utterances: Sequence[Utterance], f: Fold, classes: list[str], config: FinetuneConfig,
           ratings: np.ndarray | None = None) -> _Split:
    """Training / validation / test utterances of fold `f` with a trained label (and, for a dimensions-only
    target, a rating: the others are left out, counted and said), and the shared classes."""
    train_idx, val_idx = ((f.train, f.val) if f.val is not None else
                          validation_split(utterances, f.train, fraction=config.val_fraction,
                                           n_speakers=config.val_speakers, seed=config.seed))
    keep = set(classes)
    rated = None if ratings is None else np.isfinite(ratings).any(1)

    def part(idx) -> list[int]:
        idx = [int(i) for i in idx]
        return [i for i in idx if utterances[i].label in keep] if classes else [i for i in idx if rated[i]]

    unrated = {}
    if not classes:
        for name, idx in (("training", train_idx), ("validation", val_idx), ("test", f.test)):
            n = sum(not rated[int(i)] for i in idx)
            if n:
                unrated[name] = n
        if unrated:
            warnings.warn(f"fold {f.name}: utterances without {'/'.join(config.dims)} ratings are left out ("
                          + ", ".join(f"{n} {k}" for k, n in unrated.items()) + ")", SerWarning, stacklevel=3)
    train_i, val_i, test_i = part(train_idx), part(val_idx), part(f.test)
    if ratings is not None and classes:
        missing = {d: int(np.isnan(ratings[train_i, t]).sum()) for t, d in enumerate(config.dims)}
        if any(missing.values()):
            unrated["training"] = missing
            warnings.warn(f"fold {f.name}: training utterances without a rating are left out of that dimension's "
                          f"CCC loss (kept for the classes): " + ", ".join(f"{d} {n}" for d, n in missing.items() if n),
                          SerWarning, stacklevel=3)
    train = [utterances[i] for i in train_i]
    val = [utterances[i] for i in val_i]
    test_all = [utterances[int(i)] for i in f.test]
    test = [utterances[i] for i in test_i]
    dropped = dict(Counter(u.label for u in test_all if u.label not in keep)) if classes else {}
    if dropped and config.labels is None:
        warnings.warn(f"fold {f.name}: {sum(dropped.values())} test utterances labelled "
                      f"{', '.join(canonical_order(dropped))} are not among the trained classes and are left out",
                      SerWarning, stacklevel=3)
    if not train or not val or not test:
        raise FinetuneError(f"fold {f.name}: empty split after label filtering "
                            f"(train {len(train)}, validation {len(val)}, test {len(test)})")
    declared = (declared_labels(sorted({u.corpus for u in train + val}), utterances)
                & declared_labels(sorted({u.corpus for u in test_all}), utterances))
    ys = ([None] * 3 if ratings is None else [ratings[i] for i in (train_i, val_i, test_i)])
    return _Split(train, val, test, dropped, [c for c in classes if c in declared], *ys, unrated=unrated)


def _prepare_fold_dir(fold_dir: Path, plan: dict, resume: bool) -> FoldResult | None:
    """The stored result when the fold is finished with this plan (with or without `resume`: finished
    work is never deleted); else checks that its checkpoints may be resumed, or without `resume`
    discards them (checkpoints only), and returns None."""
    done = _finished(fold_dir, plan)
    if done is not None or resume:
        if done is None:
            _check_plan(fold_dir, plan)
        return done
    if not fold_dir.exists():
        return None
    if not (fold_dir / "plan.json").is_file():
        raise FinetuneError(f"{fold_dir} exists but was not written by finetune; choose another out_dir")
    if (fold_dir / "fold_result.json").is_file() and (fold_dir / "model").is_dir():
        try:
            old = json.loads((fold_dir / "fold_result.json").read_text(encoding="utf-8"))["plan"]
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {plan.get(k)!r}"
                               for k in plan_changes(old, plan, allowed=tuple(_IGNORED))[:4])
        except (ValueError, KeyError, TypeError, AttributeError):
            detail = "its fold_result.json cannot be read"
        raise FinetuneError(f"{fold_dir} holds a model finished with other settings ({detail}); --no-resume never "
                            f"deletes finished work: use another --out (the default folder follows the settings)")
    for checkpoint in fold_dir.glob("checkpoint-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)
    return None


def _training_arguments(config: FinetuneConfig, fold_dir: Path, n_train: int):
    import torch
    from transformers import TrainingArguments

    steps_per_epoch = max(1, math.ceil(n_train / (config.batch_size * config.grad_accum)))
    cpu = config.device == "cpu"
    return TrainingArguments(
        output_dir=str(fold_dir),
        num_train_epochs=float(config.epochs),
        max_steps=int(config.max_steps) if config.max_steps else -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,                      # the best one is always kept besides the last
        load_best_model_at_end=True,
        metric_for_best_model="ccc" if config.dims else "uar",   # the mean CCC over the target's dimensions
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=config.logging_steps or max(1, steps_per_epoch // 4),
        logging_first_step=True,
        report_to=config.report_targets(),
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=not config.progress,
        remove_unused_columns=False,
        label_names=(["labels"] if config.classify else []) + (["dimensions"] if config.dims else []),
        dataloader_num_workers=config.num_workers,
        dataloader_pin_memory=not cpu and torch.cuda.is_available(),
        use_cpu=cpu,
        **_mixed_precision(config.device),
    )


def _optimizers(clf: torch.nn.Module, config: FinetuneConfig) -> tuple:
    """(optimizer, scheduler) for the Trainer: its defaults, or AdamW with the head at `head_lr`."""
    import torch

    if config.head_lr is None:
        return None, None
    trainable = [(n, p) for n, p in clf.named_parameters() if p.requires_grad]
    body = [p for n, p in trainable if n.startswith("backbone.")]
    head = [p for n, p in trainable if not n.startswith("backbone.")]
    return torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
                             lr=config.lr, weight_decay=config.weight_decay), None


def _train_fold(fold_dir: Path, plan: dict, split: _Split, classes: list[str], config: FinetuneConfig,
                callbacks: Sequence, run_info: dict | None = None) -> FoldResult:
    """Train (or resume) one fold, pick the best validation checkpoint, test it and write its files."""
    import torch
    from transformers import TrainerState, set_seed

    from classifiers.finetuning.heads import build_classifier

    label_ids = {c: i for i, c in enumerate(classes)}
    dims = config.dims
    set_seed(config.seed)
    clf = build_classifier(config.model, classes, pooling=config.pooling, freeze=config.freeze,
                           dropout=config.dropout, seed=config.seed, dimensions=dims,
                           multitask=config.multitask or None,
                           extra={"fold": plan["fold"], "seed": config.seed, "target": config.target,
                                  "train_corpora": sorted({u.corpus for u in split.train}),
                                  "test_speakers": sorted({u.speaker for u in split.test})})
    if config.adapter:
        from classifiers.finetuning.lora import apply_lora

        apply_lora(clf, config.adapter, seed=config.seed)
    from classifiers.finetuning.lora import parameter_counts

    counts = parameter_counts(clf)
    on_gpu = config.device != "cpu" and torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    sr, norm, front = clf.config.sample_rate, clf.config.do_normalize, clf.front_end
    max_samples = int(config.max_duration * sr) if config.max_duration else None
    # word-swap donors come from this fold's training clips only
    augment = bind_word_swap(parse_augment(config.augment), split.train, sample_rate=sr, device=config.device,
                             model=config.ctc_model)
    train_ds = AudioDataset(split.train, label_ids, sr, norm, train=True, augment=augment,
                            seed=config.seed, max_samples=max_samples, front_end=front, targets=split.train_y)
    trainer = _trainer_class()(
        model=clf, args=_training_arguments(config, fold_dir, len(train_ds)), train_dataset=train_ds,
        eval_dataset=AudioDataset(split.val, label_ids, sr, norm, front_end=front, targets=split.val_y),
        data_collator=collate, compute_metrics=_compute_metrics(classes, dims), optimizers=_optimizers(clf, config),
        callbacks=list(callbacks))
    serialize.write_json(fold_dir / "plan.json", plan)
    checkpoint = _last_checkpoint(fold_dir) if config.resume else None
    resumed_from = (TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step
                    if checkpoint is not None else None)
    started = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except pickle.UnpicklingError as e:
        raise FinetuneError(f"{checkpoint} holds a file that torch.load(weights_only=True) refuses to read "
                            f"({str(e).splitlines()[0]}); delete that checkpoint, or use --no-resume") from e

    output = trainer.predict(AudioDataset(split.test, label_ids, sr, norm, front_end=front, targets=split.test_y))
    logits = np.asarray(output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions)
    c = len(classes)
    truth, predicted, probs, restricted = [], [], None, None
    s, metrics = {"recall": {}, "confusion": []}, {}
    if classes:
        probs = softmax(logits[:, :c])
        truth = [u.label for u in split.test]
        predicted, s, restricted = score_test(truth, probs, classes, split.shared)
        metrics = {k: s[k] for k in ("wa", "uar", "macro_f1")}
    values = logits[:, c:] if dims else None
    if dims:
        metrics.update(dimension_scores(split.test_y, values, dims))
    model_dir = fold_dir / "model"
    best_val = trainer.state.best_metric
    trainer.model.config.extra.update({"best_val_ccc" if dims else "best_val_uar": best_val, "test_metrics": metrics})
    trainer.model.save_pretrained(model_dir)
    _write_predictions(fold_dir / "predictions.csv", split.test, classes, probs, dims, split.test_y, values)
    result = FoldResult(
        fold=plan["fold"], train_set="+".join(sorted({u.corpus for u in split.train})),
        test_set="+".join(sorted({u.corpus for u in split.test})),
        n_train=len(split.train), n_val=len(split.val), n_test=len(split.test),
        val_speakers=sorted({u.speaker for u in split.val}),
        metrics=metrics, recall=s["recall"], confusion=s["confusion"],
        best_val_uar=None if best_val is None or dims else float(best_val),
        best_val_ccc=None if best_val is None or not dims else float(best_val), dimensions=list(dims),
        unrated=split.unrated,
        best_checkpoint=trainer.state.best_model_checkpoint, global_step=int(trainer.state.global_step),
        model_dir=str(model_dir), seconds=time.time() - started, log_history=list(trainer.state.log_history),
        dropped=split.dropped, resumed_from_step=resumed_from,
        training_only=[c for c in classes if c not in split.shared], restricted=restricted,
        y_true=truth, y_pred=predicted, **counts, **_peak_memory(on_gpu),
    )
    write_model_card(model_dir, result, plan, classes, trainer.model.config, **(run_info or {}))
    serialize.write_json(fold_dir / "fold_result.json", {"plan": plan, "result": asdict(result)})
    del trainer, clf
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _peak_memory(cuda: bool) -> dict:
    """{"peak_memory_mib", "peak_memory_kind"}: the GPU's peak allocation since the fold began
    (`cuda`), else the process' peak resident set size (ru_maxrss, KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    import torch

    if cuda:
        return {"peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1), "peak_memory_kind": "cuda"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mib": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1),
            "peak_memory_kind": "rss"}


def _finished(fold_dir: Path, plan: dict) -> FoldResult | None:
    """The stored result of a fold finished with the same plan (ignored fields aside), else None."""
    path = fold_dir / "fold_result.json"
    if not path.is_file() or not (fold_dir / "model").is_dir():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if plan_changes(data["plan"], plan, allowed=tuple(_IGNORED)):
            return None
        return FoldResult(**data["result"])
    except (ValueError, KeyError, TypeError):
        return None                   # unreadable or foreign: trained again (checkpoints permitting)


def _check_plan(fold_dir: Path, plan: dict) -> None:
    """Refuse to resume a checkpoint trained with other settings (only RESUMABLE_CHANGES may differ)."""
    path = fold_dir / "plan.json"
    if not path.is_file() or _last_checkpoint(fold_dir) is None:
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise FinetuneError(f"{path} cannot be read ({e}), so its checkpoints cannot be checked; use another "
                            f"--out directory, or --no-resume to start this fold afresh") from e
    changed = plan_changes(old, plan, allowed=RESUMABLE_CHANGES)
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {plan.get(k)!r}" for k in changed[:4])
        raise FinetuneError(f"{fold_dir} holds checkpoints trained with other settings ({detail}); "
                            f"use another --out directory, or resume=False (--no-resume) to start this fold afresh")


def _write_predictions(path: Path, utterances: Sequence[Utterance], classes: list[str], probs: np.ndarray | None,
                       dims: Sequence[str] = (), truth: np.ndarray | None = None,
                       values: np.ndarray | None = None) -> None:
    """predictions.csv: id, corpus, speaker, label, then with classes prediction and p_<class>, with
    dimensions true_<dim> (on [-1, 1], empty when unrated) and pred_<dim>; values are written with
    9 significant digits (float32 outputs round-trip)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "corpus", "speaker", "label", *(["prediction", *[f"p_{c}" for c in classes]] if classes else []),
                    *[f"{k}_{d}" for d in dims for k in ("true", "pred")]])
        for i, u in enumerate(utterances):
            row = [u.id, u.corpus, u.speaker, u.label]
            if classes:
                p = probs[i]
                row += [classes[int(p.argmax())], *[f"{x:.6f}" for x in p]]
            for t in range(len(dims)):
                y = float(truth[i, t])
                row += ["" if y != y else f"{y:.9g}", f"{float(values[i, t]):.9g}"]
            w.writerow(row)


def read_dimension_predictions(path: str | Path, dims: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(truth `(n, T)` with NaN where unrated, predictions `(n, T)`, speakers) from a predictions.csv
    with true_<dim> / pred_<dim> columns (`_write_predictions`)."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [f"pred_{d}" for d in dims if rows and f"pred_{d}" not in rows[0]]
    if missing:
        raise FinetuneError(f"{path} has no column(s) {', '.join(missing)}: not the predictions of a --target run")
    truth = np.array([[float(r[f"true_{d}"]) if r[f"true_{d}"] else np.nan for d in dims] for r in rows]).reshape(-1, len(dims))
    pred = np.array([[float(r[f"pred_{d}"]) for d in dims] for r in rows]).reshape(-1, len(dims))
    return truth, pred, [r["speaker"] for r in rows]


def dimension_intervals(truth: np.ndarray, pred: np.ndarray, speakers: Sequence[str], dims: Sequence[str],
                        level: float = 0.95) -> dict:
    """dim -> {ccc, ci_low, ci_high, ci_level, ci_method, n_speakers, pearson, rmse, n}: each dimension's CCC
    over its rated rows with the jackknife-t interval over speakers (`classifiers.estimators.regression.ccc_interval`:
    each replicate recomputes the CCC without one speaker), Pearson r and RMSE beside it; no CI (None, and
    the reason in ci_method) with fewer than 2 speakers."""
    from classifiers.estimators.regression import ccc_interval
    from classifiers.results.stats import StatsError

    scores_ = dimension_scores(truth, pred, dims)
    speakers = np.asarray(speakers)
    out = {}
    for t, d in enumerate(dims):
        known = np.isfinite(truth[:, t])
        row = dict(ccc=scores_[f"ccc_{d}"], ci_low=None, ci_high=None, ci_level=None, ci_method=None,
                   n_speakers=len(set(speakers[known])), pearson=scores_[f"pearson_{d}"], rmse=scores_[f"rmse_{d}"],
                   n=int(known.sum()))
        try:
            iv = ccc_interval(truth[known, t:t + 1], pred[known, t:t + 1], speakers[known], level=level)
        except StatsError as e:
            row["ci_method"] = f"none: {e}"
        else:
            row.update(ci_low=iv.low, ci_high=iv.high, ci_level=iv.level, ci_method=f"{iv.method} over {iv.unit}s")
        out[d] = serialize.plain(row)
    return out


def _rescore(result: FoldResult, predictions: Path, classes: list[str], shared: list[str]) -> FoldResult:
    """A fold result written by an older ser, rescored from its predictions.csv (shared classes as now)."""
    with predictions.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    truth = [r["label"] for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes))
    predicted, s, restricted = score_test(truth, probs, classes, shared)
    return replace(result, metrics={k: s[k] for k in ("wa", "uar", "macro_f1")}, recall=s["recall"],
                   confusion=s["confusion"], restricted=restricted, y_true=truth, y_pred=predicted,
                   training_only=[c for c in classes if c not in shared])


# -- exports: run folders and model cards --------------------------------------------------------

@dataclass
class FinetuneData:
    """What a fine-tune of `corpus` reads: its utterances (and those of the extra training corpora),
    the folds of `corpus` by `protocol` (extra corpora whole in every training set), and the
    manifests' problems (files left out, with why)."""

    corpus: str
    extra: list[str]
    protocol: str
    utterances: list
    folds: list
    problems: list

    @property
    def name(self) -> str:
        """'ravdess+emodb': the corpora trained on, as run folders and tables name them."""
        return "+".join([self.corpus, *self.extra])


def finetune_data(corpus: str, *, root=None, train: Sequence[str] | str = (), protocol: str | None = None,
                  progress: bool = True) -> FinetuneData:
    """The utterances and folds of a fine-tune of `corpus` (root: its directory, else `ser config`'s
    or the data dir's, `featstore.config.resolve_root`), with the extra training corpora `train`
    ("ravdess,emodb" or a list; `corpus` itself is left out of it) read from their configured roots,
    and `protocol` (default: the corpus' configured or standard one). What `ser finetune` and a
    study's fine-tune cell both train on; callable from a notebook."""
    from featstore.config import default_protocol, resolve_root
    from featstore.corpora import load_manifest
    from featstore.folds import make_folds, multi_corpus_folds

    names = train.split(",") if isinstance(train, str) else list(train)
    extra = [c for c in names if c and c != corpus]
    manifests = [load_manifest(corpus, resolve_root(corpus, root), progress=progress)]
    manifests += [load_manifest(c, resolve_root(c), progress=progress) for c in extra]
    utts = [u for m in manifests for u in m.utterances]
    protocol = protocol or default_protocol(corpus)
    folds = multi_corpus_folds(utts, corpus, protocol, extra) if extra else make_folds(utts, protocol)
    return FinetuneData(corpus, extra, protocol, utts, folds, [p for m in manifests for p in m.problems])


def default_run_dir(corpora: str, protocol: str, config: FinetuneConfig) -> Path:
    """`<results root>/finetune-<corpora>-<model>-<pooling>[-lora]-<protocol>-seed<seed>-<hash>` (the
    root: `featstore.config.results_root`, one per user), the hash (as probe
    runs', `classifiers.results.records.settings_tag`) of every setting a resumed run must match, with the
    corpora and protocol: a run with another --lr gets its own folder, while --epochs / --max-steps
    (which a resumed run may change) and the fold choice keep theirs, so training longer goes on
    from the last checkpoint."""
    from classifiers.results.records import settings_tag
    from featstore.backbones.runtime import model_slug
    from featstore.config import results_root

    settings = {f.name: getattr(config, f.name) for f in fields(config)
                if f.metadata["saved"] and f.metadata["on_resume"] == "must-match"}
    settings.update(augment=describe_augment(parse_augment(config.augment)), corpora=corpora, protocol=protocol)
    if settings.get("adapter") is None:
        settings.pop("adapter", None)     # full fine-tuning keeps the folder it had before --adapter existed
    if settings.get("target") == "emotion" and not settings.get("multitask"):
        settings.pop("target", None)      # and so do categorical runs, from before --target
        settings.pop("multitask", None)
    task = [] if config.target == "emotion" else [config.target + ("-multitask" if config.multitask else "")]
    parts = ["finetune", corpora, model_slug(config.model), config.pooling, *task, *(["lora"] if config.adapter else []),
             *([protocol.replace(":", "")] if protocol else []), f"seed{config.seed}"]
    return results_root() / "-".join(parts + [settings_tag(serialize.plain(settings))])


_METRIC_NAMES = {"uar": "UAR", "wa": "WA (accuracy)", "macro_f1": "macro-F1"}


def fold_scores(result: FoldResult, out_dir: Path, plan: dict, classes: Sequence[str]) -> dict:
    """metric -> {value, ci_low, ci_high, ci_level, ci_method, n_speakers} of one fold's test
    predictions (its predictions.csv), by the results code: UAR is the run table's headline
    (`ProbeResults.summary`), WA and macro-F1 the same interval (`classifiers.results.compare.interval`,
    jackknife-t over test speakers); no CI (None) where it cannot be computed (one speaker)."""
    from classifiers.results.compare import columns, interval
    from classifiers.results.records import ci_method
    from classifiers.results.stats import StatsError

    run = FinetuneResult(out_dir=out_dir, labels=list(classes), folds=[result], summary=summarize([result]),
                         plan=plan)
    results = to_probe_results(run)
    [head] = results.summary()
    setting = (result.train_set, result.test_set, f"finetune-{plan['pooling']}", "e2e")
    out = {}
    for m in ("uar", "wa", "macro_f1"):
        row = dict(value=head.get(f"{m}_pooled", result.metrics[m]), ci_low=None, ci_high=None, ci_level=None,
                   ci_method=None, n_speakers=head.get("n_speakers"))
        if m == "uar":
            row.update(ci_low=head["ci_low"], ci_high=head["ci_high"], ci_level=head["ci_level"],
                       ci_method=head["ci_method"])
        elif results.predictions:
            try:
                iv = interval(columns(results), setting, m)
            except StatsError as e:
                row["ci_method"] = f"none: {e}"
            else:
                row.update(value=iv.value, ci_low=iv.low, ci_high=iv.high, ci_level=iv.level, ci_method=ci_method(iv),
                           n_speakers=iv.n_groups)
        out[m] = serialize.plain(row)
    return out


def write_model_card(model_dir: Path, result: FoldResult, plan: dict, classes: Sequence[str], model_config,
                     *, protocol: str = "", folds: Sequence[str] = ()) -> Path:
    """README.md in an exported model directory: a Hugging Face model card (YAML front matter:
    base model and its weights sha256, corpora, fold and the run's folds, test scores with their
    speaker CIs from the fold's predictions, the training settings) and how to load the model.

    model_config: the model's `classifiers.finetuning.heads.ClassifierConfig` (pooling, classes, provenance)."""
    from huggingface_hub import EvalResult, ModelCardData

    from classifiers.finetuning.heads import exports_natively
    from featstore.outputs import write_text

    model_dir = Path(model_dir)
    dims = list(getattr(model_config, "dims", []) or [])
    scores = fold_scores(result, model_dir.parent.parent, plan, classes) if classes else {}
    dim_scores = (dimension_intervals(*read_dimension_predictions(model_dir.parent / "predictions.csv", dims), dims)
                  if dims else {})
    train = result.train_set.split("+")
    test = result.test_set.split("+")
    adapter = getattr(model_config, "adapter", None)
    remote = not exports_natively(model_config) and adapter is None
    logmel = getattr(model_config, "front_end", None) is not None
    base_sha = model_config.extra.get("backbone_weights_sha256")
    name = f"ser-{'+'.join(train)}-{plan['pooling']}-{result.fold}"

    def ci(m: str) -> str:
        r = scores[m]
        return (f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None
                else f"{r['value']:.3f} (no CI)")

    evals = [EvalResult(task_type="audio-classification", task_name="speech emotion recognition",
                        dataset_type=result.test_set, dataset_name=result.test_set,
                        dataset_split=f"test speakers of fold {result.fold}", metric_type=m,
                        metric_value=round(float(scores[m]["value"]), 6),
                        metric_name=f"{_METRIC_NAMES[m]} {ci(m)}")
             for m in ("uar", "wa", "macro_f1") if classes]

    def dim_ci(d: str) -> str:
        r = dim_scores[d]
        return (f"{r['ccc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None
                else f"{r['ccc']:.3f} (no CI)")

    evals += [EvalResult(task_type="audio-classification", task_name=f"speech emotion recognition: {d} (regression)",
                         dataset_type=result.test_set, dataset_name=result.test_set,
                         dataset_split=f"test speakers of fold {result.fold}", metric_type=f"ccc_{d}",
                         metric_value=round(float(dim_scores[d]["ccc"]), 6), metric_name=f"CCC {d} {dim_ci(d)}")
              for d in dims]
    target = plan.get("target", "emotion")
    card = ModelCardData(
        model_name=name, base_model=str(plan["model"]), datasets=sorted(set(train) | set(test)),
        library_name="peft" if adapter else "transformers", pipeline_tag="audio-classification",
        tags=["audio-classification", "speech-emotion-recognition", "ser", f"pooling-{plan['pooling']}",
              *(["lora", "adapter"] if adapter else []),
              *(["dimensional-emotion", f"target-{target}", *(["multitask"] if classes else [])] if dims else [])],
        eval_results=evals, base_model_sha256=base_sha,
        ser=serialize.plain({
            "fold": result.fold, "protocol": protocol or None, "folds": list(folds) or [result.fold],
            "train_corpora": train, "test_corpora": test, "classes": list(classes),
            "target": target, "dimensions": dims or None, "dimension_scale": [-1.0, 1.0] if dims else None,
            "multitask": plan.get("multitask") or None, "dimension_scores": dim_scores or None,
            "best_validation_ccc": result.best_val_ccc if dims else None,
            "chance_uar": 1 / len(classes) if classes else None, "n_train": result.n_train, "n_val": result.n_val,
            "n_test": result.n_test, "validation_speakers": result.val_speakers,
            "test_speakers": model_config.extra.get("test_speakers"), "scores": scores,
            "best_validation_uar": result.best_val_uar, "global_step": result.global_step,
            "trust_remote_code": remote, "training": {k: v for k, v in plan.items() if k not in ("fold_digest",)},
            "adapter": adapter, "trainable_params": result.trainable_params, "total_params": result.total_params,
            "peak_memory_mib": result.peak_memory_mib, "peak_memory_kind": result.peak_memory_kind,
        }))
    load = ("AutoModelForAudioClassification.from_pretrained(path, trust_remote_code=True)" if remote
            else "AutoModelForAudioClassification.from_pretrained(path)")
    what = (f"`modeling_ser.py` (saved beside the weights) with the {plan['pooling']} pooling head: load it with "
            f"`trust_remote_code=True`" if remote else
            f"transformers' own `{model_config.backbone_config.get('model_type')}` sequence classification class "
            f"({plan['pooling']} pooling)")
    if adapter:
        what = (f"a LoRA adapter ({adapter['spec']}, peft) on `{adapter['base_model']}` plus the {plan['pooling']} "
                f"pooling head and classifier: this directory holds the adapters (adapter_model.safetensors) and the "
                f"head (head.safetensors) only, and needs the base model with weights sha256 "
                f"`{adapter['base_weights_sha256']}`")
    spk = scores["uar"]["n_speakers"] if classes else max((r["n_speakers"] for r in dim_scores.values()), default=0)
    task = ("" if not dims else f" Target: {target} ({', '.join(dims)}), regressed with the CCC loss on ratings mapped "
            f"onto [-1, 1] (each corpus' scale, linearly)" + (f", with the classes (multitask weight "
                                                              f"{plan.get('multitask')})" if classes else "")
            + "; the checkpoint was selected by the validation speakers' mean CCC.")
    outputs = ("probs = model(**x).logits.softmax(-1)                   # classes: model.config.id2label"
               if not dims else
               f"values = model(**x).logits                              # {', '.join(dims)} on [-1, 1]" if not classes
               else f"out = model(**x).logits                                 # [:, :{len(classes)}] class logits, "
                    f"[:, {len(classes)}:] {', '.join(dims)} on [-1, 1]")
    lines = [
        "---", card.to_yaml(), "---", "",
        f"# {name}", "",
        f"Speech emotion recognition: `{plan['model']}` fine-tuned end to end by `ser finetune` on "
        f"{', '.join(train)}, fold {result.fold}" + (f" of protocol {protocol}" if protocol else "") +
        f" ({len(folds) or 1} fold{'s' if len(folds) != 1 else ''}: {', '.join(folds) or result.fold}). "
        f"The model is {what}.{task}", "",
        f"## Scores on the fold's test speakers ({result.test_set}, {result.n_test} utterances"
        + (f", {spk} speakers" if spk else "") + ")", "",
        "| metric | value [95% CI] |", "|---|---|",
        *[f"| {_METRIC_NAMES[m]} | {ci(m)} |" for m in ("uar", "wa", "macro_f1") if classes],
        *[f"| CCC {d} | {dim_ci(d)} |" for d in dims],
        *[f"| {m} {d} | {dim_scores[d][m]:.3f} |" for d in dims for m in ("pearson", "rmse")], "",
        (f"Intervals: {scores['uar']['ci_method'] or 'none'} over test speakers, from this fold's predictions "
         f"(`classifiers.results.stats`). {len(classes)} classes ({', '.join(classes)}); chance UAR {1 / len(classes):.3f}. "
         if classes else "")
        + ("CCC intervals: jackknife-t over test speakers (`classifiers.estimators.regression.ccc_interval`, each replicate "
           "recomputes the CCC without one speaker); RMSE on the [-1, 1] scale. " if dims else "")
        + f"Test speakers were never used for training or model selection (validation speakers: "
        f"{', '.join(result.val_speakers)}).", "",
        *(["## Use", "",
           "```python",
           "from classifiers.finetuning.heads import EmotionClassifier   # ser",
           "",
           "model = EmotionClassifier.from_pretrained(path)      # base + adapters; a base with other weights is "
           "refused",
           "```", "",
           "Or `ser predict clip.wav --trained <this directory>` (`--backbone DIR` where the base model is now, when "
           "it moved). "
           + (f"Trainable parameters {result.trainable_params:,} of {result.total_params:,}."
              if result.trainable_params else ""), ""] if adapter else []),
        *(["## Use", "",
        "```python",
        "from transformers import AutoFeatureExtractor, AutoModelForAudioClassification",
        "",
        "fe = AutoFeatureExtractor.from_pretrained(path)        # "
        + ("the model's own log-mel / fbank front-end" if logmel else "normalises each clip as ser does"),
        f"model = {load}.eval()",
        f"x = fe(wave, sampling_rate={model_config.sample_rate}, return_tensors=\"pt\")   # one clip, mono float32",
        outputs,
        "```", "",
        f"Or `ser predict clip.wav --trained <this directory>`: the same {'values' if dims else 'probabilities'}. "
        + ("Padded batches with their attention mask give each clip's own result (Whisper: every clip is padded "
           "to 30 s, only its real frames are pooled)." if logmel else
           "Padded batches give each clip's own result (they run clip by clip)." if remote else
           "Feed one clip at a time, or batches of equal length: in a padded batch transformers' GroupNorm feature "
           "encoders (base-style models) count the padding, which ser's exact batching does not."
           if model_config.backbone_config.get("feat_extract_norm") == "group" else
           "Padded batches with their attention mask give each clip's own result."), ""] if not adapter else []),
        "## Training", "",
        "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in plan.items() if k not in ("fold_digest",)], "",
        f"Base model: `{plan['model']}`" + (f", weights sha256 `{base_sha}`" if base_sha else "") + ".", "",
    ]
    return write_text(model_dir / "README.md", "\n".join(lines))


def summarize(results: Sequence[FoldResult]) -> dict:
    """metric -> {"mean", "std"} over folds (population std, classifiers.results.metrics.mean_std): wa, uar,
    macro_f1 for the classes, ccc (mean over dimensions) and ccc_/pearson_/rmse_<dim> for dimensions."""
    out = {}
    for k in (list(results[0].metrics) if results else ("wa", "uar", "macro_f1")):
        mean, std = mean_std([r.metrics[k] for r in results])
        out[k] = {"mean": mean, "std": std}
    return out


def _target_dims(target: str) -> list[str]:
    from classifiers.runs.targets import target_dimensions

    return list(target_dimensions(target))


def to_probe_results(run: FinetuneResult):
    """The run as `classifiers.results.records.ProbeResults` (one `make_record` per fold, layer "e2e"), so
    the probes' files, tables and summaries apply to fine-tuned models too. With --target each record
    also carries ccc, ccc_<dim>, pearson_<dim>, rmse_<dim> and val_ccc (the registry's dimensional
    metrics); a dimensions-only run's records carry those alone (no classes: no UAR, no predictions
    table of classes)."""
    from classifiers.results.predictions import read_fold_csv
    from classifiers.results.records import ProbeResults, make_record

    records = []
    dims = run.dimensions
    if dims and not run.labels:
        for f in run.folds:
            records.append(serialize.plain(dict(
                layer="e2e", fold=f.fold, classifier=f"finetune-{run.plan['pooling']}", seed=run.plan["seed"],
                train_set=f.train_set, test_set=f.test_set, n_train=f.n_train, n_val=f.n_val, n_test=f.n_test,
                val_speakers=f.val_speakers, val_ccc=f.best_val_ccc, target=run.plan["target"], dimensions=dims,
                model_dir=f.model_dir, best_checkpoint=f.best_checkpoint, global_step=f.global_step,
                resumed_from_step=f.resumed_from_step, seconds=round(f.seconds, 1), unrated=f.unrated,
                trainable_params=f.trainable_params, total_params=f.total_params, peak_memory_mib=f.peak_memory_mib,
                peak_memory_kind=f.peak_memory_kind, **f.metrics)))
        meta = {"kind": "finetune", "protocol": run.plan.get("protocol", ""), "stores": [], "labels": [],
                "target": run.plan["target"], "dimensions": dims, "plan": run.plan,
                "mean_std_over_folds": run.summary}
        return ProbeResults(records=records, meta=meta)
    for f in run.folds:
        extra = ({k: v for k, v in f.metrics.items() if k not in ("wa", "uar", "macro_f1")} if dims else {})
        if dims:
            extra.update(val_ccc=f.best_val_ccc, target=run.plan["target"], dimensions=dims)
        restricted = ({f"restricted_{k}": f.restricted[k] for k in ("wa", "uar", "macro_f1", "labels")}
                      if f.restricted else {})
        records.append(make_record(
            layer="e2e", fold=f.fold, y_true=f.y_true, y_pred=f.y_pred, labels=run.labels, n_train=f.n_train,
            classifier=f"finetune-{run.plan['pooling']}", seed=run.plan["seed"], train_set=f.train_set,
            test_set=f.test_set, shuffled=False, C=None, n_val=f.n_val, val_speakers=f.val_speakers,
            val_uar=f.best_val_uar, model_dir=f.model_dir, best_checkpoint=f.best_checkpoint,
            global_step=f.global_step, resumed_from_step=f.resumed_from_step, seconds=round(f.seconds, 1),
            training_only=f.training_only, trainable_params=f.trainable_params, total_params=f.total_params,
            peak_memory_mib=f.peak_memory_mib, peak_memory_kind=f.peak_memory_kind, **restricted, **extra,
        ))
    meta = {"kind": "finetune", "protocol": run.plan.get("protocol", ""), "stores": [], "labels": run.labels,
            "plan": run.plan, "mean_std_over_folds": run.summary,
            **({"target": run.plan["target"], "dimensions": dims} if dims else {})}
    predictions = [read_fold_csv(path, fold=f.fold, seed=run.plan["seed"], layer="e2e", train_set=f.train_set,
                                 test_set=f.test_set, classifier=f"finetune-{run.plan['pooling']}")
                   for f in run.folds if (path := run.out_dir / _fold_dir_name(f.fold) / "predictions.csv").exists()]
    return ProbeResults(records=records, dropped={f.fold: f.dropped for f in run.folds if f.dropped}, meta=meta,
                        predictions=predictions)


def write_results(run: FinetuneResult, *, plots: bool = True,
                  formats: str | Sequence[str] | None = None) -> dict[str, Path]:
    """finetune.json / finetune.csv (classifiers.results.records format) and, with `plots`, confusion.png
    (summed over the test folds) and learning_curves.png in run.out_dir (in each of `formats`,
    default: `classifiers.results.plots.current_formats()`; the dict holds the first), each titled with
    the model, the corpora and the folds."""
    from classifiers.results import plots as probe_plots
    from classifiers.results.predictions import write_predictions
    from classifiers.results.records import write_results as write_probe_results

    files = {}
    results = to_probe_results(run)
    if run.dimensions:
        results.meta["dimension_summary"] = run.dimension_summary()
    if run.dimensions and not run.labels:
        files.update(_write_dimensional_results(run, results))
        if plots and run.folds:
            files["learning_curves"] = plot_learning_curves({f.fold: f.log_history for f in run.folds},
                                                            run.out_dir / "learning_curves.png",
                                                            title=f"{_figure_subject(run)}: learning curves",
                                                            formats=formats)
            for extra in probe_plots.figure_paths(files["learning_curves"], formats)[1:]:
                files[f"learning_curves_{extra.suffix[1:]}"] = extra
        return files
    files["json"], files["csv"], files["summary"] = write_probe_results(results, run.out_dir, name="finetune",
                                                                         summary_csv=True)
    if results.predictions:
        files["predictions"] = write_predictions(results.predictions, run.out_dir / "predictions.parquet")
    if plots and run.folds:
        total = np.sum([np.asarray(f.confusion) for f in run.folds], axis=0)
        from classifiers.results.records import ci_text, folds_text

        (head, *_) = results.summary()
        what = _figure_subject(run)
        title = (f"{what}\n{len(run.folds)} test fold{'s' if len(run.folds) > 1 else ''} summed: pooled UAR "
                 f"{ci_text(head)}" + (f", folds mean ± std {folds_text(head)}" if len(run.folds) > 1 else ""))
        files["confusion"] = probe_plots.confusion_heatmap(total, run.labels, run.out_dir / "confusion.png",
                                                           title=title, formats=formats)
        files["learning_curves"] = plot_learning_curves({f.fold: f.log_history for f in run.folds},
                                                        run.out_dir / "learning_curves.png",
                                                        title=f"{what}: learning curves", formats=formats)
        for key in ("confusion", "learning_curves"):   # the other formats asked for, beside the first
            for extra in probe_plots.figure_paths(files[key], formats)[1:]:
                files[f"{key}_{extra.suffix[1:]}"] = extra
    return files


def dimension_summary_rows(summary: dict) -> list[dict]:
    """One row per dimension of `FinetuneResult.dimension_summary()` (the JSON's summary and the
    summary CSV of a --target run)."""
    return [{"dimension": d, **row} for d, row in summary.items()]


def _write_dimensional_results(run: FinetuneResult, results) -> dict[str, Path]:
    """finetune.json (meta, summary: per dimension the pooled CCC with its speaker CI beside the mean ± std
    over folds, records), finetune.csv (one row per fold) and finetune_summary.csv of a dimensions-only run."""
    from featstore.outputs import write_text

    summary = dimension_summary_rows(results.meta.get("dimension_summary") or {})
    meta = dict(results.meta, written=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                headline="pooled CCC over folds per dimension with its 95% speaker jackknife CI; mean ± std over "
                         "folds beside it")
    paths = {"json": run.out_dir / "finetune.json", "csv": run.out_dir / "finetune.csv",
             "summary": run.out_dir / "finetune_summary.csv"}
    write_text(paths["json"], serialize.dumps(dict(meta=meta, summary=summary, records=results.records), indent=1))
    keys = ["fold", "train_set", "test_set", "n_train", "n_val", "n_test", "val_ccc", "ccc",
            *[f"{m}_{d}" for d in run.dimensions for m in ("ccc", "pearson", "rmse")], "global_step", "seconds"]
    write_text(paths["csv"], _csv_rows(results.records, keys))
    write_text(paths["summary"], _csv_rows(summary, ["dimension", "ccc", "ci_low", "ci_high", "ci_level", "ci_method",
                                                     "n_speakers", "n", "pearson", "rmse", "ccc_folds_mean",
                                                     "ccc_folds_std", "n_folds"]))
    return paths


def is_dimension_run(run: dict) -> bool:
    """Whether a registry row is a fine-tune with --target (finetune.json holds its dimension summary) or
    the evaluation of a model fine-tuned on dimensions only (evaluate.json's meta names its dimensions)."""
    if run.get("kind") == "finetune":
        return (run.get("config") or {}).get("target", "emotion") != "emotion"
    if run.get("kind") == "evaluate" and run.get("out"):
        try:
            meta = json.loads((Path(run["out"]) / "evaluate.json").read_text(encoding="utf-8")).get("meta", {})
        except (OSError, ValueError, AttributeError):
            return False
        return bool(meta.get("dimensions"))
    return False


@dataclass
class DimensionScores:
    """A registered fine-tune or evaluation on emotion dimensions only, read back from its folder:
    `rows` {dimension: {ccc, ci_low, ci_high, pearson, rmse, n, n_speakers}}, `meta` the run's meta.
    No per-utterance class predictions (`predictions` is empty), so it pairs with no UAR run."""

    rows: dict
    meta: dict
    predictions: list = field(default_factory=list)

    def headline(self) -> str:
        """'mean CCC 0.412 (arousal 0.610, valence 0.214)'."""
        cccs = {d: r["ccc"] for d, r in self.rows.items()}
        mean = sum(cccs.values()) / len(cccs) if cccs else float("nan")
        return f"mean CCC {mean:.3f} (" + ", ".join(f"{d} {v:.3f}" for d, v in cccs.items()) + ")"


def is_dimension_only(run: dict) -> bool:
    """A fine-tune on dimensions without --multitask (or its evaluation): no class scores to read back."""
    return is_dimension_run(run) and not (run.get("config") or {}).get("multitask")


def read_dimension_scores(run: dict) -> DimensionScores:
    """The per-dimension scores of a registered fine-tune or evaluation on emotion dimensions, from
    its finetune.json / evaluate.json (one line when the file is gone or damaged)."""
    path = Path(run["out"]) / ("evaluate.json" if run["kind"] == "evaluate" else "finetune.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["meta"].get("dimension_summary") or {r["dimension"]: r for r in data["summary"]}
        return DimensionScores(rows=dict(rows), meta=dict(data["meta"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FinetuneError(f"{path}: not a readable result of a run on emotion dimensions ({type(e).__name__}); "
                            f"re-run its command: {run.get('command', '')}") from None


def registered_dimension_table(run: dict, title: str = ""):
    """The table `ser results show` prints for a registered fine-tune or evaluation on emotion dimensions
    (`run`: a registry row): per dimension the CCC with its speaker CI, Pearson r and RMSE, read from the
    run's finetune.json / evaluate.json (one line when the file is gone)."""
    from classifiers.results.records import table

    rows = read_dimension_scores(run).rows
    t = table("dimension", "CCC [95% CI]", "Pearson r", "RMSE", "utterances", "speakers", title=title)
    for d, r in rows.items():
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else " (no CI)"
        t.add_row(d, f"{r['ccc']:.3f}{ci}", f"{r['pearson']:.3f}", f"{r['rmse']:.3f}", str(r.get("n", "")),
                  str(r.get("n_speakers", "")))
    return t


def _csv_rows(rows: Sequence[dict], keys: Sequence[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in keys})
    return buf.getvalue()


def _figure_subject(run: FinetuneResult) -> str:
    """'fine-tuned facebook/wav2vec2-base (mean pooling) on ravdess → cremad, luna5 folds luna-0, luna-1'."""
    plan = run.plan
    trains = sorted({f.train_set for f in run.folds})
    tests = sorted({f.test_set for f in run.folds})
    corpora = "; ".join(trains) if trains == tests else f"{'; '.join(trains)} → {'; '.join(tests)}"
    names = [str(f.fold) for f in run.folds]
    folds = ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]} ({len(names)} folds)"
    protocol = f"{plan['protocol']} " if plan.get("protocol") else ""
    return (f"fine-tuned {plan.get('model') or '(model not recorded)'} ({plan.get('pooling', '?')} pooling) on "
            f"{corpora}, {protocol}fold{'s' if len(names) > 1 else ''} {folds}")


@literal_text
def plot_learning_curves(histories: dict[str, list[dict]], path: str | Path, title: str = "",
                         formats: str | Sequence[str] | None = None) -> Path:
    """Training / validation loss and validation UAR (a --target run: mean CCC) against epochs, one line per fold (colour),
    titled `title` (`write_results` names model, corpora and folds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_uar) = plt.subplots(1, 2, figsize=(11, 4.4))
    # the selection metric: the mean CCC of a --target run, else UAR
    dimensional = any("eval_ccc" in h for history in histories.values() for h in history)
    key, metric = ("eval_ccc", "mean CCC") if dimensional else ("eval_uar", "UAR")
    for k, (name, history) in enumerate(histories.items()):
        color = f"C{k % 10}"
        marker, hollow = "osD^vP*X<>"[k % 10], {"mfc": "none"} if k % 2 else {}  # a fold on another stays visible
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
        val = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
        uar = [(h["epoch"], h[key]) for h in history if key in h]
        if train:
            ax_loss.plot(*zip(*train), color=color, alpha=0.6, label=f"fold {name} train")
        if val:
            ax_loss.plot(*zip(*val), color=color, linestyle="--", marker=marker, **hollow, label=f"fold {name} validation")
        if uar:
            ax_uar.plot(*zip(*uar), color=color, marker=marker, **hollow, label=f"fold {name}")
    ax_loss.set_title("loss (solid: training, dashed: validation speakers)", fontsize=10)
    ax_uar.set_title(f"{metric} on the validation speakers (model selection)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10.5)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss" if metric != "UAR" else "cross-entropy")
    ax_loss.legend(fontsize=7)
    ax_uar.set_xlabel("epoch")
    ax_uar.set_ylabel(f"validation {metric}")
    ax_uar.legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=120, formats=formats)
