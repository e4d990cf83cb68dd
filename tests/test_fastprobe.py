"""The fast layer sweep keeps its meaning: converged fits, C chosen on training speakers only, one layer
held at a time; class weights and per-speaker normalisation as documented; XGBoost validates on
training speakers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

import classifiers.estimators.linear as linear
from classifiers.runs.crossval import ProbeTask, probe_layers, run_classifier
from featstore.folds import make_folds
from tests.test_probe import synthetic


def anisotropic(n_speakers=9, per=16, dim=40, seed=0):
    """(X (n, dim) with a few dominant directions and a large offset, y (n,) in 0..3, speakers (n,))."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per
    y = np.arange(n) % 4
    speakers = np.repeat(np.arange(n_speakers), per)
    mixing = rng.standard_normal((3, dim)) * 4.0
    X = (rng.standard_normal((n, dim)) + rng.standard_normal((n, 3)) @ mixing + 0.8 * rng.standard_normal((4, dim))[y]
         + 0.5 * rng.standard_normal((n_speakers, dim))[speakers] + 50.0)
    return X.astype(np.float32), y, speakers


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_fixed_C_refit_is_sklearns_converged_solution(C):
    X, y, _ = anisotropic()
    train = np.arange(len(y)) < 110
    sweep = linear.sweep_layer(X, y, 4, [train], C=C, tol=1e-6)
    sc = StandardScaler().fit(X[train])
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(sc.transform(X[train]), y[train])
    np.testing.assert_allclose(sweep.proba[0], ref.predict_proba(sc.transform(X)), atol=2e-3)
    np.testing.assert_allclose(sweep.mean[0], sc.mean_, rtol=1e-5)
    assert sweep.C[0] == C


def test_selection_is_sklearns_choice_on_the_same_inner_folds_and_ignores_test_rows():
    X, y, g = anisotropic(seed=3)
    X = X + 3.0 * np.random.default_rng(1).standard_normal(X.shape).astype(np.float32)   # the Cs score differently
    Cs = (1.0, 0.001, 0.1, 0.01)                                        # any order: ties go to the C listed first
    outer = [g != 0, g != 1]
    inner = linear.selection_masks(outer, g, y, 3, 0)
    sweep = linear.sweep_layer(X, y, 4, outer, Cs=Cs, inner=inner)
    for f, tm in enumerate(outer):
        ref = np.zeros(len(Cs))
        for m in inner[f]:
            assert not m[~tm].any()                                     # inner training rows are outer training rows
            val = tm & ~m
            assert not set(g[m]) & set(g[val])
            sc = StandardScaler().fit(X[m])
            for ci, C in enumerate(Cs):
                clf = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(sc.transform(X[m]), y[m])
                ref[ci] += balanced_accuracy_score(y[val], clf.predict(sc.transform(X[val]))) / len(inner[f])
        assert len(set(np.round(ref, 6))) > 1
        assert np.abs(sweep.scores[f] - ref).max() < 1 / 32               # within one validation clip
        assert sweep.C[f] == Cs[int(np.argmax(ref))]
    # the outer test speakers' features never reach the choice nor the refit's training
    moved = X.copy()
    moved[g == 0] = 1e3 * np.random.default_rng(2).standard_normal(moved[g == 0].shape)
    again = linear.sweep_layer(moved, y, 4, outer[:1], Cs=Cs, inner=inner[:1])
    np.testing.assert_array_equal(again.scores[0], sweep.scores[0])
    np.testing.assert_allclose(again.coef[0], sweep.coef[0], atol=1e-4)


def test_balanced_class_weight_is_sklearns():
    X, y, _ = anisotropic(seed=5)
    keep = (y != 3) | (np.arange(len(y)) % 3 == 0)                      # class 3 rare
    X, y = X[keep], y[keep]
    train = np.arange(len(y)) < 90
    sweep = linear.sweep_layer(X, y, 4, [train], C=0.1, class_weight="balanced", tol=1e-6)
    sc = StandardScaler().fit(X[train])
    ref = LogisticRegression(C=0.1, class_weight="balanced", tol=1e-10, max_iter=10000).fit(sc.transform(X[train]),
                                                                                           y[train])
    np.testing.assert_allclose(sweep.proba[0], ref.predict_proba(sc.transform(X)), atol=2e-3)
    plain = linear.sweep_layer(X, y, 4, [train], C=0.1, tol=1e-6)
    assert np.abs(plain.proba[0] - sweep.proba[0]).max() > 0.01       # the weights change the fit
    probe = linear.LogRegProbe(C=0.1, class_weight={0: 1.0, 1: 1.0, 2: 1.0, 3: 5.0}).fit(X[train], y[train])
    ref = LogisticRegression(C=0.1, class_weight={3: 5.0}, tol=1e-10, max_iter=10000).fit(sc.transform(X[train]),
                                                                                         y[train])
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(sc.transform(X)), atol=2e-3)


def test_speaker_normalisation_uses_each_speakers_own_rows_only():
    X, _, g = anisotropic()
    Z = linear.speaker_normalise(X, g)
    for s in np.unique(g):
        np.testing.assert_allclose(Z[g == s].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(Z[g == s].std(0), 1, atol=1e-3)
    other = X.copy()
    other[g != 0] *= 7.0
    np.testing.assert_array_equal(linear.speaker_normalise(other, g)[g == 0], Z[g == 0])


class OneLayerAtATime:
    """A store stand-in that records which layers are read, and refuses to hand out all of them at once."""

    def __init__(self, X):
        self.X, self.reads = X, []

    def pooled(self, layer, stat="mean"):
        self.reads.append(layer)
        return self.X[:, layer].copy()

    def pooled_all(self, stat="mean", layers=None):
        raise AssertionError("the sweep must not read every layer at once")


@pytest.mark.parametrize("classifier", ["logreg", "xgboost"])
def test_sweeps_hold_one_layer_at_a_time_and_match_the_in_memory_result(classifier):
    X, utts = synthetic(n_speakers=8, per=12)
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    layers = [1, 2] if classifier == "xgboost" else [0, 1, 2, 3]
    store = OneLayerAtATime(X[:, layers])
    params = {"n_estimators": 10} if classifier == "xgboost" else {}
    from_store = run_classifier(classifier, ProbeTask(store, utts, folds, list(range(len(layers))), seeds=(0, 1),
                                                      C=0.1, params=params))
    assert store.reads == list(range(len(layers)))                      # each layer read once, for both seeds
    in_memory = run_classifier(classifier, ProbeTask(X[:, layers], utts, folds, list(range(len(layers))),
                                                     seeds=(0, 1), C=0.1, params=params))
    key = lambda r: (r["layer"], r["fold"], r["seed"])  # noqa: E731
    assert [(key(r), r["uar"]) for r in sorted(from_store.records, key=key)] == \
           [(key(r), r["uar"]) for r in sorted(in_memory.records, key=key)]


def test_probe_options_speaker_norm_and_balanced_reach_the_fits(monkeypatch):
    X, utts = synthetic(n_speakers=8, per=12)
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    seen = []
    real = linear.sweep_layer

    def spy(X_, *a, **kw):
        seen.append((X_, kw.get("class_weight")))
        return real(X_, *a, **kw)

    monkeypatch.setattr(linear, "sweep_layer", spy)
    res = run_classifier("logreg", ProbeTask(X[:, [2]], utts, folds, [2], C=0.1,
                                             params={"speaker_norm": True, "class_weight": "balanced"}))
    speakers = np.array([u.speaker for u in utts])
    np.testing.assert_allclose(seen[0][0], linear.speaker_normalise(X[:, 2], speakers))
    assert seen[0][1] == "balanced"
    assert res.best()["uar"] > 0.8


def test_xgboost_stops_early_on_training_speakers_only(monkeypatch):
    from classifiers.estimators import boosting

    X, utts = synthetic(n_speakers=8, per=12)
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    speakers = np.array([u.speaker for u in utts])
    fits = []
    real = boosting.XGBProbe.fit

    def spy(self, Xt, yt, eval_set=None):
        fits.append((Xt, eval_set))
        return real(self, Xt, yt, eval_set=eval_set)

    monkeypatch.setattr(boosting.XGBProbe, "fit", spy)
    res = probe_layers(X[:, [2]], utts, folds, [2], classifier="xgboost")
    assert len(fits) == len(folds)
    for (Xt, (Xv, _)), f in zip(fits, folds):
        rows = lambda A: {tuple(np.round(r, 5)) for r in A}  # noqa: E731
        train_rows, val_rows = rows(Xt), rows(Xv)
        test_rows = rows(X[f.test, 2])
        assert val_rows and not val_rows & test_rows and not val_rows & train_rows
        val_speakers = {speakers[i] for i in f.train if tuple(np.round(X[i, 2], 5)) in val_rows}
        assert val_speakers and val_speakers <= set(speakers[f.train])
    assert all(r["n_train"] < len(f.train) for r, f in zip(res.records, folds))



def test_folds_smaller_than_the_preconditioner_rank_are_solved():
    """Wide features (88, like eGeMAPS) and outer folds of unequal size under 64 rows: one common rank."""
    from classifiers.estimators.linear import sweep_layer

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 14)
    X = (rng.normal(size=(42, 88)) + y[:, None] * 0.8).astype(np.float32)
    masks = [np.arange(42) % 7 != 0, np.arange(42) % 7 > 1]          # 36 and 30 training rows
    sweep = sweep_layer(X, y, 3, masks, C=1.0)
    assert sweep.proba.shape == (2, 42, 3) and np.isfinite(sweep.proba).all()
    assert (sweep.predict[0] == y).mean() > 0.8
