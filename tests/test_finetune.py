"""End-to-end fine-tuning of a tiny wav2vec2 on a synthetic RAVDESS: it learns, it resumes, it is repeatable."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.finetuning.finetune import (
    AudioDataset,
    FinetuneConfig,
    FinetuneError,
    collate,
    declared_labels,
    finetune,
    plan_changes,
    score_test,
    to_probe_results,
)
from classifiers.finetuning.heads import (
    EmotionClassifier,
    HeadError,
    LayerWeightedPooling,
    build_classifier,
    frame_mask,
    make_pooling,
    parse_freeze,
)
from featstore.corpora import get_corpus
from featstore.folds import make_folds
from featstore.synth import synthesize
from tests.helpers import build_tiny_model

CLASSES = ["happy", "sad", "angry"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# what the tiny random model learns reliably in a few seconds: 3 classes, a high rate, nothing frozen
SETTINGS = dict(epochs=10, lr=3e-3, batch_size=8, fold=0, labels=CLASSES, freeze="none", seed=0, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    model = build_tiny_model(root / "tiny", "group")
    synthesize("ravdess", root / "ravdess", n=96, max_duration=1.0, sample_rate=16000)
    utterances = get_corpus("ravdess").load(root / "ravdess").utterances
    return root, model, utterances, make_folds(utterances, "luna5")


@pytest.fixture(scope="module")
def trained(corpus):
    root, model, utterances, folds = corpus
    run = finetune(utterances, folds, _config(model), out_dir=root / "run")
    return run


def _config(model, **overrides) -> FinetuneConfig:
    return FinetuneConfig(model=str(model), **{**SETTINGS, **overrides})


def _accuracy(model: EmotionClassifier, utterances) -> float:
    sel = [u for u in utterances if u.label in model.labels]
    ds = AudioDataset(sel, {c: i for i, c in enumerate(model.labels)}, 16000, True)
    batch = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        pred = model(batch["input_values"], batch["attention_mask"]).logits.argmax(-1)
    return float((pred == batch["labels"]).float().mean())


@pytest.mark.slow
def test_training_loss_falls_and_accuracy_beats_chance(corpus, trained):
    _, _, utterances, _ = corpus
    fold = trained.folds[0]
    assert trained.labels == CLASSES and fold.fold == "luna-0"
    assert fold.global_step == 10 * 4            # 27 training clips / batches of 8 = 4 steps per epoch
    losses = [h["loss"] for h in fold.log_history if "loss" in h]
    assert np.mean(losses[-4:]) < 0.75 * np.mean(losses[:4])
    # validation drove model selection: its UAR went up from chance
    val = [h["eval_uar"] for h in fold.log_history if "eval_uar" in h]
    assert len(val) == 10 and fold.best_val_uar == max(val) > val[0]
    before = build_classifier(str(corpus[1]), CLASSES, freeze="none", seed=0).eval()
    after = EmotionClassifier.from_pretrained(fold.model_dir)
    acc_before, acc_after = _accuracy(before, utterances), _accuracy(after, utterances)
    print(f"accuracy over the 3-class clips: {acc_before:.3f} before, {acc_after:.3f} after (chance 0.333)")
    assert acc_after > 0.6 and acc_after > acc_before + 0.2


@pytest.mark.slow
def test_model_selection_uses_validation_speakers_never_test(corpus, trained):
    _, _, utterances, folds = corpus
    fold = trained.folds[0]
    test_speakers = {utterances[int(i)].speaker for i in folds[0].test}
    assert fold.val_speakers and not set(fold.val_speakers) & test_speakers
    assert fold.n_test == sum(utterances[int(i)].label in CLASSES for i in folds[0].test)
    assert fold.n_train + fold.n_val == sum(utterances[int(i)].label in CLASSES for i in folds[0].train)


@pytest.mark.slow
def test_results_files_and_what_checkpoints_hold(trained):
    from classifiers.results.records import read_results

    out = trained.out_dir
    for name in ("finetune.json", "finetune.csv", "confusion.png", "learning_curves.png"):
        assert (out / name).stat().st_size > 0
    results = read_results(out / "finetune.json")        # the probes' format, read by the probes' code
    assert results.meta["kind"] == "finetune" and results.meta["labels"] == CLASSES
    [f] = results.records
    assert f["fold"] == "luna-0" and f["layer"] == "e2e" and f["classifier"] == "finetune-mean"
    assert f["train_set"] == f["test_set"] == "ravdess" and f["labels"] == CLASSES
    assert np.asarray(f["confusion"]).shape == (3, 3) and np.asarray(f["confusion"]).sum() == f["n_test"]
    assert f["val_uar"] == trained.folds[0].best_val_uar
    [row] = results.summary()
    assert row["uar"] == pytest.approx(f["uar"]) and row["uar_std"] == 0 and row["n"] == 1
    assert results.meta["mean_std_over_folds"]["uar"]["mean"] == pytest.approx(f["uar"])
    cm, labels = results.confusion("e2e", "finetune-mean")
    assert labels == CLASSES and cm.sum() == f["n_test"]
    rows = (out / "finetune.csv").read_text().splitlines()
    assert rows[0].startswith("train_set,test_set,classifier,layer,fold,seed,wa,uar,macro_f1") and len(rows) == 2
    assert rows[1].startswith("ravdess,ravdess,finetune-mean,e2e,luna-0,0,")
    fold_dir = out / "luna-0"
    preds = (fold_dir / "predictions.csv").read_text().splitlines()
    assert len(preds) == 1 + f["n_test"] and preds[0] == "id,corpus,speaker,label,prediction,p_happy,p_sad,p_angry"
    checkpoints = sorted(fold_dir.glob("checkpoint-*"))
    assert 1 <= len(checkpoints) <= 2
    for ck in checkpoints:
        assert (ck / "model.safetensors").is_file() and (ck / "training_args.json").is_file()
        assert not list(ck.glob("*.bin"))        # no pickled TrainingArguments / weights
        # but the Trainer's own states are pickles, as the docs say (read with weights_only=True)
        assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {p.name for p in ck.iterdir()}
        EmotionClassifier.from_pretrained(ck)   # every checkpoint is a loadable model
    assert {p.name for p in (fold_dir / "model").iterdir()} == {"config.json", "model.safetensors",
                                                                 "preprocessor_config.json", "README.md"}


class _Planted:
    """Unpickling this runs code (writes a marker file): what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.mark.slow
def test_planted_pickle_in_a_checkpoint_does_not_run(corpus, trained, tmp_path):
    root, model, utterances, folds = corpus
    out = tmp_path / "planted"
    shutil.copytree(trained.out_dir, out)
    shutil.rmtree(out / "luna-0" / "model")      # unfinished: resumes from the last checkpoint
    last = max((out / "luna-0").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    marker = tmp_path / "pwned"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": _Planted(str(marker))}, last / name)
    with pytest.raises(FinetuneError, match="weights_only"):
        finetune(utterances, folds, _config(model), out_dir=out)
    assert not marker.exists()
    torch.load(last / "rng_state.pth", weights_only=False)   # the plant is live: a full unpickle runs it
    assert marker.exists()


@pytest.mark.slow
def test_finished_fold_is_read_back_not_retrained(corpus, trained):
    root, model, utterances, folds = corpus
    stamp = (trained.out_dir / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns
    again = finetune(utterances, folds, _config(model), out_dir=trained.out_dir)
    assert again.folds[0].metrics == trained.folds[0].metrics
    assert (trained.out_dir / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_run_directory_of_an_older_ser_is_read_back(corpus, trained, tmp_path):
    """A finished fold written before FinetuneConfig (plan without `device`, result without
    predictions / training-only classes) is recognised, not retrained, and rescored from its CSV."""
    import json

    root, model, utterances, folds = corpus
    out = tmp_path / "old"
    shutil.copytree(trained.out_dir, out)
    path = out / "luna-0" / "fold_result.json"
    data = json.loads(path.read_text())
    data["plan"].pop("device")
    for key in ("y_true", "y_pred", "training_only"):
        data["result"].pop(key)
    path.write_text(json.dumps(data))
    stamp = (out / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns
    again = finetune(utterances, folds, _config(model), out_dir=out)
    fold = again.folds[0]
    assert (out / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert fold.metrics == pytest.approx(trained.folds[0].metrics) and fold.y_true == trained.folds[0].y_true
    assert fold.y_pred == trained.folds[0].y_pred and fold.training_only == [] and fold.restricted is None


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint_and_matches(corpus, trained):
    """Killed after epoch 3's checkpoint, the rerun starts at that global step and ends where an
    uninterrupted run with the same seed ends."""
    from transformers import TrainerCallback

    root, model, utterances, folds = corpus

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= 12:
                raise KeyboardInterrupt("simulated interruption")

    class StartStep(TrainerCallback):
        steps: list[int] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    out = root / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        finetune(utterances, folds, _config(model), out_dir=out, callbacks=[Interrupt()])
    assert max(int(p.name.split("-")[1]) for p in (out / "luna-0").glob("checkpoint-*")) == 12
    assert not (out / "luna-0" / "model").exists()
    start = StartStep()
    run = finetune(utterances, folds, _config(model), out_dir=out, callbacks=[start])
    fold = run.folds[0]
    assert start.steps == [12] and fold.resumed_from_step == 12 and fold.global_step == 40
    # same seed -> the resumed run reproduces the uninterrupted one
    assert fold.metrics == pytest.approx(trained.folds[0].metrics)
    assert fold.best_val_uar == trained.folds[0].best_val_uar
    a = EmotionClassifier.from_pretrained(fold.model_dir).state_dict()
    b = EmotionClassifier.from_pretrained(trained.folds[0].model_dir).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_more_epochs_continue_from_the_last_checkpoint(corpus, trained):
    root, model, utterances, folds = corpus
    out = root / "extended"
    shutil.copytree(trained.out_dir, out)
    run = finetune(utterances, folds, _config(model, epochs=11), out_dir=out)
    assert run.folds[0].resumed_from_step == 40 and run.folds[0].global_step == 44


@pytest.mark.slow
def test_other_settings_refuse_to_resume(corpus, trained):
    root, model, utterances, folds = corpus
    out = root / "other"
    shutil.copytree(trained.out_dir, out)
    shutil.rmtree(out / "luna-0" / "model")      # unfinished: checkpoints only
    with pytest.raises(FinetuneError, match="lr"):
        finetune(utterances, folds, _config(model, lr=1e-4), out_dir=out)


@pytest.mark.slow
def test_heads_freezing_and_augmented_accumulated_run(corpus):
    """layer-weighted pooling, layers:2 frozen, gradient accumulation, augmentation, length grouping."""
    root, model, utterances, folds = corpus
    config = FinetuneConfig(model=str(model), epochs=1, max_steps=3, lr=1e-2, batch_size=4, grad_accum=2,
                            fold="luna-1", labels=["sad", "angry"], pooling="layer-weighted", freeze="layers:2",
                            augment="chunk-permute:3@1,noise:20@0.5,speed@0.5", max_duration=0.5,
                            progress=False, plots=False)
    run = finetune(utterances, folds, config, out_dir=root / "lw")
    assert run.folds[0].global_step == 3 and run.folds[0].fold == "luna-1"
    start = build_classifier(str(model), ["sad", "angry"], pooling="layer-weighted", freeze="layers:2", seed=0)
    tuned = EmotionClassifier.from_pretrained(run.folds[0].model_dir)
    s0, s1 = start.state_dict(), tuned.state_dict()
    frozen = [k for k in s0 if k.startswith(("backbone.feature_extractor", "backbone.feature_projection",
                                             "backbone.encoder.pos_conv_embed", "backbone.encoder.layers.0.",
                                             "backbone.encoder.layers.1."))]
    assert frozen and all(torch.equal(s0[k], s1[k]) for k in frozen)
    assert not torch.equal(s0["backbone.encoder.layers.3.feed_forward.output_dense.weight"],
                           s1["backbone.encoder.layers.3.feed_forward.output_dense.weight"])
    assert not torch.equal(s0["pooling.layer_logits"], s1["pooling.layer_logits"])
    assert tuned.config.pooling == "layer-weighted" and tuned.config.freeze == "layers:2"


def padded_vs_alone(clf, lengths, seed: int):
    """Logits of random clips of `lengths` as one padded batch, and each clip alone (with the batch)."""
    rng = np.random.default_rng(seed)
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    batch = collate([{"input_values": w} for w in waves])
    with torch.no_grad():
        together = clf(batch["input_values"], batch["attention_mask"]).logits
        alone = torch.cat([clf(torch.from_numpy(w)[None]).logits for w in waves])
    return together, alone, batch


@pytest.mark.parametrize("kind", ["group", "layer"])
@pytest.mark.parametrize("pooling", ["mean", "attention", "layer-weighted", "bilstm"])
def test_padded_batches_equal_single_clips_and_round_trip(tiny_models, tmp_path, kind, pooling):
    clf = build_classifier(str(tiny_models[kind]), ["a", "b", "c"], pooling=pooling, freeze="layers:1").eval()
    together, alone, batch = padded_vs_alone(clf, (8000, 5000, 1200), seed=0)
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        loaded = EmotionClassifier.from_pretrained(clf.save_pretrained(tmp_path / "m"))
        torch.testing.assert_close(loaded(batch["input_values"], batch["attention_mask"]).logits, together)


def test_data2vec_audio_padded_batches_equal_single_clips(tmp_path):
    """The stacked positional conv of data2vec-audio is masked in fine-tuning too (as in extraction)."""
    from tests.helpers import build_tiny_data2vec

    clf = build_classifier(str(build_tiny_data2vec(tmp_path / "d2v")), ["a", "b"], pooling="mean",
                           freeze="none").eval()
    together, alone, _ = padded_vs_alone(clf, (8000, 3000), seed=1)
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)


def test_pooling_heads_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5)
    lengths = torch.tensor([7, 4])
    mask = frame_mask(lengths, 7)
    for name in ("mean", "attention", "bilstm"):
        head = make_pooling(name, 5, 3, lstm_size=4)
        noisy = x.clone()
        noisy[1, 4:] = 1e3                               # garbage in the padded frames
        torch.testing.assert_close(head(x, mask), head(noisy, mask))
        torch.testing.assert_close(head(x, mask)[1], head(x[1:, :4], frame_mask(lengths[1:], 4))[0])
    lw = LayerWeightedPooling(5, 3)
    torch.testing.assert_close(lw.layer_weights(), torch.full((3,), 1 / 3))
    stacked = torch.stack([x, 2 * x, 3 * x])
    torch.testing.assert_close(lw(stacked, mask), make_pooling("mean", 5, 3)(2 * x, mask))


def test_freeze_specs():
    assert parse_freeze("none", 12) is None and parse_freeze("feature-encoder", 12) == -1
    assert parse_freeze("layers:4", 12) == 4 and parse_freeze("backbone", 12) == 12
    for bad in ("layers:13", "layers", "top", "layers:-1"):
        with pytest.raises(HeadError):
            parse_freeze(bad, 12)


def test_bad_arguments_raise_clear_errors(corpus, tmp_path):
    root, model, utterances, folds = corpus
    with pytest.raises(FinetuneError, match="fold index 7"):
        finetune(utterances, folds, FinetuneConfig(model=str(model), fold=7), out_dir=tmp_path)
    with pytest.raises(FinetuneError, match="boredom"):
        finetune(utterances, folds, FinetuneConfig(model=str(model), labels=["sad", "boredom"]), out_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HeadError, match="freeze"):
            finetune(utterances, folds, FinetuneConfig(model=str(model), freeze="layers:9", fold=0), out_dir=tmp_path)


@pytest.mark.parametrize("bad,match", [
    (dict(pooling="max"), "--pooling 'max'"), (dict(lr=0), "--lr 0"), (dict(head_lr=-1.0), "--head-lr"),
    (dict(batch_size=0), "--batch-size"), (dict(epochs=0), "--epochs"), (dict(val_fraction=1.0), "--val-fraction"),
    (dict(dropout=1.0), "--dropout"), (dict(labels="sad"), "at least 2"), (dict(max_steps=0), "--max-steps"),
])
def test_config_rejects_bad_values_naming_the_option(bad, match):
    with pytest.raises(FinetuneError, match=match):
        FinetuneConfig(**bad)


def test_config_normalises_and_validates_spellings(monkeypatch):
    from transformers.integrations import integration_utils

    from classifiers.finetuning.augment import AugmentError
    from featstore.device import DeviceError

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard", "wandb"])
    c = FinetuneConfig(labels="sad, angry,sad", fold=0, report_to=["tensorboard", "wandb"], augment="noise:20@1")
    assert c.labels == ("sad", "angry") and c.fold == "0" and c.report_targets() == ["tensorboard", "wandb"]
    assert FinetuneConfig().report_targets() == "none"
    assert c.plan(["sad", "angry"])["augment"] == "noise:20@1" and c.plan(["sad", "angry"])["labels"] == ["sad", "angry"]
    assert FinetuneConfig(epochs=0, max_steps=5).max_steps == 5      # max_steps wins: epochs unused
    with pytest.raises(HeadError, match="freeze"):
        FinetuneConfig(freeze="top")
    with pytest.raises(AugmentError):
        FinetuneConfig(augment="reverb")
    with pytest.raises(DeviceError):
        FinetuneConfig(device="gpu")
    with pytest.raises(FinetuneError, match="--report-to 'myspace': unknown myspace: use none, all"):
        FinetuneConfig(report_to="myspace")
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: [])
    with pytest.raises(FinetuneError, match="wandb is not installed here"):
        FinetuneConfig(report_to="wandb")


def test_plan_of_an_older_run_directory_is_still_recognised():
    """plan.json as ser wrote it before FinetuneConfig (no device key): resumable, and a real change
    is still named."""
    from classifiers.finetuning.finetune import RESUMABLE_CHANGES

    config = FinetuneConfig(model="m", labels=["sad", "angry"])
    new = {**config.plan(["sad", "angry"]), "fold": "luna-0", "fold_digest": "abc"}
    old = {"model": "m", "labels": ["sad", "angry"], "epochs": 6, "max_steps": None, "freeze": "feature-encoder",
           "pooling": "mean", "augment": "none", "seed": 0, "lr": 3e-5, "head_lr": None, "batch_size": 8,
           "grad_accum": 1, "val_fraction": 0.1, "val_speakers": None, "max_duration": None, "warmup": 0.1,
           "weight_decay": 0.0, "dropout": 0.1, "report_to": "none", "num_workers": 0, "logging_steps": None,
           "fold": "luna-0", "fold_digest": "abc"}
    assert set(new) - set(old) == {"device", "ctc_model", "adapter", "target", "multitask"}  # added since; defaults match
    assert plan_changes(old, new) == [] and plan_changes(old, new, allowed=RESUMABLE_CHANGES) == []
    assert plan_changes({**old, "epochs": 3}, new, allowed=RESUMABLE_CHANGES) == []
    assert plan_changes({**old, "lr": 1e-3}, new, allowed=RESUMABLE_CHANGES) == ["lr"]
    assert set(RESUMABLE_CHANGES) == {"epochs", "max_steps", "logging_steps", "report_to", "num_workers", "device"}


def test_declared_labels_come_from_the_corpora_not_the_fold():
    from dataclasses import replace

    from featstore.corpora import get_corpus

    assert declared_labels(["ravdess"], []) == set(get_corpus("ravdess").labels.values())
    assert "calm" not in declared_labels(["cremad"], []) and "surprise" not in declared_labels(["cremad"], [])
    u = _utterance("ravdess", "happy")
    # a CSV corpus (unregistered name) declares the labels its data carries
    mine = [replace(u, corpus="mine", label=lab) for lab in ("happy", "awe")]
    assert declared_labels(["mine"], mine + [u]) == {"happy", "awe"}
    assert declared_labels(["mine", "iemocap"], mine) == {"happy", "awe", "angry", "neutral", "sad"}


def _utterance(corpus: str, label: str):
    from featstore.corpora.base import Utterance

    return Utterance(id=f"{corpus}-{label}", path="x.wav", corpus=corpus, language="en", speaker=f"{corpus}-1",
                     gender=None, label=label, label_raw=label)


def test_restricted_scores_over_the_shared_classes_only():
    classes = ["happy", "sad", "calm"]
    # calm wins every row, but the test corpus cannot hold calm: restricted to happy/sad, row 1 is right
    probs = np.array([[0.3, 0.2, 0.5], [0.1, 0.4, 0.5], [0.35, 0.3, 0.35]])
    truth = ["happy", "happy", "sad"]
    predicted, s, restricted = score_test(truth, probs, classes, ["happy", "sad"])
    assert predicted == ["calm", "calm", "happy"] and s["wa"] == 0.0
    assert restricted == {"labels": ["happy", "sad"], "wa": pytest.approx(1 / 3), "uar": pytest.approx(0.25),
                          "macro_f1": pytest.approx(0.25)}
    assert score_test(truth, probs, classes, classes)[2] is None


def test_probe_records_are_built_by_make_record():
    from classifiers.finetuning.finetune import FinetuneResult, FoldResult
    from classifiers.results.records import make_record

    truth, pred = ["sad", "sad", "angry"], ["sad", "angry", "angry"]
    fold = FoldResult(fold="f0", train_set="ravdess", test_set="cremad", n_train=10, n_val=2, n_test=3,
                      val_speakers=["s"], metrics={}, recall={}, confusion=[], best_val_uar=0.5,
                      best_checkpoint=None, global_step=4, model_dir="m", seconds=1.0, training_only=["calm"],
                      restricted={"labels": ["sad", "angry"], "wa": 1.0, "uar": 1.0, "macro_f1": 1.0},
                      y_true=truth, y_pred=pred)
    run = FinetuneResult(out_dir=Path("."), labels=["sad", "angry", "calm"], folds=[fold], summary={},
                         plan={"pooling": "mean", "seed": 3})
    [rec] = to_probe_results(run).records
    ref = make_record(layer="e2e", fold="f0", y_true=truth, y_pred=pred, labels=run.labels, n_train=10)
    assert {k: rec[k] for k in ref} == ref
    assert rec["training_only"] == ["calm"] and rec["restricted_uar"] == 1.0 and rec["classifier"] == "finetune-mean"
    assert rec["seed"] == 3 and rec["val_uar"] == 0.5


@pytest.mark.slow
def test_training_only_classes_and_restricted_scores_follow_declared_labels(corpus):
    """Planted cross-corpus case: trained on RAVDESS happy/sad/calm, tested on clips tagged as CREMA-D
    (which declares no calm): restricted scores over happy/sad, calm named as training-only. A RAVDESS
    test fold that merely lacks calm gets no restriction: RAVDESS declares calm."""
    import csv
    from dataclasses import replace

    from featstore.folds import Fold

    root, model, utterances, folds = corpus
    labels = ["happy", "sad", "calm"]
    test = [int(i) for i in folds[2].test if utterances[int(i)].label in ("happy", "sad")]
    planted = list(utterances) + [replace(utterances[i], corpus="cremad", id="cremad-" + utterances[i].id)
                                  for i in test]
    as_crema = np.arange(len(utterances), len(planted))
    run = finetune(planted, [Fold("as-crema", folds[2].train, as_crema), Fold("no-calm", folds[2].train, np.array(test))],
                   _config(model, labels=labels, fold="all", epochs=1, max_steps=2, plots=False),
                   out_dir=root / "restricted")
    crema, plain = run.folds
    assert crema.test_set == "cremad" and crema.training_only == ["calm"]
    assert crema.restricted["labels"] == ["happy", "sad"]
    assert plain.test_set == "ravdess" and plain.training_only == [] and plain.restricted is None
    with open(Path(crema.model_dir).parent / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pred = ["happy" if float(r["p_happy"]) >= float(r["p_sad"]) else "sad" for r in rows]
    assert crema.restricted["wa"] == pytest.approx(np.mean([p == r["label"] for p, r in zip(pred, rows)]))
    assert crema.metrics["wa"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in rows]))
    records = {r["fold"]: r for r in to_probe_results(run).records}
    assert records["as-crema"]["training_only"] == ["calm"] and "restricted_uar" not in records["no-calm"]


def test_cli_options_are_the_config_fields(tmp_path, monkeypatch):
    """`ser finetune` has one option per CLI field of FinetuneConfig (help from the field), and what
    is typed reaches the config (--head-lr included)."""
    from dataclasses import fields

    import typer
    from typer.testing import CliRunner

    import classifiers.finetuning.finetune as ft
    from cli import app

    runner = CliRunner()
    options = {p.opts[0]: p for p in typer.main.get_command(app).commands["finetune"].params}
    for f in fields(FinetuneConfig):
        if f.metadata["cli"]:
            option = options["--" + f.name.replace("_", "-")]
            assert option.help == f.metadata["help"] and option.default == f.default
    assert options["--resume"].secondary_opts == ["--no-resume"] and "--model" in options
    synthesize("ravdess", tmp_path / "ravdess", n=16, max_duration=0.3, sample_rate=16000)
    seen = {}

    def fake(utterances, folds, config, *, out_dir, protocol=""):
        seen.update(config=config, out_dir=out_dir, n=len(utterances))
        return ft.FinetuneResult(out_dir=out_dir, labels=["sad", "angry"], folds=[], plan={},
                                 summary={k: {"mean": 0.5, "std": 0.0} for k in ("wa", "uar", "macro_f1")})

    monkeypatch.setattr(ft, "finetune", fake)
    res = runner.invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path / "ravdess"), "--model", "m",
                              "--head-lr", "1e-3", "--labels", "sad,angry", "--no-resume", "--fold", "1",
                              "--device", "cpu", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    c = seen["config"]
    assert (c.head_lr, c.labels, c.resume, c.fold, c.model, c.device) == (1e-3, ("sad", "angry"), False, "1", "m", "cpu")
    assert c.lr == FinetuneConfig().lr and seen["n"] == 16


@pytest.mark.parametrize("args,match", [(["--lr", "-1"], "--lr -1.0: must be positive"),
                                        (["--pooling", "max"], "--pooling 'max'"),
                                        (["--device", "bogus"], "unknown device 'bogus'")])
def test_cli_bad_option_is_one_error_line(tmp_path, args, match):
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path), "--model", "m", *args])
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error:") and match in line


def test_head_lr_gives_the_head_its_own_parameter_group(tiny_models):
    from classifiers.finetuning.finetune import _optimizers

    clf = build_classifier(str(tiny_models["group"]), ["a", "b"], pooling="attention", freeze="layers:1")
    assert _optimizers(clf, FinetuneConfig(lr=1e-5)) == (None, None)          # the Trainer's default AdamW
    opt, scheduler = _optimizers(clf, FinetuneConfig(lr=1e-5, head_lr=1e-3, weight_decay=0.01))
    body, head = opt.param_groups
    assert (body["lr"], head["lr"], head["weight_decay"], scheduler) == (1e-5, 1e-3, 0.01, None)
    names = {id(p): n for n, p in clf.named_parameters()}
    assert all(names[id(p)].startswith(("pooling.", "classifier.")) for p in head["params"])
    assert all(names[id(p)].startswith("backbone.") for p in body["params"])
    trainable = [p for p in clf.parameters() if p.requires_grad]
    assert len(body["params"]) + len(head["params"]) == len(trainable)


def test_pooling_help_names_every_head():
    """The option help is literal text (the CLI builds options without importing torch): it must
    stay in step with the heads that exist."""
    from dataclasses import fields

    from classifiers.finetuning.heads import FREEZE_HELP, POOLINGS

    helps = {f.name: f.metadata["help"] for f in fields(FinetuneConfig)}
    assert all(p in helps["pooling"] for p in POOLINGS) and FREEZE_HELP in helps["freeze"]


def test_conformer_padded_batches_equal_single_clips_and_logmel_models_build(tmp_path):
    """wav2vec2-conformer fine-tunes exactly under padding; Whisper (log-mel input) builds too
    (its exactness and exports: tests/test_finetune_families.py)."""
    from tests.test_backbones import build_tiny

    clf = build_classifier(str(build_tiny("wav2vec2-conformer", tmp_path / "conf")), ["a", "b"], pooling="mean",
                           freeze="none").eval()
    together, alone, _ = padded_vs_alone(clf, (8000, 2500), seed=2)
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)
    whisper = build_classifier(str(build_tiny("whisper", tmp_path / "whisper")), ["a", "b"])
    assert whisper.config.input_kind == "log-mel" and whisper.front_end is not None
