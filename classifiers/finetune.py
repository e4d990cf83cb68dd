"""End-to-end fine-tuning over speaker-independent folds, on the Hugging Face Trainer.

`finetune(utterances, folds, model, out_dir=...)` trains one `EmotionClassifier` (backbone +
pooling head, classifiers.heads) per fold and evaluates it on that fold's test speakers:

- model selection on a *validation* set of training speakers (`featstore.folds.validation_split`,
  unless the folds already carry `val`), never on the test fold: the checkpoint with the best
  validation UAR is restored at the end (`load_best_model_at_end`);
- mixed precision on CUDA (bf16 where supported, else fp16), gradient accumulation, batches
  grouped by length (clip durations from the manifest), a checkpoint per epoch;
- resumable: a fold directory holding checkpoints resumes from the last one; a finished fold
  (same plan) is read back instead of retrained, so an interrupted 5-fold run goes on where
  it stopped;
- repeatable: the seed fixes the head's initialisation, the data order, the validation speakers
  and every augmentation draw (per seed, epoch and utterance).

Layout of `out_dir`:

    <fold>/plan.json              the settings the fold was trained with (resume checks them)
    <fold>/checkpoint-<step>/     Trainer checkpoints (model.safetensors + config.json each)
    <fold>/model/                 the selected model: EmotionClassifier.from_pretrained / predict
    <fold>/predictions.csv        test utterances: id, speaker, label, prediction, probabilities
    <fold>/fold_result.json       test metrics, confusion, validation score, log history
    finetune.json, finetune.csv   one record per fold (WA / UAR / macro-F1, confusion, validation
                                  score, ...) in the probes' format (classifiers.results), with the
                                  mean ± std over folds in the JSON's summary
    confusion.png                 summed test-fold confusion; learning_curves.png from the logs
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from classifiers.augment import Compose, augment_rng, describe_augment, parse_augment
from classifiers.heads import POOLINGS, build_classifier
from classifiers.metrics import mean_std, scores, softmax
from classifiers.wordswap import bind_word_swap
from featstore import serialize
from featstore.audio import load_audio
from featstore.backbone import DEFAULT_MODEL, normalize_waveform
from featstore.corpora.base import Utterance
from featstore.errors import SerError
from featstore.folds import Fold, make_folds, validation_split
from featstore.labels import canonical_order

#: plan keys that may change between a run and its resumption (the training length, logging)
RESUMABLE_CHANGES = ("epochs", "max_steps", "report_to", "num_workers", "logging_steps")


class FinetuneError(SerError):
    """Fine-tuning settings or an output directory that cannot be used; the message says why."""


# -- data ----------------------------------------------------------------------------------------

class AudioDataset(torch.utils.data.Dataset):
    """Utterances as `{"input_values": (samples,) float32, "labels": int}` items.

    Training sets (`train=True`) apply `augment` with a generator keyed by (seed, epoch, index)
    and crop clips longer than `max_samples` at a random (equally keyed) offset; `epoch` is set
    by the trainer's callback before each epoch. Waveforms are normalised per clip when
    `do_normalize`, before padding, as at prediction time.
    """

    def __init__(self, utterances: Sequence[Utterance], label_ids: dict[str, int], sample_rate: int,
                 do_normalize: bool, *, train: bool = False, augment: Compose | None = None,
                 seed: int = 0, max_samples: int | None = None):
        self.utterances = list(utterances)
        self.label_ids = label_ids
        self.sample_rate = sample_rate
        self.do_normalize = do_normalize
        self.train = train
        self.augment = augment or Compose()
        self.seed = seed
        self.max_samples = max_samples
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utterances)

    def lengths(self) -> list[int]:
        """Approximate lengths in samples (from the manifest's durations), for length grouping."""
        return [max(1, int(u.duration * self.sample_rate)) for u in self.utterances]

    def __getitem__(self, i: int) -> dict:
        u = self.utterances[i]
        wave = load_audio(u.path, self.sample_rate)
        if self.train:
            rng = augment_rng(self.seed, self.epoch, i)
            if self.augment:
                wave = self.augment(wave, rng, u)
            if self.max_samples and len(wave) > self.max_samples:
                start = int(rng.integers(0, len(wave) - self.max_samples + 1))
                wave = wave[start:start + self.max_samples]
        if self.do_normalize:
            wave = normalize_waveform(wave)
        return {"input_values": np.ascontiguousarray(wave, dtype=np.float32), "labels": self.label_ids[u.label]}


def collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of items: input_values `(batch, samples)`, attention_mask `(batch, samples)`, labels `(batch,)`."""
    n = max(len(it["input_values"]) for it in items)
    values = torch.zeros(len(items), n, dtype=torch.float32)
    mask = torch.zeros(len(items), n, dtype=torch.long)
    for i, it in enumerate(items):
        k = len(it["input_values"])
        values[i, :k] = torch.from_numpy(it["input_values"])
        mask[i, :k] = 1
    batch = {"input_values": values, "attention_mask": mask}
    if "labels" in items[0]:
        batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
    return batch


# -- metrics -------------------------------------------------------------------------------------

def _compute_metrics(classes: list[str]):
    def compute(eval_pred) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        names = np.asarray(classes)
        s = scores(names[np.asarray(eval_pred.label_ids)], names[np.asarray(logits).argmax(-1)], classes)
        return {"wa": s["wa"], "uar": s["uar"], "macro_f1": s["macro_f1"]}
    return compute


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
    # when the test fold lacks some trained classes (cross-corpus: CREMA-D has no calm/surprise):
    # wa/uar/macro_f1 with predictions restricted to the test fold's labels, and those labels
    restricted: dict | None = None


@dataclass
class FinetuneResult:
    """All folds of a `finetune` run, their mean ± std, and the files written."""

    out_dir: Path
    labels: list[str]
    folds: list[FoldResult]
    summary: dict                     # metric -> {"mean": .., "std": ..} over folds (population std)
    plan: dict
    files: dict[str, Path] = field(default_factory=dict)

    def table(self) -> list[dict]:
        """Plain rows (fold, n_test, wa, uar, macro_f1) plus "mean" and "std" rows."""
        rows = [{"fold": f.fold, "n_test": f.n_test, **{k: f.metrics[k] for k in ("wa", "uar", "macro_f1")}}
                for f in self.folds]
        for stat in ("mean", "std"):
            rows.append({"fold": stat, "n_test": None, **{k: self.summary[k][stat] for k in ("wa", "uar", "macro_f1")}})
        return rows


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
        """Trainer with length grouping from known durations and pickle-free checkpoints."""

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
            # arguments as JSON instead of Trainer's pickled training_args.bin
            output_dir = Path(output_dir or self.args.output_dir)
            self.model.save_pretrained(output_dir, state_dict=state_dict)
            (output_dir / "training_args.json").write_text(self.args.to_json_string(), encoding="utf-8")

    return SerTrainer


def _mixed_precision(device: str) -> dict:
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

def finetune(
    utterances: Sequence[Utterance],
    folds: Sequence[Fold] | str = "standard",
    model: str = DEFAULT_MODEL,
    *,
    out_dir: str | Path,
    epochs: float = 6,
    max_steps: int | None = None,
    freeze: str = "feature-encoder",
    pooling: str = "mean",
    augment: str | Compose | None = None,
    seed: int = 0,
    lr: float = 3e-5,
    head_lr: float | None = None,
    batch_size: int = 8,
    grad_accum: int = 1,
    fold: str | int = "all",
    labels: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    val_speakers: int | None = None,
    max_duration: float | None = None,
    warmup: float = 0.1,
    weight_decay: float = 0.0,
    dropout: float = 0.1,
    report_to: str | Sequence[str] = "none",
    resume: bool = True,
    device: str = "auto",
    num_workers: int = 0,
    logging_steps: int | None = None,
    progress: bool = True,
    plots: bool = True,
    callbacks: Sequence = (),
) -> FinetuneResult:
    """Fine-tune `model` end to end on every selected fold and test it on the fold's test speakers.

    utterances: the records the folds index (length N). folds: `Fold`s from featstore.folds
    (make_folds / multi_corpus_folds / cross_corpus_folds) or a protocol name for `make_folds`
    (e.g. "luna5", "standard"). Folds without `val` get one from `validation_split(fraction=
    val_fraction, n_speakers=val_speakers, seed=seed)`. model: hub id or local directory.

    epochs / max_steps: training length (max_steps, when given, wins). freeze: none,
    feature-encoder, layers:N or backbone. pooling: mean, attention, layer-weighted or bilstm.
    augment: spec such as "chunk-permute,noise" (classifiers.augment) for the training set.
    lr: learning rate (backbone and head; head_lr gives the head its own). batch_size x
    grad_accum utterances per optimiser step. fold: "all", an index or a fold name. labels: the
    classes to learn (default: every label of the selected training sets); utterances with other
    labels are dropped (training) or counted in `FoldResult.dropped` (test). max_duration: training
    clips longer than this many seconds are randomly cropped (bounds GPU memory).
    warmup: linear warm-up, a fraction of the steps (< 1) or a step count. report_to: "none",
    "tensorboard", "wandb" or a list. resume: go on from the last checkpoint of an interrupted
    run and skip finished folds; False deletes this run's fold directories first. callbacks:
    extra `transformers.TrainerCallback`s (e.g. EarlyStoppingCallback).

    Returns a `FinetuneResult` and writes the files listed in the module docstring.
    """
    from transformers import TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    if pooling not in POOLINGS:
        raise FinetuneError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if batch_size < 1 or grad_accum < 1:
        raise FinetuneError(f"batch_size and grad_accum must be at least 1 (got {batch_size}, {grad_accum})")
    if max_steps is None and not epochs > 0:
        raise FinetuneError(f"epochs must be positive, got {epochs}")
    utterances = list(utterances)
    folds_arg = folds
    if isinstance(folds, str):
        folds = make_folds(utterances, folds, seed=seed)
    selected = _select_folds(list(folds), fold)
    augment = parse_augment(augment)
    out_dir = Path(out_dir).expanduser()
    hf_logging.disable_progress_bar()

    train_labels = {utterances[int(i)].label for f in selected for part in (f.train, f.val)
                    if part is not None for i in part}
    classes = canonical_order(train_labels) if labels is None else list(dict.fromkeys(labels))
    missing = [c for c in classes if c not in train_labels]
    if missing:
        raise FinetuneError(f"labels {', '.join(missing)} have no training utterances in the selected folds "
                            f"(training labels: {', '.join(canonical_order(train_labels))})")
    if len(classes) < 2:
        raise FinetuneError(f"fine-tuning needs at least 2 classes, the training sets have {classes}")
    label_ids = {c: i for i, c in enumerate(classes)}

    plan = {
        "model": str(model), "labels": classes, "epochs": epochs, "max_steps": max_steps, "freeze": freeze,
        "pooling": pooling, "augment": describe_augment(augment), "seed": seed, "lr": lr, "head_lr": head_lr,
        "batch_size": batch_size, "grad_accum": grad_accum, "val_fraction": val_fraction,
        "val_speakers": val_speakers, "max_duration": max_duration, "warmup": warmup,
        "weight_decay": weight_decay, "dropout": dropout, "report_to": report_to, "num_workers": num_workers,
        "logging_steps": logging_steps,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    Trainer = _trainer_class()
    results: list[FoldResult] = []
    verbosity = hf_logging.get_verbosity()
    if not progress:
        hf_logging.set_verbosity_error()
    try:
        for f in selected:
            fold_dir = out_dir / _fold_dir_name(f.name)
            fold_plan = {**plan, "fold": f.name, "fold_digest": _indices_digest(f, utterances)}
            if not resume and fold_dir.exists():
                if not (fold_dir / "plan.json").is_file():
                    raise FinetuneError(f"{fold_dir} exists but was not written by finetune; choose another out_dir")
                shutil.rmtree(fold_dir)
            done = _finished(fold_dir, fold_plan)
            if done is not None:
                results.append(done)
                continue
            _check_plan(fold_dir, fold_plan)

            train_idx, val_idx = ((f.train, f.val) if f.val is not None else
                                  validation_split(utterances, f.train, fraction=val_fraction,
                                                   n_speakers=val_speakers, seed=seed))
            train_u = [utterances[int(i)] for i in train_idx if utterances[int(i)].label in label_ids]
            val_u = [utterances[int(i)] for i in val_idx if utterances[int(i)].label in label_ids]
            test_all = [utterances[int(i)] for i in f.test]
            test_u = [u for u in test_all if u.label in label_ids]
            if len(test_u) < len(test_all) and labels is None:
                dropped = canonical_order({u.label for u in test_all} - set(label_ids))
                warnings.warn(f"fold {f.name}: {len(test_all) - len(test_u)} test utterances labelled "
                              f"{', '.join(dropped)} are not among the trained classes and are left out", stacklevel=2)
            if not train_u or not val_u or not test_u:
                raise FinetuneError(f"fold {f.name}: empty split after label filtering "
                                    f"(train {len(train_u)}, validation {len(val_u)}, test {len(test_u)})")

            set_seed(seed)
            clf = build_classifier(model, classes, pooling=pooling, freeze=freeze, dropout=dropout, seed=seed,
                                   extra={"fold": f.name, "seed": seed,
                                          "train_corpora": sorted({u.corpus for u in train_u}),
                                          "test_speakers": sorted({u.speaker for u in test_u})})
            sr, norm = clf.config.sample_rate, clf.config.do_normalize
            max_samples = int(max_duration * sr) if max_duration else None
            fold_augment = bind_word_swap(augment, train_u, sample_rate=sr, device=device)  # donors: train only
            train_ds = AudioDataset(train_u, label_ids, sr, norm, train=True, augment=fold_augment, seed=seed,
                                    max_samples=max_samples)
            val_ds = AudioDataset(val_u, label_ids, sr, norm)
            test_ds = AudioDataset(test_u, label_ids, sr, norm)

            steps_per_epoch = max(1, math.ceil(len(train_ds) / (batch_size * grad_accum)))
            args = TrainingArguments(
                output_dir=str(fold_dir),
                num_train_epochs=float(epochs),
                max_steps=int(max_steps) if max_steps else -1,
                per_device_train_batch_size=batch_size,
                per_device_eval_batch_size=batch_size,
                gradient_accumulation_steps=grad_accum,
                learning_rate=lr,
                warmup_steps=warmup,
                weight_decay=weight_decay,
                eval_strategy="epoch",
                save_strategy="epoch",
                save_total_limit=2,                      # the best one is always kept besides the last
                load_best_model_at_end=True,
                metric_for_best_model="uar",
                greater_is_better=True,
                logging_strategy="steps",
                logging_steps=logging_steps or max(1, steps_per_epoch // 4),
                logging_first_step=True,
                report_to=report_to,
                seed=seed,
                data_seed=seed,
                disable_tqdm=not progress,
                remove_unused_columns=False,
                label_names=["labels"],
                dataloader_num_workers=num_workers,
                dataloader_pin_memory=device != "cpu" and torch.cuda.is_available(),
                use_cpu=device == "cpu",
                **_mixed_precision(device),
            )
            optimizers = (None, None)
            if head_lr is not None:
                head = [p for n, p in clf.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
                body = [p for n, p in clf.named_parameters() if p.requires_grad and n.startswith("backbone.")]
                optimizers = (torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}],
                                                lr=lr, weight_decay=weight_decay), None)
            trainer = Trainer(model=clf, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                              data_collator=collate, compute_metrics=_compute_metrics(classes),
                              optimizers=optimizers, callbacks=list(callbacks))
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "plan.json").write_text(json.dumps(fold_plan, indent=1), encoding="utf-8")
            checkpoint = _last_checkpoint(fold_dir) if resume else None
            resumed_from = None
            if checkpoint is not None:
                from transformers import TrainerState

                resumed_from = TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step
            started = time.time()
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

            output = trainer.predict(test_ds)
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            probs = softmax(np.asarray(logits, dtype=np.float64))
            truth = [u.label for u in test_u]
            s = scores(truth, [classes[k] for k in probs.argmax(-1)], classes)
            restricted = None
            present = [c for c in classes if c in set(truth)]
            if len(present) < len(classes):
                cols = [label_ids[c] for c in present]
                r = scores(truth, [present[k] for k in probs[:, cols].argmax(-1)], present)
                restricted = {"labels": present, **{k: r[k] for k in ("wa", "uar", "macro_f1")}}
            model_dir = fold_dir / "model"
            best_val = trainer.state.best_metric
            trainer.model.config.extra.update({"best_val_uar": best_val,
                                               "test_metrics": {k: s[k] for k in ("wa", "uar", "macro_f1")}})
            trainer.model.save_pretrained(model_dir)
            _write_predictions(fold_dir / "predictions.csv", test_u, classes, probs)
            result = FoldResult(
                fold=f.name, train_set="+".join(sorted({u.corpus for u in train_u})),
                test_set="+".join(sorted({u.corpus for u in test_u})),
                n_train=len(train_u), n_val=len(val_u), n_test=len(test_u),
                val_speakers=sorted({u.speaker for u in val_u}),
                metrics={k: s[k] for k in ("wa", "uar", "macro_f1")}, recall=s["recall"], confusion=s["confusion"],
                best_val_uar=None if best_val is None else float(best_val),
                best_checkpoint=trainer.state.best_model_checkpoint, global_step=int(trainer.state.global_step),
                model_dir=str(model_dir), seconds=time.time() - started,
                log_history=list(trainer.state.log_history),
                dropped=dict(Counter(u.label for u in test_all if u.label not in label_ids)),
                resumed_from_step=resumed_from, restricted=restricted,
            )
            (fold_dir / "fold_result.json").write_text(
                serialize.dumps({"plan": fold_plan, "result": asdict(result)}, indent=1),
                encoding="utf-8")
            results.append(result)
            del trainer, clf
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    finally:
        hf_logging.set_verbosity(verbosity)
    summary = summarize(results)
    protocol = folds_arg if isinstance(folds_arg, str) else ""
    run = FinetuneResult(out_dir=out_dir, labels=classes, folds=results, summary=summary,
                         plan={**plan, "protocol": protocol})
    run.files = write_results(run, plots=plots)
    return run


def _finished(fold_dir: Path, plan: dict) -> FoldResult | None:
    """The stored result of a fold finished with the same plan, else None."""
    path = fold_dir / "fold_result.json"
    if not path.is_file() or not (fold_dir / "model").is_dir():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if data.get("plan") != serialize.plain(plan):
        return None
    return FoldResult(**data["result"])


def _check_plan(fold_dir: Path, plan: dict) -> None:
    """Refuse to resume a checkpoint trained with other settings (only the length may change)."""
    path = fold_dir / "plan.json"
    if not path.is_file() or _last_checkpoint(fold_dir) is None:
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    new = serialize.plain(plan)
    changed = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise FinetuneError(f"{fold_dir} holds checkpoints trained with other settings ({detail}); "
                            f"use another --out directory, or resume=False (--no-resume) to start this fold afresh")


def _write_predictions(path: Path, utterances: Sequence[Utterance], classes: list[str], probs: np.ndarray) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "corpus", "speaker", "label", "prediction", *[f"p_{c}" for c in classes]])
        for u, p in zip(utterances, probs):
            w.writerow([u.id, u.corpus, u.speaker, u.label, classes[int(p.argmax())], *[f"{x:.6f}" for x in p]])


def summarize(results: Sequence[FoldResult]) -> dict:
    """metric -> {"mean", "std"} over folds (population std, classifiers.metrics.mean_std)."""
    out = {}
    for k in ("wa", "uar", "macro_f1"):
        mean, std = mean_std([r.metrics[k] for r in results])
        out[k] = {"mean": mean, "std": std}
    return out


def to_probe_results(run: FinetuneResult):
    """The run as `classifiers.evaluate.ProbeResults` (one record per fold, layer "e2e"), so the
    probes' files, tables and summaries apply to fine-tuned models too."""
    from classifiers.evaluate import ProbeResults

    records = []
    for f in run.folds:
        records.append(dict(
            layer="e2e", fold=f.fold, n_train=f.n_train, n_test=f.n_test, **f.metrics, recall=f.recall,
            confusion=f.confusion, labels=run.labels, classifier=f"finetune-{run.plan['pooling']}",
            seed=run.plan["seed"], train_set=f.train_set, test_set=f.test_set, shuffled=False, C=None,
            n_val=f.n_val, val_speakers=f.val_speakers, val_uar=f.best_val_uar, model_dir=f.model_dir,
            best_checkpoint=f.best_checkpoint, global_step=f.global_step, resumed_from_step=f.resumed_from_step,
            seconds=round(f.seconds, 1),
            **({f"restricted_{k}": f.restricted[k] for k in ("wa", "uar", "macro_f1", "labels")}
               if f.restricted else {}),
        ))
    meta = {"kind": "finetune", "protocol": run.plan.get("protocol", ""), "stores": [], "labels": run.labels,
            "plan": run.plan, "mean_std_over_folds": run.summary}
    return ProbeResults(records=records, dropped={f.fold: f.dropped for f in run.folds if f.dropped}, meta=meta)


def write_results(run: FinetuneResult, *, plots: bool = True) -> dict[str, Path]:
    """finetune.json / finetune.csv (classifiers.results format) and, with `plots`, confusion.png
    (summed over the test folds) and learning_curves.png in run.out_dir."""
    from classifiers import plots as probe_plots
    from classifiers.results import write_results as write_probe_results

    files = {}
    files["json"], files["csv"] = write_probe_results(to_probe_results(run), run.out_dir, name="finetune")
    if plots and run.folds:
        total = np.sum([np.asarray(f.confusion) for f in run.folds], axis=0)
        title = (f"fine-tuned, {len(run.folds)} test fold{'s' if len(run.folds) > 1 else ''}: "
                 f"UAR {run.summary['uar']['mean']:.3f} ± {run.summary['uar']['std']:.3f}")
        files["confusion"] = probe_plots.confusion_heatmap(total, run.labels, run.out_dir / "confusion.png",
                                                           title=title)
        files["learning_curves"] = plot_learning_curves({f.fold: f.log_history for f in run.folds},
                                                        run.out_dir / "learning_curves.png")
    return files


def plot_learning_curves(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Training / validation loss and validation UAR against epochs, one line per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_uar) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (name, history) in enumerate(histories.items()):
        color = f"C{k % 10}"
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
        val = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
        uar = [(h["epoch"], h["eval_uar"]) for h in history if "eval_uar" in h]
        if train:
            ax_loss.plot(*zip(*train), color=color, alpha=0.6, label=f"{name} train")
        if val:
            ax_loss.plot(*zip(*val), color=color, linestyle="--", marker="o", label=f"{name} validation")
        if uar:
            ax_uar.plot(*zip(*uar), color=color, marker="o", label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend(fontsize=7)
    ax_uar.set_xlabel("epoch")
    ax_uar.set_ylabel("validation UAR")
    ax_uar.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
