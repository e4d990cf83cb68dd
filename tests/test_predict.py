"""`predict` on saved models: a fine-tuned classifier and a linear probe over the feature store."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from classifiers.finetune import AudioDataset, collate
from classifiers.heads import EmotionClassifier, build_classifier
from classifiers.predict import PredictError, load_probe, model_kind, predict, save_probe
from featstore.corpora import get_corpus
from featstore.synth import synthesize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    synthesize("ravdess", root / "ravdess", n=16, max_duration=1.0, sample_rate=16000)
    return get_corpus("ravdess").load(root / "ravdess")


def _sums_to_one(results, labels):
    for _, probs in results:
        assert list(probs) == list(labels)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= p <= 1.0 for p in probs.values())


@pytest.mark.parametrize("kind,pooling", [("group", "attention"), ("layer", "bilstm")])
def test_finetuned_model_round_trips_through_predict(clips, tiny_models, tmp_path, kind, pooling):
    labels = ["neutral", "happy", "sad", "angry"]
    torch.manual_seed(1)
    clf = build_classifier(str(tiny_models[kind]), labels, pooling=pooling, seed=3).eval()
    with torch.no_grad():  # a head that is not near-uniform, so the comparison means something
        clf.classifier.weight.mul_(20)
    directory = clf.save_pretrained(tmp_path / "model")
    assert model_kind(directory) == "finetuned"
    files = [u.path for u in clips.utterances[:7]]
    results = predict(files, directory, batch_size=3)
    assert [f for f, _ in results] == files
    _sums_to_one(results, labels)
    # the in-memory model on the same clips, one at a time
    ds = AudioDataset(clips.utterances[:7], {u.label: 0 for u in clips.utterances}, 16000, True)
    with torch.no_grad():
        expected = [torch.softmax(clf(**{k: v for k, v in collate([ds[i]]).items() if k != "labels"}).logits, -1)[0]
                    for i in range(len(ds))]
    got = np.array([[p[lab] for lab in labels] for _, p in results])
    np.testing.assert_allclose(got, torch.stack(expected).numpy(), atol=1e-5)
    # order and batch size do not change a file's probabilities (exact padded batches)
    reverse = predict(files[::-1], directory, batch_size=1)
    assert [f for f, _ in reverse] == files[::-1]
    np.testing.assert_allclose([[p[lab] for lab in labels] for _, p in reverse][::-1], got, atol=1e-5)
    config = json.loads((directory / "config.json").read_text())
    assert config["labels"] == labels and config["sample_rate"] == 16000 and config["do_normalize"] is True
    assert not list(directory.glob("*.bin")) and not list(directory.glob("*.pkl"))


@pytest.mark.parametrize("stat,n_classes", [("mean+std", 3), ("mean", 2)])
def test_saved_probe_matches_the_store_pipeline(clips, tiny_models, tmp_path, stat, n_classes):
    """A probe fitted on stored features predicts the same from raw audio as sklearn on the store."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from featstore.extract import extract_manifest
    from featstore.store import open_store

    result = extract_manifest(clips, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                              max_seconds=0.4, progress=False)   # 1 s clips: 3 windows each, as predict must cut
    fs = open_store(result.store)
    keep = [u.label in ("neutral", "sad", "angry")[:n_classes] for u in fs.utterances]
    X, y = fs.pooled(2, stat)[keep], np.array([u.label for u in fs.utterances])[keep]
    files = [u.path for u, k in zip(fs.utterances, keep) if k]
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=2000)).fit(X, y)
    scaler, lr = pipe[0], pipe[1]
    directory = save_probe(tmp_path / "probe", str(tiny_models["group"]), 2, stat, scaler.mean_, scaler.scale_,
                           lr.coef_, lr.intercept_, lr.classes_, max_seconds=fs.config["max_seconds"],
                           weights_sha256=fs.config["weights_sha256"])
    assert model_kind(directory) == "probe"
    assert {p.name for p in directory.iterdir()} == {"probe.json", "probe.safetensors"}
    probe = load_probe(directory)
    assert probe.classes == list(lr.classes_) and probe.layer == 2 and probe.stat == stat
    np.testing.assert_allclose(probe.predict_proba(X), pipe.predict_proba(X), atol=1e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("error")           # same weights: no mismatch warning
        results = predict(files, directory, batch_size=4)
    _sums_to_one(results, list(lr.classes_))
    got = np.array([[p[c] for c in lr.classes_] for _, p in results])
    np.testing.assert_allclose(got, pipe.predict_proba(X), atol=1e-3)
    assert [max(p, key=p.get) for _, p in results] == list(pipe.predict(X))


def test_probe_checks_shapes_and_backbone(tiny_models, tmp_path, clips):
    d = 16
    with pytest.raises(PredictError, match="rows"):
        save_probe(tmp_path / "a", "m", 1, "mean", None, None, np.zeros((2, d)), np.zeros(2), ["a", "b", "c"])
    with pytest.raises(PredictError, match="statistic"):
        save_probe(tmp_path / "b", "m", 1, "max", None, None, np.zeros((3, d)), np.zeros(3), ["a", "b", "c"])
    with pytest.raises(PredictError, match="scaler"):
        save_probe(tmp_path / "c", "m", 1, "mean", np.zeros(d + 1), np.ones(d + 1), np.zeros((3, d)), np.zeros(3),
                   ["a", "b", "c"])
    # a probe for features of another width (e.g. another backbone): a clear error, not a shape crash
    wrong = save_probe(tmp_path / "d", str(tiny_models["layer"]), 1, "mean+std", None, None, np.zeros((3, d)),
                       np.zeros(3), ["a", "b", "c"])
    with pytest.raises(PredictError, match="expects 16 features"):
        predict([clips.utterances[0].path], wrong)
    # other weights than recorded: a warning
    ok = save_probe(tmp_path / "e", str(tiny_models["layer"]), -1, "mean", None, None, np.ones((1, d)),
                    np.zeros(1), ["a", "b"], weights_sha256="0" * 64)
    with pytest.warns(UserWarning, match="differ"):
        [(_, probs)] = predict([clips.utterances[0].path], ok)
    assert set(probs) == {"a", "b"}


def test_model_kind_explains_unusable_directories(tmp_path, tiny_models):
    with pytest.raises(PredictError, match="does not exist"):
        model_kind(tmp_path / "nope")
    with pytest.raises(PredictError, match="neither"):
        model_kind(tiny_models["group"])         # a backbone is not a classifier
    clf = build_classifier(str(tiny_models["group"]), ["a", "b"])
    clf.save_pretrained(tmp_path / "fold" / "model")
    with pytest.raises(PredictError, match="fold directory"):
        model_kind(tmp_path / "fold")
    assert predict([], tmp_path / "fold" / "model") == []
    loaded = EmotionClassifier.from_pretrained(tmp_path / "fold" / "model")
    assert loaded.labels == ["a", "b"] and not loaded.training
