"""Fine-tuned models that leave ser: exports load with transformers' Auto classes and predict what
`ser predict` predicts; each has a model card; run folders follow the settings; --no-resume keeps
finished work; --report-to is checked before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from classifiers.finetuning.finetune import FinetuneConfig, FinetuneError, default_run_dir, finetune
from classifiers.finetuning.heads import EmotionClassifier, build_classifier
from classifiers.finetuning.inference import predict
from featstore.audio import load_audio
from featstore.corpora import get_corpus
from featstore.folds import make_folds
from featstore.synth import synthesize
from tests.helpers import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_modules_cache")

CLASSES = ["happy", "sad", "angry"]
# a few optimiser steps on a tiny random model: enough for a head that is not uniform
SETTINGS = dict(epochs=1, max_steps=3, lr=3e-3, batch_size=8, fold=0, labels=CLASSES, freeze="none", seed=0,
                progress=False, plots=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    models = {kind: build_tiny_model(root / f"tiny-{kind}", kind) for kind in ("group", "layer")}
    synthesize("ravdess", root / "ravdess", n=48, max_duration=0.6, sample_rate=16000)
    utterances = get_corpus("ravdess").load(root / "ravdess").utterances
    return root, models, utterances, make_folds(utterances, "luna5")


@pytest.fixture(scope="module")
def runs(corpus):
    """{(kind, pooling): FinetuneResult}: mean heads on both encoder styles, attention on base-style."""
    root, models, utterances, folds = corpus
    return {(kind, pooling): finetune(utterances, folds, FinetuneConfig(model=str(models[kind]), pooling=pooling,
                                                                         **SETTINGS),
                                      out_dir=root / f"run-{kind}-{pooling}", protocol="luna5")
            for kind, pooling in (("group", "mean"), ("layer", "mean"), ("group", "attention"))}


def _auto(model_dir, **kw):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    return AutoFeatureExtractor.from_pretrained(model_dir), AutoModelForAudioClassification.from_pretrained(
        model_dir, **kw).eval()


def _auto_probs(model_dir, files, **kw) -> tuple[np.ndarray, list[str], object]:
    """transformers alone, one clip at a time: (probabilities (N, C), class names, the model)."""
    fe, model = _auto(model_dir, **kw)
    rate = fe.sampling_rate
    rows = []
    with torch.no_grad():
        for f in files:
            x = fe(load_audio(f, rate), sampling_rate=rate, return_tensors="pt")
            rows.append(torch.softmax(model(**x).logits.double(), -1)[0].numpy())
    return np.array(rows), [model.config.id2label[i] for i in range(model.config.num_labels)], model


def _ser_probs(model_dir, files, labels) -> np.ndarray:
    return np.array([[p[c] for c in labels] for _, p in predict(files, model_dir, batch_size=4, device="cpu")])


# -- the mapping, on untrained heads with sharpened weights ----------------------------------------

@pytest.mark.parametrize("kind", ["group", "layer"])
@pytest.mark.parametrize("pooling", ["mean", "layer-weighted", "attention", "bilstm"])
def test_every_head_exports_to_an_auto_class_that_computes_the_same(tiny_models, tmp_path, kind, pooling):
    from transformers import AutoFeatureExtractor

    torch.manual_seed(1)
    clf = build_classifier(str(tiny_models[kind]), ["a", "b", "c"], pooling=pooling, seed=2).eval()
    with torch.no_grad():          # far from uniform, and the layer weights far from equal
        clf.classifier.weight.mul_(200 if pooling == "bilstm" else 20)   # LSTM outputs are small
        if pooling == "layer-weighted":
            clf.pooling.layer_logits.copy_(torch.tensor([3.0, -1.0, 0.5, 2.0, -2.0]))
    directory = clf.save_pretrained(tmp_path / "model")
    native = pooling in ("mean", "layer-weighted")
    assert (directory / "modeling_ser.py").exists() != native
    _, model = _auto(directory, **({} if native else {"trust_remote_code": True}))
    assert type(model).__name__ == ("Wav2Vec2ForSequenceClassification" if native else "SerForAudioClassification")
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    fe = AutoFeatureExtractor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 5000, 2400)]
    with torch.no_grad():
        for w in waves:
            x = fe(w, sampling_rate=16000, return_tensors="pt")
            ours = torch.softmax(clf(x["input_values"]).logits, -1)
            theirs = torch.softmax(model(**x).logits, -1)
            torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)
            assert float(ours.max()) > 0.5            # not a uniform head: the comparison means something
        batch = fe(waves, sampling_rate=16000, return_tensors="pt", padding=True, return_attention_mask=True)
        ours = clf(batch["input_values"], batch["attention_mask"]).logits
        theirs = model(**batch).logits
    if native and kind == "group":
        # transformers' GroupNorm encoder counts the padding (ser's exact batches do not): what the card says
        assert (theirs - ours).abs().max() > 1e-4
    else:
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    # ser reads its own export back exactly
    torch.testing.assert_close(EmotionClassifier.from_pretrained(directory)(batch["input_values"],
                                                                            batch["attention_mask"]).logits, ours)


def test_a_head_with_code_needs_trust_remote_code(tiny_models, tmp_path):
    clf = build_classifier(str(tiny_models["group"]), ["a", "b"], pooling="bilstm")
    directory = clf.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="trust_remote_code"):
        _auto(directory, trust_remote_code=False)


def test_a_projector_trained_further_in_transformers_is_folded_into_the_classifier(tiny_models, tmp_path):
    """An export saved again by transformers after more training (projector no longer the identity)
    still loads in ser, with the same outputs."""
    clf = build_classifier(str(tiny_models["layer"]), ["a", "b", "c"], pooling="mean", seed=0).eval()
    _, model = _auto(clf.save_pretrained(tmp_path / "model"))
    torch.manual_seed(3)
    with torch.no_grad():
        model.projector.weight.copy_(torch.randn_like(model.projector.weight))
        model.projector.bias.copy_(torch.randn_like(model.projector.bias))
    model.save_pretrained(tmp_path / "further")            # transformers keeps ser's config.json keys
    loaded = EmotionClassifier.from_pretrained(tmp_path / "further")
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 6000)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)


# -- fine-tuned exports against ser predict -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind,pooling", [("group", "mean"), ("layer", "mean"), ("group", "attention")])
def test_finetuned_export_predictions_equal_ser_predict(corpus, runs, kind, pooling):
    _, _, utterances, _ = corpus
    run = runs[(kind, pooling)]
    model_dir = Path(run.folds[0].model_dir)
    files = [u.path for u in utterances[:12]]
    theirs, labels, model = _auto_probs(model_dir, files, **({"trust_remote_code": True} if pooling != "mean" else {}))
    assert labels == CLASSES
    assert type(model).__name__ == ("Wav2Vec2ForSequenceClassification" if pooling == "mean"
                                    else "SerForAudioClassification")
    ours = _ser_probs(model_dir, files, labels)
    diff = float(np.abs(theirs - ours).max())
    print(f"{kind}/{pooling}: max |p_transformers - p_ser_predict| = {diff:.2e} over {len(files)} clips x "
          f"{len(labels)} classes; first clip {np.round(ours[0], 4).tolist()}")
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert float(np.ptp(ours, axis=0).max()) > 1e-3  # the clips differ: the comparison can tell models apart
    # and the fold's own test predictions (written by the trainer) are those of the export
    import csv

    with open(model_dir.parent / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {u.id: u.path for u in utterances}
    test_files = [by_id[r["id"]] for r in rows[:6]]
    expected = np.array([[float(r[f"p_{c}"]) for c in labels] for r in rows[:6]])
    np.testing.assert_allclose(_auto_probs(model_dir, test_files, **({"trust_remote_code": True}
                                                                    if pooling != "mean" else {}))[0],
                               expected, atol=2e-6)   # predictions.csv keeps 6 decimals


@pytest.mark.slow
def test_ser_predict_cli_json_equals_transformers(corpus, runs):
    from typer.testing import CliRunner

    from cli import app

    _, _, utterances, _ = corpus
    model_dir = Path(runs[("group", "mean")].folds[0].model_dir)
    files = [u.path for u in utterances[:3]]
    res = CliRunner().invoke(app, ["predict", *files, "--trained", str(model_dir), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    theirs, labels, _ = _auto_probs(model_dir, files)
    got = np.array([[r[f"p_{c}"] for c in labels] for r in rows])
    np.testing.assert_allclose(theirs, got, atol=1e-5, rtol=0)


# -- model cards -------------------------------------------------------------------------------------

def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.slow
def test_model_card_names_base_model_corpora_and_scores_with_cis(corpus, runs):
    import csv

    from classifiers.results.metrics import scores
    from classifiers.results.stats import bootstrap_ci
    from featstore.backbones.runtime import load_backbone

    root, models, utterances, folds = corpus
    run = runs[("group", "mean")]
    fold = run.folds[0]
    card_path = Path(fold.model_dir) / "README.md"
    meta = _front_matter(card_path)
    assert meta["base_model"] == str(models["group"])
    assert meta["base_model_sha256"] == load_backbone(str(models["group"])).weights_sha256
    assert meta["datasets"] == ["ravdess"] and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "audio-classification"
    ser = meta["ser"]
    assert ser["fold"] == "luna-0" and ser["protocol"] == "luna5" and ser["folds"] == [f.name for f in folds]
    assert ser["classes"] == CLASSES and ser["train_corpora"] == ["ravdess"]
    assert ser["training"]["lr"] == 3e-3 and ser["training"]["pooling"] == "mean"
    assert ser["test_speakers"] and not set(ser["test_speakers"]) & set(ser["validation_speakers"])
    # the scores, recomputed here from the fold's predictions
    with open(Path(fold.model_dir).parent / "predictions.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    truth, pred, spk = [r["label"] for r in rows], [r["prediction"] for r in rows], [r["speaker"] for r in rows]
    assert set(spk) == set(ser["test_speakers"])
    labels = sorted(set(truth) | set(pred), key=CLASSES.index)
    s = scores(truth, pred, labels)
    metrics = {m["type"]: m for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert set(metrics) == {"uar", "wa", "macro_f1"}
    for m in ("uar", "wa", "macro_f1"):
        iv = bootstrap_ci(truth, pred, spk, labels, metric=m)
        got = ser["scores"][m]
        assert got["value"] == pytest.approx(s[m]) == pytest.approx(metrics[m]["value"], abs=1e-6)
        assert (got["ci_low"], got["ci_high"]) == (pytest.approx(iv.low), pytest.approx(iv.high))
        assert got["ci_low"] < got["value"] < got["ci_high"] and got["n_speakers"] == len(set(spk))
        assert f"[{iv.low:.3f}, {iv.high:.3f}]" in metrics[m]["name"]
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "ravdess"
    body = card_path.read_text(encoding="utf-8").split("---\n", 2)[2]
    assert "AutoModelForAudioClassification.from_pretrained(path)" in body and "trust_remote_code" not in body
    assert f"| UAR | {ser['scores']['uar']['value']:.3f} [{ser['scores']['uar']['ci_low']:.3f}, " in body
    remote = _front_matter(Path(runs[("group", "attention")].folds[0].model_dir) / "README.md")
    assert remote["ser"]["trust_remote_code"] is True
    from huggingface_hub import ModelCard

    assert ModelCard.load(card_path).data.base_model == str(models["group"])   # Hugging Face's own parser


# -- run folders and --no-resume ----------------------------------------------------------------------

def test_run_folder_follows_the_settings():
    base = FinetuneConfig(model="facebook/wav2vec2-base", lr=3e-5)
    a = default_run_dir("ravdess", "luna5", base)
    assert a.parent == Path("results") and a.name.startswith("finetune-ravdess-")   # SER_RESULTS (conftest)
    assert "-mean-luna5-seed0-" in a.name
    assert default_run_dir("ravdess", "luna5", FinetuneConfig(model="facebook/wav2vec2-base", lr=1e-4)) != a
    assert default_run_dir("ravdess", "luna5", FinetuneConfig(model="facebook/wav2vec2-base", head_lr=1e-3)) != a
    assert default_run_dir("ravdess", "loso", base) != a and default_run_dir("cremad", "luna5", base) != a
    # what a resumed run may change, or which folds run, keeps the folder: training longer goes on there
    for same in (dict(epochs=12), dict(max_steps=50), dict(fold="2"), dict(resume=False), dict(device="cpu")):
        assert default_run_dir("ravdess", "luna5", FinetuneConfig(model="facebook/wav2vec2-base", **same)) == a


def test_a_second_lr_on_the_command_line_gets_its_own_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import classifiers.finetuning.finetune as ft
    from cli import app

    synthesize("ravdess", tmp_path / "ravdess", n=16, max_duration=0.3, sample_rate=16000)
    monkeypatch.chdir(tmp_path)
    seen = []

    def fake(utterances, folds, config, *, out_dir, protocol=""):
        seen.append(out_dir)
        Path(out_dir).mkdir(parents=True)          # a second run in the same folder would fail here
        return ft.FinetuneResult(out_dir=out_dir, labels=["sad", "angry"], folds=[], plan={}, summary={})

    monkeypatch.setattr(ft, "finetune", fake)
    for lr in ("3e-5", "1e-4"):
        res = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path / "ravdess"),
                                       "--model", "m", "--lr", lr, "--device", "cpu"])
        assert res.exit_code == 0, res.output
    assert len(set(seen)) == 2 and all(str(p).startswith("results/finetune-ravdess-m-mean-") for p in seen)


@pytest.mark.slow
def test_no_resume_keeps_finished_work(corpus, runs, tmp_path):
    root, models, utterances, folds = corpus
    src = runs[("layer", "mean")].out_dir
    out = tmp_path / "run"
    shutil.copytree(src, out)
    weights = out / "luna-0" / "model" / "model.safetensors"
    stamp, before = weights.stat().st_mtime_ns, runs[("layer", "mean")].folds[0]
    config = dict(model=str(models["layer"]), **SETTINGS)
    again = finetune(utterances, folds, FinetuneConfig(**config, resume=False), out_dir=out)
    assert weights.stat().st_mtime_ns == stamp and again.folds[0].metrics == before.metrics   # read back
    # other settings in the same folder: refused in one line, the finished model left as it was
    with pytest.raises(FinetuneError, match=r"never deletes finished work.*") as e:
        finetune(utterances, folds, FinetuneConfig(**{**config, "lr": 1e-4}, resume=False), out_dir=out)
    assert "lr: 0.003 -> 0.0001" in str(e.value) and "\n" not in str(e.value)
    assert weights.stat().st_mtime_ns == stamp and (out / "luna-0" / "model" / "README.md").is_file()
    # an unfinished fold (checkpoints only) starts afresh: its checkpoints are discarded, not resumed
    shutil.rmtree(out / "luna-0" / "model")
    (out / "luna-0" / "fold_result.json").unlink()
    assert list((out / "luna-0").glob("checkpoint-*"))
    fresh = finetune(utterances, folds, FinetuneConfig(**config, resume=False), out_dir=out)
    assert fresh.folds[0].resumed_from_step is None and fresh.folds[0].global_step == SETTINGS["max_steps"]
    assert weights.is_file()


def test_report_to_is_checked_before_any_work(tmp_path, monkeypatch):
    from transformers.integrations import integration_utils
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: [])
    # the corpus root does not exist: the option is refused before the corpus is read
    res = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path / "nowhere"),
                                   "--model", "m", "--report-to", "tensorboard"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error:") and "--report-to 'tensorboard'" in line and "tensorboard is not installed" in line
