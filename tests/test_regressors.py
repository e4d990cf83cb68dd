"""The regressors of issue 25 behind one registry (`classifiers.estimators.regression.REGRESSORS`): XGBoost with
early stopping on held-out training speakers, cosine kNN regression, the attention pooler with a
regression head (MSE or CCC loss), beside the ridge probe tested in tests/test_regression.py.

Each passes scikit-learn's `check_estimator` (multi-output and 1-d targets), learns a planted
linear target on held-out speakers, and is checked against what it claims to do: XGBoost stops on
the rows of the speakers it drew from the groups it was given and grows its trees on the others;
kNN regression equals a brute-force numpy implementation; the attention regressor trains on
variable-length frame sequences through the same sklearn API."""

from __future__ import annotations

from functools import partial
from unittest import SkipTest

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers.estimators.attention import AttentionRegressorProbe, ccc_loss
from classifiers.estimators.boosting import XGBRegressorProbe
from classifiers.estimators.regression import (
    FRAME_REGRESSORS,
    REGRESSORS,
    KNNRegressorProbe,
    RegressionError,
    RidgeProbe,
    ccc,
    ccc_by_layer,
    ccc_interval,
    check_regressor,
    fold_predictions,
    make_regressor,
    speaker_validation,
    sweep_ridge,
)

# small, fast settings; single-threaded (the test machine is shared)
FAST = {
    "ridge": {},
    "xgboost": dict(n_estimators=60, n_jobs=1),
    "knn": {},
    "attention": dict(hidden=16, heads=2, max_epochs=15, threads=1),
}
ESTIMATORS = [
    XGBRegressorProbe(n_estimators=20, n_jobs=1),
    XGBRegressorProbe(n_estimators=20, n_jobs=1, multi_strategy="multi_output_tree"),
    KNNRegressorProbe(),
    KNNRegressorProbe(n_neighbors=3, weighting="similarity", center=None),
    AttentionRegressorProbe(hidden=16, heads=2, max_epochs=10, threads=1),
    AttentionRegressorProbe(hidden=16, heads=2, max_epochs=10, threads=1, loss="ccc"),
]

# checks that sklearn itself skips on this machine (as in tests/test_estimators.py): xfail with the reason
CANNOT_RUN_HERE = {"check_array_api_input": "runs only with SCIPY_ARRAY_API=1 set before scipy is first imported"}


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except SkipTest as e:
        name = (check.func if isinstance(check, partial) else check).__name__
        if name not in CANNOT_RUN_HERE:
            raise
        pytest.xfail(f"{name}: {CANNOT_RUN_HERE[name]} ({e})")


# ------------------------------------------------------------------------------------------- data

def planted(n_speakers=24, per=25, dim=16, targets=3, noise=0.1, seed=0):
    """X (n, dim): a latent direction z (n, 3) on the unit sphere, embedded by a random orthonormal
    map, plus noise; Y (n, targets) = z @ B (linear in the features); groups (n,) speakers."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per
    g = np.repeat([f"spk{s}" for s in range(n_speakers)], per)
    z = rng.standard_normal((n, 3))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    A = np.linalg.qr(rng.standard_normal((dim, 3)))[0].T                 # (3, dim), orthonormal rows
    X = 3 * z @ A + noise * rng.standard_normal((n, dim))
    Y = z @ rng.standard_normal((3, targets))
    return X, Y, g


def held_out(g, k=6):
    return np.isin(g, sorted(set(g))[-k:])


# ------------------------------------------------------------------------------------------- registry

def test_registry_names_classes_and_one_line_errors():
    assert list(REGRESSORS) == ["ridge", "xgboost", "knn", "attention"]
    assert REGRESSORS["ridge"] is RidgeProbe and REGRESSORS["xgboost"] is XGBRegressorProbe
    assert REGRESSORS["knn"] is KNNRegressorProbe and REGRESSORS["attention"] is AttentionRegressorProbe
    assert set(FRAME_REGRESSORS) <= set(REGRESSORS)
    msg = "unknown regressor 'logreg': use one of ridge, xgboost, knn, attention"
    with pytest.raises(RegressionError, match=msg):
        check_regressor("logreg")
    with pytest.raises(RegressionError, match=msg):
        REGRESSORS["logreg"]
    assert "logreg" not in REGRESSORS and "knn" in REGRESSORS
    est = make_regressor("knn", n_neighbors=3)
    assert isinstance(est, KNNRegressorProbe) and est.n_neighbors == 3
    with pytest.raises(RegressionError, match="regressor 'knn' does not take alpha .*n_neighbors"):
        make_regressor("knn", alpha=1.0)
    assert "\n" not in msg


@pytest.mark.parametrize("name", list(REGRESSORS))
@pytest.mark.parametrize("targets", [1, 3])
def test_each_regressor_learns_a_planted_linear_target_on_held_out_speakers(name, targets):
    X, Y, g = planted(targets=targets)
    y = Y[:, 0] if targets == 1 else Y
    test = held_out(g)
    est = make_regressor(name, **FAST[name]).fit(X[~test], y[~test], groups=g[~test])
    pred = est.predict(X[test])
    assert pred.shape == y[test].shape
    assert np.min(ccc(y[test], pred)) > 0.8
    # the same estimator on permuted targets finds nothing: the score above is learned, not given
    perm = np.random.default_rng(1).permutation((~test).sum())
    est = make_regressor(name, **FAST[name]).fit(X[~test], y[~test][perm], groups=g[~test])
    assert np.max(ccc(y[test], est.predict(X[test]))) < 0.4


def test_fold_predictions_is_the_sweep_layout_for_any_regressor():
    X, Y, g = planted(n_speakers=10, per=12)
    masks = [~np.isin(g, [f"spk{2 * k}", f"spk{2 * k + 1}"]) for k in range(3)]
    ridge = fold_predictions("ridge", X, Y, masks, g, seed=4)
    np.testing.assert_allclose(ridge, sweep_ridge(X, Y, masks, g, seed=4).predict[0], rtol=1e-7, atol=1e-9)
    knn = fold_predictions("knn", X, Y[:, 0], masks, g, n_neighbors=3)
    assert knn.shape == (3, len(X))
    for f, m in enumerate(masks):
        np.testing.assert_allclose(knn[f], KNNRegressorProbe(n_neighbors=3).fit(X[m], Y[m, 0]).predict(X))
    xgb = fold_predictions("xgboost", X, Y, masks[:1], g, seed=2, n_estimators=10, n_jobs=1)
    want = XGBRegressorProbe(n_estimators=10, n_jobs=1, random_state=2).fit(X[masks[0]], Y[masks[0]], groups=g[masks[0]])
    np.testing.assert_allclose(xgb[0], want.predict(X), rtol=1e-6)
    with pytest.raises(RegressionError, match="train_masks must be non-empty"):
        fold_predictions("knn", X, Y, [np.zeros(len(X), bool)], g)
    with pytest.raises(RegressionError, match="unknown regressor 'svm'"):
        fold_predictions("svm", X, Y, masks, g)


# ------------------------------------------------------------------------------------------- XGBoost

def test_xgb_early_stopping_uses_only_training_speakers(monkeypatch):
    import xgboost

    X, Y, g = planted()
    test = held_out(g)
    seen = []
    real = xgboost.XGBRegressor.fit

    def spy(self, X_, y_, **kw):
        seen.append((np.asarray(X_), [np.asarray(a) for a, _ in kw.get("eval_set") or []]))
        return real(self, X_, y_, **kw)

    monkeypatch.setattr(xgboost.XGBRegressor, "fit", spy)
    Xtr, Ytr, gtr = X[~test], Y[~test], g[~test]
    est = XGBRegressorProbe(n_estimators=400, learning_rate=0.3, early_stopping_rounds=5, n_jobs=1)
    est.fit(Xtr, Ytr, groups=gtr)
    (grown, evals), = seen
    assert len(evals) == 1
    # the trees grew on fit_rows_, stopped on val_rows_: a partition of the rows given, by whole speakers
    np.testing.assert_array_equal(grown, Xtr[est.fit_rows_].astype(np.float32))
    np.testing.assert_array_equal(evals[0], Xtr[est.val_rows_].astype(np.float32))
    assert sorted(np.concatenate([est.fit_rows_, est.val_rows_]).tolist()) == list(range(len(Xtr)))
    val_speakers = set(gtr[est.val_rows_])
    assert est.val_groups_ == sorted(val_speakers) and len(val_speakers) == round(0.15 * len(set(gtr)))
    assert not val_speakers & set(gtr[est.fit_rows_])
    assert val_speakers <= set(gtr) and not val_speakers & set(g[test])       # never a test speaker
    assert est.best_iteration_ is not None and est.best_iteration_ < 399      # it did stop early
    assert est.model_.get_booster().num_boosted_rounds() < 400

    # without groups: no validation, every tree on every row
    seen.clear()
    plain = XGBRegressorProbe(n_estimators=30, n_jobs=1).fit(Xtr, Ytr)
    assert plain.best_iteration_ is None and plain.val_groups_ == [] and not len(plain.val_rows_)
    assert len(seen[0][0]) == len(Xtr) and seen[0][1] == []
    assert plain.model_.get_booster().num_boosted_rounds() == 30
    # one speaker: nothing can be held out speaker-independently
    one = XGBRegressorProbe(n_estimators=10, n_jobs=1).fit(Xtr, Ytr, groups=np.full(len(Xtr), "s"))
    assert one.best_iteration_ is None and len(one.fit_rows_) == len(Xtr)
    # an explicit eval_set is used as given
    seen.clear()
    XGBRegressorProbe(n_estimators=10, n_jobs=1).fit(Xtr, Ytr, eval_set=(X[test], Y[test]))
    np.testing.assert_array_equal(seen[0][1][0], X[test].astype(np.float32))
    with pytest.raises(RegressionError, match="eval_set has 1 target"):
        XGBRegressorProbe(n_estimators=5, n_jobs=1).fit(Xtr, Ytr, eval_set=(X[test], Y[test, 0]))


def test_routed_groups_reach_the_early_stopping_split():
    import sklearn
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y, g = planted(n_speakers=12, per=10)
    seen = []
    with sklearn.config_context(enable_metadata_routing=True):
        grids = {"xgboost": {"xgbregressorprobe__max_depth": [2, 4]},
                 "attention": {"attentionregressorprobe__hidden": [8, 16]}}
        for name, grid in grids.items():
            quick = dict(n_estimators=20, n_jobs=1) if name == "xgboost" else dict(heads=2, max_epochs=3, threads=1)
            est = make_regressor(name, **quick).set_fit_request(groups=True)
            search = GridSearchCV(make_pipeline(StandardScaler(), est), grid, cv=GroupKFold(3))
            search.fit(X, Y, groups=g)
            seen.append(search.best_estimator_[-1])
    xgb, att = seen
    assert xgb.val_groups_ and set(xgb.val_groups_) <= set(g) and xgb.best_iteration_ is not None
    assert att.val_ccc_ is not None                                    # early stopping on held-out speakers


def test_speaker_validation_moves_whole_speakers():
    g = np.repeat(["a", "b", "c", "d", "e", "f", "g", "h"], 5)
    tr, va = speaker_validation(g, len(g), 0.25, seed=3)
    assert len(set(g[va])) == 2 and not set(g[va]) & set(g[tr]) and len(tr) + len(va) == len(g)
    assert speaker_validation(np.full(6, "x"), 6) is None
    with pytest.raises(RegressionError, match="one speaker per row: 40 rows"):
        speaker_validation(g[:-1], len(g))


# ------------------------------------------------------------------------------------------- kNN

def brute_knn(Xtr, Ytr, Xq, k, weighting, center):
    """The kNN regression written out in numpy: centre, normalise, cosine, top k, (weighted) mean."""
    Xtr, Xq = np.asarray(Xtr, np.float64), np.asarray(Xq, np.float64)
    c = Xtr.mean(0) if center else 0.0
    a = (Xtr - c) / np.linalg.norm(Xtr - c, axis=1, keepdims=True)
    b = (Xq - c) / np.linalg.norm(Xq - c, axis=1, keepdims=True)
    sims = b @ a.T
    k = min(k, len(Xtr))
    top = np.argsort(-sims, axis=1)[:, :k]
    w = np.ones(top.shape) if weighting == "uniform" else (1 + np.take_along_axis(sims, top, 1)) / 2
    return np.einsum("qk,qkt->qt", w, Ytr[top]) / w.sum(1, keepdims=True)


@pytest.mark.parametrize("k,weighting,center", [(1, "uniform", "global"), (7, "uniform", "global"),
                                                 (7, "similarity", "global"), (5, "similarity", None),
                                                 (500, "uniform", "global")])
def test_knn_regression_equals_brute_force_numpy(k, weighting, center):
    rng = np.random.default_rng(k)
    Xtr, Xq = rng.standard_normal((150, 12)) + 2.0, rng.standard_normal((40, 12)) + 2.0
    Y = rng.standard_normal((150, 3))
    est = KNNRegressorProbe(n_neighbors=k, weighting=weighting, center=center).fit(Xtr, Y)
    want = brute_knn(Xtr, Y, Xq, k, weighting, center)
    np.testing.assert_allclose(est.predict(Xq), want, rtol=1e-5, atol=1e-6)
    one_d = KNNRegressorProbe(n_neighbors=k, weighting=weighting, center=center).fit(Xtr, Y[:, 1])
    np.testing.assert_allclose(one_d.predict(Xq), want[:, 1], rtol=1e-5, atol=1e-6)
    assert one_d.predict(Xq).shape == (40,)
    nb = est.kneighbors(Xq)
    assert nb.index.shape == (40, min(k, 150)) and nb.valid.all()


# ------------------------------------------------------------------------------------------- attention

def planted_clips(n_speakers=20, per=15, dim=8, seed=0):
    """Variable-length clips (T_i, dim) whose frames carry a latent z_i (3,) plus frame noise;
    targets (n, 3) = z @ B; groups (n,)."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per
    g = np.repeat([f"spk{s}" for s in range(n_speakers)], per)
    z = rng.standard_normal((n, 3))
    A = rng.standard_normal((3, dim))
    lengths = rng.integers(3, 12, n)
    clips = [(z[i] @ A + 0.5 * rng.standard_normal((lengths[i], dim))).astype(np.float32) for i in range(n)]
    return clips, z @ rng.standard_normal((3, 3)), g, lengths


@pytest.mark.parametrize("loss", ["mse", "ccc"])
def test_attention_regressor_on_frames_sklearn_api(loss):
    clips, Y, g, lengths = planted_clips()
    test = held_out(g, 4)
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    est = AttentionRegressorProbe(hidden=16, heads=2, max_epochs=25, threads=1, loss=loss)
    assert clone(est).get_params() == est.get_params() and est.get_params()["loss"] == loss
    est.fit([clips[i] for i in tr], Y[tr], groups=g[tr])
    assert est.val_ccc_ is not None and 1 <= est.best_epoch_ <= est.n_epochs_
    assert all("val_ccc" in h for h in est.history_)
    pred = est.predict([clips[i] for i in te])
    assert pred.shape == (len(te), 3) and np.min(ccc(Y[te], pred)) > 0.8
    # a padded array with lengths is the same clips
    T = int(lengths.max())
    padded = np.zeros((len(te), T, clips[0].shape[1]), dtype=np.float32)
    for j, i in enumerate(te):
        padded[j, :lengths[i]] = clips[i]
    np.testing.assert_allclose(est.predict(padded, lengths[te]), pred, rtol=1e-5, atol=1e-5)
    # deterministic: a clone fitted again gives the same predictions; 1-d targets give (n,)
    again = clone(est).fit([clips[i] for i in tr], Y[tr], groups=g[tr])
    np.testing.assert_allclose(again.predict([clips[i] for i in te]), pred, rtol=1e-6, atol=1e-6)
    one = clone(est).set_params(max_epochs=3).fit([clips[i] for i in tr], Y[tr, 0])
    assert one.predict([clips[i] for i in te]).shape == (len(te),) and one.val_ccc_ is None


def test_attention_regressor_errors_are_one_line():
    clips, Y, g, _ = planted_clips(n_speakers=4, per=5)
    est = AttentionRegressorProbe(hidden=8, heads=2, max_epochs=1, threads=1)
    with pytest.raises(ValueError, match="20 clips need targets of shape"):
        est.fit(clips, Y[:-1])
    bad = Y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(clips, bad)
    with pytest.raises(ValueError, match="loss"):
        clone(est).set_params(loss="mae").fit(clips, Y)
    with pytest.raises(ValueError, match="validation targets have 1 output"):
        est.fit(clips, Y, val=(clips[:3], Y[:3, 0]))


def test_ccc_loss_is_one_minus_the_mean_ccc():
    rng = np.random.default_rng(0)
    p, y = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    p[:, 1] = 0.7 * y[:, 1] + 0.2
    got = float(ccc_loss(torch.tensor(p), torch.tensor(y), eps=0.0))
    assert got == pytest.approx(1 - np.mean(ccc(y, p)), abs=1e-12)
    assert float(ccc_loss(torch.tensor(y), torch.tensor(y))) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------- per layer

def test_ccc_by_layer_is_the_interval_of_each_layer_and_column():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((60, 2))
    g = np.repeat(np.arange(6), 10)
    P = np.stack([y * a + rng.standard_normal((60, 2)) for a in (0.2, 1.0, 3.0)])
    out = ccc_by_layer(y, P, g)
    assert out["ccc"].shape == (3, 2)
    for layer in range(3):
        for t in range(2):
            iv = ccc_interval(y[:, t], P[layer, :, t], g)
            assert (out["ccc"][layer, t], out["low"][layer, t], out["high"][layer, t]) == pytest.approx(
                (iv.value, iv.low, iv.high))
    assert np.all(out["low"] <= out["ccc"]) and np.all(out["ccc"] <= out["high"])
    with pytest.raises(RegressionError, match="predictions must be"):
        ccc_by_layer(y, P[:, :10], g)
