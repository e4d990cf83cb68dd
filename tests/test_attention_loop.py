"""The attention probe's fast training loop (issue 18): same batches, same statistics, same function
as the previous loop (`bench/legacy_attention.py`), masks honoured, validation apart from training and test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.legacy_attention as legacy
import classifiers.estimators.attention as attention
from classifiers.estimators.attention import (
    AttentionHead,
    AttentionProbe,
    Packed,
    _batches,
    _frame_stats,
    _logits,
    pack_frames,
    probe_attention,
)
from featstore.corpora.base import Utterance
from featstore.folds import make_folds

D = 8


def clips(n=24, n_layers=1, seed=0, dtype=np.float32):
    """n clips of 3-30 frames, (T, D) or (T, L, D), with a per-clip offset so statistics are not trivial."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = int(rng.integers(3, 31))
        f = rng.standard_normal((T, n_layers, D)) * (1 + np.arange(n_layers))[:, None] + i % 5
        out.append((f[:, 0] if n_layers == 1 else f).astype(dtype))
    return out


def head(n_layers, seed=0, packed=None):
    """A head with random parameters (layer logits too) and the statistics of `packed`."""
    torch.manual_seed(seed)
    mean, std = _frame_stats(packed) if packed is not None else (None, None)
    model = AttentionHead(n_layers, D, 3, hidden=8, heads=2, dropout=0.0, mean=mean, std=std)
    with torch.no_grad():
        model.layer_logits.normal_()
    return model.eval()


def explicit(model, xs):
    """The head's projection as the previous loop wrote it: standardise, mix, project."""
    w = model.layer_weights()
    x = sum(w[k] * (xs[k] - model.mean[k]) / model.std[k] for k in range(len(xs)))
    return model.proj(x)


def test_batches_cover_every_row_once_per_epoch_and_group_similar_lengths():
    length = np.random.default_rng(0).integers(1, 300, size=1000)
    rng = np.random.default_rng(1)
    for _ in range(3):
        batches = list(_batches(length, 16, rng))
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(1000))
        assert max(len(b) for b in batches) <= 16
        spread = np.mean([np.ptp(length[b]) for b in batches if len(b) == 16])
        assert spread < 0.25 * np.ptp(length)             # bucketed: far less padding than random batches


@pytest.mark.parametrize("n_layers", [1, 3])
def test_folded_standardisation_equals_explicit_one_with_gradients(n_layers, one_torch_thread):
    packed = pack_frames(clips(n_layers=n_layers))
    model = head(n_layers, packed=packed)
    xs, _ = packed.frames(np.arange(len(packed)), torch.device("cpu"))
    torch.testing.assert_close(model.projected(xs), explicit(model, xs), atol=1e-5, rtol=1e-5)
    grads = []
    for fn in (model.projected, lambda x: explicit(model, x)):
        model.zero_grad()
        (fn(xs) ** 2).sum().backward()
        grads.append({k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()})
    torch.testing.assert_close(grads[0]["proj.weight"], grads[1]["proj.weight"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(grads[0]["proj.bias"], grads[1]["proj.bias"], atol=1e-3, rtol=1e-4)
    if n_layers > 1:
        torch.testing.assert_close(grads[0]["layer_logits"], grads[1]["layer_logits"], atol=1e-3, rtol=1e-4)
    else:                                                 # one layer: weight 1, gradient 0 in the explicit form
        assert grads[0]["layer_logits"] is None and not grads[1]["layer_logits"].any()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_unpadded_batches_equal_padded_ones_and_each_clip_alone(n_layers, one_torch_thread):
    packed = pack_frames(clips(n_layers=n_layers, dtype=np.float16))
    model = head(n_layers, packed=packed)
    rows = np.array([5, 0, 17, 3, 11])
    cpu = torch.device("cpu")
    with torch.no_grad():
        flat = model.forward_frames(*packed.frames(rows, cpu))
        xs, mask = packed.batch(rows, cpu)
        garbage = [torch.where(mask[..., None], x, torch.full_like(x, 1e4)) for x in xs]
        padded = model(garbage, mask)
        alone = torch.cat([model.forward_frames(*packed.frames(rows[i:i + 1], cpu)) for i in range(len(rows))])
    torch.testing.assert_close(flat, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat, alone, atol=1e-5, rtol=1e-5)
    frames, length = packed.frames(rows, cpu)
    assert length.tolist() == packed.length[rows].tolist()
    expected = np.concatenate([np.stack([packed.layers[k][s:s + n].numpy() for k in range(n_layers)], 1)
                               for s, n in zip(packed.start[rows], packed.length[rows])])
    np.testing.assert_array_equal(np.stack([f.numpy() for f in frames], 1), expected)


def test_validation_logits_in_row_order_whatever_the_frame_budget(one_torch_thread):
    packed = pack_frames(clips())
    model = head(1, packed=packed)
    with torch.no_grad():
        alone = torch.cat([model.forward_frames(*packed.frames(np.array([i]), torch.device("cpu")))
                           for i in range(len(packed))])
    for budget in (1, 40, 1 << 14):                       # 1: one clip per batch (clips are longer than the budget)
        torch.testing.assert_close(_logits(model, packed, torch.device("cpu"), frames=budget), alone,
                                   atol=1e-5, rtol=1e-5)


def test_statistics_from_training_rows_only_and_from_base_sums():
    data = clips(n_layers=2, dtype=np.float16)
    packed = pack_frames(data)
    train = np.array([2, 3, 9, 14, 20, 7, 7])             # scattered, unsorted, one clip twice
    mean, std = _frame_stats(packed.subset(train))
    frames = np.concatenate([data[i] for i in train]).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-5)
    base = packed.with_sums()
    assert torch.equal(_frame_stats(base.subset(train))[0], mean)
    assert torch.equal(_frame_stats(base.subset(train))[1], std)
    old = legacy._frame_stats(legacy.Packed(packed.layers, packed.start[train], packed.length[train]))
    assert torch.equal(old[0], mean) and torch.equal(old[1], std)
    everything = np.concatenate(data).astype(np.float64).mean(0)
    assert not np.allclose(mean.numpy(), everything, atol=1e-3)
    assert packed.rows(np.array([], dtype=np.int64)).shape == (0,)
    assert [tuple(s.shape) for s in packed.subset([]).with_sums().sums[0]] == [(0, D), (0, D)]


def _labelled(n_speakers=6, per_speaker=8, seed=0, n_layers=1):
    """Clips with a class direction in a few frames, speakers and labels, utterances."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal((3, D)) * 2
    data, y, spk = [], [], []
    for s in range(n_speakers):
        for i in range(per_speaker):
            T = int(rng.integers(10, 30))
            f = rng.standard_normal((T, n_layers, D))
            f[:4, -1] += direction[i % 3]
            data.append((f[:, 0] if n_layers == 1 else f).astype(np.float32))
            y.append(i % 3)
            spk.append(s)
    names = ["neutral", "happy", "sad"]
    utts = [Utterance(id=f"u{i}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{s:02d}", gender=None,
                      label=names[c], label_raw=str(c)) for i, (c, s) in enumerate(zip(y, spk))]
    return data, np.array(y), np.array(spk), utts


@pytest.mark.parametrize("n_layers", [1, 3])
def test_new_loop_matches_the_previous_one_on_the_same_batches(n_layers, one_torch_thread):
    data, y, spk, _ = _labelled(n_layers=n_layers)
    train, val = spk < 5, spk == 5
    kw = dict(random_state=4, threads=1, max_epochs=3, patience=3, batch_size=8, device="cpu")
    fits = []
    for module in (legacy, attention):
        packed = module.pack_frames(data)
        est = module.AttentionProbe(**kw)
        est._fit_packed(packed.subset(np.flatnonzero(train)), y[train], packed.subset(np.flatnonzero(val)), y[val])
        fits.append(est)
    old, new = fits
    assert [h["val_uar"] for h in new.history_] == [h["val_uar"] for h in old.history_]
    np.testing.assert_allclose([h["train_loss"] for h in new.history_], [h["train_loss"] for h in old.history_],
                               rtol=1e-4)
    np.testing.assert_allclose(new.predict_proba(data), old.predict_proba(data), atol=1e-4)
    np.testing.assert_allclose(new.layer_weights_, old.layer_weights_, atol=1e-5)


def test_packed_with_sums_trains_exactly_as_without(one_torch_thread):
    data, y, spk, _ = _labelled()
    packed = pack_frames(data)
    kw = dict(random_state=2, threads=1, max_epochs=2, patience=2, device="cpu")
    tr, va = np.flatnonzero(spk < 5), np.flatnonzero(spk == 5)
    a = AttentionProbe(**kw)._fit_packed(packed.subset(tr), y[tr], packed.subset(va), y[va])
    b = AttentionProbe(**kw)._fit_packed(packed.with_sums().subset(tr), y[tr], packed.with_sums().subset(va), y[va])
    assert a.history_ == b.history_
    np.testing.assert_array_equal(a.predict_proba(data), b.predict_proba(data))


def test_fold_runner_validates_on_training_speakers_only_and_is_seeded(monkeypatch, one_torch_thread):
    data, y, spk, utts = _labelled(n_speakers=9, per_speaker=6)
    folds = make_folds(utts, "speaker-kfold:3")
    starts = np.concatenate([[0], np.cumsum([len(c) for c in data])[:-1]])
    seen = []
    fit = AttentionProbe._fit_packed

    def spy(self, packed: Packed, y_, val_packed, y_val):
        seen.append((np.searchsorted(starts, packed.start), np.searchsorted(starts, val_packed.start)))
        return fit(self, packed, y_, val_packed, y_val)

    monkeypatch.setattr(AttentionProbe, "_fit_packed", spy)
    kw = dict(threads=1, max_epochs=2, seeds=(0,))
    first = probe_attention(data, utts, folds, layers=[0], **kw)
    for (train, val), f in zip(seen, folds):
        assert len(val) and not set(val) & set(train) and not set(val) & set(f.test) and not set(train) & set(f.test)
        assert set(val) | set(train) == set(f.train)
        assert not set(spk[val]) & set(spk[train])         # whole speakers
    second = probe_attention(data, utts, folds, layers=[0], **kw)
    assert [r["uar"] for r in first.records] == [r["uar"] for r in second.records]
    assert [r["best_epoch"] for r in first.records] == [r["best_epoch"] for r in second.records]
