"""Logistic-regression probes: a batched torch solver for whole layer sweeps, and an estimator.

The objective is scikit-learn's multinomial logistic regression on standardised features:
    min_W,b  0.5 ||W||^2 + C * sum_i CE(softmax(z_i W + b), y_i)       (b unpenalised)
where z_i are the features standardised with the training rows' mean and std.

`fit_many` solves many such problems at once: every layer x every training mask (outer folds,
inner folds) x every C, as one batched L-BFGS in torch, sharing each layer's feature matrix
between its problems (standardisation is folded into the weights, so no per-problem copy of the
features is made). A layer sweep is then a handful of batched solves instead of hundreds of
separate fits.

What matches scikit-learn: a refit (fixed C) matches a converged `LogisticRegression` on
`StandardScaler` output. The inner C selection (`inner_scores`, `choose_C`) solves to the same
gradient tolerance as the refit (1e-4, sklearn's default), in float32: its inner UAR per C agrees
with a converged sklearn (tol 1e-8) on the same inner folds to within one or two validation clips
(near-tied rows at small C, where logit margins are ~1e-4), so the chosen C is the same unless
the best Cs are that close. `python bench/probe.py --selection` measures it: 20/20 (layer, fold)
cells on its synthetic data at D=256 and D=768 (18/20 at D=256 with the former 1e-3 tolerance).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.metrics import softmax
from featstore.device import check_device, resolve_device
from featstore.errors import SerError

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
# converged like the refit: at 1e-3 the chosen C differed from a converged sklearn's in 2/20 cells (bench/probe.py)
SELECTION_TOL = 1e-4


class ProbeInputError(SerError, ValueError):
    """Training data or groups a probe cannot use; the message names the fix."""


class _Problems:
    """Batched logistic-regression problems over shared per-layer features.

    X: (L, N, D) features; Y: (N,) int labels in 0..K-1; masks: (L, M, N) bool training rows;
    C: (L, M) inverse regularisation. Parameters W: (L, M, D, K), b: (L, M, K).
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, masks: torch.Tensor, C: torch.Tensor, K: int):
        self.X, self.K = X, K
        w = masks.to(X.dtype)
        self.n = w.sum(-1).clamp_min(1)                                    # (L, M)
        self.w = w / self.n[..., None]                                     # row weights, sum 1
        self.mu = torch.einsum("lmn,lnd->lmd", self.w, X)                  # training mean
        var = torch.einsum("lmn,lnd->lmd", self.w, X * X) - self.mu ** 2
        self.sd = var.clamp_min(0).sqrt()
        self.sd = torch.where(self.sd > 1e-8, self.sd, torch.ones_like(self.sd))
        self.onehot = torch.nn.functional.one_hot(Y, K).to(X.dtype)         # (N, K)
        self.reg = 1.0 / (C * self.n)                                      # (L, M): 1/(C n)

    def logits(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(L, M, N, K) logits of every problem on every row."""
        Ws = W / self.sd[..., None]                                        # fold standardisation in
        shift = torch.einsum("lmd,lmdk->lmk", self.mu, Ws)
        return torch.einsum("lnd,lmdk->lmnk", self.X, Ws) + (b - shift)[:, :, None, :]

    def loss_grad(self, W: torch.Tensor, b: torch.Tensor):
        z = self.logits(W, b)
        logp = torch.log_softmax(z, dim=-1)
        ce = -(logp * self.onehot).sum(-1)                                 # (L, M, N)
        f = (self.w * ce).sum(-1) + 0.5 * self.reg * (W ** 2).sum((-1, -2))
        G = (logp.exp() - self.onehot) * self.w[..., None]                 # (L, M, N, K)
        gW_raw = torch.einsum("lnd,lmnk->lmdk", self.X, G) - self.mu[..., None] * G.sum(2)[:, :, None, :]
        gW = gW_raw / self.sd[..., None] + self.reg[..., None, None] * W
        gb = G.sum(2)
        return f, gW, gb


def _lbfgs(problems: _Problems, W: torch.Tensor, b: torch.Tensor, *, max_iter: int = 300, history: int = 10,
           tol: float = 1e-4, ftol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Batched L-BFGS with a per-problem backtracking (Armijo) line search.

    A problem stops when its largest gradient entry is below `tol` (scikit-learn's lbfgs default
    on the same per-sample-scaled objective) or an iteration lowers its
    objective by less than `ftol` relative (float32 precision), or after `max_iter`.
    """
    L, M, D, K = W.shape
    shape = (L, M)

    def pack(gW, gb):
        return torch.cat([gW.reshape(L, M, -1), gb], dim=-1)

    def unpack(v):
        return v[..., : D * K].reshape(L, M, D, K), v[..., D * K:]

    x = pack(W, b)
    f, gW, gb = problems.loss_grad(W, b)
    g = pack(gW, gb)
    S, Yh, R = [], [], []
    active = torch.ones(shape, dtype=torch.bool, device=W.device)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (read after the loop: iterations used)
        gnorm = g.abs().amax(-1)
        active &= gnorm > tol
        if not active.any():
            break
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Yh), reversed(R)):
            a = rho * (s * q).sum(-1)
            q -= a[..., None] * y
            alphas.append(a)
        if S:
            sy = (S[-1] * Yh[-1]).sum(-1)
            yy = (Yh[-1] * Yh[-1]).sum(-1)
            gamma = torch.where(yy > 0, sy / yy.clamp_min(1e-30), torch.ones_like(sy))
        else:
            gamma = 1.0 / g.norm(dim=-1).clamp_min(1e-12)
        r = gamma[..., None] * q
        for s, y, rho, a in zip(S, Yh, R, reversed(alphas)):
            beta = rho * (y * r).sum(-1)
            r += s * (a - beta)[..., None]
        d = -r
        gd = (g * d).sum(-1)
        bad = gd >= 0
        d = torch.where(bad[..., None], -g, d)
        gd = torch.where(bad, -(g * g).sum(-1), gd)
        d = d * active[..., None]
        t = torch.ones(shape, dtype=W.dtype, device=W.device)
        pending = active.clone()
        x_new, f_new, g_new = x, f, g
        for _ in range(30):
            trial = x + t[..., None] * d
            fw, gWt, gbt = problems.loss_grad(*unpack(trial))
            ok = (fw <= f + 1e-4 * t * gd) | ~pending
            take = pending & ok
            x_new = torch.where(take[..., None], trial, x_new)
            f_new = torch.where(take, fw, f_new)
            g_new = torch.where(take[..., None], pack(gWt, gbt), g_new)
            pending &= ~ok
            if not pending.any():
                break
            t = torch.where(pending, t * 0.5, t)
        # no decrease found, or too small to matter: converged as far as precision allows
        active &= ~pending & ((f - f_new) > ftol * f.abs().clamp_min(1.0))
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(-1)
        rho = torch.where(sy > 1e-12, 1.0 / sy.clamp_min(1e-12), torch.zeros_like(sy))
        S.append(s)
        Yh.append(y)
        R.append(rho)
        if len(S) > history:
            S.pop(0), Yh.pop(0), R.pop(0)
        x, f, g = x_new, f_new, g_new
    W, b = unpack(x)
    return W, b, it


def fit_many(X: np.ndarray | torch.Tensor, y: np.ndarray, masks: np.ndarray, C: np.ndarray, n_classes: int, *,
             device: str | None = None, dtype=torch.float32, max_iter: int = 300, tol: float = 1e-4):
    """Fit L x M logistic regressions at once.

    X: (L, N, D) features (layers); y: (N,) int labels; masks: (L, M, N) or (M, N) bool
    training rows; C: (L, M) or (M,) inverse regularisation. Returns a `BatchedFit`.
    """
    dev = resolve_device(device)
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype, device=dev)
    L, N, D = Xt.shape
    m = torch.as_tensor(np.array(masks, dtype=bool), device=dev)
    if m.dim() == 2:
        m = m[None].expand(L, -1, -1)
    Ct = torch.as_tensor(np.asarray(C, dtype=float), dtype=dtype, device=dev)
    if Ct.dim() == 1:
        Ct = Ct[None].expand(L, -1)
    Yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
    problems = _Problems(Xt, Yt, m, Ct, n_classes)
    W0 = torch.zeros(L, m.shape[1], D, n_classes, dtype=dtype, device=dev)
    b0 = torch.zeros(L, m.shape[1], n_classes, dtype=dtype, device=dev)
    W, b, iters = _lbfgs(problems, W0, b0, max_iter=max_iter, tol=tol)
    return BatchedFit(problems, W, b, iters)


class BatchedFit:
    """Solutions of `fit_many`: predictions of every problem on every row of X."""

    def __init__(self, problems: _Problems, W: torch.Tensor, b: torch.Tensor, iterations: int):
        self.problems, self.W, self.b, self.iterations = problems, W, b, iterations

    def proba(self) -> np.ndarray:
        """(L, M, N, K) class probabilities."""
        return torch.softmax(self.problems.logits(self.W, self.b), -1).cpu().numpy()

    def predict(self) -> np.ndarray:
        """(L, M, N) predicted class indices."""
        return self.problems.logits(self.W, self.b).argmax(-1).cpu().numpy()

    def coef(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights on standardised features (L, M, K, D) and intercepts (L, M, K), sklearn layout."""
        return self.W.transpose(-1, -2).cpu().numpy(), self.b.cpu().numpy()


def inner_masks(train_mask: np.ndarray, groups: np.ndarray, y: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Boolean (N,) inner-training masks: group k-fold by speaker over the training rows only."""
    from sklearn.model_selection import StratifiedGroupKFold

    idx = np.flatnonzero(train_mask)
    k = min(n_folds, len(np.unique(groups[idx])))
    if k < 2:
        return []
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    masks = []
    with warnings.catch_warnings():  # small classes: stratification is best effort, said once in the docs
        warnings.simplefilter("ignore", UserWarning)
        splits = list(cv.split(idx, y[idx], groups[idx]))
    for tr, _ in splits:
        m = np.zeros_like(train_mask, dtype=bool)
        m[idx[tr]] = True
        masks.append(m)
    return masks


def inner_scores(X: np.ndarray, y: np.ndarray, train_masks: Sequence[np.ndarray], groups: np.ndarray,
                 n_classes: int, Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, seed=0,
                 device: str | None = None, tol: float = SELECTION_TOL) -> np.ndarray | None:
    """Mean inner-validation UAR of every C, per (layer, outer fold): (L, F, len(Cs)); None without inner folds.

    X: (L, N, D); train_masks: F boolean (N,) masks. Inner folds split the *training speakers* of
    each outer fold (groups = speakers), so the outer test speakers never influence the scores.
    tol: the selection fits' gradient tolerance (the refit's default is 1e-4, sklearn's).
    """
    L, F = X.shape[0], len(train_masks)
    masks, owner = [], []
    for f, tm in enumerate(train_masks):
        for im in inner_masks(tm, groups, y, inner_folds, seed):
            for ci, c in enumerate(Cs):
                masks.append(im)
                owner.append((f, ci, c, tm & ~im))
    if not masks:
        return None
    fit = fit_many(X, y, np.stack(masks), np.array([o[2] for o in owner]), n_classes, device=device, tol=tol)
    pred = fit.predict()                                                   # (L, M, N)
    score = np.zeros((L, F, len(Cs)))
    count = np.zeros((L, F, len(Cs)))
    for m, (f, ci, _, val) in enumerate(owner):
        vi = np.flatnonzero(val)
        recalls = [np.mean(pred[:, m, vi[y[vi] == k]] == k, axis=1) for k in np.unique(y[vi])]
        score[:, f, ci] += np.mean(recalls, axis=0)                         # inner UAR
        count[:, f, ci] += 1
    return score / np.maximum(count, 1)


def choose_C(X: np.ndarray, y: np.ndarray, train_masks: Sequence[np.ndarray], groups: np.ndarray, n_classes: int,
             Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, seed=0, device: str | None = None,
             tol: float = SELECTION_TOL) -> np.ndarray:
    """Best C per (layer, outer fold) by inner cross-validation on training speakers only: (L, F).

    The C with the highest mean inner UAR (`inner_scores`); ties go to the smallest C listed first.
    Without inner folds (fewer than 2 training speakers) every choice is 1.0.
    """
    score = inner_scores(X, y, train_masks, groups, n_classes, Cs, inner_folds, seed, device, tol)
    if score is None:
        return np.full((X.shape[0], len(train_masks)), 1.0)
    return np.asarray(Cs, dtype=float)[np.argmax(score, axis=-1)]


class UngroupedSelectionWarning(UserWarning):
    """C was chosen by inner cross-validation without speaker groups (not speaker-independent)."""


class LogRegProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on standardised features, C by inner speaker CV.

    fit(X (n, D), y (n,), groups=speakers (n,)) chooses C among `Cs` by `inner_folds`-fold
    stratified group k-fold over the *training* speakers, then refits on all training rows with
    the batched L-BFGS of `fit_many` (the refit matches a converged scikit-learn
    `LogisticRegression` on `StandardScaler` output; the search, to within about one validation
    clip per C: see the module docstring). Set `C` to skip the search.

    Parameters (keyword-only, stored as given, validated by `fit`):
      C             float > 0, or None (default): choose C among `Cs` by inner CV
      Cs            candidate C values, searched when C is None
      inner_folds   int >= 2, inner group k-fold splits (fewer when there are fewer speakers)
      random_state  int, RandomState or None: the inner folds' shuffle
      max_iter, tol the refit's L-BFGS iteration cap and gradient tolerance (sklearn's defaults)
      selection_tol gradient tolerance of the inner-CV fits that rank the Cs (as converged as the
                    refit by default; see the module docstring for what that matches)
      device        "auto"/None, "cpu", "cuda", "cuda:N"
      seed          deprecated alias of random_state

    Fitted attributes: classes_ (K,), n_features_in_, C_, cv_scores_ (len(Cs),) mean inner UAR per
    C (None when C was given or no inner split was possible), mean_ and scale_ (D,) of the
    standardisation, coef_ (K, D) on standardised features, intercept_ (K,), n_iter_.

    Groups inside meta-estimators: without `groups` the inner CV treats every row as its own
    speaker, so the chosen C is not speaker-independent and `fit` warns
    (`UngroupedSelectionWarning`). In a `Pipeline`, pass them by step name
    (`pipe.fit(X, y, logregprobe__groups=speakers)`) or route them (scikit-learn metadata
    routing, which also reaches the probe inside `GridSearchCV`/`cross_validate`)::

        sklearn.set_config(enable_metadata_routing=True)
        probe = LogRegProbe().set_fit_request(groups=True)
        GridSearchCV(make_pipeline(StandardScaler(), probe), grid, cv=GroupKFold(5)).fit(X, y, groups=speakers)

    Then the outer splitter and the probe's inner C search both split by speaker.
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither"), None],
        "Cs": ["array-like"],
        "inner_folds": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "selection_tol": [Interval(Real, 0, None, closed="neither")],
        "device": [str, None],
        "seed": [Hidden(StrOptions({"deprecated"})), "random_state"],
    }

    def __init__(self, *, C: float | None = None, Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3,
                 random_state=0, max_iter: int = 300, tol: float = 1e-4, selection_tol: float = SELECTION_TOL,
                 device: str | None = None, seed="deprecated"):
        self.C = C
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.selection_tol = selection_tol
        self.device = device
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _random_state(self):
        """`random_state`, or the deprecated `seed` when that was set."""
        if isinstance(self.seed, str) and self.seed == "deprecated":
            return self.random_state
        warnings.warn("LogRegProbe(seed=...) is deprecated; use random_state=...", DeprecationWarning, stacklevel=3)
        return self.seed

    def fit(self, X, y, groups=None) -> LogRegProbe:
        """Fit on X (n, D) and labels y (n,); groups (n,): the speaker of each row (see the class docstring)."""
        self._validate_params()
        check_device(self.device)
        seed = self._random_state()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ProbeInputError(f"y holds one class only ({self.classes_[0]!r}); a classifier needs at least two")
        full = np.ones(len(yi), dtype=bool)
        self.cv_scores_ = None
        if self.C is None:
            Cs = np.asarray(self.Cs, dtype=float).ravel()
            if not len(Cs) or (Cs <= 0).any():
                raise ProbeInputError(f"Cs must be positive values, got {self.Cs!r}")
            if groups is None:
                warnings.warn("LogRegProbe chose C without groups, so its inner CV is not speaker-independent: "
                              "pass groups=speakers to fit (see the LogRegProbe docstring for Pipelines)",
                              UngroupedSelectionWarning, stacklevel=2)
                groups = np.arange(len(yi))
            groups = np.asarray(groups)
            if groups.shape != yi.shape:
                raise ProbeInputError(f"groups must be one speaker per row: {len(yi)} rows, groups of shape "
                                      f"{groups.shape}")
            score = inner_scores(X[None], yi, [full], groups, len(self.classes_), Cs, self.inner_folds, seed,
                                 self.device, self.selection_tol)
            self.cv_scores_ = None if score is None else score[0, 0]
            self.C_ = 1.0 if score is None else float(Cs[np.argmax(score[0, 0])])
        else:
            self.C_ = float(self.C)
        fit = fit_many(X[None], yi, full[None], np.array([self.C_]), len(self.classes_), device=self.device,
                       max_iter=self.max_iter, tol=self.tol)
        coef, intercept = fit.coef()
        self.mean_ = fit.problems.mu[0, 0].cpu().numpy().astype(np.float64)
        self.scale_ = fit.problems.sd[0, 0].cpu().numpy().astype(np.float64)
        self.coef_, self.intercept_ = coef[0, 0].astype(np.float64), intercept[0, 0].astype(np.float64)
        self.n_iter_ = fit.iterations
        return self

    def _logits(self, X) -> np.ndarray:
        """(n, K) class logits."""
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """(n, K) class logits; (n,) for two classes (logit of classes_[1] minus classes_[0], as sklearn)."""
        check_is_fitted(self)
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X) -> np.ndarray:
        """(n, K) class probabilities, columns in `classes_` order."""
        check_is_fitted(self)
        return softmax(self._logits(X))

    def predict(self, X) -> np.ndarray:
        """(n,) predicted labels, values of `classes_`."""
        check_is_fitted(self)
        return self.classes_[self._logits(X).argmax(axis=1)]
