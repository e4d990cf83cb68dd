"""Dimensional emotion (issue 25): CCC, Pearson and RMSE against their formulas written out here and
against audmetric (the audEERING metric package MSP-Podcast style work uses), their jackknife-t
intervals over speakers (coverage at 24 speakers, CI and p in agreement), and RidgeProbe /
sweep_ridge against scikit-learn's GridSearchCV(StandardScaler + Ridge) on the same inner folds."""

from __future__ import annotations

import warnings
from functools import partial
from unittest import SkipTest

import audmetric
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers.estimators import regression as reg
from classifiers.estimators.regression import (
    DEFAULT_ALPHAS,
    EXTEND_FACTOR,
    EXTEND_STEPS,
    FALLBACK_ALPHA,
    RegressionError,
    RidgeProbe,
    UngroupedAlphaWarning,
    ccc,
    ccc_interval,
    paired_ccc,
    pearson,
    rmse,
    scores,
    sweep_ridge,
)
from classifiers.results.stats import StatsError, group_jackknife, t_quantile


def lin_ccc(y, p) -> float:
    """Lin (1989), written out: 2 cov / (var_y + var_p + (mean_y - mean_p)^2), population moments."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    my, mp = y.sum() / len(y), p.sum() / len(p)
    cov = ((y - my) * (p - mp)).sum() / len(y)
    vy, vp = ((y - my) ** 2).sum() / len(y), ((p - mp) ** 2).sum() / len(p)
    return 2 * cov / (vy + vp + (my - mp) ** 2)


def mean_ccc(y, p) -> float:
    return float(np.mean(ccc(y, p)))


CCC_SCORER = make_scorer(mean_ccc)


# --------------------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("seed", range(4))
def test_ccc_equals_the_written_out_formula_and_audmetric(seed):
    rng = np.random.default_rng(seed)
    n = [5, 40, 333, 1000][seed]
    y = rng.normal(4.0, 1.2, n)                                         # a 1..7 rating scale
    p = 0.6 * y + 1.3 + rng.normal(0, 0.8, n)                          # biased, shrunk, noisy
    assert ccc(y, p) == pytest.approx(lin_ccc(y, p), rel=1e-12, abs=1e-14)
    assert ccc(y, p) == pytest.approx(audmetric.concordance_cc(y, p), rel=1e-12, abs=1e-14)
    assert ccc(y, p) < pearson(y, p)                                   # bias and scale cost CCC, not r
    assert pearson(y, p) == pytest.approx(np.corrcoef(y, p)[0, 1], rel=1e-12)
    assert rmse(y, p) == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), rel=1e-12)
    # several targets: one column each, the same values
    Y = np.stack([y, -y, y ** 2], 1)
    P = np.stack([p, p, rng.normal(size=n)], 1)
    np.testing.assert_allclose(ccc(Y, P), [lin_ccc(Y[:, t], P[:, t]) for t in range(3)], rtol=1e-12, atol=1e-14)


def test_ccc_edge_cases():
    y = np.array([1.0, 2.5, 3.0, 7.0, 4.2])
    assert ccc(y, y) == 1.0 == audmetric.concordance_cc(y, y)
    assert ccc(y, 2 * y.mean() - y) == pytest.approx(-1.0, abs=1e-15)   # mirrored about the mean
    assert audmetric.concordance_cc(y, 2 * y.mean() - y) == pytest.approx(-1.0, abs=1e-15)
    const = np.full(5, 0.1)                                             # 0.1 is not exact in binary: still 0
    assert ccc(y, const) == 0.0 == audmetric.concordance_cc(y, np.full(5, y.mean()))
    assert pearson(y, const) == 0.0
    # both constant: the formula's 0/0; ser: 1 when they agree (exactly right), 0 when they differ
    assert ccc(const, const) == 1.0
    assert np.isnan(audmetric.concordance_cc(const, const))             # audmetric leaves it undefined
    assert ccc(const, const + 1) == 0.0 == audmetric.concordance_cc(const, const + 1)
    # the edge cases per target too
    np.testing.assert_array_equal(ccc(np.stack([y, const], 1), np.stack([const, const], 1)), [0.0, 1.0])


def test_scores_and_errors():
    rng = np.random.default_rng(0)
    Y, P = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    s = scores(Y, P, ["arousal", "valence", "dominance"])
    assert s["ccc_valence"] == pytest.approx(lin_ccc(Y[:, 1], P[:, 1]), rel=1e-12)
    assert s["ccc"] == pytest.approx(np.mean([lin_ccc(Y[:, t], P[:, t]) for t in range(3)]), rel=1e-12)
    assert s["rmse"] == pytest.approx(np.mean(np.sqrt(((Y - P) ** 2).mean(0))), rel=1e-12)
    assert set(scores(Y[:, 0], P[:, 0])) == {"ccc", "pearson", "rmse"}
    with pytest.raises(RegressionError, match="same shape"):
        ccc(Y, P[:, :2])
    with pytest.raises(RegressionError, match="NaN"):
        ccc(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(RegressionError, match="no rows"):
        ccc([], [])
    with pytest.raises(RegressionError, match="2 target names for 3"):
        scores(Y, P, ["a", "b"])


# ----------------------------------------------------------------------------------- uncertainty

def speaker_ratings(G=24, m=20, su=0.7, sw=0.7, b=0.6, c=0.2, sv=0.4, se=0.6, reps=None, seed=0):
    """Truth y = speaker effect + utterance term, prediction b y + c + speaker bias + noise, (G, [reps,] m);
    and the population CCC of that model."""
    rng = np.random.default_rng(seed)
    shape = (G, m) if reps is None else (G, reps, m)
    one = (G, 1) if reps is None else (G, reps, 1)
    y = rng.normal(0, su, one) + rng.normal(0, sw, shape)
    p = b * y + c + rng.normal(0, sv, one) + rng.normal(0, se, shape)
    vy = su ** 2 + sw ** 2
    return y, p, 2 * b * vy / (vy + b * b * vy + sv ** 2 + se ** 2 + c * c)


def test_interval_is_the_leave_one_speaker_out_jackknife_of_recomputed_ccc():
    y, p, _ = speaker_ratings(G=9, m=7)
    spk = np.repeat([f"spk{g}" for g in range(9)], 7)
    y, p = y.ravel(), p.ravel()
    iv = ccc_interval(y, p, spk)
    assert iv.value == pytest.approx(lin_ccc(y, p), rel=1e-12)
    loo = np.array([lin_ccc(y[spk != s], p[spk != s]) for s in np.unique(spk)])   # CCC of the other speakers
    se = np.sqrt(8 / 9 * np.sum((loo - loo.mean()) ** 2))
    assert iv.se == pytest.approx(se, rel=1e-9)
    half = float(t_quantile(0.95, 9)) * se
    assert (iv.low, iv.high) == pytest.approx((iv.value - half, iv.value + half), rel=1e-9)
    assert (iv.metric, iv.n_groups, iv.unit, iv.method) == ("ccc", 9, "speaker", "jackknife-t")
    # rows of every utterance: one group each
    assert ccc_interval(y, p).n_groups == len(y) and ccc_interval(y, p).unit == "utterance"
    # several targets: the mean CCC, each replicate the mean of the recomputed CCCs
    Y, P = np.stack([y, y ** 2], 1), np.stack([p, p ** 2], 1)
    loo2 = np.array([np.mean(ccc(Y[spk != s], P[spk != s])) for s in np.unique(spk)])
    iv2 = ccc_interval(Y, P, spk)
    assert iv2.metric == "mean_ccc" and iv2.value == pytest.approx(np.mean(ccc(Y, P)), rel=1e-12)
    assert iv2.se == pytest.approx(np.sqrt(8 / 9 * np.sum((loo2 - loo2.mean()) ** 2)), rel=1e-9)
    with pytest.raises(StatsError, match="at least 2 speakers"):
        ccc_interval(y, p, np.zeros(len(y)))
    with pytest.raises(RegressionError, match="one speaker per row"):
        ccc_interval(y, p, spk[:-1])
    with pytest.raises(StatsError, match="between 0 and 1"):
        ccc_interval(y, p, spk, level=95)


SCENARIOS = {"moderate": {}, "good": dict(b=1.0, c=0.0, sv=0.2, se=0.3), "poor, biased": dict(b=0.3, c=0.5, sv=0.8)}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ccc_interval_covers_95_percent_at_24_speakers(scenario):
    """3,000 simulated test sets of 24 speakers x 20 utterances (the SE of a 95% rate is 0.4 points);
    batched through the same sums and jackknife as `ccc_interval` (checked on the first sets)."""
    R, G = 3000, 24
    y, p, true = speaker_ratings(G=G, reps=R, seed=1, **SCENARIOS[scenario])
    sums = np.stack([np.ones_like(y), y, p, y * y, p * p, y * p], -1).sum(2)[:, :, None, :]   # (G, R, 1, 6)
    value, se = group_jackknife(sums, reg._mean_ccc)
    spk = np.repeat(np.arange(G), y.shape[2])
    for r in range(3):
        iv = ccc_interval(y[:, r].ravel(), p[:, r].ravel(), spk)
        assert (iv.value, iv.se) == pytest.approx((value[r], se[r]), rel=1e-9)
    covered = np.abs(value - true) <= t_quantile(0.95, G) * se
    assert 0.93 <= covered.mean() <= 0.97, covered.mean()


def test_paired_ccc_ci_excludes_zero_exactly_when_p_is_below_005():
    rng = np.random.default_rng(2)
    G, m = 24, 10
    spk = np.repeat([f"s{g:02d}" for g in range(G)], m)
    significant = 0
    for _ in range(300):
        y, pa, _ = speaker_ratings(G=G, m=m, seed=int(rng.integers(1 << 30)))
        y, pa = y.ravel(), pa.ravel()
        pb = pa + rng.normal(0, 0.35, len(y))                           # a noisier setting b: a small true gap
        cmp = paired_ccc(y, pa, pb, spk)
        assert cmp.diff == pytest.approx(lin_ccc(y, pa) - lin_ccc(y, pb), rel=1e-9, abs=1e-12)
        assert (cmp.low > 0 or cmp.high < 0) == (cmp.p < 0.05)
        assert cmp.low <= cmp.diff <= cmp.high
        significant += cmp.p < 0.05
    assert 30 < significant < 270                                      # both outcomes were tested
    # the paired SE is the jackknife of the difference of recomputed CCCs
    loo = [lin_ccc(y[spk != s], pa[spk != s]) - lin_ccc(y[spk != s], pb[spk != s]) for s in np.unique(spk)]
    assert cmp.se == pytest.approx(np.sqrt((G - 1) / G * np.sum((loo - np.mean(loo)) ** 2)), rel=1e-9)


def test_paired_ccc_type_i_error_at_24_speakers():
    """Two exchangeable settings (same model, independent noise): the jackknife-t rejects about 5%."""
    R, G = 3000, 24
    y, pa, _ = speaker_ratings(G=G, reps=R, seed=3)
    pb = 0.6 * y + 0.2 + np.random.default_rng(4).normal(0, 0.4, (G, R, 1)) \
        + np.random.default_rng(5).normal(0, 0.6, y.shape)
    sa = np.stack([np.ones_like(y), y, pa, y * y, pa * pa, y * pa], -1).sum(2)[:, :, None, :]
    sb = np.stack([np.ones_like(y), y, pb, y * y, pb * pb, y * pb], -1).sum(2)[:, :, None, :]
    diff, se = group_jackknife(np.stack([sa, sb], 2), lambda s: reg._mean_ccc(s[..., 0, :, :])
                               - reg._mean_ccc(s[..., 1, :, :]))
    rate = np.mean(np.abs(diff) / se > t_quantile(0.95, G))
    assert 0.03 <= rate <= 0.07, rate


# --------------------------------------------------------------------------------------- ridge

def rating_data(n_speakers=12, per=10, dim=30, T=3, noise=1.0, informative=5, seed=0):
    """X (n, dim) with per-speaker offsets; Y (n, T) from a few features plus noise and a speaker term."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_speakers * per, dim)) * rng.uniform(0.5, 3, dim) + rng.uniform(-5, 5, dim)
    X += np.repeat(rng.standard_normal((n_speakers, dim)), per, 0) * 0.5
    W = np.zeros((dim, T))
    W[:informative] = rng.standard_normal((informative, T))
    Y = (X - X.mean(0)) / X.std(0) @ W * 0.3 + noise * rng.standard_normal((len(X), T))
    Y += np.repeat(rng.standard_normal((n_speakers, T)), per, 0) * 0.3 + 4.0
    return X, Y, np.repeat([f"s{i:02d}" for i in range(n_speakers)], per)


def sklearn_search(X, Y, groups, alphas, seed=0, inner_folds=3):
    """GridSearchCV(StandardScaler + Ridge) on RidgeProbe's own inner splits, as index pairs."""
    masks = reg.inner_group_masks(np.ones(len(X), bool), np.asarray(groups), inner_folds, seed)
    cv = [(np.flatnonzero(m), np.flatnonzero(~m)) for m in masks]
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", Ridge())])
    return GridSearchCV(pipe, {"ridge__alpha": list(alphas)}, cv=cv, scoring=CCC_SCORER).fit(X, Y)


@pytest.mark.parametrize("dim", [30, 200], ids=["rows>features (eigh of Z'Z)", "rows<features (kernel)"])
@pytest.mark.parametrize("targets", [3, 1])
def test_ridge_probe_equals_grid_search_cv_on_the_same_inner_folds(dim, targets):
    X, Y, g = rating_data(dim=dim, T=targets, **({} if dim < 100 else dict(noise=2.0, informative=50)))
    if targets == 1:
        Y = Y[:, 0]
    probe = RidgeProbe().fit(X, Y, groups=g)
    ref = sklearn_search(X, Y, g, DEFAULT_ALPHAS)
    scores_ = ref.cv_results_["mean_test_score"]
    assert np.ptp(scores_) > 0.1                                       # the alphas differ: a real choice
    assert probe.alpha_extended_ == [] and probe.alpha_ not in (min(DEFAULT_ALPHAS), max(DEFAULT_ALPHAS))
    np.testing.assert_allclose(probe.cv_scores_, scores_, rtol=1e-9, atol=1e-12)
    assert probe.alpha_ == ref.best_params_["ridge__alpha"]
    Xt = X + 0.1                                                       # not the training rows
    np.testing.assert_allclose(probe.predict(Xt), ref.predict(Xt), rtol=1e-9, atol=1e-9)
    assert probe.predict(Xt).shape == Y.shape
    lone = ref.best_estimator_["ridge"]
    np.testing.assert_allclose(probe.coef_, lone.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(probe.intercept_, Y.mean(0), rtol=1e-12)  # the intercept is the training mean


@pytest.mark.parametrize("dim", [25, 64], ids=["rows>features", "rows a little below features"])
def test_fold_sums_equal_the_splits_computed_from_their_rows(monkeypatch, dim):
    """sweep_ridge forms each outer fold's row products once (`_FoldSums`) when its inner validation
    parts partition the training rows; the same numbers as standardising every split's own rows
    (at 64 features the inner splits hold 60-70 rows: the rows' own path is then the kernel form)."""
    X, Y, g = rating_data(n_speakers=15, dim=dim, seed=6)
    X[:, 3] = 7.0                                                      # a constant feature: scale 1, as StandardScaler
    spk = np.unique(g)
    train_masks = [~np.isin(g, spk[k::3]) for k in range(3)]
    fast = sweep_ridge(X, Y, train_masks, g, alphas=(0.1, 10.0, 1000.0))
    assert all(reg._FoldSums.usable(tm, [tm & ~m for m in reg.inner_group_masks(tm, g, 3, 0)], X.shape[1])
               for tm in train_masks)
    monkeypatch.setattr(reg._FoldSums, "usable", staticmethod(lambda *a: False))
    slow = sweep_ridge(X, Y, train_masks, g, alphas=(0.1, 10.0, 1000.0))
    np.testing.assert_array_equal(fast.alpha, slow.alpha)
    for name in ("scores", "predict", "coef", "intercept", "mean", "scale"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-9, atol=1e-9, err_msg=name)
    assert (fast.scale[..., 3] == 1.0).all()


def test_banded_fallback_gives_the_same_fit(monkeypatch):
    """Where LAPACK's positive-definite tridiagonal solve refuses (rounding), the pivoted banded solve
    takes over with the same result."""
    from scipy.linalg import lapack

    X, Y, g = rating_data()
    ref = RidgeProbe().fit(X, Y, groups=g)
    monkeypatch.setattr(lapack, "dptsv", lambda d, e, b: (d, e, b, 1))    # "not positive definite"
    forced = RidgeProbe().fit(X, Y, groups=g)
    np.testing.assert_allclose(forced.cv_scores_, ref.cv_scores_, rtol=1e-10)
    np.testing.assert_allclose(forced.predict(X), ref.predict(X), rtol=1e-10)


def ladder_choice(grid_scores, grid, ladder_scores, up: bool):
    """The documented rule, applied to scikit-learn's scores: the first best of the grid, then the ladder
    past its edge while strictly better."""
    best = int(np.argmax(grid_scores))
    chosen, score = grid[best], grid_scores[best]
    if best == (int(np.argmax(grid)) if up else int(np.argmin(grid))):
        for a, s in ladder_scores:
            if not s > score:
                break
            chosen, score = a, s
    return chosen


@pytest.mark.parametrize("grid, up", [((0.01, 0.1, 1.0), True), ((1e4, 1e5, 1e6), False),
                                      ((1e-4, 1e-3, 1e-2), True)])
def test_grid_extension_matches_scikit_learn_on_the_ladder(grid, up):
    X, Y, g = rating_data()
    probe = RidgeProbe(alphas=grid).fit(X, Y, groups=g)
    edge = max(grid) if up else min(grid)
    ladder = [edge * EXTEND_FACTOR ** k if up else edge / EXTEND_FACTOR ** k for k in range(1, EXTEND_STEPS + 1)]
    ref = sklearn_search(X, Y, g, list(grid) + ladder).cv_results_["mean_test_score"]
    assert probe.alpha_extended_                                       # the data put the best at the edge
    searched = [a for a, _ in probe.alpha_extended_]
    assert searched == pytest.approx(ladder[:len(searched)], rel=1e-12)
    np.testing.assert_allclose([s for _, s in probe.alpha_extended_], ref[len(grid):len(grid) + len(searched)],
                               rtol=1e-9)
    expected = ladder_choice(ref[:len(grid)], grid, list(zip(ladder, ref[len(grid):])), up)
    assert probe.alpha_ == pytest.approx(expected, rel=1e-12)
    assert probe.alpha_at_bound_ == (probe.alpha_ == pytest.approx(ladder[-1], rel=1e-12))
    np.testing.assert_allclose(probe.predict(X), Pipeline([("s", StandardScaler()), ("r", Ridge(alpha=probe.alpha_))])
                               .fit(X, Y).predict(X), rtol=1e-9, atol=1e-9)


def test_sweep_ridge_equals_scikit_learn_per_layer_and_outer_fold():
    X2, Y, g = rating_data(n_speakers=15, dim=25, seed=4)
    rng = np.random.default_rng(5)
    X = np.stack([X2 * s + rng.normal(0, n, X2.shape) for s, n in ((1, 0.0), (0.5, 2.0), (2, 8.0))], 1)   # (N, 3, D)
    spk = np.unique(g)
    train_masks = [~np.isin(g, spk[k::3]) for k in range(3)]
    sweep = sweep_ridge(X, Y, train_masks, g, seed=1)
    N, L, D = X.shape
    compared = 0
    assert sweep.predict.shape == (L, 3, N, 3) and sweep.scores.shape == (L, 3, len(DEFAULT_ALPHAS))
    for layer in range(L):
        for f, tm in enumerate(train_masks):
            masks = reg.inner_group_masks(tm, g, 3, 1)
            rows = np.flatnonzero(tm)
            pos = {r: i for i, r in enumerate(rows)}
            cv = [([pos[r] for r in np.flatnonzero(m)], [pos[r] for r in np.flatnonzero(tm & ~m)]) for m in masks]
            assert not set(g[np.flatnonzero(masks[0])]) & set(g[np.flatnonzero(tm & ~masks[0])])   # speaker-disjoint
            ref = GridSearchCV(Pipeline([("s", StandardScaler()), ("r", Ridge())]),
                               {"r__alpha": list(DEFAULT_ALPHAS)}, cv=cv, scoring=CCC_SCORER).fit(X[tm, layer], Y[tm])
            np.testing.assert_allclose(sweep.scores[layer, f], ref.cv_results_["mean_test_score"], rtol=1e-9)
            if not sweep.extended[layer][f]:
                assert sweep.alpha[layer, f] == ref.best_params_["r__alpha"]
                compared += 1
            fitted = Pipeline([("s", StandardScaler()), ("r", Ridge(alpha=sweep.alpha[layer, f]))]).fit(X[tm, layer],
                                                                                                         Y[tm])
            np.testing.assert_allclose(sweep.predict[layer, f], fitted.predict(X[:, layer]), rtol=1e-9, atol=1e-9)
    assert compared >= 4                    # cells that chose inside the grid (the ladder: test_grid_extension_...)
    # the signal fades with the layer's noise: the inner scores say so
    assert np.nanmax(sweep.scores[0], 1).mean() > np.nanmax(sweep.scores[2], 1).mean()
    fixed = sweep_ridge(X, Y, train_masks, g, alpha=3.0)
    assert (fixed.alpha == 3.0).all() and np.isnan(fixed.scores).all()
    with pytest.raises(RegressionError, match="one speaker per row"):
        sweep_ridge(X, Y, train_masks, g[:-1])
    with pytest.raises(RegressionError, match="boolean masks over the 150 rows"):
        sweep_ridge(X, Y, [m[:-1] for m in train_masks], g)
    bad = X.copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(RegressionError, match="features hold NaN"):
        sweep_ridge(bad, Y, train_masks, g)


def test_ridge_probe_groups_warnings_and_fallback():
    X, Y, g = rating_data()
    with pytest.warns(UngroupedAlphaWarning, match="not speaker-independent"):
        RidgeProbe().fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngroupedAlphaWarning)
        fixed = RidgeProbe(alpha=2.0).fit(X, Y)                        # no search: nothing to warn about
        pipe = Pipeline([("scale", StandardScaler()), ("ridgeprobe", RidgeProbe())])
        pipe.fit(X, Y, ridgeprobe__groups=g)                           # by step name
    assert fixed.alpha_ == 2.0 and fixed.cv_scores_ is None
    one = RidgeProbe().fit(X, Y, groups=np.zeros(len(X)))              # one speaker: no inner split
    assert one.alpha_ == FALLBACK_ALPHA and one.cv_scores_ is None
    with pytest.raises(RegressionError, match="one speaker per row"):
        RidgeProbe().fit(X, Y, groups=g[:-1])
    with pytest.raises(RegressionError, match="positive"):
        RidgeProbe(alphas=[1.0, -1.0]).fit(X, Y, groups=g)
    with pytest.raises(ValueError, match="alpha"):
        RidgeProbe(alpha=-1.0).fit(X, Y, groups=g)
    assert sorted(RidgeProbe().get_params()) == ["alpha", "alphas", "inner_folds", "random_state"]


def test_routed_groups_reach_the_inner_alpha_search(monkeypatch):
    import sklearn
    from sklearn.model_selection import GroupKFold

    X, Y, g = rating_data()
    seen = []
    real = reg.inner_group_masks

    def spy(train_mask, groups, n_folds, seed):
        seen.append(np.asarray(groups))
        return real(train_mask, groups, n_folds, seed)

    monkeypatch.setattr(reg, "inner_group_masks", spy)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("error", UngroupedAlphaWarning)
        probe = RidgeProbe(alphas=(0.1, 10.0)).set_fit_request(groups=True)
        search = GridSearchCV(Pipeline([("s", StandardScaler()), ("r", probe)]), {"r__inner_folds": [2, 3]},
                              cv=GroupKFold(3), scoring=CCC_SCORER).fit(X, Y, groups=g)
    assert len(seen) == 2 * 3 + 1 and all(set(s) <= set(g) for s in seen)   # speakers, every fit and the refit
    assert search.best_estimator_[-1].cv_scores_.shape == (2,)


# checks that sklearn itself skips on this machine (as in tests/test_estimators.py): xfail with the reason
CANNOT_RUN_HERE = {"check_array_api_input": "runs only with SCIPY_ARRAY_API=1 set before scipy is first imported"}


@pytest.mark.filterwarnings("ignore::classifiers.estimators.regression.UngroupedAlphaWarning")
@parametrize_with_checks([RidgeProbe(), RidgeProbe(alpha=1.0)])
def test_sklearn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except SkipTest as e:
        name = (check.func if isinstance(check, partial) else check).__name__
        if name not in CANNOT_RUN_HERE:
            raise
        pytest.xfail(f"{name}: {CANNOT_RUN_HERE[name]} ({e})")
