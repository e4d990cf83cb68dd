"""The GPU path on a CPU: bench/device_check.py end to end at tiny sizes, and the CUDA-branch fixes
(out-of-memory back-off, float16 masked GroupNorm) driven by injected errors and dtypes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import featstore.extract as fx
from featstore.backbones.runtime import MaskedGroupNorm
from featstore.corpora.base import Manifest, Utterance
from featstore.store import open_store

REPO = Path(__file__).resolve().parents[1]


def tiny_corpus(root: Path, lengths=(3000, 16000, 7000, 24000, 1200, 9000)) -> Manifest:
    rng = np.random.default_rng(0)
    utts = []
    for i, n in enumerate(lengths):
        path = root / f"utt{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="PCM_16")
        utts.append(Utterance(id=f"toy-{i}", path=str(path), corpus="toy", language="en", speaker=f"s{i % 2}",
                              gender=None, label="happy", label_raw="x", duration=n / 16000, sample_rate=16000))
    return Manifest("toy", str(root), utts, [])


def test_device_check_runs_every_check_on_cpu(tmp_path):
    """One command, every check, one table, JSON; exactness and OOM back-off hold even at tiny sizes."""
    out = tmp_path / "cpu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "device_check.py"), "--device", "cpu",
                           "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["errors"] == {}
    rows = result["rows"]
    assert {r["check"] for r in rows} == set("12345678")
    assert all(r["ok"] is None for r in rows)  # goals are judged only at full size on CUDA
    exact = [r["value"] for r in rows if r["check"] == "1"]
    assert len(exact) == 2 and max(exact) <= 1e-4
    oom = [r for r in rows if r["check"] == "4"]
    assert oom[0]["value"] >= 1 and oom[1]["value"] == "yes" and oom[2]["value"] <= 1e-4
    bf16 = next(r for r in rows if r["what"].startswith("base bf16 vs fp32 pooled: max"))
    assert 0 < bf16["value"] < 0.1
    # check 3 says where extraction's time went: every main-thread stage with its share, the writer thread apart
    stages = [r["value"] for r in rows if r["what"].endswith("ser extract stages, seconds (% of wall)")]
    assert len(stages) == 2 and all("forward" in v and "%" in v and "writer thread" in v for v in stages)
    shares = [float(x.split("(")[1].rstrip("%)")) for x in stages[0].split(";")[0].split(", ")]
    assert 95 <= sum(shares) <= 105         # the stages and `other` partition the wall time
    before = [r for r in rows if "before the overlap (writer on the main thread" in r["what"]]
    assert len(before) == 2 and all(r["value"] > 0 for r in before)
    same = [r["value"] for r in rows if "with vs without the overlap" in r["what"]]
    assert same == [0.0, 0.0]               # the pipeline changes no feature
    # check 8: ser's training steps/s against a plain transformers Trainer script, and their ratio
    ft = {r["what"].split(":")[0]: r["value"] for r in rows if r["check"] == "8"}
    ours, plain = ft["ser finetune"], next(v for k, v in ft.items() if k.startswith("plain transformers Trainer"))
    ratio = next(r for r in rows if r["what"] == "ser finetune / plain Trainer, training steps/s")
    assert ours > 0 and plain > 0 and ratio["value"] == pytest.approx(ours / plain)
    header = next(line for line in proc.stdout.splitlines() if line.startswith("#"))
    assert header.split() == ["#", "check", "value", "goal", "ok"]
    assert f"wrote {out}" in proc.stdout
    assert sum(" done in " in line for line in proc.stderr.splitlines()) == 8  # the JSON is rewritten after each


@pytest.fixture
def corpus(tmp_path):
    return tiny_corpus(tmp_path / "corpus")


def _extract(manifest, model, cache, **kw):
    res = fx.extract_manifest(manifest, model=str(model), cache=cache, device="cpu", progress=False, **kw)
    fs = open_store(res.store)
    return res, dict(zip(fs.ids, fs.pooled_all("mean")))


def test_oom_halves_batch_after_the_failed_forward_is_freed(tiny_models, corpus, tmp_path, monkeypatch,
                                                            one_torch_thread):
    """A batch that runs out of memory is retried in halves, once the failed attempt's tensors are gone."""
    _, ref = _extract(corpus, tiny_models["group"], tmp_path / "ref")
    real = fx.hidden_states
    held, sizes, alive_at_retry = [], [], []

    def flaky(backbone, waves, **kw):
        sizes.append(len(waves))
        alive_at_retry.append(any(r() is not None for r in held))
        if len(waves) > 1:
            activations = torch.zeros(1 << 16)  # what a failed forward holds when CUDA runs out of memory
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(backbone, waves, **kw)

    monkeypatch.setattr(fx, "hidden_states", flaky)
    res, got = _extract(corpus, tiny_models["group"], tmp_path / "oom", batch_size=4)
    assert res.extracted == len(corpus.utterances) and not res.skipped
    assert sizes[:3] == [4, 2, 1] and sizes.count(1) == len(corpus.utterances)
    assert not any(alive_at_retry)
    for uid, x in ref.items():
        np.testing.assert_allclose(got[uid], x, atol=1e-5)


def test_cudnn_allocation_failure_backs_off_other_errors_propagate(tiny_models, corpus, tmp_path, monkeypatch,
                                                                   one_torch_thread):
    real = fx.hidden_states

    def alloc_failure(backbone, waves, **kw):
        if len(waves) > 1:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
        return real(backbone, waves, **kw)

    monkeypatch.setattr(fx, "hidden_states", alloc_failure)
    res, _ = _extract(corpus, tiny_models["group"], tmp_path / "cudnn", batch_size=2)
    assert res.extracted == len(corpus.utterances) and not res.skipped

    def broken(backbone, waves, **kw):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(fx, "hidden_states", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _extract(corpus, tiny_models["group"], tmp_path / "broken", batch_size=2)


def test_a_window_too_large_alone_is_skipped_with_the_fix(tiny_models, corpus, tmp_path, monkeypatch,
                                                          one_torch_thread):
    def always(backbone, waves, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(fx, "hidden_states", always)
    res = fx.extract_manifest(corpus, model=str(tiny_models["group"]), cache=tmp_path / "c", device="cpu",
                              progress=False, batch_size=2)
    assert res.extracted == 0 and len(res.skipped) == len(corpus.utterances)
    assert all("out of memory" in s.reason and "--max-seconds" in s.reason for s in res.skipped)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_group_norm_in_a_half_precision_model(dtype):
    """A float16/bfloat16 model (`--dtype` on CUDA) normalises 25 s windows like float32 does: no overflow."""
    torch.manual_seed(0)
    channels, frames = 3, 80_000                      # the first conv's frames for 25 s at 16 kHz
    norm = nn.GroupNorm(channels, channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    x = torch.randn(2, channels, frames) * 4 + 3
    valid = torch.tensor([frames, 70_000])
    ref = MaskedGroupNorm(norm)
    half = MaskedGroupNorm(nn.GroupNorm(channels, channels).to(dtype))
    with torch.no_grad():
        half.weight.copy_(norm.weight)
        half.bias.copy_(norm.bias)
    ref.valid = half.valid = valid
    with torch.no_grad():
        expected, got = ref(x), half(x.to(dtype))
    assert got.dtype == dtype
    tol = 2e-2 if dtype == torch.float16 else 5e-2
    for i, n in enumerate(valid.tolist()):
        assert torch.isfinite(got[i, :, :n]).all()
        torch.testing.assert_close(got[i, :, :n].float(), expected[i, :, :n], atol=tol, rtol=tol)


def test_parallel_readers_keep_order_and_skip_reasons(corpus, tmp_path):
    """On CUDA extraction reads with several threads: same items, same order, same skips as one reader."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt nonsense")
    utts = list(corpus.utterances)
    utts.insert(2, Utterance(id="toy-broken", path=str(broken), corpus="toy", language="en", speaker="s0",
                             gender=None, label="happy", label_raw="x", duration=1.0, sample_rate=16000))
    one = list(fx._Prefetcher(utts, 16000, 400, readers=1))
    many = list(fx._Prefetcher(utts, 16000, 400, readers=fx.GPU_READERS))
    assert [u.id for u, _, _ in many] == [u.id for u in utts] == [u.id for u, _, _ in one]
    for (_, a, ra), (_, b, rb) in zip(one, many):
        assert ra == rb and (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert many[2][1] is None and many[2][2]
    early = fx._Prefetcher(utts * 20, 16000, 400, depth=2, readers=fx.GPU_READERS)
    next(iter(early))
    early.close()  # stops the readers mid-corpus without hanging
    assert not early._thread.is_alive()


def test_cuda_batches_fill_batch_seconds(tmp_path, monkeypatch):
    """The CUDA branch of extraction, driven on CPU with a stand-in forward: batches reach --batch-seconds
    even when the read-ahead (prefetch_seconds) is smaller, and every utterance completes."""
    from types import SimpleNamespace

    manifest = tiny_corpus(tmp_path / "c", lengths=[16000] * 12)
    seen = []

    def forward(backbone, waves, device=None, autocast_dtype=None):
        assert device.type == "cuda"
        seen.append(len(waves))
        lengths = torch.tensor([len(w) // 320 for w in waves])
        return torch.zeros(2, len(waves), int(lengths.max()), 3), lengths

    monkeypatch.setattr(fx, "hidden_states", forward)
    done = []
    writer = SimpleNamespace(config={"frame_layers": []}, add=done.append, skip=lambda s: pytest.fail(s.reason))
    settings = fx._RunSettings(device=torch.device("cuda"), autocast=None, max_seconds=30.0, batch_size=None,
                               batch_seconds=4.0, prefetch_seconds=1.0, progress=False, on_skip=None)
    backbone = SimpleNamespace(sample_rate=16000, receptive_field=400, input_kind="waveform", max_input_seconds=None)
    fx._run(backbone, manifest.utterances, writer, fx.ExtractResult(store=tmp_path / "s.h5"), settings)
    assert sorted(p.utt.id for p in done) == sorted(u.id for u in manifest.utterances)
    assert seen == [4, 4, 4]   # 4 s of padded audio each; a 1 s read-ahead alone would give batches of 1


def test_finetune_refuses_a_gpu_the_trainer_would_not_use():
    """transformers' Trainer always trains on cuda:0: `--device cuda:1` says how to get GPU 1 instead."""
    from classifiers.finetuning.finetune import FinetuneConfig, FinetuneError

    with pytest.raises(FinetuneError, match="CUDA_VISIBLE_DEVICES=1 ser finetune .* --device cuda"):
        FinetuneConfig(model="m", device="cuda:1")
    for ok in ("auto", "cpu", "cuda", "cuda:0"):
        assert FinetuneConfig(model="m", device=ok).device == ok
