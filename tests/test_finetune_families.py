"""Every backbone family fine-tunes (issue 26 item 1): Whisper encoders and w2v-BERT 2.0 fed by their own
feature extractor, wav2vec2-conformer and the waveform families, each on a tiny model built locally.

Per family: a padded batch equals each clip alone (pooled embedding and logits, float32 tolerance;
`pytest -s` prints the max differences); pooling sees the real frames only, counted as extraction
counts them (Whisper: 50 per second of audio, never its 30 s padding); the freeze specs freeze the
family's own parts; a 1-step `finetune` exports a model that `ser predict`, `ser evaluate` and
transformers' Auto classes read with the model's own inputs; LoRA finds Whisper's and w2v-BERT's
attention projections.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.finetuning.finetune import AudioDataset, FinetuneConfig, clip_inputs, collate, finetune
from classifiers.finetuning.heads import EmotionClassifier, apply_freeze, build_classifier
from featstore.corpora import get_corpus
from featstore.folds import make_folds
from featstore.synth import synthesize
from tests.test_backbones import build_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_modules_cache")

#: "wav2vec2" is the base-style GroupNorm one (made exact by MaskedGroupNorm)
FAMILIES = ["whisper", "wav2vec2-bert", "wav2vec2-conformer", "wav2vec2-conformer-rotary", "wav2vec2"]
LENGTHS = (16000, 3000, 9001, 1200)
CLASSES = ["happy", "sad", "angry"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny(f, root / f) for f in FAMILIES}


def _waves(seed: int = 0, lengths=LENGTHS) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(lengths)) / 16000
    return [(0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t[:n]) + 0.05 * rng.standard_normal(n)).astype(np.float32)
            for i, n in enumerate(lengths)]


def _inputs(clf: EmotionClassifier, wave: np.ndarray) -> dict:
    from featstore.backbones.runtime import normalize_waveform

    return clip_inputs(normalize_waveform(wave) if clf.config.do_normalize else wave, clf.front_end)


def _forward(clf: EmotionClassifier, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled embedding `(batch, D)`, logits `(batch, C)`) of `items` collated into one batch."""
    seen = []
    hook = clf.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = clf(**collate(items)).logits
    finally:
        hook.remove()
    return seen[0], logits


@pytest.mark.parametrize("pooling", ["mean", "attention", "layer-weighted", "bilstm"])
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_each_clip_alone(models, family, pooling):
    clf = build_classifier(str(models[family]), ["a", "b", "c"], pooling=pooling, freeze="none", seed=1).eval()
    items = [_inputs(clf, w) for w in _waves()]
    pooled, logits = _forward(clf, items)
    alone = [_forward(clf, [it]) for it in items]
    d_pooled = float((pooled - torch.cat([p for p, _ in alone])).abs().max())
    d_logits = float((logits - torch.cat([lg for _, lg in alone])).abs().max())
    print(f"\n{family:26s} {pooling:15s} batched vs alone: pooled {d_pooled:.1e}, logits {d_logits:.1e}")
    assert d_pooled <= 1e-5 and d_logits <= 1e-5
    if family == "wav2vec2-bert":         # the clips really were padded (and masked) in the batch
        assert collate(items)["attention_mask"].sum(-1).tolist() == [it["frame_lengths"] for it in items]


@pytest.mark.parametrize("family", ["whisper", "wav2vec2-bert"])
def test_pooling_sees_the_real_frames_as_extraction_counts_them(models, family):
    """The mean head's embedding is the mean of the last hidden state over the frames extraction keeps
    (`featstore.backbones.runtime.hidden_states`); Whisper: 50 per second, its 30 s padding never pooled."""
    from featstore.backbones.runtime import hidden_states, load_backbone

    clf = build_classifier(str(models[family]), ["a", "b"], pooling="mean", freeze="none").eval()
    bb = load_backbone(str(models[family]))
    waves = _waves(3)
    items = [_inputs(clf, w) for w in waves]
    pooled, _ = _forward(clf, items)
    states, lengths = hidden_states(bb, waves)
    assert [it["frame_lengths"] for it in items] == lengths.tolist()
    if family == "whisper":
        assert lengths.tolist() == [50, 10, 29, 4] and items[0]["input_features"].shape == (80, 3000)
    last = states[-1]
    expected = torch.stack([last[i, :n].mean(0) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    everything = last.mean(1)          # what pooling over every frame (padding included) would give
    assert float((everything - expected).abs().max()) > 1e-3


def test_whisper_counts_its_frames_from_the_feature_extractors_mask_too(models):
    """Without frame_lengths (an export fed by transformers' feature extractor), Whisper derives the
    real frames from the mel-frame attention mask: the same logits."""
    from transformers import WhisperFeatureExtractor

    clf = build_classifier(str(models["whisper"]), ["a", "b"], pooling="attention", freeze="none").eval()
    waves = _waves(4)
    fe = WhisperFeatureExtractor.from_pretrained(models["whisper"])
    x = fe(waves, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        ours = clf(**collate([_inputs(clf, w) for w in waves])).logits
        theirs = clf(input_features=x["input_features"], attention_mask=x["attention_mask"]).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_whisper_clips_longer_than_30_s_keep_a_30_s_window(models, tmp_path):
    from featstore.corpora.base import Utterance

    clf = build_classifier(str(models["whisper"]), ["a", "b"], freeze="none")
    wave = np.zeros(16000 * 31, dtype=np.float32)
    assert clip_inputs(wave, clf.front_end)["frame_lengths"] == 1500
    import soundfile as sf

    sf.write(tmp_path / "long.wav", wave, 16000)
    utt = Utterance(id="x", path=str(tmp_path / "long.wav"), corpus="c", language="en", speaker="s", gender=None,
                    label="a", label_raw="a", duration=31.0)
    train = AudioDataset([utt], {"a": 0}, 16000, False, train=True, front_end=clf.front_end)
    assert train.max_samples == 16000 * 30 and train[0]["frame_lengths"] == 1500


def test_freeze_specs_freeze_each_familys_own_parts(models):
    def frozen(clf) -> set[str]:
        return {n for n, p in clf.backbone.named_parameters() if not p.requires_grad}

    w = build_classifier(str(models["whisper"]), ["a", "b"], freeze="feature-encoder")
    assert {n.split(".")[0] for n in frozen(w)} == {"conv1", "conv2", "embed_positions"}
    w = build_classifier(str(models["whisper"]), ["a", "b"], freeze="layers:1")
    assert {".".join(n.split(".")[:2]) for n in frozen(w) if n.startswith("layers.")} == {"layers.0"}
    w = build_classifier(str(models["whisper"]), ["a", "b"], freeze="backbone")
    assert frozen(w) == {n for n, _ in w.backbone.named_parameters()}
    assert all(p.requires_grad for p in w.classifier.parameters())
    b = build_classifier(str(models["wav2vec2-bert"]), ["a", "b"], freeze="feature-encoder")
    assert frozen(b) and all(n.startswith("feature_projection.") for n in frozen(b))
    b = build_classifier(str(models["wav2vec2-bert"]), ["a", "b"], freeze="layers:2")
    assert {n.split(".")[2] for n in frozen(b) if n.startswith("encoder.layers.")} == {"0", "1"}
    assert apply_freeze(b.backbone, "backbone")[-1] == "encoder.layers.2"
    assert not any(p.requires_grad for p in b.backbone.parameters())


def test_opensmile_has_nothing_to_fine_tune(monkeypatch):
    from types import SimpleNamespace

    import featstore.backbones.runtime as fb
    from classifiers.finetuning.heads import HeadError

    monkeypatch.setattr(fb, "load_backbone", lambda *a, **k: SimpleNamespace(input_kind="functionals",
                                                                             model_type="opensmile"))
    with pytest.raises(HeadError, match="no weights to fine-tune") as e:
        build_classifier("opensmile:eGeMAPSv02", ["a", "b"])
    assert "\n" not in str(e.value)


# -- a real run: fine-tune, export, predict, evaluate, transformers ---------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-families")
    synthesize("ravdess", root / "ravdess", n=48, max_duration=0.6, sample_rate=16000)
    utterances = get_corpus("ravdess").load(root / "ravdess").utterances
    return root, utterances, make_folds(utterances, "luna5")


@pytest.fixture(scope="module")
def runs(corpus, models):
    """A 1-step fine-tune of Whisper (attention head: its export carries modeling_ser.py) and of
    w2v-BERT 2.0 (mean head: exported as transformers' Wav2Vec2BertForSequenceClassification)."""
    root, utterances, folds = corpus
    out = {}
    for family, pooling in (("whisper", "attention"), ("wav2vec2-bert", "mean")):
        config = FinetuneConfig(model=str(models[family]), epochs=1, max_steps=1, lr=3e-3, batch_size=8, fold=0,
                                labels=CLASSES, freeze="none", pooling=pooling, seed=0, progress=False, plots=False)
        out[family] = finetune(utterances, folds, config, out_dir=root / f"run-{family}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["whisper", "wav2vec2-bert"])
def test_finetuned_export_predicts_as_the_model_and_the_run(corpus, runs, family):
    from classifiers.finetuning.inference import predict
    from featstore.audio import load_audio

    root, utterances, _ = corpus
    fold = runs[family].folds[0]
    assert fold.global_step == 1 and fold.n_test > 0
    model = EmotionClassifier.from_pretrained(fold.model_dir)
    assert model.config.front_end["feature_extractor_type"].endswith("FeatureExtractor")
    with open(Path(fold.model_dir).parent / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:5]
    paths = {u.id: u.path for u in utterances}
    files = [paths[r["id"]] for r in rows]
    got = predict(files, fold.model_dir, device="cpu", batch_size=3)
    with torch.no_grad():
        for f, r, (_, p) in zip(files, rows, got):
            alone = model(**collate([clip_inputs(load_audio(f, 16000), model.front_end)])).logits.softmax(-1)[0]
            np.testing.assert_allclose([p[c] for c in CLASSES], alone.numpy(), atol=1e-6)
            np.testing.assert_allclose([p[c] for c in CLASSES], [float(r[f"p_{c}"]) for c in CLASSES], atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["whisper", "wav2vec2-bert"])
def test_evaluate_scores_the_export_as_its_run(corpus, runs, family, tmp_path):
    from classifiers.runs.evaluate import evaluate_model

    root, _, _ = corpus
    fold = runs[family].folds[0]
    ev = evaluate_model(fold.model_dir, "ravdess", root=root / "ravdess", fold=fold.fold, protocol="luna5",
                        out=tmp_path / "ev", device="cpu")
    assert ev.scores["shared"].uar.value == pytest.approx(fold.metrics["uar"])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["whisper", "wav2vec2-bert"])
def test_transformers_auto_classes_load_the_export(corpus, runs, family):
    """Whisper's export (modeling_ser.py, trust_remote_code) and w2v-BERT's (transformers' own class)
    give ser's probabilities when fed by the saved feature extractor, padded batch included."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    fold = runs[family].folds[0]
    remote = family == "whisper"
    assert (Path(fold.model_dir) / "modeling_ser.py").is_file() == remote
    hf = AutoModelForAudioClassification.from_pretrained(fold.model_dir, trust_remote_code=remote).eval()
    fe = AutoFeatureExtractor.from_pretrained(fold.model_dir)
    model = EmotionClassifier.from_pretrained(fold.model_dir)
    waves = _waves(5, lengths=(9000, 4000, 12000))
    x = fe(waves, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)   # their own padding
    with torch.no_grad():
        theirs = hf(**x).logits
        ours = model(**collate([clip_inputs(w, model.front_end) for w in waves])).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


# -- LoRA ------------------------------------------------------------------------------------------------

def test_lora_targets_whisper_and_w2v_bert_attention_projections(models, tmp_path):
    from classifiers.finetuning.lora import apply_lora, parse_adapter, target_pattern

    spec = parse_adapter("lora:r=2,alpha=4,targets=q,v")
    whisper = build_classifier(str(models["whisper"]), ["a", "b"], pooling="mean", freeze="none")
    assert target_pattern(whisper.backbone, spec) == r"layers\.\d+\.\w+\.(q_proj|v_proj)"
    bert = build_classifier(str(models["wav2vec2-bert"]), ["a", "b"], pooling="mean", freeze="none")
    assert target_pattern(bert.backbone, spec) == r"encoder\.layers\.\d+\.\w+\.(linear_q|linear_v)"

    clf = apply_lora(whisper, spec, seed=0)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and trainable - lora == {n for n, _ in clf.named_parameters() if not n.startswith("backbone.")}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == {"q_proj", "v_proj"}
    assert len({n.split("layers.")[1].split(".")[0] for n in lora}) == 3      # every block
    with torch.no_grad():                 # a trained-looking adapter: lora_B away from its zero start
        for n, p in clf.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    clf.eval()
    items = [_inputs(clf, w) for w in _waves(6)]
    _, before = _forward(clf, items)
    loaded = EmotionClassifier.from_pretrained(clf.save_pretrained(tmp_path / "export"))
    assert (tmp_path / "export" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "export" / "model.safetensors").exists()
    _, after = _forward(loaded, items)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_lora_checkpoints_hold_adapters_and_head_only_and_resume(corpus, tmp_path):
    """A LoRA run's Trainer checkpoints hold the trained tensors only (adapters + head, a few % of the
    model); killed after its first checkpoint, the rerun resumes from it and ends as the uninterrupted run."""
    from safetensors import safe_open
    from transformers import TrainerCallback

    from tests.helpers import build_tiny_model

    _, utterances, folds = corpus
    model = build_tiny_model(tmp_path / "tiny", "group")
    settings = dict(model=str(model), epochs=2, lr=3e-3, batch_size=8, fold=0, labels=CLASSES, seed=0,
                    progress=False, plots=False, adapter="lora:r=2,alpha=4,targets=q,v")
    whole = finetune(utterances, folds, FinetuneConfig(**settings), out_dir=tmp_path / "whole").folds[0]
    checkpoints = sorted((tmp_path / "whole" / "luna-0").glob("checkpoint-*"))
    assert checkpoints
    clf = EmotionClassifier.from_pretrained(whole.model_dir)
    full = {k for k in clf.state_dict()}
    for c in checkpoints:
        with safe_open(str(c / "model.safetensors"), framework="pt") as f:
            keys = set(f.keys())
        assert any("lora_" in k for k in keys) and all("lora_" in k or not k.startswith("backbone.") for k in keys)
        assert {k for k in keys if not k.startswith("backbone.")} == {k for k in full if not k.startswith("backbone.")}
        assert (c / "model.safetensors").stat().st_size < 0.05 * sum(
            p.numel() * 4 for p in clf.parameters())
    first = whole.global_step // 2

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= first:
                raise KeyboardInterrupt("simulated interruption")

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        finetune(utterances, folds, FinetuneConfig(**settings), out_dir=out, callbacks=[Interrupt()])
    fold = finetune(utterances, folds, FinetuneConfig(**settings), out_dir=out).folds[0]
    assert fold.resumed_from_step == first and fold.global_step == whole.global_step
    a = EmotionClassifier.from_pretrained(fold.model_dir).state_dict()
    b = clf.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in b) < 1e-5


def test_predict_judges_a_long_clip_on_whisper_s_first_30_s_and_says_so(models, tmp_path):
    import soundfile as sf

    from classifiers.finetuning.inference import predict
    from featstore.errors import SerWarning

    model_dir = build_classifier(str(models["whisper"]), CLASSES, pooling="attention", freeze="none",
                                 seed=2).save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(7)
    wave = (0.1 * rng.standard_normal(16000 * 32)).astype(np.float32)
    sf.write(tmp_path / "long.wav", wave, 16000, subtype="FLOAT")
    sf.write(tmp_path / "first30.wav", wave[:16000 * 30], 16000, subtype="FLOAT")
    with pytest.warns(SerWarning, match="longer than the model's 30 s window"):
        [(_, long)] = predict([tmp_path / "long.wav"], model_dir, device="cpu")
    [(_, first)] = predict([tmp_path / "first30.wav"], model_dir, device="cpu")
    assert long == pytest.approx(first, abs=1e-7)


@pytest.mark.parametrize("family,pooling", [("whisper", "mean"), ("whisper", "layer-weighted"),
                                            ("wav2vec2-bert", "attention"), ("wav2vec2-bert", "layer-weighted")])
def test_every_log_mel_export_loads_in_transformers_as_ser_runs_it(models, tmp_path, family, pooling):
    """Whisper's heads all go through modeling_ser.py (transformers' WhisperForAudioClassification would
    average the 30 s padding too); w2v-BERT's attention head too, its layer-weighted head as transformers'
    own Wav2Vec2BertForSequenceClassification. A padded batch fed by the saved feature extractor."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    clf = build_classifier(str(models[family]), ["a", "b", "c"], pooling=pooling, freeze="none", seed=3).eval()
    with torch.no_grad():                 # a head that is not near-uniform
        clf.classifier.weight.normal_(0, 1.0)
    directory = clf.save_pretrained(tmp_path / "export")
    remote = (directory / "modeling_ser.py").is_file()
    assert remote == (family == "whisper" or pooling == "attention")
    hf = AutoModelForAudioClassification.from_pretrained(directory, trust_remote_code=remote).eval()
    fe = AutoFeatureExtractor.from_pretrained(directory)
    waves = _waves(8, lengths=(7000, 15000, 2500))
    x = fe(waves, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        theirs = hf(**x).logits
        ours = clf(**collate([clip_inputs(w, clf.front_end) for w in waves])).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
