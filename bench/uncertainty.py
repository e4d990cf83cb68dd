"""How honest are the intervals? Coverage of the speaker-bootstrap CI of a planted difference,
calibration of the paired permutation test, and speaker vs utterance bootstrap widths.

Simulated settings (tests/test_stats.simulate): 30 speakers x 24 utterances, 4 balanced classes,
each speaker with its own accuracy. Prints the rates and writes the width figure.

    python bench/uncertainty.py [--reps 1000] [--out docs/speaker-vs-utterance-bootstrap.png]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from classifiers.report import interval_figure
from classifiers.stats import bootstrap_ci, paired_compare
from tests.test_stats import LABELS, simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--out", default="docs/speaker-vs-utterance-bootstrap.png")
    args = ap.parse_args()
    t0 = time.perf_counter()
    covered = calm = 0
    widths = []
    for rep in range(args.reps):
        rng = np.random.default_rng(10_000 + rep)
        a, b = simulate(rng, 0.65, 0.55)
        c = paired_compare(a, b, LABELS, metric="uar", n_boot=500, n_perm=500, seed=rep)
        covered += c.low <= 0.10 <= c.high
        a, b = simulate(rng, 0.6, 0.6)
        calm += paired_compare(a, b, LABELS, metric="uar", n_boot=100, n_perm=500, seed=rep).p >= 0.05
        a, _ = simulate(rng, 0.55, 0.55, spread=0.3)
        spk = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, n_boot=300, seed=rep)
        utt = bootstrap_ci(a["y_true"], a["y_pred"], None, LABELS, n_boot=300, seed=rep)
        widths.append((spk.high - spk.low) / (utt.high - utt.low))
    print(f"{args.reps} repetitions, {time.perf_counter() - t0:.0f} s")
    print(f"95% CI covers the planted +0.10 UAR: {covered / args.reps:.3f}")
    print(f"identical settings, p >= 0.05:       {calm / args.reps:.3f}")
    print(f"speaker / utterance CI width (strong speaker effects): median {np.median(widths):.2f}, "
          f"min {np.min(widths):.2f}")
    a, _ = simulate(np.random.default_rng(3), 0.55, 0.55, spread=0.3)
    ivs = {"speaker bootstrap": bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=0),
           "utterance bootstrap": bootstrap_ci(a["y_true"], a["y_pred"], None, LABELS, seed=0)}
    print("wrote", interval_figure(ivs, args.out, title="UAR, 30 speakers with strong speaker effects"))


if __name__ == "__main__":
    main()
