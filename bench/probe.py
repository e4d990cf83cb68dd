"""Benchmark `probe_layers(..., layers=all)` against the plain scikit-learn loop over layers and folds.

Data: a RAVDESS-sized synthetic feature set held in memory (seeded numpy): 1440 utterances of
24 actors (60 each: 4 neutral + 8 of each other emotion, as RAVDESS), 8 classes, 13 layers x
768 dimensions. Every layer has anisotropic noise (a low-rank component, as real hidden states)
and a per-actor offset; the emotion is planted with a strength that rises and falls over the
layers (peak at layer 8), blurred per actor. Folds: luna5, the 5 actor folds of Luna-Jiménez et
al. 2022 ({2,5,14,15,16}, {3,6,7,13,18}, {10,11,12,19,20}, {8,17,21,23,24}, {1,4,9,22}).

Measured one after the other in this process, on the same arrays and folds:

  fixed C (apples to apples: same objective, no model selection on either side)
    sklearn loop   for layer: for fold: StandardScaler + LogisticRegression(C, max_iter=1000)
                   fit on the training actors, predict the test actors  (13 x 5 = 65 fits)
    ours           probe_layers(X, utts, folds, layers=all, C=C): one batched torch L-BFGS
                   solve of the same 65 problems (standardisation from the training rows)

  C by inner speaker CV (what `ser probe` does by default)
    ours           probe_layers(..., C=None): per layer and fold, C among Cs chosen by 3-fold
                   group k-fold over the training actors (13 x 5 x 3 x 4 = 780 problems in one
                   batched solve), then the 65 refits
    sklearn        (--nested) GridSearchCV(StandardScaler + LogisticRegression, same Cs,
                   StratifiedGroupKFold(3) over the training actors, balanced accuracy), refit
                   (65 x 13 = 845 fits); slow, so off by default

  inner C selection against a converged scikit-learn (--selection: this comparison only)
    for a few layers x the 5 folds, every C is scored by the same inner speaker folds
    (`inner_masks`) twice: by `inner_scores` at several selection tolerances, and by
    StandardScaler + LogisticRegression(C, tol=1e-8, max_iter=10000) per inner split; prints how
    many (layer, fold) cells choose the same C, the converged-score gap where they do not, and
    the cost of each tolerance (wall and process CPU seconds: on a shared machine compare the CPU
    seconds of a --threads 1 run).

    python bench/probe.py [--C 1.0] [--nested] [--threads N] [--device cpu|cuda]
    python bench/probe.py --selection [--dim 768] [--selection-layers 2,5,8,11]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
LUNA5 = ({2, 5, 14, 15, 16}, {3, 6, 7, 13, 18}, {10, 11, 12, 19, 20}, {8, 17, 21, 23, 24}, {1, 4, 9, 22})


def synthetic_ravdess(n_layers: int = 13, dim: int = 768, seed: int = 0):
    """(X (1440, n_layers, dim) float32, utterances) with the emotion planted around layer 8."""
    from featstore.corpora.base import Utterance

    rng = np.random.default_rng(seed)
    actors, labels = [], []
    for actor in range(1, 25):
        for k, _label in enumerate(LABELS):
            for _ in range(4 if k == 0 else 8):
                actors.append(actor)
                labels.append(k)
    actors, labels = np.array(actors), np.array(labels)
    n = len(actors)
    strength = 0.04 + 0.16 * np.exp(-0.5 * ((np.arange(n_layers) - 8) / 2.5) ** 2)
    rank = 24
    X = np.empty((n, n_layers, dim), dtype=np.float32)
    for layer in range(n_layers):
        mixing = rng.standard_normal((rank, dim)) * 1.5                      # anisotropy: a few big directions
        centroids = rng.standard_normal((len(LABELS), dim))
        offsets = rng.standard_normal((25, dim)) * 0.6                        # per actor
        blur = rng.standard_normal((25, len(LABELS), dim)) * 0.5              # each actor acts an emotion a bit differently
        signal = (centroids[labels] + blur[actors, labels]) * strength[layer]
        X[:, layer] = (rng.standard_normal((n, dim)) + rng.standard_normal((n, rank)) @ mixing
                       + offsets[actors] + signal)
    utts = [Utterance(id=f"bench-{i:04d}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{a:02d}",
                      gender=None, label=LABELS[k], label_raw=str(k + 1)) for i, (a, k) in enumerate(zip(actors, labels))]
    return X, utts


def luna5_folds(utts):
    from featstore.folds import Fold

    actor = np.array([int(u.speaker[-2:]) for u in utts])
    folds = []
    for k, test_actors in enumerate(LUNA5):
        test = np.isin(actor, sorted(test_actors))
        folds.append(Fold(f"luna-{k}", np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def sklearn_loop(X, y, folds, C: float):
    """{layer: (mean WA, mean UAR)} of the plain loop, fixed C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    out = {}
    for layer in range(X.shape[1]):
        wa, uar = [], []
        for f in folds:
            sc = StandardScaler().fit(X[f.train, layer])
            clf = LogisticRegression(C=C, max_iter=1000).fit(sc.transform(X[f.train, layer]), y[f.train])
            pred = clf.predict(sc.transform(X[f.test, layer]))
            wa.append(accuracy_score(y[f.test], pred))
            uar.append(balanced_accuracy_score(y[f.test], pred))
        out[layer] = (np.mean(wa), np.mean(uar))
    return out


def sklearn_nested(X, y, groups, folds, Cs):
    """{layer: (mean WA, mean UAR)} of GridSearchCV over Cs with 3-fold speaker CV inside each fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for layer in range(X.shape[1]):
        wa, uar = [], []
        for f in folds:
            search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                                  {"logisticregression__C": list(Cs)}, scoring="balanced_accuracy",
                                  cv=StratifiedGroupKFold(3, shuffle=True, random_state=0))
            search.fit(X[f.train, layer], y[f.train], groups=groups[f.train])
            pred = search.predict(X[f.test, layer])
            wa.append(accuracy_score(y[f.test], pred))
            uar.append(balanced_accuracy_score(y[f.test], pred))
        out[layer] = (np.mean(wa), np.mean(uar))
    return out


def converged_inner_scores(X, y, groups, train_mask, Cs, inner_folds: int = 3, seed: int = 0) -> np.ndarray:
    """(len(Cs),) mean inner UAR of each C by a converged sklearn fit on the same inner folds as ours."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from classifiers.linear import inner_masks

    scores = np.zeros(len(Cs))
    masks = inner_masks(train_mask, groups, y, inner_folds, seed)
    for inner in masks:
        val = train_mask & ~inner
        sc = StandardScaler().fit(X[inner])
        for ci, C in enumerate(Cs):
            clf = LogisticRegression(C=C, tol=1e-8, max_iter=10000).fit(sc.transform(X[inner]), y[inner])
            scores[ci] += balanced_accuracy_score(y[val], clf.predict(sc.transform(X[val])))
    return scores / len(masks)


def selection_agreement(X, y, groups, folds, layers, Cs, tols, device) -> None:
    """Print, per selection tolerance, the (layer, fold) cells whose chosen C equals the converged sklearn one."""
    from classifiers.linear import inner_scores

    masks = []
    for f in folds:
        m = np.zeros(len(y), dtype=bool)
        m[f.train] = True
        masks.append(m)
    t_ref, ref = timed(lambda: np.array([[converged_inner_scores(X[:, k], y, groups, m, Cs) for m in masks]
                                         for k in layers]))                          # (L, F, len(Cs))
    ref_choice = ref.argmax(-1)
    Xl = np.ascontiguousarray(np.moveaxis(X[:, layers], 1, 0))
    n_cells = ref_choice.size
    print(f"\ninner C selection vs converged sklearn (tol=1e-8) on the same inner folds: layers {layers} x "
          f"{len(folds)} folds = {n_cells} cells, Cs {list(Cs)}; sklearn reference {t_ref:.1f} s")
    print(f"{'selection tol':>13} {'agree':>7} {'max |score diff|':>16} {'converged-score loss where not':>31} "
          f"{'wall':>7} {'CPU':>7}")
    for tol in tols:
        cpu = time.process_time()
        t, ours = timed(lambda tol=tol: inner_scores(Xl, y, masks, groups, int(y.max()) + 1, Cs, 3, 0, device, tol))
        cpu = time.process_time() - cpu
        choice = ours.argmax(-1)
        agree = choice == ref_choice
        loss = (np.take_along_axis(ref, ref_choice[..., None], -1) - np.take_along_axis(ref, choice[..., None], -1))[..., 0]
        lost = ", ".join(f"{v * 100:.2f}p" for v in loss[~agree]) or "-"
        print(f"{tol:>13g} {agree.sum():>3}/{n_cells:<3} {np.abs(ours - ref).max() * 100:>15.2f}p {lost:>31} "
              f"{t:6.1f}s {cpu:6.1f}s")
        for li, fi in zip(*np.nonzero(~agree)):
            print(f"{'':>13} layer {layers[li]} fold {fi}: ours C={Cs[choice[li, fi]]:g}, sklearn C="
                  f"{Cs[ref_choice[li, fi]]:g}; inner UAR ours {np.round(ours[li, fi] * 100, 2).tolist()}, "
                  f"sklearn {np.round(ref[li, fi] * 100, 2).tolist()}")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--C", type=float, default=1.0, help="C of the fixed-C comparison (sklearn's default: 1.0)")
    ap.add_argument("--nested", action="store_true", help="also time sklearn's nested CV (13x the plain loop)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--device", default=None, help="device of the batched solver (default: cuda if available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--selection", action="store_true", help="only compare the inner C selection with sklearn's")
    ap.add_argument("--selection-layers", default="2,5,8,11", help="layers of the --selection comparison")
    ap.add_argument("--dim", type=int, default=768, help="feature dimension of the synthetic data")
    args = ap.parse_args()

    import sklearn
    import torch

    from classifiers.evaluate import probe_layers
    from classifiers.linear import DEFAULT_CS

    if args.threads:
        torch.set_num_threads(args.threads)
    t_data, (X, utts) = timed(lambda: synthetic_ravdess(dim=args.dim, seed=args.seed))
    folds = luna5_folds(utts)
    y = np.array([u.label for u in utts])
    groups = np.array([u.speaker for u in utts])
    layers = list(range(X.shape[1]))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"data: {X.shape[0]} utterances x {X.shape[1]} layers x {X.shape[2]} float32 (seed {args.seed}, built in "
          f"{t_data:.1f} s), 24 actors, 8 classes; luna5 folds (test actors {', '.join(map(str, map(sorted, LUNA5)))})")
    print(f"scikit-learn {sklearn.__version__}, torch {torch.__version__} on {device} ({torch.get_num_threads()} "
          f"threads), CPUs visible: {os.cpu_count()}")
    if args.selection:
        yi = np.unique(y, return_inverse=True)[1]
        selection_agreement(X, yi, groups, folds, [int(k) for k in args.selection_layers.split(",")], DEFAULT_CS,
                            (1e-3, 1e-4, 1e-5), device)
        return

    t_sk, sk = timed(lambda: sklearn_loop(X, y, folds, args.C))
    t_ours, ours = timed(lambda: probe_layers(X, utts, folds, layers, C=args.C, device=device))
    t_inner, inner = timed(lambda: probe_layers(X, utts, folds, layers, device=device))
    rows, rows_inner = ({r["layer"]: r for r in res.summary()} for res in (ours, inner))
    chosen = {}
    for r in inner.records:
        chosen.setdefault(r["layer"], []).append(r["C"])

    print(f"\nfixed C = {args.C}: per layer, mean over the 5 folds")
    print(f"{'layer':>5} {'sklearn WA':>10} {'ours WA':>8} {'diff':>7} {'sklearn UAR':>11} {'ours UAR':>8} {'diff':>7}"
          f" | {'inner-CV WA':>11} {'UAR':>6}  C chosen (per fold)")
    diffs = []
    for k in layers:
        swa, suar = sk[k]
        d_wa, d_uar = rows[k]["wa"] - swa, rows[k]["uar"] - suar
        diffs.append((abs(d_wa), abs(d_uar)))
        print(f"{k:>5} {swa:10.3f} {rows[k]['wa']:8.3f} {d_wa * 100:+6.2f}p {suar:11.3f} {rows[k]['uar']:8.3f} "
              f"{d_uar * 100:+6.2f}p | {rows_inner[k]['wa']:11.3f} {rows_inner[k]['uar']:6.3f}  "
              f"{', '.join(f'{c:g}' for c in chosen[k])}")
    diffs = np.array(diffs)
    best_sk = max(layers, key=lambda k: sk[k][1])
    print(f"mean |WA diff| {diffs[:, 0].mean() * 100:.2f} points (max {diffs[:, 0].max() * 100:.2f}); mean |UAR diff| "
          f"{diffs[:, 1].mean() * 100:.2f} points (max {diffs[:, 1].max() * 100:.2f}); best layer by UAR: sklearn "
          f"{best_sk}, ours {ours.best()['layer']}, ours inner-CV {inner.best()['layer']}")
    verdict = "meets" if t_sk / t_ours >= 5 and diffs[:, 0].max() <= 0.01 else "misses"
    print("\ntimes (wall, this process):")
    print(f"  sklearn loop, fixed C={args.C}, 65 fits:                    {t_sk:7.1f} s")
    print(f"  ours, fixed C={args.C}, 65 problems batched:                 {t_ours:7.1f} s   speed-up "
          f"{t_sk / t_ours:5.1f}x ({verdict} the >= 5x, <= 1 point target)")
    print(f"  ours, C by inner speaker CV (4 Cs x 3 folds) + refit:     {t_inner:7.1f} s   "
          f"= {t_inner / t_sk:.2f}x the sklearn fixed-C loop's time, which selects nothing")
    if args.nested:
        t_nest, nest = timed(lambda: sklearn_nested(X, y, groups, folds, DEFAULT_CS))
        print(f"  sklearn GridSearchCV, same Cs and inner CV, 845 fits:     {t_nest:7.1f} s   ours inner-CV is "
              f"{t_nest / t_inner:.1f}x faster")
        d = [abs(rows_inner[k]["wa"] - nest[k][0]) for k in layers]
        print(f"  nested: mean |WA diff| ours vs sklearn {np.mean(d) * 100:.2f} points (max {np.max(d) * 100:.2f}; "
              f"C choices can differ where inner scores tie); best-layer UAR ours "
              f"{inner.best()['uar']:.3f} vs sklearn {max(v[1] for v in nest.values()):.3f}")


if __name__ == "__main__":
    main()
