"""Extraction into the store: exact batching, crash safety, resume, bad audio, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from featstore.corpora.base import Manifest, Problem, Utterance
from featstore.errors import SerError
from featstore.extract import extract_manifest, parse_frame_layers
from featstore.store import StoreError, export_layer, list_stores, open_store, store_info
from tests.helpers import build_tiny_data2vec

LENGTHS = [400, 1601, 16000, 3333, 40000, 777, 9000, 24001]  # very different lengths (samples @16k)


def write_corpus(root: Path, lengths=LENGTHS, seed: int = 0, rate: int = 16000) -> Manifest:
    rng = np.random.default_rng(seed)
    utts = []
    for i, n in enumerate(lengths):
        path = root / f"spk{i % 3}" / f"utt{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(n) / rate
        wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.05 * rng.standard_normal(n)
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        utts.append(Utterance(id=f"toy-{i:03d}", path=str(path), corpus="toy", language="en",
                              speaker=f"toy-{i % 3}", gender=None, label=["happy", "sad"][i % 2],
                              label_raw="x", duration=n / rate, sample_rate=rate))
    return Manifest("toy", str(root), utts, [])


def reference_states(model_dir: Path, path: str) -> np.ndarray:
    """transformers' unpadded per-utterance hidden_states: (L+1, T, D)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    wave, _ = sf.read(path, dtype="float32")
    wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.no_grad():
        out = model(torch.from_numpy(wave)[None], output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].numpy()


def store_arrays(path) -> dict:
    """Every dataset of a store, for comparing two stores."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs/config"] = f.attrs["config"]
    return out


def assert_same_store(a, b):
    da, db = store_arrays(a), store_arrays(b)
    assert sorted(da) == sorted(db)
    for k in da:
        assert np.array_equal(da[k], db[k]), k


@pytest.mark.parametrize("kind", ["group", "layer"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_pooled_equals_unpadded_transformers(tmp_path, tiny_models, kind, batch_size):
    manifest = write_corpus(tmp_path / "audio")
    result = extract_manifest(manifest, model=str(tiny_models[kind]), cache=tmp_path / "cache",
                              device="cpu", batch_size=batch_size, frames="all", progress=False)
    fs = open_store(result.store)
    assert result.extracted == len(LENGTHS) and fs.num_layers == 5 and fs.hidden_size == 16
    mean, std = fs.pooled_all("mean"), fs.pooled_all("std")
    for i, u in enumerate(fs.utterances):
        ref = reference_states(tiny_models[kind], u.path)
        assert fs.n_frames[i] == ref.shape[1]
        np.testing.assert_allclose(mean[i], ref.mean(axis=1), atol=1e-4)
        np.testing.assert_allclose(std[i], ref.std(axis=1), atol=1e-4)
        np.testing.assert_allclose(fs.frames(3, i), ref[3], atol=2e-2)  # float16 frames


def test_padding_without_masked_groupnorm_would_differ(tiny_models):
    """Guards the reason MaskedGroupNorm exists: plain padding changes a GroupNorm model."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_models["group"]).eval()
    rng = np.random.default_rng(1)
    short = torch.from_numpy(rng.standard_normal(2000).astype(np.float32))
    padded = torch.zeros(1, 16000)
    padded[0, :2000] = short
    mask = torch.zeros(1, 16000, dtype=torch.long)
    mask[0, :2000] = 1
    with torch.no_grad():
        alone = model(short[None]).last_hidden_state
        batched = model(padded, attention_mask=mask).last_hidden_state[:, : alone.shape[1]]
    assert (alone - batched).abs().max() > 1e-2


def test_rerun_is_noop_and_grown_corpus_extracts_only_new(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:5])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    first = extract_manifest(manifest, **kw)
    before = store_arrays(first.store)
    stamp = first.store.stat().st_mtime_ns
    again = extract_manifest(manifest, **kw)
    assert again.up_to_date and again.extracted == 0 and again.wall_seconds < 5
    assert again.store.stat().st_mtime_ns == stamp  # the no-op did not rewrite the store
    after_noop = store_arrays(again.store)
    assert sorted(after_noop) == sorted(before)
    for k in before:
        assert np.array_equal(after_noop[k], before[k]), k
    grown = write_corpus(tmp_path / "audio", LENGTHS)
    third = extract_manifest(grown, **kw)
    assert third.extracted == len(LENGTHS) - 5 and third.already == 5
    after = store_arrays(third.store)
    assert len(after["utterances/id"]) == len(LENGTHS)
    # the first five rows are unchanged (ids sort the same)
    np.testing.assert_array_equal(after["pooled/mean"][:5], before["pooled/mean"])
    clean = extract_manifest(grown, **{**kw, "cache": tmp_path / "clean"})
    assert_same_store(third.store, clean.store)


def test_other_config_never_mixes(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:3])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    extract_manifest(manifest, **kw)
    with pytest.raises(StoreError, match="different configuration"):
        extract_manifest(manifest, **{**kw, "max_seconds": 10.0})
    # another model with the same directory name lands in the same slug: refused as well
    other = tmp_path / "m2" / tiny_models["group"].name
    from tests.helpers import build_tiny_model

    build_tiny_model(other, "group", seed=5)
    with pytest.raises(StoreError, match="weights_sha256"):
        extract_manifest(manifest, **{**kw, "model": str(other)})


JOB = """
import json, sys
from featstore.corpora.base import Manifest, Utterance
from featstore.extract import extract_manifest
spec = json.load(open(sys.argv[1]))
m = Manifest("toy", spec["root"], [Utterance(**u) for u in spec["utts"]], [])
r = extract_manifest(m, model=spec["model"], cache=spec["cache"], device="cpu", progress=False,
                     checkpoint_seconds=0, frames="1,4")
print("DONE", r.extracted, r.already)
"""


@pytest.mark.slow
def test_kill_9_then_resume_equals_clean_run(tmp_path, tiny_models):
    lengths = [16000 + 997 * i for i in range(40)]
    manifest = write_corpus(tmp_path / "audio", lengths)
    spec = dict(root=str(tmp_path), model=str(tiny_models["layer"]), cache=str(tmp_path / "cache"),
                utts=[u.to_dict() for u in manifest.utterances])
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "job.py").write_text(JOB)
    cmd = [sys.executable, str(tmp_path / "job.py"), str(tmp_path / "spec.json")]
    parts = tmp_path / "cache" / f"local--{tiny_models['layer'].name}" / "toy.h5.parts"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.h5"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_parts = len(list(parts.glob("part-*.h5")))
    assert 3 <= n_parts < 40, "the job must be killed mid-run"
    assert not (parts.parent / "toy.h5").exists()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    done, extracted, already = out.stdout.split()[-3:]
    assert int(already) >= n_parts - 1 and int(extracted) + int(already) == 40
    spec["cache"] = str(tmp_path / "clean")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    name = f"local--{tiny_models['layer'].name}/toy.h5"
    assert_same_store(tmp_path / "cache" / name, tmp_path / "clean" / name)
    assert not parts.exists()


def _bad_files(root: Path) -> dict[str, str]:
    """file name -> a phrase the skip reason must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty_file.wav").write_bytes(b"")
    good = np.zeros(8000, np.float32)
    sf.write(root / "tmp.wav", good, 16000, subtype="PCM_16")
    (root / "truncated.wav").write_bytes((root / "tmp.wav").read_bytes()[:30])
    (root / "tmp.wav").unlink()
    (root / "not_audio.wav").write_text("this is a text file, not audio\n")
    sf.write(root / "zero_samples.wav", np.zeros(0, np.float32), 16000)
    sf.write(root / "too_short.wav", np.zeros(100, np.float32), 16000)  # tiny model: 148-sample field
    bad = np.zeros(8000, np.float32)
    bad[100] = np.nan
    bad[200] = np.inf
    sf.write(root / "nan_inf.wav", bad, 16000, subtype="FLOAT")
    return {"empty_file.wav": "empty", "truncated.wav": "broken header", "not_audio.wav": "not a readable audio",
            "zero_samples.wav": "empty audio", "too_short.wav": "too short", "nan_inf.wav": "NaN or infinite"}


def test_bad_audio_is_skipped_with_reasons_and_run_continues(tmp_path, tiny_models):
    root = tmp_path / "audio"
    expected = _bad_files(root)
    rng = np.random.default_rng(0)
    sf.write(root / "stereo.wav", 0.1 * rng.standard_normal((16000, 2)), 16000)
    sf.write(root / "eight_bit.wav", 0.1 * rng.standard_normal(16000), 16000, subtype="PCM_U8")
    sf.write(root / "hi_rate.wav", 0.1 * rng.standard_normal(96000), 96000)
    sf.write(root / "very_long.wav", 0.1 * rng.standard_normal(16000 * 25), 16000)
    good = ["stereo.wav", "eight_bit.wav", "hi_rate.wav", "very_long.wav"]
    utts = [Utterance(id=f"toy-{p}", path=str(root / p), corpus="toy", language="en", speaker="toy-1",
                      gender=None, label="sad", label_raw="x", duration=1.0, sample_rate=16000)
            for p in list(expected) + good]
    unknown = Problem(str(root / "unknown_label.wav"), "unknown label code 'Q' (known: a, b)")
    manifest = Manifest("toy", str(root), utts, [unknown])
    seen = []
    result = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                              max_seconds=10, progress=False, on_skip=seen.append)
    fs = open_store(result.store)
    assert sorted(u.id for u in fs.utterances) == sorted(f"toy-{p}" for p in good)
    reasons = {Path(s.path).name: s.reason for s in fs.skipped}
    for name, phrase in expected.items():
        assert phrase in reasons[name], (name, reasons[name])
    assert "unknown label" in reasons["unknown_label.wav"]
    assert len(seen) == len(expected) + 1
    i = fs.ids.index("toy-very_long.wav")
    assert fs.n_samples[i] == 16000 * 25 and fs.n_frames[i] > 0  # windowed, not refused
    j = fs.ids.index("toy-hi_rate.wav")
    assert fs.n_samples[j] == 16000  # resampled to the model rate
    # a re-run does not retry files that did not change, and stays a no-op
    assert extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                            max_seconds=10, progress=False).up_to_date


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:2])
    os.chmod(manifest.utterances[0].path, 0)
    result = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache",
                              device="cpu", progress=False)
    assert "permission denied" in result.skipped[0].reason


def test_windowed_long_clip_stats_combine_exactly(tmp_path, tiny_models):
    """Mean/std of a windowed clip equal those of its windows' frames put together."""
    from transformers import AutoModel

    manifest = write_corpus(tmp_path / "audio", [48000])
    res = extract_manifest(manifest, model=str(tiny_models["layer"]), cache=tmp_path / "c", device="cpu",
                           max_seconds=1.0, frames="all", progress=False)
    fs = open_store(res.store)
    model = AutoModel.from_pretrained(tiny_models["layer"]).eval()
    wave, _ = sf.read(fs.utterances[0].path, dtype="float32")
    states = []
    for piece in np.array_split(wave, 3):
        piece = (piece - piece.mean()) / np.sqrt(piece.var() + 1e-7)
        with torch.no_grad():
            states.append(torch.stack(model(torch.from_numpy(piece)[None], output_hidden_states=True).hidden_states)[:, 0])
    allf = torch.cat(states, dim=1).numpy()
    assert fs.n_frames[0] == allf.shape[1]
    np.testing.assert_allclose(fs.pooled_all("mean")[0], allf.mean(1), atol=1e-4)
    np.testing.assert_allclose(fs.pooled_all("std")[0], allf.std(1), atol=1e-4)


def test_shards_read_as_one_equal_single_run(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio")
    kw = dict(model=str(tiny_models["group"]), device="cpu", progress=False)
    single = open_store(extract_manifest(manifest, cache=tmp_path / "one", **kw).store)
    with pytest.raises(StoreError, match="incomplete"):
        r0 = extract_manifest(manifest, cache=tmp_path / "two", shards=2, shard=0, **kw)
        open_store(r0.store.parent / "toy.h5")
    extract_manifest(manifest, cache=tmp_path / "two", shards=2, shard=1, **kw)
    sharded = open_store(r0.store.parent / "toy.h5")
    assert len(sharded.paths) == 2
    order = np.argsort(sharded.ids)
    assert [sharded.ids[i] for i in order] == single.ids
    np.testing.assert_array_equal(sharded.pooled(2)[order], single.pooled(2))


def test_store_api_export_info_ls(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio")
    res = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                           progress=False)
    out = export_layer(res.store, 3, tmp_path / "l3.npz", stat="mean+std")
    z = np.load(out)
    fs = open_store(res.store)
    assert z["X"].shape == (len(LENGTHS), 32)
    np.testing.assert_array_equal(z["X"][:, :16], fs.pooled(3))
    assert list(z["id"]) == fs.ids and list(z["label"]) == [u.label for u in fs.utterances]
    info = store_info(res.store)
    assert info["utterances"] == len(LENGTHS) and info["layers"] == 5 and info["config"]["dtype"] == "float32"
    assert "hidden_states[k]" in info["config"]["layer_convention"]
    rows = list_stores(tmp_path / "cache")
    assert len(rows) == 1 and rows[0]["utterances"] == len(LENGTHS) and rows[0]["status"] == "complete"
    with pytest.raises(StoreError, match="out of range"):
        fs.pooled(7)
    with pytest.raises(StoreError, match="no frame-level"):
        fs.frames(2, 0)
    # plain h5py reads the documented schema
    with h5py.File(res.store, "r") as f:
        assert f["pooled/mean"].shape == (len(LENGTHS), 5, 16)
        fmt = f.attrs["format"]  # fixed-length (checksummed) bytes since store format 3
        assert (fmt.decode() if isinstance(fmt, bytes) else fmt) == "ser-featstore"


def test_frame_layer_spec():
    assert parse_frame_layers("none", 13) == []
    assert parse_frame_layers("all", 3) == [0, 1, 2]
    assert parse_frame_layers("3-5,12", 13) == [3, 4, 5, 12]
    with pytest.raises(SerError, match="out of range"):
        parse_frame_layers("13", 13)
    with pytest.raises(SerError, match="layers like"):
        parse_frame_layers("six", 13)


def test_missing_model_offline_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from featstore.backbones.runtime import ModelLoadError, model_info

    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE") as e:
        model_info("facebook/wav2vec2-base")
    assert "save_pretrained" in str(e.value)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, tiny_models):
    """`torchrun --nproc-per-node 2 ser extract ...`: one shard per rank, read back as one store."""
    import shutil

    from featstore.synth import synthesize

    ser = shutil.which("ser")
    assert ser is not None, "the ser console script is not installed (./setup.sh test installs it)"
    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=24, seed=0, max_duration=0.5, sample_rate=16000)
    env = dict(os.environ, OMP_NUM_THREADS="1", SER_CONFIG=str(tmp_path / "none.toml"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517", ser,
           "extract", "--corpus", "ravdess", "--root", str(root), "--model", str(tiny_models["group"]),
           "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    slug_dir = tmp_path / "cache" / f"local--{tiny_models['group'].name}"
    assert sorted(p.name for p in slug_dir.glob("*.h5")) == ["ravdess.shard-0-of-2.h5", "ravdess.shard-1-of-2.h5"]
    fs = open_store(slug_dir / "ravdess.h5")
    assert len(fs) == 24 and len(set(fs.ids)) == 24


def test_data2vec_audio_batches_are_exact(tmp_path):
    """data2vec-audio loads (no feat_extract_norm) and a padded batch equals each item alone, every layer."""
    from featstore.backbones.runtime import hidden_states, load_backbone

    backbone = load_backbone(str(build_tiny_data2vec(tmp_path / "d2v")))
    assert backbone.model_type == "data2vec-audio" and not backbone.group_norm
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (16000, 3000, 9001, 600)]
    states, lengths = hidden_states(backbone, waves)
    assert states.shape[0] == 5
    for i, w in enumerate(waves):
        alone, _ = hidden_states(backbone, [w])
        n = int(lengths[i])
        assert alone.shape[2] == n
        assert (states[:, i, :n] - alone[:, 0]).abs().max() <= 1e-4, i
    # without the masking between pos-conv layers the padded batch would differ
    import featstore.backbones.runtime as bb

    original = bb.masked_pos_conv
    try:
        bb.masked_pos_conv = lambda model, n_frames, padded: original(model, n_frames, False)
        unmasked, _ = bb.hidden_states(backbone, waves)
    finally:
        bb.masked_pos_conv = original
    assert (unmasked[:, 1, : int(lengths[1])] - states[:, 1, : int(lengths[1])]).abs().max() > 1e-2


def test_data2vec_audio_extracts(tmp_path):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:4])
    res = extract_manifest(manifest, model=str(build_tiny_data2vec(tmp_path / "d2v")), cache=tmp_path / "c",
                           device="cpu", batch_size=4, progress=False)
    fs = open_store(res.store)
    assert len(fs) == 4 and fs.config["model_type"] == "data2vec-audio" and np.isfinite(fs.pooled_all()).all()


def test_pool_whole_batch_ignores_padding_and_matches_each_item():
    """Batch pooling (masked sums on the device, one copy to the host) gives each item's own mean, M2
    and frames: padded frames, however large, never count."""
    import featstore.extract as fx

    gen = torch.Generator().manual_seed(0)
    states = torch.randn(5, 4, 12, 6, generator=gen)
    lengths = torch.tensor([12, 9, 4, 1])
    for i, n in enumerate(lengths.tolist()):
        states[:, i, n:] = 1e6                      # garbage past each item's length
    out = fx._pool(states, lengths, [0, 3], layer_chunk=2)
    for i, (n, mean, m2, frames) in enumerate(out):
        x = states[:, i, :lengths[i]].double()
        assert n == lengths[i]
        np.testing.assert_allclose(mean, x.mean(1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m2, ((x - x.mean(1, keepdim=True)) ** 2).sum(1).numpy(), rtol=1e-5, atol=1e-5)
        assert sorted(frames) == [0, 3]
        np.testing.assert_array_equal(frames[3], states[3, i, :n].half().numpy())


def test_full_float32_turns_tf32_off_on_cuda_only_and_restores():
    """fp32 extraction on CUDA runs cuDNN/cuBLAS without TF32 (a clip's features must not depend on its
    batch), and leaves the flags as they were afterwards; on CPU it changes nothing."""
    from featstore.device import full_float32

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with full_float32("cpu"):
            assert torch.backends.cudnn.allow_tf32
        with full_float32("cuda", enabled=False):
            assert torch.backends.cudnn.allow_tf32
        with full_float32(torch.device("cuda:0")):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_truncated_wav_and_webm_are_skipped_with_a_reason(tmp_path, tiny_models, one_torch_thread):
    from featstore.synth import write_container

    manifest = write_corpus(tmp_path / "audio", LENGTHS[2:4])
    rng = np.random.default_rng(3)
    cut_wav = Path(manifest.utterances[0].path)
    cut_webm = tmp_path / "audio" / "cut.webm"
    write_container(cut_webm, (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
    for path in (cut_wav, cut_webm):
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * 0.6)])
    webm_utt = Utterance(id="toy-webm", path=str(cut_webm), corpus="toy", language="en", speaker="toy-1",
                         gender=None, label="sad", label_raw="x", duration=2.0, sample_rate=16000)
    manifest.utterances.append(webm_utt)
    seen = []
    result = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                              progress=False, on_skip=seen.append)
    fs = open_store(result.store)
    assert fs.ids == [manifest.utterances[1].id]  # only the intact file
    reasons = {Path(s.path).name: s.reason for s in fs.skipped}
    assert set(reasons) == {cut_wav.name, "cut.webm"} and len(seen) == 2
    assert reasons[cut_wav.name].startswith("truncated: the header declares 1.00 s but the file holds 0.60 s")
    assert reasons["cut.webm"].startswith("truncated") and "bytes" in reasons["cut.webm"]
    assert all("\n" not in r for r in reasons.values())


def test_negative_frames_refused_and_a_finished_store_unchanged(tmp_path, tiny_models, one_torch_thread):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:2])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    store = extract_manifest(manifest, **kw).store
    before = {p.name: p.read_bytes() for p in store.parent.iterdir()}
    for frames in ([-1], "-1", "2,-1", [0, 5]):  # the tiny model has layers 0..4
        with pytest.raises(SerError, match="negative|out of range") as info:
            extract_manifest(manifest, frames=frames, **kw)
        assert "\n" not in str(info.value) and "0..4" in str(info.value)
    assert {p.name: p.read_bytes() for p in store.parent.iterdir()} == before  # bytes identical, nothing added
    assert parse_frame_layers("4", 5) == [4]
    with pytest.raises(SerError, match="negative"):
        parse_frame_layers([-1], 5)


@pytest.mark.parametrize("max_seconds", [0.001, 0.018, float("nan"), float("inf"), -1.0, 0.0])
def test_nonsense_max_seconds_refused_before_any_store_file(tmp_path, tiny_models, max_seconds):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:2])
    with pytest.raises(SerError, match="--max-seconds") as info:
        extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                         max_seconds=max_seconds, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()  # refused before the store (or its folder) was touched


def test_max_seconds_floor_is_twice_the_receptive_field_and_every_clip_is_stored(tmp_path, tiny_models,
                                                                                 one_torch_thread):
    """The tiny models' convs (kernel 8, stride 4, three times) see 148 samples: windows of 296 samples
    (0.0185 s) are the shortest accepted, and then every clip, however long, still gives frames."""
    from featstore.audio import validate_extract_options

    with pytest.raises(SerError, match=r"at least 0\.0185 s .*148 samples at 16000 Hz.*--max-seconds 0\.019"):
        validate_extract_options(max_seconds=0.0184, receptive_field=148, sample_rate=16000)
    manifest = write_corpus(tmp_path / "audio", [297, 1601, 9000])
    result = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                              max_seconds=0.0185, progress=False)
    fs = open_store(result.store)
    assert len(fs.ids) == 3 and not fs.skipped and (np.asarray(fs.n_frames) > 0).all()


def test_cheap_option_checks_need_no_model():
    from featstore.audio import validate_extract_options

    validate_extract_options(frames="none", max_seconds=30.0)
    validate_extract_options(frames="0,3-4", max_seconds=0.001)  # the model-dependent floor needs the model
    for kw, words in [(dict(frames="-1"), "negative"), (dict(frames=[2, -1]), "negative"),
                      (dict(frames="six"), "layers like"), (dict(max_seconds=float("nan")), "finite"),
                      (dict(max_seconds=0), "above 0"), (dict(batch_seconds=float("inf")), "--batch-seconds"),
                      (dict(frames="5", num_layers=5), "out of range")]:
        with pytest.raises(SerError, match=words):
            validate_extract_options(**kw)


def test_an_empty_manifest_is_refused_not_an_empty_store(tmp_path, tiny_models):
    with pytest.raises(SerError, match="no utterances to extract") as info:
        extract_manifest(Manifest("toy", str(tmp_path / "nothing"), [], []), model=str(tiny_models["group"]),
                         cache=tmp_path / "cache", device="cpu", progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "cache").exists()
