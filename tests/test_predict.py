"""`predict` on saved models: a fine-tuned classifier and a linear probe over the feature store."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from classifiers.finetuning.finetune import AudioDataset, collate
from classifiers.finetuning.heads import EmotionClassifier, build_classifier
from classifiers.finetuning.inference import PredictError, load_probe, model_kind, predict, save_probe, seal_probe
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
    assert {p.name for p in directory.iterdir()} == {"probe.json", "probe.safetensors", "probe.sha256"}
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


# -- ser predict: broken model directories and devices are one error line, exit code 2 --------------

@pytest.fixture(scope="module")
def saved(tiny_models, tmp_path_factory):
    """A valid saved probe and a valid fine-tuned model on the tiny backbone."""
    root = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    d, classes = 16, ["disgust", "surprise", "neutral"]
    probe = save_probe(root / "probe", str(tiny_models["group"]), 2, "mean", rng.standard_normal(d),
                       rng.uniform(0.5, 2, d), rng.standard_normal((3, d)), rng.standard_normal(3), classes)
    model = build_classifier(str(tiny_models["group"]), ["sad", "angry"]).save_pretrained(root / "model")
    return probe, model


def _tampered(src, dst, *, config=None, weights=None, truncate=None):
    """A copy of the model directory `src` with its JSON config edited (`config(dict)`), its weights
    replaced (`weights` = {name: array}, written as the probe writer would) or a file cut short."""
    import shutil

    from safetensors.numpy import save_file

    shutil.copytree(src, dst)
    name = "probe.json" if (dst / "probe.json").exists() else "config.json"
    if config is not None:
        data = json.loads((dst / name).read_text())
        config(data)
        (dst / name).write_text(json.dumps(data))
    if weights is not None:
        save_file(weights, str(dst / "probe.safetensors"), metadata={"ser_kind": "ser-linear-probe"})
    if truncate is not None:
        raw = (dst / truncate).read_bytes()
        (dst / truncate).write_bytes(raw[: len(raw) // 2])
    if name == "probe.json" and (config is not None or weights is not None or truncate is not None):
        seal_probe(dst)   # as if edited on purpose: the checks behind the checksums are what is tested
    return dst


def _cli(args, columns: int | None = None):
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, ["predict", *map(str, args)], env={"COLUMNS": str(columns)} if columns else None)


def _one_error_line(res, match):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], res.output


def _probe_weights(probe_dir, **changes):
    from safetensors.numpy import load_file

    arrays = load_file(str(probe_dir / "probe.safetensors"))
    return {**arrays, **changes}


@pytest.mark.parametrize("case,match", [
    ("missing-field", "field 'layer' is missing"),
    ("garbled-field", "field 'layer' is 'two'"),
    ("garbled-classes", "field 'classes'"),
    ("invalid-json", "not valid JSON"),
    ("truncated-weights", "not a readable safetensors file"),
    ("foreign-weights", "not a ser probe's weights"),
    ("wrong-shape-coef", "coef has 2 rows for 3 classes"),
    ("3d-coef", "coef must be 2-D"),
    ("nan-weights", "coef holds NaN"),
    ("n-features", "n_features is 99"),
])
def test_broken_saved_probe_is_one_error_line(saved, clips, tmp_path, case, match):
    probe, model = saved
    dst = tmp_path / case
    if case == "missing-field":
        _tampered(probe, dst, config=lambda c: c.pop("layer"))
    elif case == "garbled-field":
        _tampered(probe, dst, config=lambda c: c.update(layer="two"))
    elif case == "garbled-classes":
        _tampered(probe, dst, config=lambda c: c.update(classes="abc"))
    elif case == "invalid-json":
        _tampered(probe, dst, truncate="probe.json")
    elif case == "truncated-weights":
        _tampered(probe, dst, truncate="probe.safetensors")
    elif case == "foreign-weights":
        _tampered(probe, dst)
        (dst / "probe.safetensors").write_bytes((model / "model.safetensors").read_bytes())
        seal_probe(dst)
    elif case == "wrong-shape-coef":
        _tampered(probe, dst, weights=_probe_weights(probe, coef=np.zeros((2, 16))))
    elif case == "3d-coef":
        _tampered(probe, dst, weights=_probe_weights(probe, coef=np.zeros((3, 16, 1))))
    elif case == "nan-weights":
        coef = _probe_weights(probe)["coef"].copy()
        coef[1, 3] = np.nan
        _tampered(probe, dst, weights=_probe_weights(probe, coef=coef))
    elif case == "n-features":
        _tampered(probe, dst, config=lambda c: c.update(n_features=99))
    _one_error_line(_cli([clips.utterances[0].path, "--trained", dst, "--device", "cpu"]), match)


@pytest.mark.parametrize("case,match", [
    ("missing-labels", "field 'labels' is missing"),
    ("one-label", "at least 2 distinct class names"),
    ("changed-shape", "config.json implies (3"),
    ("truncated-weights", "not a readable safetensors file"),
    ("bad-pooling", "field 'pooling' is 'max'"),
    ("bad-backbone-config", "cannot build a model"),
    ("nan-weights", "NaN or infinite"),
])
def test_broken_finetuned_model_is_one_error_line(saved, clips, tmp_path, case, match):
    from safetensors.torch import load_file, save_file

    _, model = saved
    dst = tmp_path / case
    if case == "missing-labels":
        _tampered(model, dst, config=lambda c: c.pop("labels"))
    elif case == "one-label":
        _tampered(model, dst, config=lambda c: c.update(labels=["sad"]))
    elif case == "changed-shape":
        _tampered(model, dst, config=lambda c: c.update(labels=["sad", "angry", "happy"]))
    elif case == "truncated-weights":
        _tampered(model, dst, truncate="model.safetensors")
    elif case == "bad-pooling":
        _tampered(model, dst, config=lambda c: c.update(pooling="max"))
    elif case == "bad-backbone-config":
        _tampered(model, dst, config=lambda c: c["backbone_config"].update(hidden_size="big"))
    elif case == "nan-weights":
        _tampered(model, dst)
        state = load_file(str(dst / "model.safetensors"))
        state["classifier.weight"][0, 0] = float("nan")
        save_file(state, str(dst / "model.safetensors"))
    _one_error_line(_cli([clips.utterances[0].path, "--trained", dst, "--device", "cpu"]), match)


def test_predict_device_errors_are_one_line(saved, clips, monkeypatch):
    probe, _ = saved
    _one_error_line(_cli([clips.utterances[0].path, "--trained", probe, "--device", "bogus"]), "unknown device 'bogus'")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)     # as on a machine without CUDA
    _one_error_line(_cli([clips.utterances[0].path, "--trained", probe, "--device", "cuda"]), "no CUDA GPU")


def test_predict_output_keeps_paths_and_values_whole_and_writes_csv(saved, clips, tmp_path):
    import csv
    import shutil

    probe, model = saved
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "clip-with-a-long-file-name-to-keep-whole.wav"
    deep.parent.mkdir(parents=True)
    shutil.copy(clips.utterances[0].path, deep)
    # a terminal wider than the path (at 80 columns a path longer than the terminal can only fold)
    res = _cli([deep, clips.utterances[1].path, "--trained", probe, "--device", "cpu", "--out", tmp_path / "preds.csv"],
               columns=len(str(deep)) + 60)
    assert res.exit_code == 0, res.output
    assert str(deep) in res.output and "…" not in res.output and "..." not in res.output
    assert all(name in res.output for name in ("disgust", "surprise", "neutral"))
    with open(tmp_path / "preds.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "predicted", "p_disgust", "p_surprise", "p_neutral", "model"]
    assert [r["file"] for r in rows] == [str(deep), clips.utterances[1].path]
    assert {r["model"] for r in rows} == {str(probe)}
    for r in rows:
        p = {c: float(r[f"p_{c}"]) for c in ("disgust", "surprise", "neutral")}
        assert sum(p.values()) == pytest.approx(1.0) and r["predicted"] == max(p, key=p.get)
    js = _cli([deep, "--trained", model, "--device", "cpu", "--json"])
    assert js.exit_code == 0, js.output
    [row] = json.loads(js.output, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert list(row) == ["file", "predicted", "p_sad", "p_angry", "model"] or \
        list(row) == ["file", "predicted", "p_angry", "p_sad", "model"]      # the CSV's fields (issue 24)
    assert row["file"] == str(deep) and row["model"] == str(model)
    assert row["predicted"] == max(("sad", "angry"), key=lambda c: row[f"p_{c}"])
