"""CPU time of each regressor of `classifiers.estimators.regression.REGRESSORS` on one RAVDESS-size layer.

Data: bench/ridge.py's planted set (`planted`: bench/probe.py's synthetic RAVDESS, 1440 utterances
of 24 actors, with arousal/valence/dominance planted per emotion plus a per-actor bias and a
latent term written into the features, strongest around layer 8), one layer of it (`--layer`,
default 8): X (1440, 768), Y (1440, 3). Folds: luna5 (bench/probe.py's `luna5_folds`), the first
`--folds` of them (default 1: fold 0, 1140 training rows, 300 test rows of 5 held-out actors).

Each regressor is fitted on a fold's training rows with their actors as `groups` (ridge: alpha by
inner speaker CV; xgboost and attention: early stopping on held-out training actors; knn tunes
nothing; "xgboost, all trees" is xgboost without groups, every tree grown) and predicts the fold's test rows, single-threaded (bench/probe.py's `one_thread`: BLAS 1
thread, torch 1 thread, the process pinned to one core). Printed per regressor: wall and process
CPU seconds (fit + predict, summed over folds) and the test CCC per dimension (pooled over folds).
The attention regressor sees pooled rows here, i.e. one-frame clips (its frames path costs more
per clip); its defaults (hidden 128, at most 40 epochs, patience 10).

    python bench/regressors.py [--layer 8] [--folds 1] [--only ridge,knn]

Runs of this session on the shared 2-core machine of issue 25 (5 other sessions busy; wall time
therefore above CPU time), layer 8, CPU seconds of fit + predict and pooled test CCC A / V / D:

    luna5 fold 0 only (default)       CPU s   CCC                  all 5 folds    CPU s   CCC
    ridge                              0.40   .703 / .786 / .800                   1.12   .790 / .800 / .796
    xgboost (early stop, 3 actors)     1.30   .000 / -.014 / .002                  8.14   .002 / -.007 / .004
    xgboost, all 300 trees            18.37   .051 / .035 / .176                 118.13   .071 / .074 / .130
    knn (k 10, cosine)                 0.05   -.026 / .013 / -.005                 0.12   -.013 / -.013 / .023
    attention (one-frame clips)        3.79   .484 / .455 / .545                  30.15   .526 / .545 / .575

The planted signal of this synthetic set is linear and spread thinly over all 768 dimensions under
anisotropic noise and actor offsets: ridge finds it, trees and cosine neighbours do not (the kNN
emotion classifier is at chance on the same layer too: UAR .109 for chance .125, fold 0), so the
CCCs of xgboost and knn here say nothing about real features; the times are what this measures.
XGBoost's early stopping ends after its 20 patience rounds when the first trees do not improve the
held-out actors' RMSE, hence its short time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.probe import luna5_folds, one_thread, timed  # noqa: E402
from bench.ridge import TARGETS, planted  # noqa: E402
from classifiers.estimators.regression import REGRESSORS, ccc, check_regressor, make_regressor  # noqa: E402

#: single-threaded settings (the bench measures one core); everything else at its defaults
ONE_THREAD = {"xgboost": dict(n_jobs=1), "attention": dict(threads=1, device="cpu")}


#: (label, registry name, fitted with groups): xgboost also without groups, i.e. every tree grown (no early stop)
SETTINGS = (("ridge", "ridge", True), ("xgboost", "xgboost", True), ("xgboost, all trees", "xgboost", False),
            ("knn", "knn", True), ("attention", "attention", True))


def run(name: str, Xl: np.ndarray, Y: np.ndarray, speakers: np.ndarray, folds,
        grouped: bool = True) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s, pooled test CCC per target) of regressor `name` over `folds`."""
    def work():
        preds, truth = [], []
        for f in folds:
            est = make_regressor(name, **ONE_THREAD.get(name, {}))
            kw = {"groups": speakers[f.train]} if grouped else {}
            est.fit(Xl[f.train], Y[f.train], **kw)
            preds.append(est.predict(Xl[f.test]))
            truth.append(Y[f.test])
        return np.concatenate(truth), np.concatenate(preds)

    wall, cpu, (truth, pred) = timed(work)
    return wall, cpu, np.atleast_1d(ccc(truth, pred))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", type=int, default=8, help="layer of the 13-layer synthetic set (default 8)")
    ap.add_argument("--folds", type=int, default=1, help="luna5 folds to run, 1..5 (default 1)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--only", default=",".join(REGRESSORS), help="comma-separated regressor names")
    args = ap.parse_args()
    names = [check_regressor(n.strip()) for n in args.only.split(",") if n.strip()]
    X, Y, utts, speakers = planted(13, args.dim)
    Xl = np.ascontiguousarray(X[:, args.layer])
    folds = luna5_folds(utts)[:max(1, min(5, args.folds))]
    print(f"layer {args.layer}: X {Xl.shape}, Y {Y.shape} ({', '.join(TARGETS)}); {len(folds)} luna5 fold(s), "
          f"{len(folds[0].train)} training / {len(folds[0].test)} test rows in the first; one thread")
    print(f"{'regressor':<19} {'wall s':>8} {'CPU s':>8}   test CCC " + " / ".join(TARGETS))
    with one_thread():
        for label, name, grouped in SETTINGS:
            if name in names:
                wall, cpu, c = run(name, Xl, Y, speakers, folds, grouped)
                print(f"{label:<19} {wall:8.2f} {cpu:8.2f}   " + " / ".join(f"{v:.3f}" for v in c), flush=True)


if __name__ == "__main__":
    main()
