"""openSMILE functionals as a backbone: `--model opensmile:eGeMAPSv02` / `opensmile:ComParE_2016`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from featstore.backbones.runtime import model_info
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
    assert fs.config["sample_rate"] == "native"
    # re-running is a no-op
    again = extract_manifest(manifest, model="opensmile:eGeMAPSv02", cache=tmp_path / "cache", device="cpu",
                             batch_size=3, frames="all", max_seconds=2.0, progress=False)
    assert again.up_to_date


def test_native_rate_by_default_16k_on_request(tmp_path):
    """48 kHz stereo files: the default equals process_file on the file's own mono mix (the published way);
    `@16000` equals it on a 16 kHz copy, differs from the native features, and lives in its own store."""
    import soxr

    manifest = _corpus(tmp_path / "audio", [1.2, 0.9], rate=48000)
    for u in manifest.utterances:  # stereo: both backbone variants mix down to mono first
        mono, _ = sf.read(u.path, dtype="float32")
        sf.write(u.path, np.stack([mono, 0.5 * mono], axis=1), 48000, subtype="FLOAT")
    paths = [extract_manifest(manifest, model=m, cache=tmp_path / "cache", device="cpu", progress=False).store
             for m in ("opensmile:eGeMAPSv02", "opensmile:eGeMAPSv02@16000")]
    assert paths[0].parent.name == "opensmile--eGeMAPSv02" != paths[1].parent.name
    native, low = map(open_store, paths)
    assert native.config["sample_rate"] == "native" and low.config["sample_rate"] == 16000
    for i, u in enumerate(native.utterances):
        stereo, sr = sf.read(u.path, dtype="float32")
        mono = stereo.mean(axis=1, dtype=np.float32)
        for name, wave, rate in (("native", mono, sr), ("16k", soxr.resample(mono, sr, 16000, quality="HQ"), 16000)):
            copy = tmp_path / f"{name}-{i}.wav"
            sf.write(copy, wave, rate, subtype="FLOAT")
            got = (native if name == "native" else low).pooled(0)[i]
            np.testing.assert_allclose(got, direct(str(copy), opensmile.FeatureSet.eGeMAPSv02), rtol=1e-5, atol=1e-5)
    assert native.n_samples.tolist() == [int(1.2 * 48000), int(0.9 * 48000)]
    changed = np.abs(native.pooled(0) - low.pooled(0)) > 0.1 * np.abs(native.pooled(0)) + 1e-6
    assert changed.any(axis=1).all()  # resampling changes the functionals: the rate is part of the store


def test_native_rate_store_refuses_old_16k_store_in_one_line(tmp_path):
    """A store written before native-rate openSMILE (16 kHz under the plain id) is never mixed with native features."""
    manifest = _corpus(tmp_path / "audio", [0.5])
    cache = tmp_path / "cache"
    low = extract_manifest(manifest, model="opensmile:eGeMAPSv02@16000", cache=cache, device="cpu", progress=False).store
    old = cache / "opensmile--eGeMAPSv02" / low.name
    old.parent.mkdir(parents=True)
    old.write_bytes(low.read_bytes())
    manifest = _corpus(tmp_path / "audio", [0.5, 0.7])  # a grown corpus: the old store would be extended
    with pytest.raises(SerError, match="sample_rate: 16000 vs 'native'") as e:
        extract_manifest(manifest, model="opensmile:eGeMAPSv02", cache=cache, device="cpu", progress=False)
    assert "opensmile:eGeMAPSv02@16000" in str(e.value) and "\n" not in str(e.value)


def test_bad_rate_suffix_is_one_line():
    for bad in ("opensmile:eGeMAPSv02@16k", "opensmile:eGeMAPSv02@100", "opensmile:eGeMAPSv02@"):
        with pytest.raises(SerError, match="whole number of Hz from 8000 to 192000"):
            model_info(bad)


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
