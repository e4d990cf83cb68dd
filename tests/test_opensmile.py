"""openSMILE functionals as a backbone: `--model opensmile:eGeMAPSv02` / `opensmile:ComParE_2016`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from featstore.backbone import model_info
from featstore.corpora.base import Manifest, Utterance
from featstore.errors import SerError
from featstore.extract import extract_manifest
from featstore.store import open_store

# the extra is in `.[test]`; where it is missing this module is reported skipped (CI fails on that skip)
# instead of an import error that stops the collection of every other test
opensmile = pytest.importorskip("opensmile", reason="opensmile (the `opensmile` extra) is not installed")


def _corpus(root: Path, seconds: list[float], rate: int = 16000) -> Manifest:
    rng = np.random.default_rng(0)
    utts = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t * (1 + 0.1 * np.sin(3 * t))) + 0.02 * rng.standard_normal(len(t))
        path = root / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        utts.append(Utterance(id=f"toy-{i}", path=str(path), corpus="toy", language="en", speaker=f"toy-{i % 2}",
                              gender=None, label=["happy", "sad"][i % 2], label_raw="x", duration=s, sample_rate=rate))
    return Manifest("toy", str(root), utts, [])


def direct(path: str, feature_set) -> np.ndarray:
    smile = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.Functionals)
    return smile.process_file(path).to_numpy(np.float32)[0]


def test_egemaps_store_equals_process_file(tmp_path):
    """88 features per utterance, one layer, equal to opensmile's own process_file; clips are never windowed."""
    manifest = _corpus(tmp_path / "audio", [1.0, 2.5, 0.4, 3.0])
    res = extract_manifest(manifest, model="opensmile:eGeMAPSv02", cache=tmp_path / "cache", device="cpu",
                           batch_size=3, frames="all", max_seconds=2.0, progress=False)
    fs = open_store(res.store)
    assert res.store.parent.name == "opensmile--eGeMAPSv02"
    assert fs.num_layers == 1 and fs.hidden_size == 88 and len(fs) == 4
    assert fs.config["model_type"] == "opensmile" and fs.config["revision"] == opensmile.__version__
    assert len(fs.config["weights_sha256"]) == 64 and "functionals" in fs.config["layer_convention"]
    for i, u in enumerate(fs.utterances):
        want = direct(u.path, opensmile.FeatureSet.eGeMAPSv02)
        np.testing.assert_allclose(fs.pooled(0)[i], want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(fs.pooled(0, "std")[i], 0.0)
        np.testing.assert_allclose(fs.frames(0, i)[0], want, rtol=1e-3)
    np.testing.assert_array_equal(fs.n_frames, 1)
    assert fs.n_samples[3] == 3 * 16000  # longer than --max-seconds 2: still one vector of the whole clip
    # re-running is a no-op
    again = extract_manifest(manifest, model="opensmile:eGeMAPSv02", cache=tmp_path / "cache", device="cpu",
                             batch_size=3, frames="all", max_seconds=2.0, progress=False)
    assert again.up_to_date


def test_compare_2016_has_6373_features(tmp_path):
    manifest = _corpus(tmp_path / "audio", [0.8])
    fs = open_store(extract_manifest(manifest, model="opensmile:ComParE_2016", cache=tmp_path / "cache",
                                     device="cpu", progress=False).store)
    assert fs.hidden_size == 6373 and fs.num_layers == 1
    np.testing.assert_allclose(fs.pooled(0)[0], direct(fs.utterances[0].path, opensmile.FeatureSet.ComParE_2016),
                               rtol=1e-5, atol=1e-5)


def test_bad_model_names_and_missing_package(monkeypatch):
    with pytest.raises(SerError, match="unknown openSMILE feature set 'eGeMAPS3'") as e:
        model_info("opensmile:eGeMAPS3")
    assert "opensmile:eGeMAPSv02" in str(e.value) and "opensmile:ComParE_2016" in str(e.value)
    monkeypatch.setitem(sys.modules, "opensmile", None)  # as if not installed
    with pytest.raises(SerError, match="pip install opensmile"):
        model_info("opensmile:eGeMAPSv02")


@pytest.mark.slow
def test_probe_over_synthetic_corpus_with_egemaps(tmp_path, monkeypatch):
    """`ser extract` then `ser probe` with --model opensmile:eGeMAPSv02: no special case anywhere."""
    import json

    import cli

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    runner = CliRunner()
    root, cache = tmp_path / "ravdess", tmp_path / "cache"
    common = ["--model", "opensmile:eGeMAPSv02", "--cache", str(cache)]
    steps = [["synth", "--like", "ravdess", "--out", str(root), "--n", "32", "--max-duration", "1.0",
              "--sample-rate", "16000"],
             ["extract", "--corpus", "ravdess", "--root", str(root), "--device", "cpu", *common],
             ["probe", "--corpus", "ravdess", "--layer", "0", "--protocol", "speaker-kfold:3", "--C", "1.0",
              "--out", str(tmp_path / "results"), *common]]
    for args in steps:
        out = runner.invoke(cli.app, args, terminal_width=200)
        assert out.exit_code == 0, (args[0], out.output)
    results = json.loads((tmp_path / "results" / "probe.json").read_text())
    assert results["meta"]["model"] == "opensmile:eGeMAPSv02"
    assert len(results["records"]) == 3 and {r["layer"] for r in results["records"]} == {0}
    (summary,) = results["summary"]
    assert summary["uar"] > 2 / 8  # eGeMAPS hears the synthetic prosody: twice chance over 8 classes
