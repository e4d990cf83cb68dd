"""Do the intervals hold? Type I error, coverage and CI/p agreement of the old interval (percentile
speaker bootstrap + paired permutation p) and the new one (jackknife-t over speakers), and the
best-of-a-family comparison with and without the selection adjustment, on simulated test sets.

Simulated settings: G speakers x 24 utterances (4 balanced classes), each speaker with its own
accuracy offset (uniform +-0.12: a strong speaker effect); two settings a and b on the same
utterances, independent or correlated (rho 0.8: b repeats a's right/wrong and its wrong class),
with no difference (null), a planted +0.10 difference, or a difference carried by a few speakers
(+0.30 on 1 in 6 speakers: 4 of 24; the null variant: +0.30 for a on 1 in 12 and for b on
another 1 in 12). The truth is the metric of the expected pooled confusion matrix (the fixed
design: which speakers carry a difference is part of it). Everything is batched over repetitions:
the new method is `classifiers.results.stats.jackknife` + `t_interval`, the very functions behind
`bootstrap_ci` and `paired_compare`; the old one is the same estimator as `method="percentile"`.

    python bench/uncertainty.py [--reps 2000] [--metric uar] [--family-reps 400] [--figure PNG]

The defaults take about 5.5 minutes on one busy core (the old bootstrap is most of it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifiers.results.stats import (  # noqa: E402
    best_against_rest_counts,
    jackknife,
    marginals,
    metric_from_confusion,
    metric_from_marginals,
    t_interval,
)

CLASSES, PER_CLASS, SPREAD = 4, 6, 0.12

#: (name, settings): acc_* accuracy of a and b; rho their correlation; carry: the fraction of
#: speakers on which a gains delta_a (and as many others on which b gains delta_b)
SCENARIOS = [
    ("null, independent", dict(acc_a=0.6, acc_b=0.6)),
    ("null, correlated", dict(acc_a=0.6, acc_b=0.6, rho=0.8)),
    ("null, few speakers each way", dict(acc_a=0.55, acc_b=0.55, carry=1 / 12, delta_a=0.3, delta_b=0.3)),
    ("+0.10, independent", dict(acc_a=0.65, acc_b=0.55)),
    ("+0.10, correlated", dict(acc_a=0.65, acc_b=0.55, rho=0.8)),
    ("few speakers carry it", dict(acc_a=0.55, acc_b=0.55, carry=1 / 6, delta_a=0.3)),
]


def accuracies(speakers: int, acc_a: float, acc_b: float, carry: float = 0.0, delta_a: float = 0.0,
               delta_b: float = 0.0, **_) -> tuple[np.ndarray, np.ndarray]:
    """`(G,)` accuracies of a and b per speaker before the speaker offsets."""
    k = int(round(carry * speakers))
    pa, pb = np.full(speakers, acc_a), np.full(speakers, acc_b)
    pa[:k] += delta_a
    pb[k:2 * k] += delta_b
    return pa, pb


def simulate(rng: np.random.Generator, reps: int, speakers: int, *, rho: float = 0.0, spread: float = SPREAD,
             per_class: int = PER_CLASS, classes: int = CLASSES, **setting) -> tuple[np.ndarray, np.ndarray]:
    """`reps` simulated test sets: per-speaker confusions of a and b, each `(reps, G, C, C)` int."""
    pa, pb = accuracies(speakers, **setting)
    n = classes * per_class
    offset = rng.uniform(-spread, spread, (reps, speakers, 1))
    truth = np.tile(np.repeat(np.arange(classes), per_class), (reps, speakers, 1))
    u = rng.random((reps, speakers, n))
    same = rng.random((reps, speakers, n)) < rho
    ub = np.where(same, u, rng.random((reps, speakers, n)))
    wrong_a = rng.integers(1, classes, (reps, speakers, n))
    wrong_b = np.where(same, wrong_a, rng.integers(1, classes, (reps, speakers, n)))
    pred_a = np.where(u < np.clip(pa[:, None] + offset, 0, 1), truth, (truth + wrong_a) % classes)
    pred_b = np.where(ub < np.clip(pb[:, None] + offset, 0, 1), truth, (truth + wrong_b) % classes)
    cell = np.arange(reps * speakers).reshape(reps, speakers, 1) * classes * classes + truth * classes

    def confusions(pred):
        return np.bincount((cell + pred).ravel(), minlength=reps * speakers * classes * classes).reshape(
            reps, speakers, classes, classes)

    return confusions(pred_a), confusions(pred_b)


def expected_confusion(acc: np.ndarray, per_class: int = PER_CLASS, classes: int = CLASSES) -> np.ndarray:
    """The expected pooled confusion matrix of speakers with accuracies `acc` (offsets average 0)."""
    p = float(np.mean(acc))
    cm = np.full((classes, classes), (1 - p) / (classes - 1))
    np.fill_diagonal(cm, p)
    return cm * per_class * len(acc)


def truth(metric: str, speakers: int, **setting) -> tuple[float, float]:
    """(true value of a, true difference a - b) of `metric` for a scenario."""
    pa, pb = accuracies(speakers, **setting)
    va = float(metric_from_confusion(expected_confusion(pa), metric))
    return va, va - float(metric_from_confusion(expected_confusion(pb), metric))


# ---------------------------------------------------------------------------------------------
# the two methods, batched over repetitions
# ---------------------------------------------------------------------------------------------

def new_paired(ca, cb, metric: str, level: float = 0.95):
    """jackknife-t: (low, high, p) `(reps,)` each."""
    diff, se = jackknife(ca, metric, cb)
    return t_interval(diff, se, ca.shape[1], level)


def new_single(ca, metric: str, level: float = 0.95):
    value, se = jackknife(ca, metric)
    low, high, _ = t_interval(value, se, ca.shape[1], level)
    return low, high


def old_paired(ca, cb, metric: str, rng, n_boot: int = 1000, n_perm: int = 1000, level: float = 0.95, chunk: int = 25):
    """Percentile speaker bootstrap CI and paired permutation p (`paired_compare(method="percentile")`)."""
    ma, mb = marginals(ca), marginals(cb)   # (R, G, 3, C)
    R, G = ma.shape[:2]
    low, high, p = np.empty(R), np.empty(R), np.empty(R)
    diff = metric_from_marginals(ma.sum(1), metric) - metric_from_marginals(mb.sum(1), metric)
    for i in range(0, R, chunk):
        a, b = ma[i:i + chunk], mb[i:i + chunk]
        n = len(a)
        counts = rng.multinomial(G, np.full(G, 1 / G), size=(n, n_boot)).astype(np.float64)
        boot = (metric_from_marginals(np.einsum("rbg,rgjc->rbjc", counts, a), metric)
                - metric_from_marginals(np.einsum("rbg,rgjc->rbjc", counts, b), metric))
        low[i:i + n], high[i:i + n] = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
        swap = (rng.random((n, n_perm, G)) < 0.5).astype(np.float64)
        moved = np.einsum("rpg,rgjc->rpjc", swap, b - a)
        ta, tb = a.sum(1)[:, None], b.sum(1)[:, None]
        null = metric_from_marginals(ta + moved, metric) - metric_from_marginals(tb - moved, metric)
        extreme = np.sum(np.abs(null) >= np.abs(diff[i:i + n, None]) - 1e-12, axis=1)
        p[i:i + n] = (1 + extreme) / (1 + n_perm)
    return low, high, p


def old_single(ca, metric: str, rng, n_boot: int = 1000, level: float = 0.95, chunk: int = 25):
    ma = marginals(ca)
    R, G = ma.shape[:2]
    low, high = np.empty(R), np.empty(R)
    for i in range(0, R, chunk):
        a = ma[i:i + chunk]
        counts = rng.multinomial(G, np.full(G, 1 / G), size=(len(a), n_boot)).astype(np.float64)
        boot = metric_from_marginals(np.einsum("rbg,rgjc->rbjc", counts, a), metric)
        low[i:i + len(a)], high[i:i + len(a)] = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return low, high


def rates(low, high, p, true_diff: float, alpha: float = 0.05) -> dict:
    """excludes0: CI excludes 0; significant: p < alpha; coverage: CI holds the truth; agree: the two agree."""
    excludes = (low > 0) | (high < 0)
    significant = p < alpha
    return dict(excludes0=float(np.mean(excludes)), significant=float(np.mean(significant)),
                coverage=float(np.mean((low <= true_diff) & (true_diff <= high))),
                agree=float(np.mean(excludes == significant)))


# ---------------------------------------------------------------------------------------------
# best of a family (item 2): picked on the test speakers, with and without the adjustment
# ---------------------------------------------------------------------------------------------

def simulate_family(rng, speakers: int, accs: list[float], *, rho: float = 0.5) -> np.ndarray:
    """One test set scored by len(accs) settings (layers): `(S, G, C, C)`; rho: each setting
    repeats a shared set of right/wrong decisions with probability rho (layers of one model agree)."""
    S, C, n = len(accs), CLASSES, CLASSES * PER_CLASS
    offset = rng.uniform(-SPREAD, SPREAD, (speakers, 1))
    truth_ = np.tile(np.repeat(np.arange(C), PER_CLASS), (speakers, 1))
    shared_u, shared_w = rng.random((speakers, n)), rng.integers(1, C, (speakers, n))
    cms = np.zeros((S, speakers, C, C), dtype=np.int64)
    for s, acc in enumerate(accs):
        same = rng.random((speakers, n)) < rho
        u = np.where(same, shared_u, rng.random((speakers, n)))
        w = np.where(same, shared_w, rng.integers(1, C, (speakers, n)))
        pred = np.where(u < np.clip(acc + offset, 0, 1), truth_, (truth_ + w) % C)
        np.add.at(cms[s], (np.arange(speakers)[:, None], truth_, pred), 1)
    return cms


def family_rates(reps: int, speakers: int, accs: list[float], metric: str = "uar", n_perm: int = 199,
                 seed: int = 0) -> dict:
    """Over `reps` test sets: how often at least one row of the best-vs-others family claims
    (p < 0.05) that the picked setting beats one it does not truly beat, with each pair's own
    jackknife-t p (naive) and with the max-T adjusted p; and how often the adjusted intervals all
    hold the true differences."""
    rng = np.random.default_rng(seed)
    accs = np.asarray(accs, dtype=float)
    naive = adjusted = covered = 0
    for rep in range(reps):
        cms = simulate_family(rng, speakers, list(accs))
        best, rows = best_against_rest_counts(cms, metric=metric, n_perm=n_perm, seed=rep)
        true = [accs[best] - accs[k] for k in range(len(accs)) if k != best]
        naive += any(r.p_unadjusted < 0.05 and t <= 0 for r, t in zip(rows, true))
        adjusted += any(r.p < 0.05 and t <= 0 for r, t in zip(rows, true))
        covered += all(r.low <= t <= r.high for r, t in zip(rows, true))
    return dict(naive=naive / reps, adjusted=adjusted / reps, simultaneous_coverage=covered / reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000, help="simulated test sets per row (default 2000)")
    ap.add_argument("--metric", default="uar", choices=("uar", "wa", "macro_f1"))
    ap.add_argument("--speakers", default="12,24,48")
    ap.add_argument("--n-boot", type=int, default=1000, help="old method: bootstrap resamples and permutations")
    ap.add_argument("--family-reps", type=int, default=400, help="test sets for the best-of-7-layers rows (0: skip)")
    ap.add_argument("--figure", default=None, help="also write the speaker- vs utterance-level interval figure here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    G_list = [int(g) for g in args.speakers.split(",")]
    m = args.metric
    print(f"{m}, {args.reps} simulated test sets per row, 24 utterances per speaker, 4 classes; "
          f"old: percentile speaker bootstrap CI ({args.n_boot}) + paired permutation p ({args.n_boot}); "
          "new: jackknife-t over speakers, t(G-1), CI and p from one statistic")
    head = (f"{'scenario':36s} {'G':>3s} {'true':>6s} | {'CI excl. 0':>13s} | {'p < 0.05':>13s} | "
            f"{'coverage':>13s} | {'CI/p agree':>13s}")
    print(head + "\n" + f"{'':36s} {'':>3s} {'diff':>6s} | {'old    new':>13s} | {'old    new':>13s} | "
          f"{'old    new':>13s} | {'old    new':>13s}")
    print("-" * len(head))
    for i, (name, setting) in enumerate(SCENARIOS):
        for G in G_list:
            rng = np.random.default_rng([i, G])
            ca, cb = simulate(rng, args.reps, G, **setting)
            _, true_diff = truth(m, G, **setting)
            old = rates(*old_paired(ca, cb, m, rng, args.n_boot, args.n_boot), true_diff)
            new = rates(*new_paired(ca, cb, m), true_diff)
            k = int(round(setting.get("carry", 0) * G))
            label = name + (f" ({k} of {G})" if k else "")
            cells = [f"{old[c]:.3f}  {new[c]:.3f}" for c in ("excludes0", "significant", "coverage", "agree")]
            print(f"{label:36s} {G:3d} {true_diff:+6.3f} | " + " | ".join(cells), flush=True)
    print("\nsingle scores (setting a of '+0.10, independent'): coverage of the true value, old / new")
    for metric in ("uar", "wa", "macro_f1"):
        row = []
        for G in G_list:
            rng = np.random.default_rng([G, 99])
            ca, _ = simulate(rng, args.reps, G, **dict(SCENARIOS[3][1]))
            value, _ = truth(metric, G, **SCENARIOS[3][1])
            lo, hi = old_single(ca, metric, rng, args.n_boot)
            nlo, nhi = new_single(ca, metric)
            row.append(f"G={G}: {np.mean((lo <= value) & (value <= hi)):.3f} / "
                       f"{np.mean((nlo <= value) & (value <= nhi)):.3f}")
        print(f"  {metric:9s} " + "   ".join(row), flush=True)
    if args.family_reps:
        print(f"\nbest of 7 layers picked on the test speakers vs every other layer, 24 speakers, {args.family_reps} "
              "test sets, 199 permutations each; false claim: p < 0.05 for a layer the picked one does not beat")
        for label, accs in (("all layers equal", [0.6] * 7), ("one layer +0.10", [0.6] * 6 + [0.7]),
                            ("two layers +0.10", [0.6] * 5 + [0.7] * 2)):
            r = family_rates(args.family_reps, 24, accs, m)
            print(f"  {label:18s} false claim: unadjusted {r['naive']:.3f}, max-T adjusted {r['adjusted']:.3f}; "
                  f"adjusted intervals all cover the truth: {r['simultaneous_coverage']:.3f}", flush=True)
    if args.figure:
        from classifiers.results.report import interval_figure
        from classifiers.results.stats import bootstrap_ci
        from tests.test_stats import LABELS
        from tests.test_stats import simulate as simulate_rows

        a, _ = simulate_rows(np.random.default_rng(3), 0.55, 0.55, spread=0.3)
        ivs = {"speakers (jackknife-t)": bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS),
               "utterances (jackknife-t)": bootstrap_ci(a["y_true"], a["y_pred"], None, LABELS)}
        print("wrote", interval_figure(ivs, args.figure, title="UAR, 30 speakers with strong speaker effects"))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
