"""Attention-pooling probe: finds a short cue that mean pooling dilutes; masking; determinism; fold runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifiers.estimators.attention import AttentionError, AttentionProbe, probe_attention
from classifiers.results.records import Record
from featstore.corpora.base import Utterance
from featstore.folds import make_folds

D, CLASSES = 16, 4


def short_cue_clips(n_speakers=16, per_class=6, seed=0, cue_layer=None, n_layers=1):
    """Clips of 60-100 frames of noise plus a speaker offset; 5 consecutive frames at a random
    place carry a salient direction plus a class direction (only in `cue_layer` when several)."""
    rng = np.random.default_rng(seed)
    salient = rng.standard_normal(D)
    salient /= np.linalg.norm(salient)
    directions = rng.standard_normal((CLASSES, D))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    offsets = 0.5 * rng.standard_normal((n_speakers, D))
    clips, y, speakers, where = [], [], [], []
    for s in range(n_speakers):
        for c in range(CLASSES):
            for _ in range(per_class):
                T = int(rng.integers(60, 101))
                f = rng.standard_normal((T, n_layers, D)) + offsets[s]
                a = int(rng.integers(0, T - 5))
                f[a:a + 5, cue_layer or 0] += 2.5 * (salient + directions[c])
                clips.append((f[:, 0] if n_layers == 1 else f).astype(np.float32))
                y.append(c)
                speakers.append(s)
                where.append(a)
    return clips, np.array(y), np.array(speakers), np.array(where)


def test_attention_beats_mean_pooled_logistic_regression_on_held_out_speakers():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clips, y, spk, where = short_cue_clips()
    train, test = spk < 12, spk >= 12                   # 4 held-out speakers
    Xtr = [c for c, t in zip(clips, train) if t]
    Xte = [c for c, t in zip(clips, test) if t]
    probe = AttentionProbe(random_state=0, threads=1).fit(Xtr, y[train], groups=spk[train])
    acc_att = float((probe.predict(Xte) == y[test]).mean())
    pooled = lambda xs: np.stack([x.mean(0) for x in xs])  # noqa: E731
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(pooled(Xtr), y[train])
    acc_lr = float((lr.predict(pooled(Xte)) == y[test]).mean())
    assert acc_att >= 0.7 and acc_att >= acc_lr + 0.3, (acc_att, acc_lr)
    # early stopping ran on validation speakers, and the head looks at the cue
    assert probe.history_[0]["val_uar"] is not None and probe.best_epoch_ <= probe.n_epochs_ <= probe.max_epochs
    att = probe.attention(Xte)
    on_cue = np.mean([a[w:w + 5].sum(0).max() for a, w in zip(att, where[test])])
    assert on_cue > 0.4                                 # 5 of 60-100 frames: uniform would give ~0.06


def test_padding_is_masked_and_lists_equal_padded_arrays():
    clips, y, spk, _ = short_cue_clips(n_speakers=4, per_class=3)
    probe = AttentionProbe(random_state=1, threads=1, max_epochs=3).fit(clips, y)
    T = max(len(c) for c in clips)
    padded = np.full((len(clips), T, D), 1e3, dtype=np.float32)   # garbage in the padding
    for i, c in enumerate(clips):
        padded[i, :len(c)] = c
    lengths = [len(c) for c in clips]
    np.testing.assert_allclose(probe.predict_proba(padded, lengths=lengths), probe.predict_proba(clips), atol=1e-5)
    att = probe.attention(padded, lengths=lengths)
    assert [a.shape for a in att] == [(n, probe.heads) for n in lengths]
    np.testing.assert_allclose([a.sum(0) for a in att], 1.0, atol=1e-5)


def test_seeded_deterministic_and_global_rng_untouched():
    clips, y, spk, _ = short_cue_clips(n_speakers=6, per_class=3)
    state = torch.get_rng_state()
    a = AttentionProbe(random_state=3, threads=1, max_epochs=4).fit(clips, y, groups=spk)
    b = AttentionProbe(random_state=3, threads=1, max_epochs=4).fit(clips, y, groups=spk)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a.predict_proba(clips), b.predict_proba(clips))
    assert a.history_ == b.history_


def test_layer_weights_favour_the_layer_with_the_cue():
    clips, y, spk, _ = short_cue_clips(n_speakers=10, per_class=4, cue_layer=2, n_layers=3)
    probe = AttentionProbe(random_state=0, threads=1, max_epochs=24, patience=24).fit(clips, y, groups=spk)
    assert probe.layer_weights_.shape == (3,) and probe.layer_weights_.sum() == pytest.approx(1, abs=1e-5)
    assert probe.layer_weights_.argmax() == 2


def test_input_errors():
    with pytest.raises(AttentionError, match="labels"):
        AttentionProbe().fit([np.zeros((3, 4), np.float32)] * 2, [0])
    with pytest.raises(AttentionError, match="same L and D"):
        AttentionProbe().fit([np.zeros((3, 4)), np.zeros((3, 5))], [0, 1])
    with pytest.raises(AttentionError, match="one class"):
        AttentionProbe().fit([np.zeros((3, 4))] * 2, [0, 0])


def _store_with_frames(tmp_path, clips, y, spk, layer=2):
    """A real FeatureStore (3 layers, frames stored for `layer`) holding the clips."""
    from featstore.store import Batch, assemble, open_store, parts_dir, write_part

    names = ["neutral", "happy", "sad", "angry"]
    utts = [Utterance(id=f"u{i:04d}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{s:02d}",
                      gender=None, label=names[c], label_raw=str(c)) for i, (c, s) in enumerate(zip(y, spk))]
    stack = lambda f: np.stack([f.mean(0)] * 3).astype(np.float32)  # noqa: E731
    batch = Batch(utts, np.stack([stack(c) for c in clips]), np.stack([stack(c) for c in clips]),
                  np.array([len(c) * 320 for c in clips]), np.array([len(c) for c in clips]),
                  frames={layer: [c.astype(np.float16) for c in clips]})
    config = {"model_id": "synthetic", "frame_layers": [layer], "num_layers": 3, "hidden_size": D}
    path = tmp_path / "ravdess.h5"
    parts_dir(path).mkdir(parents=True)
    write_part(parts_dir(path) / "part-0-0.h5", batch, config)
    assemble(path, config, corpus="ravdess")
    return open_store(path)


def test_fold_runner_over_a_store(tmp_path):
    clips, y, spk, _ = short_cue_clips(n_speakers=9, per_class=3)
    store = _store_with_frames(tmp_path, clips, y, spk)
    folds = make_folds(store.utterances, "speaker-kfold:3")
    res = probe_attention(store, store.utterances, folds, layers=[-1], seeds=(0, 1), threads=1, max_epochs=3)
    records = res.records
    assert [(r["fold"], r["seed"]) for r in records] == [(f.name, s) for s in (0, 1) for f in folds]
    for r, f in zip(records, [f for _ in (0, 1) for f in folds]):
        assert r["n_test"] == len(f.test) and r["n_train"] + r["n_val"] == len(f.train) and r["n_val"] > 0
        assert 0 <= r["uar"] <= 1 and np.asarray(r["confusion"]).sum() == len(f.test)
        assert r["classifier"] == "attention" and r["layer"] == 2 and r["layers"] == [2]
        assert set(Record.__annotations__) <= set(r)          # the one record every classifier writes
    (row,) = res.summary()                              # the record format of classifiers.runs.crossval
    assert row["classifier"] == "attention" and row["n"] == 6 and 0 <= row["uar"] <= 1
    with pytest.raises(AttentionError, match="no frame-level features"):
        probe_attention(store, store.utterances, folds, layers=[1])


def test_fold_runner_sweeps_layers_or_mixes_them():
    clips, y, spk, _ = short_cue_clips(n_speakers=6, per_class=2, cue_layer=1, n_layers=2)
    names = ["neutral", "happy", "sad", "angry"]
    utts = [Utterance(id=f"u{i}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{s}", gender=None,
                      label=names[c], label_raw=str(c)) for i, (c, s) in enumerate(zip(y, spk))]
    folds = make_folds(utts, "speaker-kfold:2")
    kw = dict(threads=1, max_epochs=2)
    sweep = probe_attention(clips, utts, folds, layers=[5, 7], **kw)
    assert [r["layer"] for r in sweep.records] == [5, 5, 7, 7]
    mixed = probe_attention(clips, utts, folds, layers=[5, 7], mix_layers=True, **kw)
    assert [r["layer"] for r in mixed.records] == ["5+7", "5+7"]
    assert all(len(r["layer_weights"]) == 2 for r in mixed.records)
