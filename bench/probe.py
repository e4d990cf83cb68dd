"""Benchmark the layer sweep `probe_layers(..., layers=all)` against scikit-learn and the previous default.

Data: a RAVDESS-sized synthetic feature set held in memory (seeded numpy): 1440 utterances of
24 actors (60 each: 4 neutral + 8 of each other emotion, as RAVDESS), 8 classes, 13 layers x
768 dimensions. Every layer has anisotropic noise (a low-rank component, as real hidden states)
and a per-actor offset; the emotion is planted with a strength that rises and falls over the
layers (peak at layer 8), blurred per actor. Folds: luna5, the 5 actor folds of Luna-Jiménez et
al. 2022 ({2,5,14,15,16}, {3,6,7,13,18}, {10,11,12,19,20}, {8,17,21,23,24}, {1,4,9,22}).

Measured one after the other in this process, on the same arrays and folds (wall and process
CPU seconds; on a shared machine the CPU seconds and the ratios are the figures to compare).
Every row runs twice and says its threads (issue 23): once with the threads a user's process has
(numpy/scipy's BLAS threads for scikit-learn, torch's for the previous default, `ser`'s own layers
side by side for ours), once with one thread per process (threadpoolctl BLAS limit 1, torch 1 thread,
the process pinned to one core, so ours runs its layers one after another). Idle BLAS threads
spin-wait on a busy shared machine, so the default-threads rows of scikit-learn can cost many
times their one-thread CPU: compare against the one-thread rows.

  fixed C (apples to apples: same objective, no model selection on either side)
    sklearn loop   for layer: for fold: StandardScaler + LogisticRegression(C, max_iter=1000)
                   (13 x 5 = 65 fits)
    ours           probe_layers(X, utts, folds, layers=all, C=C)

  C by inner speaker CV (what `ser probe` does by default)
    ours           probe_layers(..., C=None): per layer and outer fold, C among Cs chosen by 3-fold
                   group k-fold over the fold's training actors (the search going on by x10 past a
                   grid edge while the inner UAR rises, at most 3 steps), then the refit
                   (`linear.sweep_layer`)
    previous       the default before issue 18 (`bench/legacy_linear.py`, kept verbatim): every
                   layer x fold x inner fold x C problem in one cold-started batched L-BFGS
    sklearn        (--nested) GridSearchCV(StandardScaler + LogisticRegression, the Cs and their
                   x10 ladder 1e-6..1e3, StratifiedGroupKFold(3) over the training actors, balanced
                   accuracy), C picked by our rule (`extended_choice`), refit; slow, so off by
                   default. Prints UAR per layer and the chosen C of every (layer, fold) cell next to ours.

  --scaling        ours (default selection) at 1440 and 7440 utterances (124 actors, CREMA-D size)
                   x 13 x 768 and 25 x 1024, with the cost per utterance x layer x dimension
  --memory N       a synthetic N x 25 x 1024 store written to --store-dir (mean only; std left
                   unwritten), then swept from disk one layer at a time: peak RSS and time
  --xgboost        the XGBoost layer sweep: every tree (no early stopping, as before issue 18)
                   against early stopping on a validation split of the training speakers
  --process        whole fresh processes on a 1440 x 13 x 768 store: `ser probe --layer all` (default
                   selection, and --C 1; writing results and plots) against a plain scikit-learn
                   fixed-C script over the same features exported as .npz, each with the default
                   threads and with one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1, pinned to one core);
                   start-up of model-free commands
  --selection      inner C selection against a converged scikit-learn on the same inner folds
                   (`inner_masks`): per selection tolerance, how many (layer, fold) cells
                   choose the same C, and the cost
  --stability N    the sweeps' own floating-point noise (issue 23, item 4): the default sweep and the fixed-C
                   one on the features and on N copies with every entry moved one float32 ulp up or down
                   (a seeded coin per entry: the same data to float32 precision, other roundings along
                   the solver's route), one thread: per copy, the (layer, fold) cells with the same C and
                   the same C search beyond the grid, test predictions that differ, the largest probability
                   and UAR differences. A solver change that claims "the same results" is judged against
                   this envelope: `--save-run F` before the change, `--compare-run F` after (with
                   --stability N to print the envelope beside it)

  --convergence L  the selection's fits along the C path at layer L (the first inner problem of each outer
                   fold) against scikit-learn solved to tol 1e-10 in float64: relative objective gap, largest
                   gradient entry, weight norms, and the inner-validation UAR of each (issue 23, item 5: at
                   large C a gradient below tol no longer pins the solution)
  --selection-cost  why the default sweep costs what it does (issue 23, item 4), one thread throughout: the
                   plain scikit-learn fixed-C loop; the default sweep with the GFLOP of its matrix products
                   (torch profiler) and what they would take at a given peak (--peak-gflops); cheaper selection
                   rules (2 inner folds, a 2-C grid, both) with their cost and how many (layer, fold) cells
                   choose another C than the default; and GridSearchCV over the same C ladder (a loop that also
                   chooses C) on --nested-layers, scaled to 13 layers

    python bench/probe.py [--C 1.0] [--nested] [--threads N] [--device cpu|cuda]
    python bench/probe.py --full          # all of the above but --memory and --selection, in one run
    python bench/probe.py --scaling | --memory 100000 --store-dir /tmp/x | --xgboost [--layers 3] | --process
    python bench/probe.py --selection [--dim 768] [--selection-layers 2,5,8,11]
    python bench/probe.py --stability 2 [--save-run before.npz | --compare-run before.npz]
    python bench/probe.py --selection-cost [--nested-layers 2,8] [--peak-gflops 96]
    python bench/probe.py --convergence 5
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
LUNA5 = ({2, 5, 14, 15, 16}, {3, 6, 7, 13, 18}, {10, 11, 12, 19, 20}, {8, 17, 21, 23, 24}, {1, 4, 9, 22})


def synthetic_ravdess(n_layers: int = 13, dim: int = 768, seed: int = 0, n_actors: int = 24):
    """(X (60 n_actors, n_layers, dim) float32, utterances) with the emotion planted around layer 8."""
    from featstore.corpora.base import Utterance

    rng = np.random.default_rng(seed)
    actors, labels = [], []
    for actor in range(1, n_actors + 1):
        for k, _label in enumerate(LABELS):
            for _ in range(4 if k == 0 else 8):
                actors.append(actor)
                labels.append(k)
    actors, labels = np.array(actors), np.array(labels)
    n = len(actors)
    strength = 0.04 + 0.16 * np.exp(-0.5 * ((np.arange(n_layers) - 8 * n_layers / 13) / (2.5 * n_layers / 13)) ** 2)
    rank = 24
    X = np.empty((n, n_layers, dim), dtype=np.float32)
    for layer in range(n_layers):
        mixing = rng.standard_normal((rank, dim)) * 1.5                      # anisotropy: a few big directions
        centroids = rng.standard_normal((len(LABELS), dim))
        offsets = rng.standard_normal((n_actors + 1, dim)) * 0.6              # per actor
        blur = rng.standard_normal((n_actors + 1, len(LABELS), dim)) * 0.5    # each actor acts an emotion a bit differently
        signal = (centroids[labels] + blur[actors, labels]) * strength[layer]
        X[:, layer] = (rng.standard_normal((n, dim)) + rng.standard_normal((n, rank)) @ mixing
                       + offsets[actors] + signal)
    utts = [Utterance(id=f"bench-{i:04d}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{a:03d}",
                      gender=None, label=LABELS[k], label_raw=str(k + 1)) for i, (a, k) in enumerate(zip(actors, labels))]
    return X, utts


def luna5_folds(utts):
    """luna5 for 24 actors; for more, 5 folds of actor number mod 5."""
    from featstore.folds import Fold

    actor = np.array([int(u.speaker.rsplit("-", 1)[1]) for u in utts])
    groups = LUNA5 if actor.max() <= 24 else [set(range(k, actor.max() + 1, 5)) for k in range(5)]
    folds = []
    for k, test_actors in enumerate(groups):
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


def extended_choice(Cs, score) -> tuple[float, list[float], bool]:
    """`linear.sweep_layer`'s rule on a score function: (chosen C, Cs searched beyond the grid, at the bound).

    The best of `Cs` (ties: the C listed first); at the grid's largest (smallest) C, on by x10 (/10) while the
    score rises strictly, at most `linear.EXTEND_STEPS` steps."""
    from classifiers.estimators.linear import EXTEND_FACTOR, EXTEND_STEPS

    s = [score(c) for c in Cs]
    best = int(np.argmax(s))
    chosen, top, beyond, bound = Cs[best], s[best], [], False
    for edge, factor in ((max(Cs), EXTEND_FACTOR), (min(Cs), 1 / EXTEND_FACTOR)):
        c = edge
        for step in range(1, EXTEND_STEPS + 1):
            if chosen != c:
                break
            c = c * factor
            beyond.append(c)
            v = score(c)
            if v > top:
                chosen, top, bound = c, v, step == EXTEND_STEPS
    return chosen, beyond, bound


def sklearn_nested(X, y, groups, folds, Cs):
    """({layer: (mean WA, mean UAR)}, {layer: [C per fold]}) of a nested sklearn search: per fold, every C of the
    ladder Cs x 10^-3..10^3 scored by StandardScaler + LogisticRegression (max_iter=1000) over
    StratifiedGroupKFold(3) of the training actors (GridSearchCV, balanced accuracy), the C picked by our rule
    (`extended_choice`), then the refit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from classifiers.estimators.linear import EXTEND_FACTOR, EXTEND_STEPS

    ladder = sorted({float(f"{c * EXTEND_FACTOR ** k:.12g}") for c in (min(Cs), max(Cs))
                     for k in range(-EXTEND_STEPS, EXTEND_STEPS + 1)} | set(Cs))
    out, chosen = {}, {}
    for layer in range(X.shape[1]):
        wa, uar = [], []
        for f in folds:
            search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                                  {"logisticregression__C": ladder}, scoring="balanced_accuracy", refit=False,
                                  cv=StratifiedGroupKFold(3, shuffle=True, random_state=0))
            search.fit(X[f.train, layer], y[f.train], groups=groups[f.train])
            score = dict(zip((float(f"{c:.12g}") for c in search.cv_results_["param_logisticregression__C"]),
                             search.cv_results_["mean_test_score"]))
            C, _, _ = extended_choice(list(Cs), lambda c, score=score: score[float(f"{c:.12g}")])
            chosen.setdefault(layer, []).append(C)
            model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(X[f.train, layer],
                                                                                             y[f.train])
            pred = model.predict(X[f.test, layer])
            wa.append(accuracy_score(y[f.test], pred))
            uar.append(balanced_accuracy_score(y[f.test], pred))
        out[layer] = (np.mean(wa), np.mean(uar))
    return out, chosen


def legacy_default(X, y, groups, folds, device):
    """({layer: (mean WA, mean UAR)}, {layer: [C per fold]}) of the default before issue 18 (`legacy_linear`)."""
    import legacy_linear
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    classes, yi = np.unique(y, return_inverse=True)
    masks = np.zeros((len(folds), len(y)), dtype=bool)
    for fi, f in enumerate(folds):
        masks[fi, f.train] = True
    Xl = np.ascontiguousarray(np.moveaxis(X, 1, 0))
    chosen = legacy_linear.choose_C(Xl, yi, list(masks), groups, len(classes), legacy_linear.DEFAULT_CS, 3, 0, device)
    pred = legacy_linear.fit_many(Xl, yi, np.broadcast_to(masks, (Xl.shape[0], *masks.shape)), chosen, len(classes),
                                  device=device).predict()
    out = {}
    for layer in range(X.shape[1]):
        wa = [accuracy_score(yi[f.test], pred[layer, fi, f.test]) for fi, f in enumerate(folds)]
        uar = [balanced_accuracy_score(yi[f.test], pred[layer, fi, f.test]) for fi, f in enumerate(folds)]
        out[layer] = (np.mean(wa), np.mean(uar))
    return out, {k: chosen[k].tolist() for k in range(X.shape[1])}


def write_synthetic_store(path, n: int, n_layers: int = 25, dim: int = 1024, seed: int = 0, block: int = 4096):
    """A ser store of n synthetic utterances (60 per actor, RAVDESS's classes) written block by block.

    pooled/mean is written (emotion planted around layer 2/3 of the depth, per-actor offsets,
    low-rank noise); pooled/std is created but left unwritten (no disk), the sweep reads means.
    """
    import h5py

    from featstore import store as st
    from featstore.corpora.base import Utterance

    rng = np.random.default_rng(seed)
    actor = np.arange(n) // 60 + 1
    within = np.arange(n) % 60
    label = np.where(within < 4, 0, 1 + (within - 4) // 8)
    utts = [Utterance(id=f"big-{i:07d}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{a:05d}",
                      gender=None, label=LABELS[k], label_raw=str(k + 1)) for i, (a, k) in enumerate(zip(actor, label))]
    strength = 0.04 + 0.16 * np.exp(-0.5 * ((np.arange(n_layers) - 2 * n_layers / 3) / (n_layers / 5)) ** 2)
    config = {"model_id": "synthetic", "frame_layers": [], "num_layers": n_layers, "hidden_size": dim}
    with h5py.File(path, "w", libver=st._LIBVER) as f:
        f.attrs.update(format=st.FORMAT, format_version=st.FORMAT_VERSION, config=st.json.dumps(config),
                       num_layers=n_layers, hidden_size=dim, corpus="ravdess", shard="0/1")
        st._write_utterances(f.create_group("utterances"), utts)
        st._create(f["utterances"], "n_samples", data=np.full(n, 48000, dtype=np.int64))
        st._create(f["utterances"], "n_frames", data=np.full(n, 150, dtype=np.int64))
        chunk = (min(n, 256), 1, dim)
        mean = st._create(f, "pooled/mean", shape=(n, n_layers, dim), dtype=np.float32, chunks=chunk)
        st._create(f, "pooled/std", shape=(n, n_layers, dim), dtype=np.float32, chunks=chunk)
        params = [(rng.standard_normal((24, dim), dtype=np.float32) * 1.5, rng.standard_normal((8, dim), dtype=np.float32))
                  for _ in range(n_layers)]
        for a in range(0, n, block):
            rows = slice(a, min(a + block, n))
            m = len(range(n)[rows])
            offsets = rng.standard_normal((actor[rows].max() - actor[rows].min() + 1, dim), dtype=np.float32) * 0.6
            out = np.empty((m, n_layers, dim), dtype=np.float32)
            for k, (mixing, centroids) in enumerate(params):
                out[:, k] = (rng.standard_normal((m, dim), dtype=np.float32)
                             + rng.standard_normal((m, 24), dtype=np.float32) @ mixing
                             + offsets[actor[rows] - actor[rows].min()] + centroids[label[rows]] * strength[k])
            mean[rows] = out
    return utts


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def converged_inner_scores(X, y, groups, train_mask, Cs, inner_folds: int = 3, seed: int = 0) -> np.ndarray:
    """(len(Cs),) mean inner UAR of each C by a converged sklearn fit on the same inner folds as ours."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from classifiers.estimators.linear import inner_masks

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
    from classifiers.estimators.linear import inner_scores

    masks = []
    for f in folds:
        m = np.zeros(len(y), dtype=bool)
        m[f.train] = True
        masks.append(m)
    t_ref, _, ref = timed(lambda: np.array([[converged_inner_scores(X[:, k], y, groups, m, Cs) for m in masks]
                                         for k in layers]))                          # (L, F, len(Cs))
    ref_choice = ref.argmax(-1)
    Xl = np.ascontiguousarray(np.moveaxis(X[:, layers], 1, 0))
    n_cells = ref_choice.size
    print(f"\ninner C selection vs converged sklearn (tol=1e-8) on the same inner folds: layers {layers} x "
          f"{len(folds)} folds = {n_cells} cells, Cs {list(Cs)}; sklearn reference {t_ref:.1f} s")
    print(f"{'selection tol':>13} {'agree':>7} {'max |score diff|':>16} {'converged-score loss where not':>31} "
          f"{'wall':>7} {'CPU':>7}")
    for tol in tols:
        t, cpu, ours = timed(lambda tol=tol: inner_scores(Xl, y, masks, groups, int(y.max()) + 1, Cs, 3, 0, device,
                                                          tol))
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


def ulp_jitter(X: np.ndarray, seed: int) -> np.ndarray:
    """X (float32) with every entry moved one ulp up or down, a seeded coin per entry: the same data to float32
    precision, other roundings everywhere downstream."""
    X = np.asarray(X, dtype=np.float32)
    up = np.random.default_rng(seed).integers(0, 2, X.shape).astype(bool)
    return np.where(up, np.nextafter(X, np.float32(np.inf)), np.nextafter(X, np.float32(-np.inf))).astype(np.float32)


def run_cells(res) -> dict:
    """{(layer, fold): cell} of ProbeResults: C, UAR, the C search beyond the grid, test ids, predicted labels
    and the probabilities (n_test, K) of the fold's classes."""
    cells = {}
    for r in res.records:
        cells[int(r["layer"]), str(r["fold"])] = {"C": float(r["C"]), "uar": float(r["uar"]),
                                                  "beyond": tuple(r.get("C_extended") or ()),
                                                  "bound": bool(r.get("C_at_bound", False))}
    for b in res.predictions:
        key = int(b["layer"][0]), str(b["fold"][0])
        cols = sorted(k for k in b if k.startswith("p_"))
        cells[key].update(ids=list(b["id"]), pred=list(b["predicted"]), proba=np.stack([b[k] for k in cols], 1))
    return cells


def save_cells(path, cells: dict) -> None:
    """Write `run_cells` to an .npz (one set of arrays per cell) for `--compare-run`."""
    arrays = {}
    for i, ((layer, fold), c) in enumerate(sorted(cells.items())):
        arrays[f"key{i}"] = np.array([str(layer), fold])
        arrays[f"num{i}"] = np.array([c["C"], c["uar"], float(c["bound"])])
        arrays[f"beyond{i}"] = np.array(c["beyond"], dtype=float)
        arrays[f"ids{i}"], arrays[f"pred{i}"] = np.array(c["ids"]), np.array(c["pred"])
        arrays[f"proba{i}"] = c["proba"]
    np.savez_compressed(path, **arrays)


def load_cells(path) -> dict:
    d = np.load(path)
    cells = {}
    for i in range(sum(k.startswith("key") for k in d.files)):
        layer, fold = d[f"key{i}"]
        C, uar, bound = d[f"num{i}"]
        cells[int(layer), str(fold)] = {"C": float(C), "uar": float(uar), "bound": bool(bound),
                                        "beyond": tuple(d[f"beyond{i}"].tolist()), "ids": d[f"ids{i}"].tolist(),
                                        "pred": d[f"pred{i}"].tolist(), "proba": d[f"proba{i}"]}
    return cells


def compare_cells(a: dict, b: dict) -> str:
    """One line: how far run b is from run a over the same (layer, fold) cells."""
    if set(a) != set(b):
        return f"different cells: {sorted(set(a) ^ set(b))}"
    same_C = sum(np.isclose(a[k]["C"], b[k]["C"], rtol=1e-6) for k in a)
    same_search = sum(len(a[k]["beyond"]) == len(b[k]["beyond"]) and a[k]["bound"] == b[k]["bound"]
                      and np.allclose(a[k]["beyond"], b[k]["beyond"], rtol=1e-6) for k in a)
    n_test = sum(len(a[k]["pred"]) for k in a)
    flips = sum(int(np.sum(np.array(a[k]["pred"]) != np.array(b[k]["pred"]))) for k in a)
    dp = max(float(np.abs(a[k]["proba"] - b[k]["proba"]).max()) for k in a)
    du = max(abs(a[k]["uar"] - b[k]["uar"]) for k in a)
    layers = sorted({k[0] for k in a})
    dl = max(abs(np.mean([a[k]["uar"] for k in a if k[0] == layer]) - np.mean([b[k]["uar"] for k in b if k[0] == layer]))
             for layer in layers)
    return (f"same C {same_C}/{len(a)}, same search beyond the grid {same_search}/{len(a)}, test predictions differ "
            f"{flips}/{n_test}, max |d proba| {dp:.3f}, max |d UAR| {du * 100:.2f}p per cell, "
            f"{dl * 100:.2f}p per layer mean")


def main_convergence(args, device) -> None:
    """Our inner-selection solutions along the C path against scikit-learn solved to tol 1e-10 (float64), on
    one inner problem per outer fold of a layer: objective, gradient, norm and the inner-validation UAR."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from classifiers.estimators import linear

    X, utts = synthetic_ravdess(dim=args.dim, seed=args.seed)
    y = np.unique([u.label for u in utts], return_inverse=True)[1]
    groups = np.array([u.speaker for u in utts])
    Cs = sorted(linear.DEFAULT_CS) + [max(linear.DEFAULT_CS) * linear.EXTEND_FACTOR ** k
                                      for k in range(1, linear.EXTEND_STEPS + 1)]
    layer_k = int(args.convergence)
    print(f"\nthe selection's fits along the C path (warm-started, tol {linear.SELECTION_TOL:g}, float32) against scikit-learn "
          f"lbfgs to tol 1e-10 (float64, cold), layer {layer_k}, the first inner problem of each outer fold:")
    print(f"  {'fold':>4} {'C':>6} {'objective gap':>13} {'max|grad|':>9} {'|W| ours/sk':>12} "
          f"{'inner-val UAR ours':>18} {'sklearn':>7}")
    for k, f in enumerate(luna5_folds(utts)):
        train = np.zeros(len(y), dtype=bool)
        train[f.train] = True
        m = linear.inner_masks(train, groups, y, 3, 0)[0]
        val = train & ~m
        layer = linear._Layer(X[:, layer_k], y, int(y.max()) + 1, device, train)
        pr = layer.problems(m[None], np.ones(1), None, layer.preconditioner(train[None]), [0])  # as sweep_layer
        sol, _ = layer.path(pr, Cs, np.array([len(Cs) - 1]), np.array([linear.SELECTION_TOL]))
        sc = StandardScaler().fit(X[m, layer_k])
        Z, Zv = sc.transform(X[m, layer_k]), sc.transform(X[val, layer_k])
        for ci, C in enumerate(Cs):
            W, b = (t[0].double().cpu().numpy() for t in pr.unpack(sol[ci]))
            sk = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(Z, y[m])
            f_ours, f_sk = (_objective64(Z, y[m], W_, b_, C) for W_, b_ in ((W, b), (sk.coef_.T, sk.intercept_)))
            sub = pr.take(torch.zeros(1, dtype=torch.long, device=layer.dev),
                          torch.full((1,), float(C), dtype=layer.dtype, device=layer.dev))
            grad = float(sub.loss_grad(sol[ci])[1].abs().max())
            uar_ours = balanced_accuracy_score(y[val], (Zv @ W + b).argmax(1))
            uar_sk = balanced_accuracy_score(y[val], sk.predict(Zv))
            print(f"  {k:>4} {C:>6g} {(f_ours - f_sk) / f_sk:>12.2e}r {grad:>9.1e} "
                  f"{np.linalg.norm(W):>5.1f}/{np.linalg.norm(sk.coef_):<6.1f} {uar_ours:>18.4f} {uar_sk:>7.4f}",
                  flush=True)


def _objective64(Z, y, W, b, C) -> float:
    """scikit-learn's per-sample-scaled multinomial objective in float64."""
    z = Z @ W + b
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean() + 0.5 / (C * len(y)) * (W ** 2).sum())


def main_stability(args, device) -> None:
    """The sweeps against themselves on one-ulp-jittered features (the envelope), and against a saved run."""
    from classifiers.runs.crossval import probe_layers

    X, utts = synthetic_ravdess(dim=args.dim, seed=args.seed)
    folds = luna5_folds(utts)
    layers = list(range(X.shape[1]))
    settings = (("default (C by inner speaker CV)", None), (f"fixed C={args.C:g}", args.C))
    print(f"\nfloating-point noise of the sweeps, {X.shape[0]} x {X.shape[1]} x {X.shape[2]}, luna5, 1 thread; "
          f"jittered: every feature one float32 ulp up or down (seeded); load average {os.getloadavg()[0]:.1f}:")
    with one_thread():
        for name, C in settings:
            t, c, res = timed(lambda C=C: probe_layers(X, utts, folds, layers, C=C, device=device))
            base = run_cells(res)
            print(f"  {name}: {t:.1f} s wall / {c:.1f} s CPU", flush=True)
            if C is None and args.save_run:
                save_cells(args.save_run, base)
                print(f"    saved to {args.save_run}")
            if C is None and args.compare_run:
                print(f"    against {args.compare_run}: {compare_cells(load_cells(args.compare_run), base)}", flush=True)
            for seed in range(1, args.stability + 1):
                jittered = run_cells(probe_layers(ulp_jitter(X, seed), utts, folds, layers, C=C, device=device))
                print(f"    jitter seed {seed}: {compare_cells(base, jittered)}", flush=True)


def timed(fn):
    """(wall seconds, process CPU seconds, fn())."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


ONE = "1 thread"


def default_threads() -> str:
    """What a user's process runs with: numpy/scipy's BLAS threads, torch's threads, cores visible."""
    from threadpoolctl import threadpool_info

    blas = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    return f"default: BLAS {blas} threads"


def ours_threads() -> str:
    """How `probe_layers` runs the logreg sweep by default on this machine."""
    from classifiers.runs.crossval import cpu_count

    n = cpu_count()
    return f"default: {n} layers side by side x 1 thread" if n > 1 else "default: 1 thread"


class one_thread:
    """One thread per process: BLAS limited to 1 (threadpoolctl), torch 1 thread, and this thread pinned
    to one core (so `classifiers.runs.crossval.cpu_count()` is 1 and the sweep runs its layers one after another)."""

    def __enter__(self):
        import torch
        from threadpoolctl import threadpool_limits

        self.limits = threadpool_limits(1)
        self.torch = torch.get_num_threads()
        torch.set_num_threads(1)
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if self.cpus:
            os.sched_setaffinity(0, {min(self.cpus)})
        return self

    def __exit__(self, *exc):
        import torch

        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        torch.set_num_threads(self.torch)
        self.limits.unregister() if hasattr(self.limits, "unregister") else self.limits.restore_original_limits()


def both_settings(fn):
    """[(threads label, wall, CPU, fn()) with the user's default threads, then with one thread]."""
    out = []
    t, c, r = timed(fn)
    out.append((None, t, c, r))
    with one_thread():
        t, c, r = timed(fn)
    out.append((ONE, t, c, r))
    return out


def per_layer(res):
    """{layer: (WA, UAR)} and {layer: [C per fold]} of ProbeResults."""
    rows = {r["layer"]: (r["wa"], r["uar"]) for r in res.summary()}
    chosen = {}
    for r in res.records:
        chosen.setdefault(r["layer"], []).append(r["C"])
    return rows, chosen


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def ravdess_data(args, device):
    """(X, utterances, luna5 folds, labels, speakers, layers) of the RAVDESS-size data, after one warm-up probe
    (imports, first BLAS calls) so that no timed row pays for them."""
    from classifiers.runs.crossval import probe_layers

    X, utts = synthetic_ravdess(dim=args.dim, seed=args.seed)
    folds = luna5_folds(utts)
    probe_layers(X[:, :1], utts, folds, [0], C=args.C, device=device)
    return X, utts, folds, np.array([u.label for u in utts]), np.array([u.speaker for u in utts]), list(range(X.shape[1]))


def main_ravdess(args, device) -> None:
    from classifiers.estimators.linear import DEFAULT_CS
    from classifiers.runs.crossval import probe_layers

    X, utts, folds, y, groups, layers = ravdess_data(args, device)

    rows = []                                          # (name, threads, wall, CPU)

    def step(name, fn, threads):
        """Run fn with the default threads (`threads` says which) and with one thread; print both rows."""
        result = None
        for label, t, c, out in both_settings(fn):
            label = label or threads
            rows.append((name, label, t, c))
            print(f"  {name:<52} {label:<40} {t:7.1f} s wall / {c:7.1f} s CPU", flush=True)
            result = out if result is None else result
        return result

    print(f"\ntimes, {X.shape[0]} x {X.shape[1]} x {X.shape[2]} (this process, one after the other; every row says "
          f"its threads; load average {os.getloadavg()[0]:.1f} before):")
    print(f"  {'':<52} {'threads':<40} {'wall':>9}   {'CPU':>9}")
    sel = step("ours, default: C by inner speaker CV + refit", lambda: probe_layers(X, utts, folds, layers,
                                                                                   device=device), ours_threads())
    fix = step(f"ours, fixed C={args.C:g}", lambda: probe_layers(X, utts, folds, layers, C=args.C, device=device),
               ours_threads())
    sk = step(f"sklearn loop, fixed C={args.C:g}, 65 fits", lambda: sklearn_loop(X, y, folds, args.C), default_threads())
    fix_rows, _ = per_layer(fix)
    sel_rows, sel_C = per_layer(sel)
    old = nest = None
    if not args.no_legacy:
        old, old_C = step("previous default (before issue 18), same selection",
                          lambda: legacy_default(X, y, groups, folds, device), f"default: torch {torch_threads()} threads")
    if args.nested:
        nl = [int(k) for k in args.nested_layers.split(",")] if args.nested_layers else layers
        nest, nest_C = step(f"sklearn GridSearchCV nested, layers {args.nested_layers or 'all'}",
                            lambda: sklearn_nested(X[:, nl], y, groups, folds, DEFAULT_CS), default_threads())
        nest, nest_C = ({nl[i]: v for i, v in d.items()} for d in (nest, nest_C))
    print(f"  load average after: {os.getloadavg()[0]:.1f}")
    by = {(n, t): (w, c) for n, t, w, c in rows}
    sk_one = by[(f"sklearn loop, fixed C={args.C:g}, 65 fits", ONE)]
    for name, label, w, c in rows:
        if not name.startswith("sklearn loop"):
            print(f"    {name} [{label}] / sklearn loop [1 thread]: {w / sk_one[0]:.2f}x the wall, "
                  f"{c / sk_one[1]:.2f}x the CPU")
    extended = [r for r in sel.records if r.get("C_extended")]
    print(f"    default sweep: C searched beyond the grid {list(DEFAULT_CS)} in {len(extended)}/{len(sel.records)} "
          f"cells, chosen C still at the search's bound in {sum(bool(r.get('C_at_bound')) for r in sel.records)}")

    print("\nper layer, mean over the 5 folds (UAR; p = points):")
    head = f"{'layer':>5} | {'sk fixC':>7} {'ours fixC':>9} {'diff':>7} | {'ours sel':>8} C chosen"
    if old:
        head += f"{'':>16} | {'previous':>8} {'diff':>7}"
    if nest:
        head += f" | {'sk nested':>9} {'diff':>7}  sklearn C {'':>10} same C"
    print(head)
    d_fix, d_old, d_nest, same = [], [], [], 0
    for k in layers:
        d = fix_rows[k][1] - sk[k][1]
        d_fix.append(abs(d))
        line = (f"{k:>5} | {sk[k][1]:7.3f} {fix_rows[k][1]:9.3f} {d * 100:+6.2f}p | {sel_rows[k][1]:8.3f} "
                f"{','.join(f'{c:g}' for c in sel_C[k]):<24}")
        if old:
            d = sel_rows[k][1] - old[k][1]
            d_old.append(abs(d))
            line += f" | {old[k][1]:8.3f} {d * 100:+6.2f}p"
        if nest and k in nest:
            d = sel_rows[k][1] - nest[k][1]
            d_nest.append(abs(d))
            agree = sum(a == b for a, b in zip(sel_C[k], nest_C[k]))
            same += agree
            line += f" | {nest[k][1]:9.3f} {d * 100:+6.2f}p  {','.join(f'{c:g}' for c in nest_C[k]):<20} {agree}/5"
        print(line)
    print(f"max |UAR diff|: ours fixed C vs sklearn loop {max(d_fix) * 100:.2f}p"
          + (f"; ours selection vs previous default {max(d_old) * 100:.2f}p" if old else "")
          + (f"; ours selection vs sklearn nested {max(d_nest) * 100:.2f}p, same C in {same}/{len(nest) * 5} "
             f"(layer, fold) cells of layers {sorted(nest)}" if nest else ""))


def main_scaling(args, device) -> None:
    from classifiers.runs.crossval import probe_layers

    print("\nscaling of the default sweep (C by inner speaker CV + refit), synthetic, 5 actor folds:")
    print(f"{'utterances':>10} {'layers x dim':>12} {'wall':>8} {'CPU':>8} {'CPU per utt x layer x dim (ns)':>31} "
          f"{'best UAR':>8}")
    base = None
    for n_actors, n_layers, dim in ((24, 13, 768), (124, 13, 768), (24, 25, 1024), (124, 25, 1024)):
        X, utts = synthetic_ravdess(n_layers=n_layers, dim=dim, seed=args.seed, n_actors=n_actors)
        folds = luna5_folds(utts)
        t, c, res = timed(lambda X=X, utts=utts, folds=folds, n_layers=n_layers:
                          probe_layers(X, utts, folds, list(range(n_layers)), device=device))
        unit = c / (X.shape[0] * n_layers * dim) * 1e9
        base = base or unit
        print(f"{X.shape[0]:>10} {f'{n_layers} x {dim}':>12} {t:7.1f}s {c:7.1f}s {unit:24.2f} ({unit / base:4.2f}x) "
              f"{res.best()['uar']:8.3f}", flush=True)
        del X


def main_memory(args, device) -> None:
    from classifiers.runs.crossval import probe_layers
    from featstore.store import open_store

    os.makedirs(args.store_dir, exist_ok=True)
    path = os.path.join(args.store_dir, "ravdess.h5")
    if os.path.exists(path) and len(open_store(path)) == args.memory:
        print(f"\nreusing {path} ({os.path.getsize(path) / 2 ** 30:.1f} GiB)", flush=True)
    else:
        t, c, _ = timed(lambda: write_synthetic_store(path, args.memory))
        print(f"\nwrote {path}: {args.memory} x 25 x 1024 float32 means ({os.path.getsize(path) / 2 ** 30:.1f} GiB) "
              f"in {t:.0f} s; peak RSS so far {peak_rss_gb():.2f} GiB", flush=True)
    fs = open_store(path)
    folds = luna5_folds(fs.utterances)
    start = time.perf_counter()

    def progress(n, done=[0]):  # noqa: B006 (a counter across calls)
        done[0] += n
        if done[0] % len(folds) == 0:
            print(f"  layer {done[0] // len(folds)}/25 done, {time.perf_counter() - start:.0f} s, peak RSS "
                  f"{peak_rss_gb():.2f} GiB", flush=True)

    C = None if args.memory_C is None else args.memory_C
    t, c, res = timed(lambda: probe_layers(fs, fs.utterances, folds, list(range(25)), C=C, device=device,
                                           progress=progress))
    print(f"swept {args.memory} x 25 x 1024 from disk ({'C given' if C else 'C by inner speaker CV'}): {t:.0f} s wall, "
          f"{c:.0f} s CPU, peak RSS {peak_rss_gb():.2f} GiB (the whole store's means: "
          f"{args.memory * 25 * 1024 * 4 / 2 ** 30:.1f} GiB); best layer {res.best()['layer']} UAR "
          f"{res.best()['uar']:.3f}")


def main_xgboost(args, device) -> None:
    from classifiers.runs import crossval as evaluate

    X, utts = synthetic_ravdess(dim=args.dim, seed=args.seed)
    folds = luna5_folds(utts)
    layers = list(range(0, 13, max(1, 13 // args.layers)))[: args.layers]
    Xs = X[:, layers]

    def sweep(**params):
        return evaluate.run_classifier("xgboost", evaluate.ProbeTask(Xs, utts, folds, layers, device=device,
                                                                     params=params))

    t_all, c_all, all_trees = timed(lambda: sweep(early_stopping=False))
    t_es, c_es, early = timed(sweep)
    a, b = ({r["layer"]: r["uar"] for r in res.summary()} for res in (all_trees, early))
    print(f"\nXGBoost sweep over layers {layers} x 5 folds ({evaluate.cpu_count()} threads):")
    print(f"  every tree (300 rounds, as before issue 18)             {t_all:7.1f} s / {c_all:7.1f} s CPU; UAR "
          + ", ".join(f"{a[k]:.3f}" for k in layers))
    print(f"  early stopping on training speakers' validation split   {t_es:7.1f} s / {c_es:7.1f} s CPU; UAR "
          + ", ".join(f"{b[k]:.3f}" for k in layers) + f"   {t_all / t_es:.1f}x faster")


SKLEARN_SCRIPT = """
import sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
LUNA5 = ({2, 5, 14, 15, 16}, {3, 6, 7, 13, 18}, {10, 11, 12, 19, 20}, {8, 17, 21, 23, 24}, {1, 4, 9, 22})
best = 0.0
for f in sys.argv[1:]:
    d = np.load(f)
    actor = np.array([int(s.rsplit("-", 1)[1]) for s in d["speaker"]])
    uar = []
    for test in LUNA5:
        te = np.isin(actor, list(test))
        sc = StandardScaler().fit(d["X"][~te])
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(sc.transform(d["X"][~te]), d["label"][~te])
        uar.append(balanced_accuracy_score(d["label"][te], clf.predict(sc.transform(d["X"][te]))))
    best = max(best, float(np.mean(uar)))
print(f"best layer UAR {best:.3f}")
"""


def main_process(args) -> None:
    """The whole `ser probe --layer all` process against a plain sklearn fixed-C script over the same
    features exported as .npz (one file per layer, as `ser store export` writes them), both as fresh
    processes; and the start-up of commands that need no model."""
    import subprocess
    import sys
    import tempfile

    from featstore.store import export_layer

    def run(cmd, **kw):
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, **kw)
        wall = time.perf_counter() - t
        if out.returncode:
            raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stdout}{out.stderr}")
        return wall, out.stdout

    with tempfile.TemporaryDirectory(prefix="ser-bench-process-") as tmp:
        tmp = Path(tmp)
        store = tmp / "cache" / "synthetic" / "ravdess.h5"
        store.parent.mkdir(parents=True)
        write_synthetic_store(store, 1440, n_layers=13, dim=args.dim, seed=args.seed)
        files = [export_layer(store, k, tmp / f"layer{k}.npz") for k in range(13)]
        script = tmp / "sklearn_loop.py"
        script.write_text(SKLEARN_SCRIPT)
        env = dict(os.environ, SER_DB=str(tmp / "ser.db"))
        one_env = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

        def pin():                                     # one thread per process: one core, one BLAS thread
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        settings = (("default threads (as a user runs it)", env, None), ("1 thread (BLAS/OMP 1, one core)", one_env, pin))
        print(f"\nwhole processes, 1440 x 13 x {args.dim} synthetic store (luna5), each run {args.repeats} times, "
              f"best wall and its CPU (children's user+sys); load average {os.getloadavg()[0]:.1f} before:")
        rows = {
            "ser --help (start-up, no model)": ["ser", "--help"],
            "ser store ls (start-up + reading the store's header)": ["ser", "store", "ls", "--cache", str(tmp / "cache")],
            "ser probe --layer all, C by inner speaker CV (default)": [
                "ser", "probe", "--corpus", "ravdess", "--layer", "all", "--model", "synthetic",
                "--cache", str(tmp / "cache"), "--out", str(tmp / "results"), "--force", "--overwrite"],
            "ser probe --layer all --C 1 (fixed C)": [
                "ser", "probe", "--corpus", "ravdess", "--layer", "all", "--model", "synthetic", "--C", "1",
                "--cache", str(tmp / "cache"), "--out", str(tmp / "results-c1"), "--force", "--overwrite"],
            "sklearn fixed-C loop over the exported .npz (python + imports + fits)": [
                sys.executable, str(script), *map(str, files)],
        }
        best = {}
        for name, cmd in rows.items():
            for label, e, pre in settings:
                runs = []
                for _ in range(args.repeats):
                    before = os.times()
                    wall, out = run(cmd, env=e, cwd=tmp, preexec_fn=pre)
                    after = os.times()
                    runs.append((wall, after.children_user + after.children_system
                                 - before.children_user - before.children_system))
                wall, cpu_s = min(runs)
                best[name, label] = wall, cpu_s
                print(f"  {name:<72} {label:<36} {wall:6.2f} s wall {cpu_s:6.2f} s CPU   (walls: "
                      f"{', '.join(f'{w:.2f}' for w, _ in runs)})", flush=True)
        names = list(rows)
        one = settings[1][0]
        sk = best[names[4], one]
        for name in names[2:4]:
            for label, _, _ in settings:
                w, c = best[name, label]
                print(f"  {name} [{label}] / sklearn loop [{one}]: {w / sk[0]:.2f}x the wall, {c / sk[1]:.2f}x the CPU")
        print(f"  load average after: {os.getloadavg()[0]:.1f}")


def matmul_gflop(fn) -> tuple[float, float, object]:
    """(GFLOP of the matrix products fn() runs, the seconds torch's profiler gave them, fn())."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        out = fn()
    mm = [e for e in prof.key_averages() if e.key in ("aten::mm", "aten::bmm", "aten::addmm")]
    return sum(e.flops for e in mm) / 1e9, sum(e.self_cpu_time_total for e in mm) / 1e6, out


#: the cheaper selection rules `--selection-cost` measures: (name, probe_layers keywords)
CHEAPER_RULES = (("2 inner folds", {"inner_folds": 2}),
                 ("grid {0.01, 1} (+ x10 ladder)", {"Cs": (1e-2, 1.0)}),
                 ("2 inner folds, grid {0.01, 1}", {"inner_folds": 2, "Cs": (1e-2, 1.0)}))


def main_selection_cost(args, device) -> None:
    """One thread: the plain loop, the default sweep and its matrix-product floor, cheaper rules, GridSearchCV."""
    from classifiers.estimators.linear import DEFAULT_CS
    from classifiers.runs.crossval import probe_layers

    X, utts, folds, y, groups, layers = ravdess_data(args, device)
    print(f"\nwhat the default sweep costs, {X.shape[0]} x {X.shape[1]} x {X.shape[2]}, luna5, 1 thread throughout "
          f"(load average {os.getloadavg()[0]:.1f}):")
    with one_thread():
        t, c, _ = timed(lambda: sklearn_loop(X, y, folds, args.C))
        loop = c
        print(f"  sklearn loop, fixed C={args.C:g}, 65 fits: {t:.1f} s wall / {c:.1f} s CPU (the yardstick)", flush=True)
        t, c, res = timed(lambda: probe_layers(X, utts, folds, layers, device=device))
        base, ours = run_cells(res), c
        print(f"  ours, default (3 inner folds, grid {list(DEFAULT_CS)} + x10 ladder): {t:.1f} s wall / {c:.1f} s CPU "
              f"= {c / loop:.2f}x the loop", flush=True)
        # one profiled run per layer (the layers' sweeps are independent): a whole-run trace holds tens of GB
        gflop, secs = map(sum, zip(*(matmul_gflop(lambda layer=layer: probe_layers(X[:, [layer]], utts, folds, [layer],
                                                                                   device=device))[:2]
                                     for layer in layers)))
        print(f"    its matrix products: {gflop:,.0f} GFLOP in {secs:.1f} s ({gflop / secs:.0f} GFLOP/s; profiled run); "
              f"at {args.peak_gflops:g} GFLOP/s they alone would take {gflop / args.peak_gflops:.1f} s "
              f"= {gflop / args.peak_gflops / loop:.2f}x the whole loop", flush=True)
        for name, kw in CHEAPER_RULES:
            t, c, res = timed(lambda kw=kw: probe_layers(X, utts, folds, layers, device=device, **kw))
            print(f"  ours, {name}: {t:.1f} s wall / {c:.1f} s CPU = {c / loop:.2f}x the loop; against the default: "
                  f"{compare_cells(base, run_cells(res))}", flush=True)
        nl = [int(k) for k in (args.nested_layers or "2,8").split(",")]
        t, c, _ = timed(lambda: sklearn_nested(X[:, nl], y, groups, folds, DEFAULT_CS))
        scaled = c * X.shape[1] / len(nl)
        print(f"  sklearn GridSearchCV over the same C ladder, layers {nl}: {t:.1f} s wall / {c:.1f} s CPU; "
              f"x{X.shape[1]} layers: {scaled:.0f} s CPU = {scaled / loop:.1f}x the loop "
              f"= {scaled / ours:.1f}x ours, default", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--C", type=float, default=1.0, help="C of the fixed-C comparison (sklearn's default: 1.0)")
    ap.add_argument("--nested", action="store_true", help="also time sklearn's nested CV (13x the plain loop)")
    ap.add_argument("--nested-layers", default=None, help="layers of the nested baseline, e.g. 2,8,12 (default all)")
    ap.add_argument("--no-legacy", action="store_true", help="skip the previous default")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--device", default=None, help="device of the batched solver (default: cuda if available)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scaling", action="store_true", help="only the scaling table")
    ap.add_argument("--memory", type=int, default=None, help="only the memory-bounded sweep of an N x 25 x 1024 store")
    ap.add_argument("--memory-C", type=float, default=None, help="fixed C for --memory (default: C by inner CV)")
    ap.add_argument("--store-dir", default="/tmp/ser-bench-store", help="where --memory writes its store")
    ap.add_argument("--xgboost", action="store_true", help="only the XGBoost sweep before/after")
    ap.add_argument("--full", action="store_true",
                    help="everything issue 18 asks for, in one run: the RAVDESS-size comparison with --nested, "
                         "--scaling, --xgboost and --process")
    ap.add_argument("--process", action="store_true",
                    help="only whole processes: ser probe --layer all vs a plain sklearn script; start-up")
    ap.add_argument("--layers", type=int, default=13, help="layers of the --xgboost comparison")
    ap.add_argument("--selection", action="store_true", help="only compare the inner C selection with sklearn's")
    ap.add_argument("--selection-layers", default="2,5,8,11", help="layers of the --selection comparison")
    ap.add_argument("--stability", type=int, default=None, metavar="N",
                    help="only the sweeps' floating-point noise: N one-ulp-jittered copies of the features")
    ap.add_argument("--save-run", default=None, help="with --stability: save the default sweep's cells (.npz)")
    ap.add_argument("--compare-run", default=None, help="with --stability: compare the default sweep with a saved run")
    ap.add_argument("--dim", type=int, default=768, help="feature dimension of the synthetic data")
    ap.add_argument("--selection-cost", action="store_true",
                    help="only what the default sweep costs: its matrix products, cheaper rules, GridSearchCV")
    ap.add_argument("--peak-gflops", type=float, default=96.0,
                    help="with --selection-cost: this core's float32 peak (default 96: AVX2, 2 FMA units, 3 GHz)")
    ap.add_argument("--convergence", default=None, metavar="LAYER",
                    help="only the selection's fits along the C path against scikit-learn to tol 1e-10, at LAYER")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each --process row (the best wall is kept)")
    args = ap.parse_args()

    import sklearn
    import torch

    from classifiers.estimators.linear import DEFAULT_CS

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"scikit-learn {sklearn.__version__}, torch {torch.__version__} on {device} ({torch.get_num_threads()} "
          f"threads), CPUs visible: {os.cpu_count()}, load average {load:.1f} at start")
    if args.selection:
        X, utts = synthetic_ravdess(dim=args.dim, seed=args.seed)
        yi = np.unique([u.label for u in utts], return_inverse=True)[1]
        selection_agreement(X, yi, np.array([u.speaker for u in utts]), luna5_folds(utts),
                            [int(k) for k in args.selection_layers.split(",")], DEFAULT_CS, (1e-3, 1e-4, 1e-5), device)
    elif args.convergence is not None:
        main_convergence(args, device)
    elif args.selection_cost:
        main_selection_cost(args, device)
    elif args.stability is not None:
        main_stability(args, device)
    elif args.scaling:
        main_scaling(args, device)
    elif args.memory:
        main_memory(args, device)
    elif args.xgboost:
        main_xgboost(args, device)
    elif args.process:
        main_process(args)
    else:
        print(f"data: 1440 utterances x 13 layers x {args.dim} float32 (seed {args.seed}), 24 actors, 8 classes; luna5 "
              f"folds (test actors {', '.join(map(str, map(sorted, LUNA5)))})")
        args.nested = args.nested or args.full
        main_ravdess(args, device)
        if args.full:
            main_scaling(args, device)
            main_xgboost(args, device)
            main_process(args)


if __name__ == "__main__":
    main()
