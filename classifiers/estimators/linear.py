"""Logistic-regression probes: a layer-at-a-time sweep solver, and an estimator.

The objective is scikit-learn's multinomial logistic regression on standardised features:
    min_W,b  (1/s) sum_i s_i CE(softmax(z_i W + b), y_i) + 0.5 / (C s) ||W||^2      (b unpenalised)
where z_i are the features standardised with the training rows' mean and std, s_i the sample
weights (1, or n / (K n_k) with class_weight="balanced", as scikit-learn) and s their sum.

How a sweep is solved (`sweep_layer`; issue 18, `bench/probe.py` measures each choice):
- one layer at a time: its (N, D) matrix is the only one held, and every problem of the layer
  (outer folds, their inner folds) shares it: one GEMM per evaluation for all of them, the
  standardisation folded into the weights, so no per-problem copy of the features is made;
- C is chosen per outer fold by inner group k-fold over that fold's training speakers only
  (`selection_masks`); the Cs are a warm-started path (each C's solve starts from the previous,
  smaller C's solution), and a problem leaves the batch as soon as it converges, so the quick
  problems (small C) never wait for the slow ones;
- a fold whose best C is the grid's largest (smallest) goes on at x10 (/10), warm-started, while
  its inner UAR rises strictly, at most `EXTEND_STEPS` steps (issue 23: on the benchmark's data
  the top of the old grid won 64/65 cells with the score still rising); the fold's record says
  which Cs were searched beyond the grid (`C_extended`) and whether the bound was hit (`C_at_bound`);
- the refit on the outer fold's training rows starts from the mean of its inner solutions at the
  chosen C (the same objective and stopping rule as a cold start; fewer iterations than the path);
- L-BFGS starts each step from a low-rank model of the features' curvature (`_Preconditioner`,
  from each outer fold's training rows): hidden states are strongly anisotropic, and this cut the
  iterations about 4x on the benchmark's data. It changes the route, never the objective;
- on the CPU the layers are solved side by side, one single-threaded solve per core
  (`classifiers.runs.crossval`), which also bounds memory to that many layers.
Every solve is converged: L-BFGS until the largest gradient entry is below `tol` (1e-4,
scikit-learn's lbfgs default on the same per-sample-scaled objective) for the refit and
`SELECTION_TOL` (1e-5) for the fits that rank the Cs, or until float32 precision stops the descent.
For C up to 10 the refit matches a converged `LogisticRegression` on `StandardScaler` output and the
inner UAR per C matches a converged scikit-learn on the same inner folds to within a validation clip
or two (near-tied rows), so the chosen C is the same unless the best Cs are that close
(`python bench/probe.py --selection` counts the cells). At C >= 100 the objective is nearly flat
along some directions: the gradient criterion is met 0.06-2% above the optimum's objective, and the
fit's predictions are an early-stopped fit's, not the optimum's (`python bench/probe.py --convergence
LAYER` prints both along the path; README, "Large C").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.results.metrics import softmax
from featstore.device import check_device, resolve_device
from featstore.errors import SerError

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
# the inner fits that rank the Cs: at 1e-3 the chosen C differed from a converged sklearn's in 2/20 cells
# (bench/probe.py --selection), and at 1e-4 in 1 of the demo's 35 (inner UAR 0.3626 for 0.3668: issue 23);
# at 1e-5 the float32 solves mostly end on the precision floor (`_lbfgs`'s ftol), no longer on the gradient
SELECTION_TOL = 1e-5
# a best C at the grid's edge: the search goes on by this factor, at most this many steps (issue 23)
EXTEND_FACTOR = 10.0
EXTEND_STEPS = 3


class ProbeInputError(SerError, ValueError):
    """Training data or groups a probe cannot use; the message names the fix."""


class _Problems:
    """P logistic-regression problems over one layer's shared features.

    X: (N, D) features; onehot: (N, K); masks: (P, N) bool training rows; C: (P,);
    sample_weight: (P, N) or None. A problem's parameters are packed in one vector of
    D*K + K entries: W (D, K) on standardised features, then b (K,).
    """

    def __init__(self, X: torch.Tensor, onehot: torch.Tensor, masks: torch.Tensor, C: torch.Tensor,
                 sample_weight: torch.Tensor | None = None):
        self.X, self.onehot = X, onehot
        m = masks.to(X.dtype)
        n = m.sum(-1).clamp_min(1)
        self.mu = (m @ X) / n[:, None]                                     # (P, D) training mean
        var = (m @ (X * X)) / n[:, None] - self.mu ** 2
        sd = var.clamp_min(0).sqrt()
        self.sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))          # (P, D), as StandardScaler
        w = m if sample_weight is None else m * sample_weight
        self.s = w.sum(-1).clamp_min(1e-12)                                # (P,) sum of sample weights
        self.w = w / self.s[:, None]                                       # (P, N) row weights, sum 1
        self.C = C
        self.reg = 1.0 / (C * self.s)                                      # (P,)
        self.pre: _Preconditioner | None = None
        self.group = torch.zeros(len(C), dtype=torch.long, device=X.device)

    def take(self, idx: torch.Tensor, C: torch.Tensor | None = None) -> _Problems:
        """The problems `idx` (sharing X), optionally at other Cs (len(idx),)."""
        sub = object.__new__(_Problems)
        sub.X, sub.onehot = self.X, self.onehot
        sub.mu, sub.sd, sub.s, sub.w = self.mu[idx], self.sd[idx], self.s[idx], self.w[idx]
        sub.C = self.C[idx] if C is None else C
        sub.reg = 1.0 / (sub.C * sub.s)
        sub.pre, sub.group = self.pre, self.group[idx]
        return sub

    def precondition(self, q: torch.Tensor) -> torch.Tensor:
        """An approximate inverse Hessian times q (P, V): the L-BFGS initial matrix (identity without one)."""
        if self.pre is None:
            return q
        return self.pre.apply(q, self.group, self.reg, self.X.shape[1], self.onehot.shape[1])

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, D*K + K) -> W (P, D, K), b (P, K)."""
        D, K = self.X.shape[1], self.onehot.shape[1]
        return x[:, : D * K].reshape(-1, D, K), x[:, D * K:]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, P, K) logits of every problem on every row."""
        W, b = self.unpack(x)
        P, D, K = W.shape
        Ws = W / self.sd[:, :, None]                                       # fold standardisation in
        z = self.X @ Ws.permute(1, 0, 2).reshape(D, P * K)                 # one GEMM for all problems
        return z.view(-1, P, K) + (b - torch.einsum("pd,pdk->pk", self.mu, Ws))[None]

    def loss_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (P,) and its gradient (P, D*K + K)."""
        W, _ = self.unpack(x)
        P, D, K = W.shape
        z = self.logits(x)
        z = z - z.amax(-1, keepdim=True)
        logp = z - z.exp().sum(-1, keepdim=True).log()                     # (N, P, K); 3x torch.log_softmax over K

        wT = self.w.T                                                      # (N, P)
        ce = -(logp * self.onehot[:, None, :]).sum(-1)
        f = (wT * ce).sum(0) + 0.5 * self.reg * (W ** 2).sum((1, 2))
        G = (logp.exp() - self.onehot[:, None, :]) * wT[..., None]         # (N, P, K)
        gb = G.sum(0)
        gW = (self.X.T @ G.reshape(-1, P * K)).view(D, P, K).permute(1, 0, 2) - self.mu[..., None] * gb[:, None, :]
        gW = gW / self.sd[..., None] + self.reg[:, None, None] * W
        return f, torch.cat([gW.reshape(P, -1), gb], dim=1)


class _Preconditioner:
    """Low-rank curvature of the standardised features, per group of problems (an outer fold and its inner folds).

    The Hessian of the objective in W is close to alpha * Sigma (x) I_K + reg * I, with Sigma the
    correlation matrix of the standardised training rows and alpha ~ 1/K (the softmax curvature
    at the start). Hidden states are strongly anisotropic (a few directions carry most of the
    variance), which is what makes plain L-BFGS slow; the inverse of that matrix, from Sigma's top
    `rank` eigenpairs (the rest taken as their mean), is L-BFGS's initial matrix. It changes how
    fast the solver gets there, never the solution (the objective and stopping rule are unchanged).

    V: (G, rank, D) eigenvectors; lam: (G, rank) eigenvalues; rest: (G,) the mean of the others.
    """

    def __init__(self, V: torch.Tensor, lam: torch.Tensor, rest: torch.Tensor, alpha: float):
        self.V, self.lam, self.rest, self.alpha = V, lam, rest, alpha

    @staticmethod
    def top(z: torch.Tensor, trace: float, rank: int = 64, power: int = 1) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """Top eigenpairs of z^T z / n for a standardised (n, D) z of the given trace: V (rank, D), lam (rank,),
        and the mean of the other eigenvalues.

        A randomised range finder with `power` power iterations (seeded: the same z, the same result;
        2 iterations instead of 1 changed the solver's iteration count by under 2% on the benchmark).
        """
        n, D = z.shape
        r = min(rank, D, n)
        # drawn on the CPU whatever the device: CUDA's generator gives other numbers, hence another
        # preconditioner, another L-BFGS path and (within the tolerance) another solution than the CPU's
        gen = torch.Generator().manual_seed(0)
        Q = torch.randn(D, min(r + 8, D), generator=gen, dtype=z.dtype).to(z.device)
        for _ in range(power + 1):
            Q = torch.linalg.qr(z.T @ (z @ Q)).Q
        B = z @ Q
        lam, U = torch.linalg.eigh(B.T @ B / n)
        lam, U = lam.flip(0)[:r].clamp_min(0), U.flip(1)[:, :r]
        rest = ((trace - lam.sum()) / max(D - r, 1)).clamp_min(0)          # the trace minus the top ones
        return (Q @ U).T, lam, rest

    def apply(self, q: torch.Tensor, group: torch.Tensor, reg: torch.Tensor, D: int, K: int) -> torch.Tensor:
        P = len(q)
        G, r, _ = self.V.shape
        qW = q[:, : D * K].view(P, D, K)
        base = 1.0 / (self.alpha * self.rest[group] + reg)                 # (P,)
        top = 1.0 / (self.alpha * self.lam[group] + reg[:, None]) - base[:, None]   # (P, r)
        # every group's basis against every problem in one GEMM (G is a handful), then each problem's own block
        Vall = self.V.reshape(G * r, D)
        c = (Vall @ qW.permute(1, 0, 2).reshape(D, P * K)).view(G, r, P, K)
        own = torch.zeros_like(c)
        pi = torch.arange(P, device=q.device)
        own[group, :, pi] = c[group, :, pi] * top[..., None]
        back = (Vall.T @ own.view(G * r, P * K)).view(D, P, K).permute(1, 0, 2)
        out = base[:, None, None] * qW + back
        return torch.cat([out.reshape(P, -1), q[:, D * K:] / self.alpha], dim=1)


def _lbfgs(problems: _Problems, x: torch.Tensor, tol: torch.Tensor, *, max_iter: int = 300, history: int = 10,
           ftol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched L-BFGS with a per-problem backtracking (Armijo) line search: (solutions (P, V), iterations (P,)).

    A problem stops when its largest gradient entry is below its `tol` (P,) (scikit-learn's lbfgs
    criterion on the same per-sample-scaled objective), when an iteration lowers its objective by
    less than `ftol` relative (float32 precision), or after `max_iter`; it then leaves the batch,
    so later iterations cost only what is still unconverged.
    """
    out = x.clone()
    n_iter = torch.zeros(len(x), dtype=torch.long)
    act = torch.arange(len(x), device=x.device)
    pr = problems
    f, g = pr.loss_grad(x)
    S: list[torch.Tensor] = []
    Yh: list[torch.Tensor] = []
    R: list[torch.Tensor] = []
    stalled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        keep = (g.abs().amax(-1) > tol[act]) & ~stalled
        if not keep.all():
            out[act[~keep]] = x[~keep]
            act, x, f, g = act[keep], x[keep], f[keep], g[keep]
            S, Yh, R = [s[keep] for s in S], [y[keep] for y in Yh], [r[keep] for r in R]
            if not len(act):
                break
            pr = problems.take(act)
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Yh), reversed(R)):
            a = rho * (s * q).sum(-1)
            q -= a[:, None] * y
            alphas.append(a)
        if S:
            sy, yHy = (S[-1] * Yh[-1]).sum(-1), (Yh[-1] * pr.precondition(Yh[-1])).sum(-1)
            gamma = torch.where(yHy > 0, sy / yHy.clamp_min(1e-30), torch.ones_like(sy))
        elif pr.pre is None:
            gamma = 1.0 / g.norm(dim=-1).clamp_min(1e-12)
        else:
            gamma = torch.ones(len(g), dtype=g.dtype, device=g.device)
        r = gamma[:, None] * pr.precondition(q)
        for s, y, rho, a in zip(S, Yh, R, reversed(alphas)):
            r += s * (a - rho * (y * r).sum(-1))[:, None]
        d = -r
        gd = (g * d).sum(-1)
        bad = gd >= 0
        d = torch.where(bad[:, None], -g, d)
        gd = torch.where(bad, -(g * g).sum(-1), gd)
        t = torch.ones(len(x), dtype=x.dtype, device=x.device)
        pending = torch.ones(len(x), dtype=torch.bool, device=x.device)
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(30):
            idx = pending.nonzero().squeeze(1)
            trial = x[idx] + t[idx, None] * d[idx]
            ft, gt = pr.take(idx).loss_grad(trial)
            ok = ft <= f[idx] + 1e-4 * t[idx] * gd[idx]
            took = idx[ok]
            x_new[took], f_new[took], g_new[took] = trial[ok], ft[ok], gt[ok]
            pending[took] = False
            if not pending.any():
                break
            t[idx[~ok]] *= 0.5
        # no decrease found, or too small to matter: converged as far as precision allows
        stalled = pending | ((f - f_new) <= ftol * f.abs().clamp_min(1.0))
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(-1)
        S.append(s)
        Yh.append(y)
        R.append(torch.where(sy > 1e-12, 1.0 / sy.clamp_min(1e-12), torch.zeros_like(sy)))
        if len(S) > history:
            S.pop(0), Yh.pop(0), R.pop(0)
        x, f, g = x_new, f_new, g_new
        n_iter[act.cpu()] += 1
    out[act] = x
    return out, n_iter


def _class_weights(masks: np.ndarray, y: np.ndarray, n_classes: int, class_weight) -> np.ndarray:
    """(P, N) sample weights of each problem's rows, as scikit-learn's `class_weight`.

    "balanced": n / (K n_k) over the classes present in the problem's training rows; else a
    weight per class index (n_classes,).
    """
    sw = np.zeros(masks.shape, dtype=np.float64)
    for p, m in enumerate(masks):
        if isinstance(class_weight, str):
            counts = np.bincount(y[m], minlength=n_classes)
            present = counts > 0
            cw = np.where(present, m.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
        else:
            cw = np.asarray(class_weight, dtype=np.float64)
        sw[p] = cw[y]
    return sw


class _Layer:
    """One layer's features on the solver's device, with the problems built over them.

    X: (N, D); y: (N,) int labels in 0..K-1; rows: (N,) bool, the rows any problem trains on.
    Features are shifted by one constant vector (the mean of `rows`), which leaves every
    standardisation unchanged and keeps float32 sums accurate when features sit far from zero.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int, device, rows: np.ndarray, dtype=torch.float32):
        self.dev = resolve_device(device)
        self.dtype = dtype
        self.X = torch.as_tensor(np.asarray(X), dtype=dtype, device=self.dev)
        self.shift = self.X[torch.as_tensor(np.flatnonzero(rows), device=self.dev)].mean(0)
        self.X = self.X - self.shift
        self.y = np.asarray(y)
        self.K = n_classes
        self.onehot = torch.nn.functional.one_hot(torch.as_tensor(self.y, device=self.dev), n_classes).to(dtype)

    def problems(self, masks: np.ndarray, C: np.ndarray, class_weight=None,
                 pre: _Preconditioner | None = None, group: Sequence[int] | None = None) -> _Problems:
        """Problems over `masks` (P, N); pre/group: the preconditioner and each problem's index in it."""
        m = torch.as_tensor(np.asarray(masks, dtype=bool), device=self.dev)
        sw = None
        if class_weight is not None:
            sw = torch.as_tensor(_class_weights(np.asarray(masks, dtype=bool), self.y, self.K, class_weight),
                                 dtype=self.dtype, device=self.dev)
        pr = _Problems(self.X, self.onehot, m, torch.as_tensor(np.array(C, dtype=float), dtype=self.dtype,
                                                               device=self.dev), sw)
        if pre is not None:
            pr.pre, pr.group = pre, torch.as_tensor(np.asarray(group), dtype=torch.long, device=self.dev)
        return pr

    def preconditioner(self, masks: np.ndarray) -> _Preconditioner:
        """One `_Preconditioner` group per mask (N,): that mask's rows, standardised with their own statistics."""
        tops = []
        # one rank for every group (they are stacked): small folds can hold fewer rows than the default rank
        rank = max(1, min(64, self.X.shape[1], min(int(np.count_nonzero(m)) for m in masks)))
        for m in masks:
            z = self.X[torch.as_tensor(np.flatnonzero(m), device=self.dev)]
            sd = z.std(0, unbiased=False)
            z -= z.mean(0)
            z /= torch.where(sd > 1e-8, sd, torch.ones_like(sd))
            tops.append(_Preconditioner.top(z, float((sd > 1e-8).sum()), rank=rank))  # one per varying feature
            del z
        V, lam, rest = (torch.stack(t) for t in zip(*tops))
        return _Preconditioner(V, lam, rest, 1.0 / self.K)

    def path(self, problems: _Problems, Cs: Sequence[float], until: np.ndarray, tol: np.ndarray,
             max_iter: int = 300) -> tuple[torch.Tensor, np.ndarray]:
        """Solve problem p at Cs[0..until[p]] (Cs ascending), each C warm-started from the previous one.

        Returns solutions (len(Cs), P, V) (zeros past a problem's `until`) and iterations (len(Cs), P).
        """
        P = len(until)
        V = self.X.shape[1] * self.K + self.K
        sol = torch.zeros(len(Cs), P, V, dtype=self.dtype, device=self.dev)
        iters = np.zeros((len(Cs), P), dtype=np.int64)
        x = torch.zeros(P, V, dtype=self.dtype, device=self.dev)
        tol_t = torch.as_tensor(np.asarray(tol, dtype=float), dtype=self.dtype, device=self.dev)
        for ci, c in enumerate(Cs):
            idx = torch.as_tensor(np.flatnonzero(until >= ci), device=self.dev)
            if not len(idx):
                break
            pr = problems.take(idx, torch.full((len(idx),), float(c), dtype=self.dtype, device=self.dev))
            x[idx], it = _lbfgs(pr, x[idx], tol_t[idx], max_iter=max_iter)
            sol[ci, idx] = x[idx]
            iters[ci, idx.cpu().numpy()] = it.numpy()
        return sol, iters


def inner_masks(train_mask: np.ndarray, groups: np.ndarray, y: np.ndarray, n_folds: int, seed) -> list[np.ndarray]:
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


def selection_masks(train_masks: Sequence[np.ndarray], groups: np.ndarray, y: np.ndarray, inner_folds: int = 3,
                    seed=0) -> list[list[np.ndarray]]:
    """Per outer fold, its inner-training masks (`inner_masks`); the same for every layer, so built once."""
    return [inner_masks(tm, groups, y, inner_folds, seed) for tm in train_masks]


def _uar(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Macro recall over the classes present in y: pred (..., n) class indices, y (n,) -> (...)."""
    return np.mean([np.mean(pred[..., y == k] == k, axis=-1) for k in np.unique(y)], axis=0)


@dataclass
class LayerSweep:
    """What `sweep_layer` found for one layer.

    C: (F,) the C of each outer fold's refit (chosen, or given); scores: (F, len(Cs)) mean inner
    UAR per C of the given grid (None when C was given or no inner split was possible); proba:
    (F, N, K) and predict: (F, N) of the refits on every row; coef: (F, K, D) on standardised
    features, intercept: (F, K); mean, scale: (F, D) standardisation; iterations: L-BFGS
    iterations summed over every solve of the layer (selection and refit).
    extended: per fold, the (C, mean inner UAR) pairs searched beyond the grid (`extend_grid`),
    in search order ([] when the best C was inside the grid); at_bound: (F,) True where the
    chosen C is the last one the search was allowed (the grid's edge times `EXTEND_FACTOR` **
    `EXTEND_STEPS`) and it still scored best: the optimum may lie beyond.
    """

    C: np.ndarray
    scores: np.ndarray | None
    proba: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    iterations: int
    extended: list = None
    at_bound: np.ndarray | None = None

    @property
    def predict(self) -> np.ndarray:
        return self.proba.argmax(-1)


def _inner_uar(layer: _Layer, pr: _Problems, x: torch.Tensor, owner: Sequence[tuple[int, np.ndarray]],
               outer: np.ndarray, F: int) -> np.ndarray:
    """(F,) mean validation UAR over each outer fold's inner problems at solutions x (P, V); NaN for folds without."""
    pred = pr.logits(x).argmax(-1).cpu().numpy()                         # (N, P)
    total, count = np.zeros(F), np.zeros(F)
    for pi, (f, m) in enumerate(owner):
        val = np.flatnonzero(outer[f] & ~m)
        total[f] += _uar(pred[val, pi], layer.y[val])
        count[f] += 1
    with np.errstate(invalid="ignore"):
        return total / count


def sweep_layer(X: np.ndarray, y: np.ndarray, n_classes: int, train_masks: Sequence[np.ndarray], *,
                C: float | None = None, Cs: Sequence[float] = DEFAULT_CS,
                inner: Sequence[Sequence[np.ndarray]] | None = None, class_weight=None,
                device: str | None = None, tol: float = 1e-4, selection_tol: float = SELECTION_TOL,
                max_iter: int = 300, extend_grid: bool = True) -> LayerSweep:
    """Logistic-regression probes of one layer: C by inner CV per outer fold (or `C`), then the refit.

    X: (N, D) features; y: (N,) int labels in 0..n_classes-1; train_masks: F boolean (N,) masks
    of the outer folds' training rows; inner: per outer fold, its inner-training masks (subsets
    of that fold's training rows, `selection_masks`; validation = the fold's other training
    rows). C given: every refit uses it. Else each fold's C is the one with the best mean inner
    UAR (ties: the C listed first); a fold without inner masks gets C = 1.0.
    extend_grid: when a fold's best C is the largest (smallest) of `Cs`, its search goes on at
    C x 10 (C / 10), warm-started, while the inner UAR still rises strictly, at most
    `EXTEND_STEPS` steps; `LayerSweep.extended`/`at_bound` say what was searched.
    class_weight: None, "balanced", or a weight per class index (n_classes,): selection fits and refit alike.
    """
    outer = np.stack([np.asarray(m, dtype=bool) for m in train_masks])
    layer = _Layer(X, y, n_classes, device, outer.any(0))
    pre = layer.preconditioner(outer)                                     # per outer fold: its training rows only
    F = len(outer)
    Cs = np.asarray(Cs, dtype=float)
    order = np.argsort(Cs, kind="stable")                                # the path runs from small to large C
    iterations = 0
    scores = None
    extended: list[list[tuple[float, float]]] = [[] for _ in range(F)]
    at_bound = np.zeros(F, dtype=bool)
    chosen = np.full(F, 1.0)
    start = torch.zeros(F, layer.X.shape[1] * layer.K + layer.K, dtype=layer.dtype, device=layer.dev)
    if C is not None:
        chosen[:] = float(C)
    else:
        path_Cs = Cs[order]
        owner = [(f, m) for f in range(F) for m in (inner[f] if inner is not None else [])]
        if owner:
            masks = np.stack([m for _, m in owner])
            of = np.array([f for f, _ in owner])
            pr = layer.problems(masks, np.ones(len(masks)), class_weight, pre, of)
            sol, it = layer.path(pr, path_Cs, np.full(len(masks), len(Cs) - 1), np.full(len(masks), selection_tol),
                                 max_iter)
            iterations += int(it.sum())
            scores = np.full((F, len(Cs)), np.nan)
            for c in range(len(Cs)):
                scores[:, order[c]] = _inner_uar(layer, pr, sol[c], owner, outer, F)
            has = ~np.isnan(scores[:, 0])
            best = np.argmax(np.where(has[:, None], scores, 0.0), axis=1)  # first max in the given order
            chosen = np.where(has, Cs[best], 1.0)
            best_score = scores[np.arange(F), best]
            # each problem's solution at its fold's chosen C: the refit's starting point
            at = {c: sol[c] for c in range(len(Cs))}
            x_best = torch.stack([at[int(np.flatnonzero(path_Cs == chosen[f])[0])][pi] for pi, (f, _) in enumerate(owner)])
            if extend_grid:
                for direction, edge in ((1, len(Cs) - 1), (-1, 0)):
                    x = sol[edge].clone()
                    cur = np.full(F, path_Cs[edge])
                    going = has & (chosen == path_Cs[edge])
                    for step in range(1, EXTEND_STEPS + 1):
                        if not going.any():
                            break
                        cur = np.where(going, cur * EXTEND_FACTOR ** direction, cur)
                        idx = np.flatnonzero(going[of])
                        sub = pr.take(torch.as_tensor(idx, device=layer.dev),
                                      torch.as_tensor(cur[of[idx]], dtype=layer.dtype, device=layer.dev))
                        x[idx], n_it = _lbfgs(sub, x[idx], torch.full((len(idx),), selection_tol, dtype=layer.dtype,
                                                                        device=layer.dev), max_iter=max_iter)
                        iterations += int(n_it.sum())
                        new = _inner_uar(layer, pr, x, owner, outer, F)
                        for f in np.flatnonzero(going):
                            extended[f].append((float(cur[f]), float(new[f])))
                        better = going & (new > best_score)              # strictly: a tie keeps the grid's C
                        chosen = np.where(better, cur, chosen)
                        best_score = np.where(better, new, best_score)
                        for pi in idx:
                            if better[of[pi]]:
                                x_best[pi] = x[pi]
                        at_bound |= better & (step == EXTEND_STEPS)
                        going = better
            # start each refit from the mean of its inner solutions at the chosen C (same objective, shorter route)
            for f in np.flatnonzero(has):
                start[f] = x_best[torch.as_tensor(np.flatnonzero(of == f), device=layer.dev)].mean(0)
    pr = layer.problems(outer, chosen, class_weight, pre, range(F))
    x, it = _lbfgs(pr, start, torch.full((F,), tol, dtype=layer.dtype, device=layer.dev), max_iter=max_iter)
    iterations += int(it.sum())
    W, b = pr.unpack(x)
    proba = torch.softmax(pr.logits(x), -1).permute(1, 0, 2).cpu().numpy()
    return LayerSweep(C=chosen, scores=scores, proba=proba, coef=W.transpose(1, 2).cpu().numpy(),
                      intercept=b.cpu().numpy(), mean=(pr.mu + layer.shift).cpu().numpy(), scale=pr.sd.cpu().numpy(),
                      iterations=iterations, extended=extended, at_bound=at_bound)


def fit_many(X: np.ndarray, y: np.ndarray, masks: np.ndarray, C: np.ndarray, n_classes: int, *,
             device: str | None = None, tol: float = 1e-4, max_iter: int = 300,
             class_weight=None) -> np.ndarray:
    """(L, M, N, K) class probabilities of L x M fixed-C fits on every row.

    X: (L, N, D) features; y: (N,) int labels; masks: (M, N) bool training rows; C: (M,) or (L, M).
    """
    C = np.broadcast_to(np.asarray(C, dtype=float), (len(X), len(masks)))
    out = []
    for Xl, Cl in zip(X, C):
        layer = _Layer(Xl, y, n_classes, device, np.any(masks, axis=0))
        masks = np.asarray(masks, dtype=bool)
        pr = layer.problems(masks, Cl, class_weight, layer.preconditioner(masks), range(len(masks)))
        x, _ = _lbfgs(pr, torch.zeros(len(masks), layer.X.shape[1] * n_classes + n_classes, dtype=layer.dtype,
                                      device=layer.dev), torch.full((len(masks),), tol, device=layer.dev),
                      max_iter=max_iter)
        out.append(torch.softmax(pr.logits(x), -1).permute(1, 0, 2).cpu().numpy())
    return np.stack(out)


def inner_scores(X: np.ndarray, y: np.ndarray, train_masks: Sequence[np.ndarray], groups: np.ndarray,
                 n_classes: int, Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, seed=0,
                 device: str | None = None, tol: float = SELECTION_TOL) -> np.ndarray | None:
    """Mean inner-validation UAR of every C, per (layer, outer fold): (L, F, len(Cs)); None without inner folds.

    X: (L, N, D); train_masks: F boolean (N,) masks. Inner folds split the *training speakers* of
    each outer fold (groups = speakers), so the outer test speakers never influence the scores.
    """
    inner = selection_masks(train_masks, groups, y, inner_folds, seed)
    if not any(inner):
        return None
    return np.stack([sweep_layer(Xl, y, n_classes, train_masks, Cs=Cs, inner=inner, device=device,
                                 selection_tol=tol).scores for Xl in X])


def choose_C(X: np.ndarray, y: np.ndarray, train_masks: Sequence[np.ndarray], groups: np.ndarray, n_classes: int,
             Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, seed=0, device: str | None = None,
             tol: float = SELECTION_TOL) -> np.ndarray:
    """Best C per (layer, outer fold) by inner cross-validation on training speakers only: (L, F).

    The C with the highest mean inner UAR (`inner_scores`); ties go to the C listed first; a best C at
    the grid's edge is searched beyond it as in `sweep_layer`, so the choice may lie outside `Cs`.
    Without inner folds (fewer than 2 training speakers) every choice is 1.0.
    """
    inner = selection_masks(train_masks, groups, y, inner_folds, seed)
    return np.stack([sweep_layer(Xl, y, n_classes, train_masks, Cs=Cs, inner=inner, device=device,
                                 selection_tol=tol).C for Xl in X])


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
      class_weight  None, "balanced" (rows weighted n / (K n_k)) or {class: weight}, as scikit-learn's;
                    used by the C search and the refit alike
      device        "auto"/None, "cpu", "cuda", "cuda:N"
      seed          deprecated alias of random_state

    Fitted attributes: classes_ (K,), n_features_in_, C_, cv_scores_ (len(Cs),) mean inner UAR per
    C (None when C was given or no inner split was possible), C_extended_ [(C, mean inner UAR)] searched
    beyond the grid because the best C was at its edge, C_at_bound_ (the search's last allowed C won),
    mean_ and scale_ (D,) of the
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
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "device": [str, None],
        "seed": [Hidden(StrOptions({"deprecated"})), "random_state"],
    }

    def __init__(self, *, C: float | None = None, Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3,
                 random_state=0, max_iter: int = 300, tol: float = 1e-4, selection_tol: float = SELECTION_TOL,
                 class_weight: str | None = None, device: str | None = None, seed="deprecated"):
        self.C = C
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.selection_tol = selection_tol
        self.class_weight = class_weight
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
        cw = self.class_weight
        if isinstance(cw, dict):
            cw = [float(cw.get(c, 1.0)) for c in self.classes_.tolist()]
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
            inner = [inner_masks(full, groups, yi, self.inner_folds, seed)]
            sweep = sweep_layer(X, yi, len(self.classes_), [full], Cs=Cs, inner=inner, class_weight=cw,
                                device=self.device, tol=self.tol, selection_tol=self.selection_tol,
                                max_iter=self.max_iter)
            self.cv_scores_ = None if sweep.scores is None else sweep.scores[0]
            self.C_extended_, self.C_at_bound_ = list(sweep.extended[0]), bool(sweep.at_bound[0])
        else:
            self.C_extended_, self.C_at_bound_ = [], False
            sweep = sweep_layer(X, yi, len(self.classes_), [full], C=float(self.C), class_weight=cw,
                                device=self.device, tol=self.tol, max_iter=self.max_iter)
        self.C_ = float(sweep.C[0])
        self.mean_, self.scale_ = sweep.mean[0].astype(np.float64), sweep.scale[0].astype(np.float64)
        self.coef_, self.intercept_ = sweep.coef[0].astype(np.float64), sweep.intercept[0].astype(np.float64)
        self.n_iter_ = sweep.iterations
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


def speaker_normalise(X: np.ndarray, speakers: Sequence) -> np.ndarray:
    """(N, D) features standardised per speaker with that speaker's own rows' mean and std.

    A standard SER practice: the statistics use no label, and each speaker's (train or test) only
    their own utterances, so no row informs another speaker's features.
    """
    X = np.asarray(X, dtype=np.float32)
    out = np.empty_like(X)
    speakers = np.asarray(speakers)
    for s in np.unique(speakers):
        rows = speakers == s
        mu = X[rows].mean(0, dtype=np.float64)
        sd = X[rows].std(0, dtype=np.float64)
        out[rows] = (X[rows] - mu) / np.where(sd > 1e-8, sd, 1.0)
    return out
