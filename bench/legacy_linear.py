"""The logistic-regression sweep as it was before issue 18, kept verbatim for `bench/probe.py --legacy`.

One batched L-BFGS over every layer x (outer fold, inner fold, C) problem at once, cold-started,
every problem evaluated until the slowest converges. Not used by `ser`; only timed against.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from featstore.device import resolve_device

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
SELECTION_TOL = 1e-4


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
