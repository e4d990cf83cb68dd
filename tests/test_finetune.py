"""End-to-end fine-tuning of a tiny wav2vec2 on a synthetic RAVDESS: it learns, it resumes, it is repeatable."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.finetune import AudioDataset, FinetuneError, collate, finetune
from classifiers.heads import (
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
    run = finetune(utterances, folds, str(model), out_dir=root / "run", **SETTINGS)
    return run


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
def test_results_files_and_pickle_free_checkpoints(trained):
    from classifiers.results import read_results

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
        EmotionClassifier.from_pretrained(ck)   # every checkpoint is a loadable model
    assert not list((fold_dir / "model").glob("*.bin"))


@pytest.mark.slow
def test_finished_fold_is_read_back_not_retrained(corpus, trained):
    root, model, utterances, folds = corpus
    stamp = (trained.out_dir / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns
    again = finetune(utterances, folds, str(model), out_dir=trained.out_dir, **SETTINGS)
    assert again.folds[0].metrics == trained.folds[0].metrics
    assert (trained.out_dir / "luna-0" / "model" / "model.safetensors").stat().st_mtime_ns == stamp


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
        finetune(utterances, folds, str(model), out_dir=out, callbacks=[Interrupt()], **SETTINGS)
    assert max(int(p.name.split("-")[1]) for p in (out / "luna-0").glob("checkpoint-*")) == 12
    assert not (out / "luna-0" / "model").exists()
    start = StartStep()
    run = finetune(utterances, folds, str(model), out_dir=out, callbacks=[start], **SETTINGS)
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
    run = finetune(utterances, folds, str(model), out_dir=out, **{**SETTINGS, "epochs": 11})
    assert run.folds[0].resumed_from_step == 40 and run.folds[0].global_step == 44


@pytest.mark.slow
def test_other_settings_refuse_to_resume(corpus, trained):
    root, model, utterances, folds = corpus
    out = root / "other"
    shutil.copytree(trained.out_dir, out)
    shutil.rmtree(out / "luna-0" / "model")      # unfinished: checkpoints only
    with pytest.raises(FinetuneError, match="lr"):
        finetune(utterances, folds, str(model), out_dir=out, **{**SETTINGS, "lr": 1e-4})


@pytest.mark.slow
def test_heads_freezing_and_augmented_accumulated_run(corpus):
    """layer-weighted pooling, layers:2 frozen, gradient accumulation, augmentation, length grouping."""
    root, model, utterances, folds = corpus
    run = finetune(utterances, folds, str(model), out_dir=root / "lw", epochs=1, max_steps=3, lr=1e-2,
                   batch_size=4, grad_accum=2, fold="luna-1", labels=["sad", "angry"], pooling="layer-weighted",
                   freeze="layers:2", augment="chunk-permute:3@1,noise:20@0.5,speed@0.5", max_duration=0.5,
                   progress=False, plots=False)
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


@pytest.mark.parametrize("kind", ["group", "layer"])
@pytest.mark.parametrize("pooling", ["mean", "attention", "layer-weighted", "bilstm"])
def test_padded_batches_equal_single_clips_and_round_trip(tiny_models, tmp_path, kind, pooling):
    clf = build_classifier(str(tiny_models[kind]), ["a", "b", "c"], pooling=pooling, freeze="layers:1").eval()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (8000, 5000, 1200)]
    batch = collate([{"input_values": w} for w in waves])
    with torch.no_grad():
        together = clf(batch["input_values"], batch["attention_mask"]).logits
        alone = torch.cat([clf(torch.from_numpy(w)[None]).logits for w in waves])
        torch.testing.assert_close(together, alone, atol=2e-5, rtol=1e-4)
        loaded = EmotionClassifier.from_pretrained(clf.save_pretrained(tmp_path / "m"))
        torch.testing.assert_close(loaded(batch["input_values"], batch["attention_mask"]).logits, together)


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
        finetune(utterances, folds, str(model), out_dir=tmp_path, fold=7)
    with pytest.raises(FinetuneError, match="pooling"):
        finetune(utterances, folds, str(model), out_dir=tmp_path, pooling="max")
    with pytest.raises(FinetuneError, match="boredom"):
        finetune(utterances, folds, str(model), out_dir=tmp_path, labels=["sad", "boredom"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HeadError, match="freeze"):
            finetune(utterances, folds, str(model), out_dir=tmp_path, freeze="layers:9", fold=0)


@pytest.mark.slow
def test_test_fold_lacking_trained_classes_gets_restricted_scores(corpus):
    """Cross-corpus style (a RAVDESS model on CREMA-D, which has no calm/surprise): the scores with
    predictions restricted to the test fold's labels are reported beside the plain ones."""
    import csv

    from featstore.folds import Fold

    root, model, utterances, folds = corpus
    test = np.array([i for i in folds[2].test if utterances[int(i)].label != "angry"])
    run = finetune(utterances, [Fold("no-angry", folds[2].train, test)], str(model), out_dir=root / "restricted",
                   **{**SETTINGS, "fold": "all", "epochs": 1, "max_steps": 2}, plots=False)
    fold = run.folds[0]
    assert fold.restricted["labels"] == ["happy", "sad"] and not set(fold.dropped) & set(CLASSES)
    with open(Path(fold.model_dir).parent / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pred = ["happy" if float(r["p_happy"]) >= float(r["p_sad"]) else "sad" for r in rows]
    assert fold.restricted["wa"] == pytest.approx(np.mean([p == r["label"] for p, r in zip(pred, rows)]))
    assert fold.metrics["wa"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in rows]))
