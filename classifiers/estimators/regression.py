"""Dimensional emotion (arousal, valence, dominance): regression metrics, their speaker-level
uncertainty, and a ridge probe (issue 25).

Metrics (per target, and their mean over targets; `scores`):
- CCC, the concordance correlation coefficient (Lin 1989), the measure of MSP-Podcast and the
  Odyssey 2024 challenge: 2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2), population
  (1/n) moments. Perfect prediction gives 1, p = 2 mean(y) - y (mirrored) -1, a constant
  prediction 0 when the truth varies (cov is 0, the denominator is not). Both constant: 0/0 by
  the formula; `ser` defines it as 1 when prediction and truth are the same constant (the
  prediction is exactly right, as CCC(y, y) = 1 for every other y) and the formula gives 0 when
  they differ (the denominator is then the squared bias). audmetric returns NaN for the 0/0 case.
- Pearson r: cov / (sd(y) sd(p)); 0 when either side is constant (no association can be shown;
  scipy returns NaN, which would make every mean over targets NaN).
- RMSE: sqrt(mean((y - p)^2)).

Uncertainty (`ccc_interval`, `paired_ccc`), as `classifiers.results.stats` does for UAR: the pooled CCC,
its leave-one-speaker-out jackknife standard error and t(G-1) quantiles (`stats.group_jackknife`,
`stats.t_interval`). CCC is not a mean of per-utterance terms, so each replicate recomputes it
from the other speakers' rows (from per-speaker sums of y, p, y^2, p^2, y p, which add). The
paired difference gets its CI and p from the same t statistic: the CI excludes 0 exactly when
p < 1 - level. tests/test_regression.py simulates the coverage at 24 speakers.

The ridge probe (`RidgeProbe`, `sweep_ridge`): ridge regression on features standardised with
the training rows' mean and std (as `StandardScaler`), every target sharing one alpha, the
intercept the training mean of y (the standardised features have mean 0). Alpha is chosen per
training set by inner group k-fold over its speakers, scored by the mean CCC over targets
(averaged over inner folds, as `GridSearchCV`; ties go to the alpha listed first), from a log grid
(`DEFAULT_ALPHAS`, 1e-2..1e5); a best alpha at the grid's edge goes on by `EXTEND_FACTOR` while
the inner score rises strictly, at most `EXTEND_STEPS` steps (as `linear.py`'s C). Exact and
fast: each inner training split is decomposed once (Z^T Z, or Z Z^T when it has fewer rows than
features, reduced to tridiagonal form Q T Q^T by Householder reflections: the first and costliest
step of an eigendecomposition, without the eigenvectors), after which every alpha's validation
predictions are p(alpha) = A (T + alpha I)^-1 b + mean(y), one O(D) tridiagonal solve each, so the
whole grid and its extension cost one decomposition; the refit at the chosen alpha is one
Cholesky solve. When an outer fold's inner validation parts partition its training rows (group
k-fold), the row products are formed once per part and every split's standardised Z^T Z follows
by adding sums (`_FoldSums`). numpy/scipy (LAPACK) on the CPU, float64; `bench/ridge.py` measures
it against nested scikit-learn (same choices, about 5x less CPU than a plain GridSearchCV).

The other regressors (`REGRESSORS`: name -> scikit-learn estimator class, imported on first
look-up; `check_regressor`, `make_regressor`), every one fitted as fit(X, y (n,) or (n, T),
groups=speakers) and passing `check_estimator`: "ridge" (`RidgeProbe`), "xgboost"
(`classifiers.estimators.boosting.XGBRegressorProbe`: early stopping on whole training speakers drawn by
`speaker_validation`), "knn" (`KNNRegressorProbe`: the mean of the cosine nearest training rows'
targets, faiss through `classifiers.estimators.knn_index`) and "attention"
(`classifiers.estimators.attention.AttentionRegressorProbe`: attention pooling over frames, MSE or CCC loss,
early stopping on held-out speakers). `fold_predictions` fits any of them per outer fold in `sweep_ridge`'s prediction layout;
`ccc_by_layer` gives the per-layer CCC and speaker interval
of each dimension that `classifiers.results.plots.dimension_layer_curve` draws; `bench/regressors.py`
times the four at RAVDESS size.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval as Bounds
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.results.stats import Comparison, Interval, StatsError, group_jackknife, t_interval, t_quantile
from classifiers.runs.targets import FRAME_REGRESSORS, REGRESSOR_CLASSES  # noqa: F401 - re-exported
from featstore.errors import SerError, SerWarning

#: the alpha grid searched by default: 1e-2 .. 1e5, one per decade
DEFAULT_ALPHAS = tuple(10.0 ** k for k in range(-2, 6))
# a best alpha at the grid's edge: the search goes on by this factor, at most this many steps (as linear.py's C)
EXTEND_FACTOR = 10.0
EXTEND_STEPS = 3
#: alpha of a fit whose training rows hold fewer than 2 speakers (no inner split): scikit-learn's Ridge default
FALLBACK_ALPHA = 1.0
REGRESSION_METRICS = ("ccc", "pearson", "rmse")


class RegressionError(SerError, ValueError):
    """Targets, predictions or groups that cannot be scored or fitted (the message says why)."""


class UngroupedAlphaWarning(SerWarning):
    """Alpha was chosen by inner cross-validation without speaker groups (not speaker-independent);
    the ridge counterpart of `classifiers.estimators.linear.UngroupedSelectionWarning`."""


# ---------------------------------------------------------------------------------------------- metrics

def _pair(y_true, y_pred, what: str = "predictions") -> tuple[np.ndarray, np.ndarray, bool]:
    """(y (n, T), p (n, T) float64, one_d): checked to be finite, non-empty and of the same shape."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim not in (1, 2):
        raise RegressionError(f"truth and {what} must have the same shape (n,) or (n, targets), got {y.shape} and "
                              f"{p.shape}")
    if not len(y):
        raise RegressionError("no rows to score")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise RegressionError(f"truth or {what} hold NaN or infinite values: drop those rows first")
    return (y[:, None], p[:, None], True) if y.ndim == 1 else (y, p, False)


def _centred(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(column means (T,), deviations (n, T)); a constant column gets its value as mean and exact zeros."""
    const = (a == a[:1]).all(0)
    mean = np.where(const, a[0], a.mean(0))
    return mean, np.where(const, 0.0, a - mean)


def _moments(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """Population means, variances and covariance per column: (my, mp, vy, vp, cov)."""
    my, dy = _centred(y)
    mp, dp = _centred(p)
    return my, mp, (dy * dy).mean(0), (dp * dp).mean(0), (dy * dp).mean(0)


def _ccc_of(my, mp, vy, vp, cov) -> np.ndarray:
    den = vy + vp + (my - mp) ** 2
    return np.where(den > 0, 2 * cov / np.where(den > 0, den, 1.0), 1.0)


def _pearson_of(vy, vp, cov) -> np.ndarray:
    den = np.sqrt(vy * vp)
    return np.where(den > 0, cov / np.where(den > 0, den, 1.0), 0.0)


def _out(values: np.ndarray, one_d: bool):
    return float(values[0]) if one_d else values


def ccc(y_true, y_pred) -> float | np.ndarray:
    """Concordance correlation coefficient of y_pred against y_true: a float for (n,) inputs,
    (T,) per target for (n, T). Edge cases: see the module docstring."""
    y, p, one_d = _pair(y_true, y_pred)
    return _out(_ccc_of(*_moments(y, p)), one_d)


def pearson(y_true, y_pred) -> float | np.ndarray:
    """Pearson correlation per target (0 where either side is constant): float or (T,)."""
    y, p, one_d = _pair(y_true, y_pred)
    _, _, vy, vp, cov = _moments(y, p)
    return _out(_pearson_of(vy, vp, cov), one_d)


def rmse(y_true, y_pred) -> float | np.ndarray:
    """Root mean squared error per target: float or (T,)."""
    y, p, one_d = _pair(y_true, y_pred)
    return _out(np.sqrt(((y - p) ** 2).mean(0)), one_d)


def scores(y_true, y_pred, names: Sequence[str] | None = None) -> dict:
    """{"ccc", "pearson", "rmse"}: the mean over targets, plus "<metric>_<name>" per target when
    there are several targets or `names` are given (names default to t0, t1, ...)."""
    y, p, _ = _pair(y_true, y_pred)
    T = y.shape[1]
    if names is None:
        names = [f"t{k}" for k in range(T)] if T > 1 else []
    names = list(names)
    if names and len(names) != T:
        raise RegressionError(f"{len(names)} target names for {T} targets")
    my, mp, vy, vp, cov = _moments(y, p)
    per = {"ccc": _ccc_of(my, mp, vy, vp, cov), "pearson": _pearson_of(vy, vp, cov),
           "rmse": np.sqrt(((y - p) ** 2).mean(0))}
    out = {m: float(v.mean()) for m, v in per.items()}
    for m, v in per.items():
        out.update({f"{m}_{name}": float(x) for name, x in zip(names, v)})
    return out


# ---------------------------------------------------------------------------------- uncertainty

def _ccc_from_sums(s: np.ndarray) -> np.ndarray:
    """CCC from sums `(..., 6)`: n, sum y, sum p, sum y^2, sum p^2, sum y p -> `(...)`."""
    n = s[..., 0]
    my, mp = s[..., 1] / n, s[..., 2] / n
    vy = np.maximum(s[..., 3] / n - my * my, 0.0)
    vp = np.maximum(s[..., 4] / n - mp * mp, 0.0)
    return _ccc_of(my, mp, vy, vp, s[..., 5] / n - my * mp)


def _group_sums(y: np.ndarray, p: np.ndarray, groups, shift: np.ndarray) -> tuple[np.ndarray, str]:
    """`(G, T, 6)` per-group sums (`_ccc_from_sums`) of y and p shifted by `shift` (T,) (CCC does
    not change when both sides move together; centring keeps the raw moments accurate); the unit."""
    n, T = y.shape
    if groups is None:
        g, G, unit = np.arange(n), n, "utterance"
    else:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise RegressionError(f"groups must be one speaker per row: {n} rows, groups of shape {groups.shape}")
        _, g = np.unique(groups.astype(str), return_inverse=True)
        G, unit = int(g.max()) + 1, "speaker"
    if G < 2:
        raise StatsError(f"an interval needs at least 2 {unit}s, got {G}")
    a, b = y - shift, p - shift
    cols = [np.ones_like(a), a, b, a * a, b * b, a * b]
    sums = np.stack([np.stack([np.bincount(g, weights=c[:, t], minlength=G) for t in range(T)], 1) for c in cols], -1)
    return sums, unit


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise StatsError(f"confidence level {level!r} is not between 0 and 1: use e.g. 0.95")


def _mean_ccc(s: np.ndarray) -> np.ndarray:
    """Mean over targets of `_ccc_from_sums` of `(..., T, 6)` -> `(...)`."""
    return _ccc_from_sums(s).mean(-1)


def ccc_interval(y_true, y_pred, groups=None, *, level: float = 0.95) -> Interval:
    """CCC of the rows (the mean CCC over targets for (n, T) inputs; pass one column for one
    target's interval) and its jackknife-t interval over whole groups (speakers; None: every row
    its own group): value ± t(G-1) x the leave-one-group-out SE, each replicate's CCC recomputed
    from the remaining rows. Rows may repeat an utterance (one per seed): a speaker left out takes
    all of them. The record is `classifiers.results.stats.Interval`, metric "ccc" or "mean_ccc"."""
    _check_level(level)
    y, p, _ = _pair(y_true, y_pred)
    sums, unit = _group_sums(y, p, groups, y.mean(0))
    G = len(sums)
    value, se = group_jackknife(sums, _mean_ccc)
    value, se = float(value), float(se)
    half = float(t_quantile(level, G)) * se
    metric = "ccc" if y.shape[1] == 1 else "mean_ccc"
    return Interval(metric, value, value - half, value + half, level, G, unit, "jackknife-t", se)


def paired_ccc(y_true, pred_a, pred_b, groups=None, *, level: float = 0.95) -> Comparison:
    """Two settings' predictions of the same rows: CCC(a) - CCC(b) (mean over targets for (n, T)),
    the paired jackknife-t interval over groups and the two-sided p of the same t(G-1) statistic,
    so the interval excludes 0 exactly when p < 1 - level. The record is
    `classifiers.results.stats.Comparison`."""
    _check_level(level)
    y, a, _ = _pair(y_true, pred_a, "setting a's predictions")
    _, b, _ = _pair(y_true, pred_b, "setting b's predictions")
    shift = y.mean(0)
    sa, unit = _group_sums(y, a, groups, shift)
    sb, _ = _group_sums(y, b, groups, shift)
    G = len(sa)
    value_a, value_b = float(_mean_ccc(sa.sum(0))), float(_mean_ccc(sb.sum(0)))
    diff, se = group_jackknife(np.stack([sa, sb], 1), lambda s: _mean_ccc(s[..., 0, :, :]) - _mean_ccc(s[..., 1, :, :]))
    low, high, p = t_interval(diff, se, G, level)
    metric = "ccc" if y.shape[1] == 1 else "mean_ccc"
    return Comparison(metric, value_a, value_b, float(diff), float(low), float(high), float(p), level, G,
                      "jackknife-t", float(se))


# ---------------------------------------------------------------------------------- ridge

def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Z, mean, scale) of training rows X: population std, 1 where a feature is constant (as StandardScaler;
    "constant": a std below 1e-8 of the feature's magnitude, rounding noise of equal values)."""
    mu = X.mean(0)
    sd = X.std(0)
    sd = np.where(sd > 1e-8 * np.maximum(1.0, np.abs(mu)), sd, 1.0)
    return (X - mu) / sd, mu, sd


def _tridiagonalise(G: np.ndarray, *mats: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Q^T G Q = T for a symmetric G (n, n), Q orthogonal, T symmetric tridiagonal (diagonal d (n,),
    off-diagonal e (n-1,)), by Householder reflections (LAPACK dsytrd, the first and costliest step
    of an eigendecomposition); and Q^T M for each M (n, k), by the same reflections (dormqr), Q
    never formed. G is overwritten."""
    from scipy.linalg import lapack

    n = len(G)
    c, d, e, tau, info = lapack.dsytrd(G, lower=1, lwork=max(1, 64 * n), overwrite_a=1)
    if info:
        raise RegressionError(f"LAPACK dsytrd failed (info {info}): the features hold values it cannot reduce")
    # lower storage: Q = diag(1, H(1) ... H(n-1)), the reflectors' vectors below the subdiagonal, as a QR's
    refl = np.asfortranarray(c[1:, :-1])
    out = []
    for M in mats:
        M = np.array(M, dtype=np.float64, order="F")                        # a copy: never the caller's array
        if n > 1:
            M[1:], _, info = lapack.dormqr("L", "T", refl, tau, np.asfortranarray(M[1:]), max(1, 64 * M.shape[1]))
            if info:
                raise RegressionError(f"LAPACK dormqr failed (info {info})")
        out.append(M)
    return d, e, out


class _Path:
    """Ridge fits of one training split for every alpha, and their predictions on its validation rows.

    Z^T Z of the standardised training rows (or Z Z^T when there are fewer rows than features, the
    kernel form) is reduced once to tridiagonal form, Q T Q^T; then for every alpha
    predictions(alpha) = A (T + alpha I)^-1 b + mean(y), with A = Zv Q and b = Q^T Z^T Yc (kernel:
    A = Zv Z^T Q, b = Q^T Yc): one O(n) tridiagonal solve per alpha. The same numbers as an
    eigendecomposition would give (exact up to rounding), for about 60% of its cost (the
    eigenvectors are never computed).
    """

    def __init__(self, d: np.ndarray, e: np.ndarray, At: np.ndarray, b: np.ndarray, ym: np.ndarray,
                 y_val: np.ndarray):
        self.d, self.e, self.At, self.b, self.ym, self.y_val = d, e, At, b, ym, y_val

    @classmethod
    def direct(cls, X: np.ndarray, Y: np.ndarray, train: np.ndarray, val: np.ndarray) -> _Path:
        """From the rows themselves: X (N, D), Y (N, T), boolean masks of training and validation rows."""
        Z, mu, sd = _standardise(X[train])
        ym = Y[train].mean(0)
        Yc = Y[train] - ym
        Zv = (X[val] - mu) / sd
        if Z.shape[0] >= Z.shape[1]:
            d, e, (At, b) = _tridiagonalise(Z.T @ Z, Zv.T, Z.T @ Yc)
        else:
            d, e, (At, b) = _tridiagonalise(Z @ Z.T, Z @ Zv.T, Yc)
        return cls(d, e, At, b, ym, Y[val])

    def _solve(self, alpha: float) -> np.ndarray:
        """(T + alpha I)^-1 b, (r, targets)."""
        from scipy.linalg import lapack, solve_banded

        if len(self.d) == 1:                       # one feature (or one row, kernel form): a scalar
            return self.b / (self.d[0] + alpha)
        _, _, x, info = lapack.dptsv(self.d + alpha, self.e, self.b)
        if info:                                   # not positive definite after rounding: a pivoted banded solve
            bands = np.zeros((3, len(self.d)))
            bands[0, 1:], bands[1], bands[2, :-1] = self.e, self.d + alpha, self.e
            x = solve_banded((1, 1), bands, self.b)
        return x

    def predict(self, alphas: np.ndarray) -> np.ndarray:
        """(len(alphas), n_val, T) validation predictions."""
        alphas = np.asarray(alphas, dtype=np.float64)
        coef = np.stack([self._solve(float(a)) for a in alphas], 1)                       # (r, a, T)
        r, a, T = coef.shape
        return (self.At.T @ coef.reshape(r, a * T)).reshape(-1, a, T).transpose(1, 0, 2) + self.ym

    def score(self, alphas: np.ndarray) -> np.ndarray:
        """(len(alphas),) mean CCC over targets of the validation predictions."""
        pred = self.predict(alphas)
        y = np.broadcast_to(self.y_val, pred.shape)
        my, mp = y.mean(1), pred.mean(1)
        dy, dp = y - my[:, None], pred - mp[:, None]
        return _ccc_of(my, mp, (dy * dy).mean(1), (dp * dp).mean(1), (dy * dp).mean(1)).mean(-1)


class _FoldSums:
    """One outer fold whose inner validation parts partition its training rows: per-part sums
    (rows, sum x, x^T x, sum y, x^T y, features shifted by the fold's training mean for accuracy),
    from which every inner training split's standardised Gram matrix Z^T Z and Z^T Yc, and the
    refit's, follow by adding the other parts' sums: the rows' products are formed once per fold
    instead of once per split (`usable`: for splits with about as many rows as features or more).

    Z^T Z = n C / (sd sd^T) with C = S/n - mu mu^T the population covariance, sd = sqrt(diag C) (1
    where constant, as `_standardise`); Z^T Yc = (P - n mu ybar^T) / sd."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, train: np.ndarray, parts: Sequence[np.ndarray]):
        self.X, self.Y = X, Y
        self.shift = X[train].mean(0)
        self.parts = parts
        self.sums = []
        for part in parts:
            Xs = X[part] - self.shift
            self.sums.append((float(part.sum()), Xs.sum(0), Xs.T @ Xs, Y[part].sum(0), Xs.T @ Y[part]))

    @staticmethod
    def usable(train: np.ndarray, parts: Sequence[np.ndarray], D: int) -> bool:
        """The parts partition the training rows, and every split without one part has at least 0.9 D
        rows: the D x D form is then no dearer than the kernel form (valid for any rows: alpha > 0);
        with far fewer rows than features the kernel form from the rows is cheaper."""
        if not len(parts):
            return False
        count = np.sum(parts, axis=0)
        return bool((count == train).all() and train.sum() - max(p.sum() for p in parts) >= 0.9 * D)

    def _stats(self, keep: Sequence[int]) -> tuple[np.ndarray, ...]:
        """(Z^T Z, Z^T Yc, mean of y, mean of x in shifted coordinates, sd) over the parts `keep`."""
        n, sx, S, sy, P = (sum(self.sums[k][i] for k in keep) for i in range(5))
        mu, ym = sx / n, sy / n
        cov = S / n - np.outer(mu, mu)
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        sd = np.where(sd > 1e-8 * np.maximum(1.0, np.abs(mu + self.shift)), sd, 1.0)
        return n * cov / np.outer(sd, sd), (P - n * np.outer(mu, ym)) / sd[:, None], ym, mu, sd

    def path(self, k: int) -> _Path:
        """The inner split that validates on part k and trains on the others."""
        G, ZtY, ym, mu, sd = self._stats([j for j in range(len(self.parts)) if j != k])
        Zv = (self.X[self.parts[k]] - self.shift - mu) / sd
        d, e, (At, b) = _tridiagonalise(G, Zv.T, ZtY)
        return _Path(d, e, At, b, ym, self.Y[self.parts[k]])

    def refit(self, alpha: float) -> tuple[np.ndarray, ...]:
        """As `_refit` on all the fold's training rows."""
        from scipy.linalg import solve

        G, ZtY, ym, mu, sd = self._stats(range(len(self.parts)))
        G[np.diag_indices_from(G)] += alpha
        return solve(G, ZtY, assume_a="pos", overwrite_a=True).T, ym, mu + self.shift, sd


def _refit(X: np.ndarray, Y: np.ndarray, train: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Ridge at `alpha` on the standardised training rows: (coef (T, D), intercept (T,), mean, scale)."""
    from scipy.linalg import solve

    Z, mu, sd = _standardise(X[train])
    ym = Y[train].mean(0)
    Yc = Y[train] - ym
    if Z.shape[0] >= Z.shape[1]:
        W = solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ Yc, assume_a="pos")
    else:
        W = Z.T @ solve(Z @ Z.T + alpha * np.eye(Z.shape[0]), Yc, assume_a="pos")
    return W.T, ym, mu, sd


def inner_group_masks(train_mask: np.ndarray, groups: np.ndarray, n_folds: int, seed) -> list[np.ndarray]:
    """Boolean (N,) inner-training masks: group k-fold by speaker (shuffled, seeded) over the
    training rows only; [] when they hold fewer than 2 speakers."""
    from sklearn.model_selection import GroupKFold

    idx = np.flatnonzero(train_mask)
    k = min(n_folds, len(np.unique(groups[idx])))
    if k < 2:
        return []
    masks = []
    for tr, _ in GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, groups=groups[idx]):
        m = np.zeros(len(train_mask), dtype=bool)
        m[idx[tr]] = True
        masks.append(m)
    return masks


def choose_alpha(paths: Sequence[_Path], alphas: Sequence[float],
                 extend_grid: bool = True) -> tuple[float, np.ndarray, list, bool]:
    """(chosen alpha, mean inner score per alpha of `alphas`, [(alpha, score)] searched beyond the
    grid, whether the search's last allowed alpha won) from one training set's inner splits.

    The best mean score wins, ties to the alpha listed first; at the grid's largest (smallest)
    alpha the search goes on at x`EXTEND_FACTOR` (/) while the score rises strictly, at most
    `EXTEND_STEPS` steps."""
    alphas = np.asarray(alphas, dtype=np.float64)
    scores = np.mean([p.score(alphas) for p in paths], axis=0)
    best = int(np.argmax(scores))
    chosen, best_score, extended, at_bound = float(alphas[best]), float(scores[best]), [], False
    if extend_grid:
        for edge, up in ((float(alphas.max()), True), (float(alphas.min()), False)):
            if chosen != edge:
                continue
            steps = EXTEND_FACTOR ** np.arange(1, EXTEND_STEPS + 1)
            ladder = edge * steps if up else edge / steps
            more = np.mean([p.score(ladder) for p in paths], axis=0)
            for step, (a, s) in enumerate(zip(ladder, more), 1):
                extended.append((float(a), float(s)))
                if not s > best_score:                                  # strictly: a tie keeps the alpha found so far
                    break
                chosen, best_score, at_bound = float(a), float(s), step == EXTEND_STEPS
    return chosen, scores, extended, at_bound


@dataclass
class RidgeSweep:
    """What `sweep_ridge` found, per layer L and outer fold F (T targets, N rows, D features).

    alpha: (L, F) the alpha of each refit; scores: (L, F, len(alphas)) mean inner CCC per grid
    alpha (NaN where a fold had no inner split or alpha was given); extended: [L][F] lists of
    (alpha, mean inner CCC) searched beyond the grid; at_bound: (L, F) the search's last allowed
    alpha won (the optimum may lie beyond); predict: (L, F, N, T) the refits' predictions on every
    row; coef: (L, F, T, D) on standardised features; intercept: (L, F, T); mean, scale: (L, F, D)."""

    alpha: np.ndarray
    scores: np.ndarray
    extended: list
    at_bound: np.ndarray
    predict: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def sweep_ridge(X: np.ndarray, Y: np.ndarray, train_masks: Sequence[np.ndarray], groups: np.ndarray | None, *,
                alphas: Sequence[float] = DEFAULT_ALPHAS, alpha: float | None = None, inner_folds: int = 3,
                seed=0, inner: Sequence[Sequence[np.ndarray]] | None = None,
                extend_grid: bool = True) -> RidgeSweep:
    """Ridge probes of every layer: per layer and outer fold, alpha by inner group k-fold over that
    fold's training speakers (or `alpha` given), then the refit on the fold's training rows.

    X: (N, L, D) features (or (N, D): one layer); Y: (N, T) targets (or (N,)); train_masks: F
    boolean (N,) outer training masks; groups: (N,) speakers (None: every row its own group, not
    speaker-independent); inner: per outer fold, its inner-training masks (default:
    `inner_group_masks` with `inner_folds` and `seed`, the same for every layer). A fold without
    inner splits gets `FALLBACK_ALPHA`. One layer at a time, in float64.
    """
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[:, None]
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if X.ndim != 3 or Y.ndim != 2 or len(X) != len(Y):
        raise RegressionError(f"X must be (N, L, D) and Y (N, T) with the same N, got {X.shape} and {Y.shape}")
    if not (np.isfinite(Y).all()):
        raise RegressionError("targets hold NaN or infinite values: drop those rows first")
    if not np.isfinite(X).all():
        raise RegressionError("features hold NaN or infinite values: re-extract the store or drop those rows")
    N, L, D = X.shape
    T = Y.shape[1]
    outer = np.stack([np.asarray(m, dtype=bool) for m in train_masks])
    if outer.shape[1:] != (N,) or not outer.any(1).all():
        raise RegressionError(f"train_masks must be non-empty boolean masks over the {N} rows, got shape {outer.shape}")
    if groups is not None and np.shape(groups) != (N,):
        raise RegressionError(f"groups must be one speaker per row: {N} rows, groups of shape {np.shape(groups)}")
    F = len(outer)
    grid = np.asarray(alphas, dtype=np.float64).ravel()
    if alpha is None and (not len(grid) or not (grid > 0).all()):
        raise RegressionError(f"alphas must be positive values, got {alphas!r}")
    groups = np.arange(N) if groups is None else np.asarray(groups)
    if inner is None and alpha is None:
        inner = [inner_group_masks(m, groups, inner_folds, seed) for m in outer]
    out = RidgeSweep(alpha=np.full((L, F), FALLBACK_ALPHA if alpha is None else float(alpha)),
                     scores=np.full((L, F, len(grid)), np.nan), extended=[[[] for _ in range(F)] for _ in range(L)],
                     at_bound=np.zeros((L, F), dtype=bool), predict=np.empty((L, F, N, T)),
                     coef=np.empty((L, F, T, D)), intercept=np.empty((L, F, T)), mean=np.empty((L, F, D)),
                     scale=np.empty((L, F, D)))
    for layer in range(L):
        Xl = np.ascontiguousarray(X[:, layer], dtype=np.float64)
        for f in range(F):
            parts = [outer[f] & ~m for m in inner[f]] if alpha is None else []
            sums = _FoldSums(Xl, Y, outer[f], parts) if _FoldSums.usable(outer[f], parts, D) else None
            if alpha is None and inner[f]:
                paths = ([sums.path(k) for k in range(len(parts))] if sums is not None
                         else [_Path.direct(Xl, Y, m, val) for m, val in zip(inner[f], parts)])
                (out.alpha[layer, f], out.scores[layer, f], out.extended[layer][f],
                 out.at_bound[layer, f]) = choose_alpha(paths, grid, extend_grid)
                del paths
            a = float(out.alpha[layer, f])
            W, b, mu, sd = sums.refit(a) if sums is not None else _refit(Xl, Y, outer[f], a)
            del sums
            out.coef[layer, f], out.intercept[layer, f], out.mean[layer, f], out.scale[layer, f] = W, b, mu, sd
            out.predict[layer, f] = ((Xl - mu) / sd) @ W.T + b
    return out


class RidgeProbe(RegressorMixin, BaseEstimator):
    """Ridge regression on standardised features, one or several targets, alpha by inner speaker CV.

    fit(X (n, D), y (n,) or (n, T), groups=speakers (n,)) standardises X with the training rows'
    mean and std, chooses alpha among `alphas` by `inner_folds`-fold group k-fold over the training
    speakers, scored by the mean CCC over targets (ties: the alpha listed first; past a grid edge
    while the score rises, see the module docstring), then refits on all training rows (the same
    model as `Pipeline([StandardScaler(), Ridge(alpha)])`). Set `alpha` to skip the search.

    Parameters (keyword-only, stored as given, validated by `fit`):
      alpha         float > 0, or None (default): choose alpha among `alphas` by inner CV
      alphas        candidate alphas, searched when alpha is None (default 1e-2..1e5)
      inner_folds   int >= 2, inner group k-fold splits (fewer when there are fewer speakers)
      random_state  int, RandomState or None: the inner folds' shuffle

    Fitted attributes: n_features_in_, alpha_, cv_scores_ (len(alphas),) mean inner CCC per alpha
    (None when alpha was given or no inner split was possible: then alpha_ is `FALLBACK_ALPHA`),
    alpha_extended_ [(alpha, mean inner CCC)] searched beyond the grid, alpha_at_bound_ (the
    search's last allowed alpha won), mean_ and scale_ (D,), coef_ on standardised features ((D,)
    for 1-d y, (T, D) for 2-d, as scikit-learn's Ridge) and intercept_ (float or (T,)).

    Without `groups` the inner CV treats every row as its own speaker, so the chosen alpha is not
    speaker-independent, and `fit` warns (`UngroupedAlphaWarning`). In a Pipeline pass groups by
    step name (`ridgeprobe__groups=`) or by scikit-learn metadata routing, as for `LogRegProbe`.
    """

    _parameter_constraints: dict = {
        "alpha": [Bounds(Real, 0, None, closed="neither"), None],
        "alphas": ["array-like"],
        "inner_folds": [Bounds(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, alpha: float | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS, inner_folds: int = 3,
                 random_state=0):
        self.alpha = alpha
        self.alphas = alphas
        self.inner_folds = inner_folds
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags

    def fit(self, X, y, groups=None) -> RidgeProbe:
        """Fit on X (n, D) and targets y (n,) or (n, T); groups (n,): the speaker of each row."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        one_d = y.ndim == 1
        Y = y[:, None] if one_d else y
        full = np.ones(len(Y), dtype=bool)
        self.cv_scores_, self.alpha_extended_, self.alpha_at_bound_ = None, [], False
        if self.alpha is None:
            grid = np.asarray(self.alphas, dtype=np.float64).ravel()
            if not len(grid) or not (grid > 0).all():
                raise RegressionError(f"alphas must be positive values, got {self.alphas!r}")
            if groups is None:
                warnings.warn("RidgeProbe chose alpha without groups, so its inner CV is not speaker-independent: "
                              "pass groups=speakers to fit (see the RidgeProbe docstring for Pipelines)",
                              UngroupedAlphaWarning, stacklevel=2)
                groups = np.arange(len(Y))
            groups = np.asarray(groups)
            if groups.shape != (len(Y),):
                raise RegressionError(f"groups must be one speaker per row: {len(Y)} rows, groups of shape "
                                      f"{groups.shape}")
            inner = inner_group_masks(full, groups, self.inner_folds, self.random_state)
            sweep = sweep_ridge(X, Y, [full], groups, alphas=grid, inner=[inner])
            if inner:
                self.cv_scores_ = sweep.scores[0, 0]
                self.alpha_extended_, self.alpha_at_bound_ = sweep.extended[0][0], bool(sweep.at_bound[0, 0])
        else:
            sweep = sweep_ridge(X, Y, [full], None, alpha=float(self.alpha))
        self.alpha_ = float(sweep.alpha[0, 0])
        self.mean_, self.scale_ = sweep.mean[0, 0], sweep.scale[0, 0]
        coef, intercept = sweep.coef[0, 0], sweep.intercept[0, 0]
        self.coef_, self.intercept_ = (coef[0], float(intercept[0])) if one_d else (coef, intercept)
        return self

    def predict(self, X) -> np.ndarray:
        """(n,) or (n, T) predictions, as the training targets' shape."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_


# ---------------------------------------------------------------------------------- validation speakers

def speaker_validation(groups, n: int, fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(training rows, validation rows) of n rows: whole speakers moved to validation, round(fraction
    x speakers), at least one and leaving at least one (`featstore.folds.validation_split`, seeded);
    None when the rows hold fewer than 2 speakers (nothing can be held out speaker-independently).
    The early-stopping split of `XGBRegressorProbe` and `AttentionRegressorProbe`."""
    from types import SimpleNamespace

    from featstore.folds import validation_split

    groups = np.asarray(groups, dtype=object)
    if groups.shape != (n,):
        raise RegressionError(f"groups must be one speaker per row: {n} rows, groups of shape {groups.shape}")
    speakers = [str(g) for g in groups]
    if len(set(speakers)) < 2:
        return None
    records = [SimpleNamespace(speaker=s, label="") for s in speakers]     # no labels: the draw is by speaker only
    return validation_split(records, np.arange(n), fraction=fraction, seed=int(seed))


# ---------------------------------------------------------------------------------- kNN regression

class KNNRegressorProbe(RegressorMixin, BaseEstimator):
    """k-nearest-neighbour regression by cosine similarity: the mean of the neighbours' targets.

    The neighbour search is `classifiers.estimators.knn_index.search` (exact faiss inner product over
    L2-normalised rows, on a GPU when one is usable), as the kNN emotion classifier
    (`classifiers.runs.neighbors.knn_evaluate`): rows are centred on the training rows' mean first
    (`center="global"`; raw wav2vec2 states share one large direction that makes every cosine
    high) and then normalised. A prediction is the mean of the k nearest training rows' targets,
    each weighted 1 (`weighting="uniform"`) or by its similarity, (1 + cosine) / 2 (`"similarity"`,
    `knn_vote`'s weights); k is capped at the number of training rows.

    Parameters (keyword-only, stored as given, validated by `fit`): n_neighbors (int >= 1),
    weighting ("uniform" or "similarity"), center ("global" or None).

    Fitted attributes: n_features_in_, n_outputs_, center_ ((D,) or None), database_ ((n, D)
    float32 unit rows), targets_ ((n, T) float64). Nothing is tuned, so `fit`'s groups go unused:
    speaker independence comes from the folds, whose training rows form the database.
    """

    _parameter_constraints: dict = {
        "n_neighbors": [Bounds(Integral, 1, None, closed="left")],
        "weighting": [StrOptions({"uniform", "similarity"})],
        "center": [StrOptions({"global"}), None],
    }

    def __init__(self, *, n_neighbors: int = 10, weighting: str = "uniform", center: str | None = "global"):
        self.n_neighbors = n_neighbors
        self.weighting = weighting
        self.center = center

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags

    def fit(self, X, y, groups=None) -> KNNRegressorProbe:
        """Keep the training rows X (n, D), centred and normalised, and their targets y (n,) or (n, T).
        groups: accepted and unused (every regressor of `REGRESSORS` takes fit(X, y, groups=))."""
        from classifiers.estimators.knn_index import normalize

        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True)
        self._one_d = y.ndim == 1
        self.targets_ = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self.n_outputs_ = self.targets_.shape[1]
        self.center_ = X.mean(0, dtype=np.float64).astype(np.float32) if self.center == "global" else None
        self.database_ = normalize(X, self.center_)
        return self

    def kneighbors(self, X):
        """`classifiers.estimators.knn_index.Neighbors` of the rows X (Q, D) among the training rows: index and
        cosine similarity (Q, min(n_neighbors, n)), best first."""
        from classifiers.estimators.knn_index import normalize, search

        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return search(self.database_, normalize(X, self.center_), min(self.n_neighbors, len(self.database_)))

    def predict(self, X) -> np.ndarray:
        """(n,) or (n, T) weighted means of the neighbours' targets, as the training targets' shape."""
        nb = self.kneighbors(X)
        valid = nb.valid
        w = valid.astype(np.float64)
        if self.weighting == "similarity":
            w = np.where(valid, (1.0 + nb.sim.astype(np.float64)) / 2, 0.0)
            w = np.where(w.sum(1, keepdims=True) > 0, w, valid)         # every neighbour at cosine -1: plain mean
        vals = self.targets_[np.maximum(nb.index, 0)]                    # (Q, k, T)
        pred = np.einsum("qk,qkt->qt", w, vals) / w.sum(1)[:, None]
        return pred[:, 0] if self._one_d else pred


# ---------------------------------------------------------------------------------- the registry

class _Registry(Mapping):
    """name -> estimator class, each imported when first looked up (xgboost and torch load only for
    the regressors that need them); iterating lists the names without importing anything. An
    unknown name is a one-line `RegressionError` listing the names (not a bare KeyError)."""

    def __init__(self, where: dict[str, str]):
        self._where = dict(where)

    def __getitem__(self, name: str) -> type:
        import importlib

        module, cls = self._where[check_regressor(name)].split(":")
        return getattr(importlib.import_module(module), cls)

    def __contains__(self, name) -> bool:
        return name in self._where

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


#: regressor name -> scikit-learn estimator class (names as the classifier registry's,
#: `classifiers.runs.crossval.CLASSIFIERS`); the names and where each class lives are kept in
#: `classifiers.runs.dimensional.REGRESSOR_CLASSES`, light enough for the CLI's help to read
REGRESSORS: Mapping[str, type] = _Registry(REGRESSOR_CLASSES)


def check_regressor(name: str) -> str:
    """`name` if it is in `REGRESSORS`; else a one-line error listing every name."""
    if name not in REGRESSORS._where:
        raise RegressionError(f"unknown regressor {name!r}: use one of {', '.join(REGRESSORS)}")
    return name


def make_regressor(name: str, **params):
    """A new estimator of registry entry `name` with hyper-parameters `params` (its own names; an
    unknown one is a one-line error listing the ones it takes)."""
    cls = REGRESSORS[name]
    est = cls()
    bad = sorted(set(params) - set(est.get_params()))
    if bad:
        raise RegressionError(f"regressor {name!r} does not take {', '.join(bad)} (it takes: "
                              f"{', '.join(sorted(est.get_params()))})")
    return est.set_params(**params)


def fold_predictions(name: str, X, Y, train_masks: Sequence[np.ndarray], groups, *, seed: int = 0,
                     **params) -> np.ndarray:
    """Predictions of every row by registry regressor `name`, one fit per outer fold: (F, N, T) for
    Y (N, T), (F, N) for Y (N,); the layout of `sweep_ridge(X, Y, ...).predict[0]`, so a layer sweep
    can score any regressor as it scores the ridge sweep.

    X: (N, D) pooled features of one layer; train_masks: F boolean (N,) training masks; groups:
    (N,) speakers, passed with each fold's training rows to `fit` (ridge's inner alpha search,
    xgboost's and attention's early-stopping speakers; never a test row). seed: `random_state` of
    regressors that have one (unless `params` sets it); params: the regressor's hyper-parameters."""
    X = np.asarray(X)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim not in (1, 2) or len(X) != len(Y):
        raise RegressionError(f"X must be (N, D) and Y (N,) or (N, T) with the same N, got {X.shape} and {Y.shape}")
    masks = [np.asarray(m, dtype=bool) for m in train_masks]
    if not masks or any(m.shape != (len(X),) or not m.any() for m in masks):
        raise RegressionError(f"train_masks must be non-empty boolean masks over the {len(X)} rows")
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and groups.shape != (len(X),):
        raise RegressionError(f"groups must be one speaker per row: {len(X)} rows, groups of shape {groups.shape}")
    out = np.empty((len(masks), *Y.shape))
    for f, m in enumerate(masks):
        est = make_regressor(name, **params)
        if "random_state" in est.get_params() and "random_state" not in params:
            est.set_params(random_state=seed)
        est.fit(X[m], Y[m], groups=None if groups is None else groups[m])
        out[f] = est.predict(X)
    return out


# ---------------------------------------------------------------------------------- per layer

def ccc_by_layer(y_true, predictions, groups=None, *, level: float = 0.95) -> dict[str, np.ndarray]:
    """The layer curve per dimension with its speaker intervals: y_true (N, T) (or (N,)),
    predictions (L, N, T) (or (L, N)): {"ccc", "low", "high"}, each (L, T), the CCC of every layer
    and target and its jackknife-t interval over `groups` (`ccc_interval` of one column; None:
    over rows). What `classifiers.results.plots.dimension_layer_curve` draws."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    p = p[..., None] if p.ndim == 2 else p
    if p.ndim != 3 or p.shape[1:] != y.shape:
        raise RegressionError(f"predictions must be (layers, N, T) for truth (N, T) = {y.shape}, got {p.shape}")
    out = {k: np.empty((len(p), y.shape[1])) for k in ("ccc", "low", "high")}
    for layer in range(len(p)):
        for t in range(y.shape[1]):
            iv = ccc_interval(y[:, t], p[layer, :, t], groups, level=level)
            out["ccc"][layer, t], out["low"][layer, t], out["high"][layer, t] = iv.value, iv.low, iv.high
    return out
