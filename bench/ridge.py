"""Benchmark the all-layer ridge sweep `classifiers.estimators.regression.sweep_ridge` against nested scikit-learn.

Data: bench/probe.py's RAVDESS-sized synthetic feature set (`synthetic_ravdess`: 1440 utterances of
24 actors, 13 layers x 768, anisotropic noise, per-actor offsets, the emotion planted with a
strength peaking at layer 8), with 3 targets planted on it (arousal, valence, dominance): an
illustrative value per emotion (a circumplex-style table, `AVD`), plus a per-actor bias and a
per-utterance latent term z (N, 3) that is also written into every layer's features with the same
rise-and-fall profile (`STRENGTH`), so within-emotion variation is predictable too and the best
layers are in the middle. Folds: luna5 (bench/probe.py's `luna5_folds`), speakers as groups.

Measured one after the other in this process, both single-threaded (threadpoolctl BLAS limit 1,
torch 1 thread, the process pinned to one core: bench/probe.py's `one_thread`), wall and process
CPU seconds:

    ours      sweep_ridge(X, Y, train_masks, groups): per layer and outer fold, alpha among
              1e-2..1e5 by 3-fold group k-fold over the fold's training actors (mean CCC over
              targets), the ladder x10 (/10) past a grid edge while the score rises (at most 3
              steps), every alpha from one tridiagonal reduction per inner split; the refit
    sklearn   per layer and outer fold: GridSearchCV(Pipeline([StandardScaler(), Ridge()]), the grid
              and both ladders (1e-5..1e8, 14 alphas), cv = the same inner splits as index pairs,
              scoring = mean CCC), alpha picked by the same rule from its mean test scores, then
              Pipeline(StandardScaler, Ridge(alpha)) refit on the fold's training rows
    sklearn grid  the same with the grid's 8 alphas only and GridSearchCV's own choice and refit
              (what a plain nested search costs; it cannot leave the grid, so its choice is
              compared with ours only where ours stayed inside)

Printed: the times and their ratio; in how many of the 65 (layer, fold) cells the chosen alphas
agree; the largest difference of inner scores and of test predictions; the mean test CCC per layer.

    python bench/ridge.py [--layers 13] [--dim 768]

One run on a busy shared 2-core machine (issue 25): ours 12.3 s wall / 11.6 s CPU, sklearn nested
107.7 / 94.3 (8.1x CPU), sklearn grid only 83.3 / 57.2 (4.9x CPU); the alphas agree in 65/65 cells
(all 10: no cell left the grid), inner scores to 2e-12 and predictions to 1.3e-12; about 3.5 minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.probe import LABELS, luna5_folds, one_thread, synthetic_ravdess, timed  # noqa: E402
from classifiers.estimators.regression import (  # noqa: E402
    DEFAULT_ALPHAS,
    EXTEND_FACTOR,
    EXTEND_STEPS,
    ccc,
    inner_group_masks,
    sweep_ridge,
)

TARGETS = ("arousal", "valence", "dominance")
#: illustrative arousal, valence, dominance per emotion on a 1..7 scale (not RAVDESS annotations: it has none)
AVD = {"neutral": (3.0, 4.0, 4.0), "calm": (2.0, 4.5, 4.5), "happy": (5.0, 6.0, 5.0), "sad": (2.5, 2.0, 2.5),
       "angry": (6.0, 2.0, 6.0), "fear": (5.5, 2.5, 2.0), "disgust": (4.0, 2.0, 4.5), "surprise": (5.5, 5.0, 3.5)}


def STRENGTH(n_layers: int) -> np.ndarray:
    """The per-layer strength of the planted latent term: rises and falls, peak at 8/13 of the depth."""
    k = np.arange(n_layers)
    return 0.05 + 0.35 * np.exp(-0.5 * ((k - 8 * n_layers / 13) / (2.5 * n_layers / 13)) ** 2)


def planted(n_layers: int, dim: int, seed: int = 0):
    """(X (N, L, D) float32, Y (N, 3), utterances, speakers (N,))."""
    X, utts = synthetic_ravdess(n_layers=n_layers, dim=dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    speakers = np.array([u.speaker for u in utts])
    _, actor = np.unique(speakers, return_inverse=True)
    z = rng.standard_normal((len(utts), 3))
    Y = np.array([AVD[u.label] for u in utts]) + 0.5 * z + 0.3 * rng.standard_normal((actor.max() + 1, 3))[actor]
    for layer, s in enumerate(STRENGTH(n_layers)):
        X[:, layer] += (s * z @ rng.standard_normal((3, dim))).astype(np.float32)
    return X, Y, utts, speakers


def mean_ccc(y, p) -> float:
    return float(np.mean(ccc(y, p)))


def ladders(grid) -> tuple[list[float], list[float]]:
    steps = EXTEND_FACTOR ** np.arange(1, EXTEND_STEPS + 1)
    return list(max(grid) * steps), list(min(grid) / steps)


def rule(scores: dict, grid) -> float:
    """The documented choice from {alpha: mean inner score}: the grid's first best, then past its edge
    by the ladder while strictly better."""
    values = [scores[a] for a in grid]
    best = int(np.argmax(values))
    chosen, score = grid[best], values[best]
    up, down = ladders(grid)
    for edge, ladder in ((max(grid), up), (min(grid), down)):
        if chosen != edge:
            continue
        for a in ladder:
            if not scores[a] > score:
                break
            chosen, score = a, scores[a]
    return chosen


def training_splits(train_mask: np.ndarray, inner_masks) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner splits as (train, validation) positions within the outer fold's training rows,
    the form GridSearchCV's `cv` takes: the same inner folds ours uses."""
    pos = np.full(len(train_mask), -1)
    pos[np.flatnonzero(train_mask)] = np.arange(int(np.count_nonzero(train_mask)))
    return [(pos[np.flatnonzero(m)], pos[np.flatnonzero(train_mask & ~m)]) for m in inner_masks]


def sklearn_nested(X, Y, train_masks, inner, grid):
    """(alpha (L, F), inner scores (L, F, len(grid)), predictions (L, F, N, T)) of the nested scikit-learn baseline."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    up, down = ladders(grid)
    searched = list(grid) + up + down
    N, L, _ = X.shape
    F = len(train_masks)
    alpha, scores, pred = np.empty((L, F)), np.empty((L, F, len(grid))), np.empty((L, F, N, Y.shape[1]))
    for layer in range(L):
        Xl = np.asarray(X[:, layer], dtype=np.float64)
        for f, tm in enumerate(train_masks):
            cv = training_splits(tm, inner[f])
            search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]),
                                  {"ridge__alpha": searched}, cv=cv, scoring=make_scorer(mean_ccc), refit=False)
            search.fit(Xl[tm], Y[tm])
            by_alpha = dict(zip(searched, search.cv_results_["mean_test_score"]))
            alpha[layer, f] = rule(by_alpha, list(grid))
            scores[layer, f] = [by_alpha[a] for a in grid]
            model = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=alpha[layer, f]))]).fit(Xl[tm], Y[tm])
            pred[layer, f] = model.predict(Xl)
    return alpha, scores, pred


def sklearn_grid_only(X, Y, train_masks, inner, grid):
    """(alpha (L, F), predictions (L, F, N, T)): plain GridSearchCV over the grid, its own refit."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    N, L, _ = X.shape
    F = len(train_masks)
    alpha, pred = np.empty((L, F)), np.empty((L, F, N, Y.shape[1]))
    for layer in range(L):
        Xl = np.asarray(X[:, layer], dtype=np.float64)
        for f, tm in enumerate(train_masks):
            cv = training_splits(tm, inner[f])
            search = GridSearchCV(Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]),
                                  {"ridge__alpha": list(grid)}, cv=cv, scoring=make_scorer(mean_ccc)).fit(Xl[tm], Y[tm])
            alpha[layer, f] = search.best_params_["ridge__alpha"]
            pred[layer, f] = search.predict(Xl)
    return alpha, pred


def test_ccc(pred, Y, train_masks) -> np.ndarray:
    """(L,) mean over outer folds of the mean CCC over targets on each fold's test rows."""
    return np.array([[mean_ccc(Y[~tm], pred[layer, f][~tm]) for f, tm in enumerate(train_masks)]
                     for layer in range(pred.shape[0])]).mean(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=768)
    args = ap.parse_args()
    X, Y, utts, speakers = planted(args.layers, args.dim)
    folds = luna5_folds(utts)
    train_masks = [np.isin(np.arange(len(utts)), f.train) for f in folds]
    inner = [inner_group_masks(tm, speakers, 3, 0) for tm in train_masks]
    grid = list(DEFAULT_ALPHAS)
    print(f"{X.shape[0]} utterances x {X.shape[1]} layers x {X.shape[2]} dims, {len(TARGETS)} targets "
          f"({', '.join(TARGETS)}; labels {len(LABELS)}), luna5 outer folds, 3 inner speaker folds, "
          f"alphas {grid[0]:g}..{grid[-1]:g} (+ ladders), 1 thread each")
    with one_thread():
        w_ours, c_ours, ours = timed(lambda: sweep_ridge(X, Y, train_masks, speakers, alphas=grid, inner=inner))
        w_sk, c_sk, (a_sk, s_sk, p_sk) = timed(lambda: sklearn_nested(X, Y, train_masks, inner, grid))
        w_g, c_g, (a_g, p_g) = timed(lambda: sklearn_grid_only(X, Y, train_masks, inner, grid))
    cells = ours.alpha.size
    agree = np.isclose(ours.alpha, a_sk, rtol=1e-9)
    print(f"{'':<12} {'wall s':>8} {'CPU s':>8}")
    print(f"{'ours':<12} {w_ours:8.1f} {c_ours:8.1f}")
    print(f"{'sklearn':<12} {w_sk:8.1f} {c_sk:8.1f}")
    print(f"{'sklearn grid':<12} {w_g:8.1f} {c_g:8.1f}")
    print(f"ratio sklearn / ours: wall {w_sk / w_ours:.1f}x, CPU {c_sk / c_ours:.1f}x; "
          f"sklearn grid / ours: wall {w_g / w_ours:.1f}x, CPU {c_g / c_ours:.1f}x")
    print(f"chosen alpha agrees in {agree.sum()}/{cells} (layer, fold) cells; the search left the grid in "
          f"{sum(bool(e) for row in ours.extended for e in row)} and stopped at its bound in {ours.at_bound.sum()}")
    for li, fi in zip(*np.nonzero(~agree)):
        print(f"  layer {li} fold {fi}: ours {ours.alpha[li, fi]:g}, sklearn {a_sk[li, fi]:g}")
    inside = np.array([[not e for e in row] for row in ours.extended])
    print(f"sklearn grid: chosen alpha agrees in {np.sum(inside & (ours.alpha == a_g))}/{inside.sum()} cells where "
          f"ours stayed inside the grid; predictions there differ by at most "
          f"{np.abs(ours.predict - p_g)[inside].max() if inside.any() else float('nan'):.2e}")
    print(f"largest difference: inner mean CCC {np.nanmax(np.abs(ours.scores - s_sk)):.2e}, "
          f"predictions {np.abs(ours.predict - p_sk).max():.2e}")
    t_ours, t_sk = test_ccc(ours.predict, Y, train_masks), test_ccc(p_sk, Y, train_masks)
    print("layer  test mean CCC (ours / sklearn)  alphas chosen (ours, per fold)")
    for layer in range(X.shape[1]):
        print(f"{layer:>5}  {t_ours[layer]:.4f} / {t_sk[layer]:.4f}            "
              f"{' '.join(f'{a:g}' for a in ours.alpha[layer])}")


if __name__ == "__main__":
    main()
