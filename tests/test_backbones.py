"""Every backbone family, built tiny from its config with random weights and loaded with from_pretrained.

For each: a padded batch equals every utterance run alone (<= 1e-4, fp32), and layer k equals the
plain transformers `hidden_states[k]` over the valid frames. `pytest -s` prints the table of max
differences. Whisper: 30 s padding, 50 valid frames per second, long clips windowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from featstore.backbones.runtime import ModelLoadError, hidden_states, load_backbone, model_info
from featstore.corpora.base import Manifest, Utterance
from featstore.extract import extract_manifest
from featstore.store import open_store
from tests.helpers import TINY, build_tiny_data2vec, build_tiny_model

WAVEFORM = ["wav2vec2", "wav2vec2-large", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
            "wav2vec2-conformer", "wav2vec2-conformer-rotary"]
FAMILIES = [*WAVEFORM, "wav2vec2-bert", "whisper"]
LENGTHS = [16000, 3000, 9001, 1200, 24001]  # samples at 16 kHz


def _save(model_cls, config, directory: Path, extractor) -> Path:
    torch.manual_seed(0)
    model_cls(config).eval().save_pretrained(directory)
    extractor.save_pretrained(directory)
    return directory


def build_tiny(family: str, directory: Path) -> Path:
    """A tiny randomly initialised model of `family`, saved with save_pretrained (model + feature extractor)."""
    import transformers as tf

    wave_fe = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    if family == "wav2vec2":
        return build_tiny_model(directory, "group")
    if family == "wav2vec2-large":
        return build_tiny_model(directory, "layer")
    if family == "data2vec-audio":
        return build_tiny_data2vec(directory)
    if family in ("hubert", "wavlm", "unispeech", "unispeech-sat"):
        name = {"hubert": "Hubert", "wavlm": "WavLM", "unispeech": "UniSpeech", "unispeech-sat": "UniSpeechSat"}[family]
        config = getattr(tf, f"{name}Config")(**TINY)
        return _save(getattr(tf, f"{name}Model"), config, directory, wave_fe)
    if family.startswith("wav2vec2-conformer"):
        kind = "rotary" if family.endswith("rotary") else "relative"
        config = tf.Wav2Vec2ConformerConfig(**TINY, conv_depthwise_kernel_size=7, position_embeddings_type=kind)
        return _save(tf.Wav2Vec2ConformerModel, config, directory, wave_fe)
    if family == "wav2vec2-bert":
        config = tf.Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20,
                                       output_hidden_size=16, conv_depthwise_kernel_size=5,
                                       left_max_position_embeddings=16, right_max_position_embeddings=4)
        return _save(tf.Wav2Vec2BertModel, config, directory, tf.SeamlessM4TFeatureExtractor())
    if family == "whisper":
        config = tf.WhisperConfig(d_model=16, encoder_layers=3, encoder_attention_heads=2, decoder_layers=1,
                                  decoder_attention_heads=2, encoder_ffn_dim=20, decoder_ffn_dim=20, num_mel_bins=80,
                                  vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, decoder_start_token_id=1)
        return _save(tf.WhisperModel, config, directory, tf.WhisperFeatureExtractor(feature_size=80))
    raise ValueError(family)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny(f, root / f) for f in FAMILIES}


def plain_states(directory: Path, wave: np.ndarray) -> np.ndarray:
    """Plain transformers, one clip, its own feature extractor: `(L+1, T_valid, D)`."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(directory).eval()
    fe = AutoFeatureExtractor.from_pretrained(directory)
    kind = model.config.model_type
    with torch.no_grad():
        if kind == "whisper":
            x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_features"]
            out = model.encoder(x, output_hidden_states=True)
            valid = ((-(-len(wave) // 160)) + 1) // 2
        elif kind == "wav2vec2-bert":
            x = fe(wave, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            out = model(x["input_features"], attention_mask=x["attention_mask"], output_hidden_states=True)
            valid = int(x["attention_mask"].sum())
        else:
            x = fe(wave, sampling_rate=16000, return_tensors="pt")["input_values"]
            out = model(x, output_hidden_states=True)
            valid = out.last_hidden_state.shape[1]
    return torch.stack(out.hidden_states)[:, 0, :valid].numpy()


def waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(LENGTHS)) / 16000
    return [(0.3 * np.sin(2 * np.pi * (100 + 30 * i) * t[:n]) + 0.05 * rng.standard_normal(n)).astype(np.float32)
            for i, n in enumerate(LENGTHS)]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_alone_equals_plain_transformers(models, family, one_torch_thread):
    backbone = load_backbone(str(models[family]))
    info = model_info(str(models[family]))
    assert backbone.num_layers == info.num_layers and backbone.model_type == json.loads(
        (models[family] / "config.json").read_text())["model_type"]
    clips = waves()
    states, lengths = hidden_states(backbone, clips)
    assert states.shape[0] == backbone.num_layers and states.shape[-1] == backbone.hidden_size
    batch_vs_alone = plain_vs_ours = 0.0
    for i, w in enumerate(clips):
        alone, alone_len = hidden_states(backbone, [w])
        n = int(lengths[i])
        assert int(alone_len[0]) == n and n > 0
        batch_vs_alone = max(batch_vs_alone, float((states[:, i, :n] - alone[:, 0, :n]).abs().max()))
        ref = plain_states(models[family], w)
        assert ref.shape[1] == n, (family, i)
        plain_vs_ours = max(plain_vs_ours, float(np.abs(alone[:, 0, :n].numpy() - ref).max()))
    print(f"\n{family:26s} batched vs alone {batch_vs_alone:.1e}   layer k vs transformers hidden_states[k] "
          f"{plain_vs_ours:.1e}   ({backbone.num_layers} layers, {info.input_kind})")
    assert batch_vs_alone <= 1e-4 and plain_vs_ours <= 1e-4


@pytest.mark.parametrize("family", ["wav2vec2-conformer", "wav2vec2-conformer-rotary"])
def test_conformer_needs_its_depthwise_conv_masked(models, family, one_torch_thread):
    """Guards masked_conformer_conv: without it the last valid frames of a padded item read the padding."""
    import featstore.backbones.runtime as bb

    backbone = load_backbone(str(models[family]))
    clips = waves()
    states, lengths = hidden_states(backbone, clips)
    original = bb.masked_conformer_conv
    try:
        bb.masked_conformer_conv = lambda model, n_frames, padded: original(model, n_frames, False)
        unmasked, _ = hidden_states(backbone, clips)
    finally:
        bb.masked_conformer_conv = original
    n = int(lengths[1])
    assert (unmasked[:, 1, :n] - states[:, 1, :n]).abs().max() > 1e-3


def _corpus(root: Path, seconds: list[float]) -> Manifest:
    rng = np.random.default_rng(1)
    utts = []
    for i, s in enumerate(seconds):
        n = int(s * 16000)
        path = root / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.2 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="PCM_16")
        utts.append(Utterance(id=f"toy-{i}", path=str(path), corpus="toy", language="en", speaker="toy-1",
                              gender=None, label="sad", label_raw="x", duration=s, sample_rate=16000))
    return Manifest("toy", str(root), utts, [])


def test_whisper_pools_only_real_audio_and_windows_long_clips(models, tmp_path, monkeypatch, one_torch_thread):
    """3 s -> mean over exactly 150 frames of the 30 s-padded run; 45 s -> two windows of 22.5 s."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local directory loads with no network
    manifest = _corpus(tmp_path / "audio", [3.0, 45.0])
    res = extract_manifest(manifest, model=str(models["whisper"]), cache=tmp_path / "cache", device="cpu",
                           max_seconds=60, frames="all", progress=False)
    fs = open_store(res.store)
    assert fs.config["model_type"] == "whisper" and fs.config["max_seconds"] == 30.0
    assert "30 s padding" in fs.config["layer_convention"]
    short, long = (sf.read(u.path, dtype="float32")[0] for u in fs.utterances)
    ref = plain_states(models["whisper"], short)
    assert fs.n_frames[0] == 150 == ref.shape[1]
    np.testing.assert_allclose(fs.pooled_all("mean")[0], ref.mean(1), atol=1e-4)
    np.testing.assert_allclose(fs.pooled_all("std")[0], ref.std(1), atol=1e-4)
    halves = [plain_states(models["whisper"], half) for half in np.array_split(long, 2)]
    assert fs.n_frames[1] == 2 * 1125 == sum(h.shape[1] for h in halves)
    np.testing.assert_allclose(fs.pooled_all("mean")[1], np.concatenate(halves, 1).mean(1), atol=1e-4)
    np.testing.assert_allclose(fs.frames(2, 1), np.concatenate(halves, 1)[2], atol=2e-2)
    with pytest.raises(ValueError, match="at most 30 s"):  # never cut silently by the feature extractor
        hidden_states(load_backbone(str(models["whisper"])), [long[: 30 * 16000 + 1]])


def test_w2v_bert_and_conformer_extract_in_batches(models, tmp_path, one_torch_thread):
    manifest = _corpus(tmp_path / "audio", [1.0, 0.2, 0.61, 0.05])
    for family in ("wav2vec2-bert", "wav2vec2-conformer"):
        res = extract_manifest(manifest, model=str(models[family]), cache=tmp_path / "cache", device="cpu",
                               batch_size=4, progress=False)
        fs = open_store(res.store)
        assert len(fs) == 4 and np.isfinite(fs.pooled_all()).all()
        for i, u in enumerate(fs.utterances):
            ref = plain_states(models[family], sf.read(u.path, dtype="float32")[0])
            assert fs.n_frames[i] == ref.shape[1]
            np.testing.assert_allclose(fs.pooled_all("mean")[i], ref.mean(1), atol=1e-4)


def test_identity_covers_the_front_end(models, tmp_path):
    """A changed feature extractor is a different model for the store (never mixed in)."""
    import shutil

    other = tmp_path / "whisper-other"
    shutil.copytree(models["whisper"], other)
    pre = json.loads((other / "preprocessor_config.json").read_text())
    (other / "preprocessor_config.json").write_text(json.dumps({**pre, "dither": 0.5}))
    a, b = model_info(str(models["whisper"])), model_info(str(other))
    assert a.weights_sha256 != b.weights_sha256 and a.num_layers == b.num_layers == 4
    assert (a.frame_rate, a.max_input_seconds, a.hidden_size) == (50.0, 30.0, 16)


def test_unsupported_model_type_names_the_families(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'bert' is not supported") as e:
        model_info(str(tmp_path))
    for family in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech-sat", "wav2vec2-conformer",
                   "w2v-bert-2.0", "whisper", "opensmile:"):
        assert family in str(e.value)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2-bert"])
def test_model_directory_without_feature_extractor_names_the_file(models, tmp_path, family, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    import cli

    bare = tmp_path / family
    shutil.copytree(models[family], bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="no preprocessor_config.json in") as e:
        model_info(str(bare))
    assert "save_pretrained" in str(e.value)
    # the command line says it in one line, exit code 2
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    _corpus(tmp_path / "audio", [0.5])
    (tmp_path / "audio" / "mine.csv").write_text("path,label,speaker\nclip0.wav,sad,s1\n")
    out = CliRunner().invoke(cli.app, ["extract", "--corpus", "csv", "--root", str(tmp_path / "audio" / "mine.csv"),
                                       "--model", str(bare), "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert out.exit_code == 2 and "error:" in out.output and "preprocessor_config.json" in out.output
    assert "Traceback" not in out.output


def test_gpu_batches_count_whisper_windows_as_30_seconds():
    """Whisper pads every window to 30 s, so a GPU batch budget counts each window as 30 s."""
    from featstore.extract import _batches

    pieces = [(None, np.zeros(16000 * 3, np.float32)) for _ in range(6)]
    cuda = torch.device("cuda")
    assert [len(b) for b in _batches(pieces, cuda, None, 60.0, 16000)] == [6]
    assert [len(b) for b in _batches(pieces, cuda, None, 60.0, 16000, min_input=30 * 16000)] == [2, 2, 2]


def test_ser_models_lists_families_layers_and_local_copies(models, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = tmp_path / "ser.toml"
    config.write_text(f'model = "{models["whisper"]}"\n')
    monkeypatch.setenv("SER_CONFIG", str(config))
    out = CliRunner().invoke(cli.app, ["models"], terminal_width=250, env={"COLUMNS": "250"})  # rich reads COLUMNS
    assert out.exit_code == 0, out.output
    text = out.output
    for name in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech-sat", "wav2vec2-conformer",
                 "w2v-bert-2.0", "whisper", "opensmile"):
        assert name in text
    row = next(line for line in text.splitlines() if "openai/whisper-large-v3" in line)
    assert "33" in row and "1280" in row and "no" in row  # 32 blocks -> layers 0..32; not in the empty cache
    mine = next(line for line in text.splitlines() if line.startswith("configured model:"))
    assert mine.endswith(f"{models['whisper']}: whisper, 4 layers x 16, local copy: yes")
    assert "hidden_states[k]" in text


def test_weights_hash_is_remembered_and_follows_the_files(tmp_path, tiny_models):
    """The weights' sha256 is remembered per file identity: a second model_info reads no weights, and a
    rewritten weight file (new size/mtime) is hashed again, to its new value."""
    import shutil

    import featstore.backbones.runtime as fb

    model = shutil.copytree(tiny_models["group"], tmp_path / "m")
    first = model_info(str(model)).weights_sha256
    assert fb.hash_memo_path().is_file() and first in fb.hash_memo_path().read_text()
    opened = []
    real_open = Path.open
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "open", lambda self, *a, **k: opened.append(self.name) or real_open(self, *a, **k))
        assert model_info(str(model)).weights_sha256 == first
    assert not [n for n in opened if n.endswith(".safetensors")]          # remembered, not re-read
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")                      # another file now
    second = model_info(str(model)).weights_sha256
    fb.hash_memo_path().unlink()
    assert second != first and model_info(str(model)).weights_sha256 == second   # and it is the true hash


def test_normalize_rows_matches_each_clip_normalised_alone():
    """The GPU-side normalisation of a zero-padded batch equals normalize_waveform of each clip; padding stays 0."""
    from featstore.backbones.runtime import normalize_rows, normalize_waveform

    rng = np.random.default_rng(0)
    waves = [rng.normal(0.3, 2.0, n).astype(np.float32) for n in (1600, 900, 17)]
    batch = torch.zeros(3, 1600)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(w)
    out = normalize_rows(batch, torch.tensor([len(w) for w in waves]))
    for i, w in enumerate(waves):
        np.testing.assert_allclose(out[i, :len(w)].numpy(), normalize_waveform(w), atol=1e-5)
        assert not out[i, len(w):].any()
