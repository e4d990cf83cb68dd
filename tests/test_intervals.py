"""Intervals that hold with the few speakers SER corpora have (issue 23): the jackknife-t over
speakers keeps type I error <= 6% and coverage >= 93.5% at 24 speakers, its CI and p agree on
every test set, the old percentile bootstrap fails the same bar, and the best layer picked on the
test data is compared with the pick accounted for.

3,000 simulated test sets per scenario: the standard error of a 5% rate is 0.4 points, so 6% is
2.5 standard errors above 5% and 7% (the old bootstrap's rate) 2.5 below; the simulation is batched
over repetitions (`bench/uncertainty.py`, which prints the full table)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.uncertainty import (
    SCENARIOS,
    family_rates,
    new_paired,
    new_single,
    old_paired,
    rates,
    simulate,
    simulate_family,
    truth,
)
from classifiers.results.stats import (
    StatsError,
    best_against_rest,
    best_against_rest_counts,
    bootstrap_ci,
    paired_compare,
    t_interval,
)

REPS, G = 3000, 24
LABELS = ["angry", "happy", "neutral", "sad"]


def rows_of(cm: np.ndarray, prefix: str = "s") -> dict:
    """Per-utterance rows (id, y_true, y_pred, speaker) with per-speaker confusions `cm` `(G, C, C)`;
    ids follow (speaker, truth, k-th of that truth) so two settings share them."""
    ids, truth_, pred, spk = [], [], [], []
    for g, m in enumerate(cm):
        for t in range(m.shape[0]):
            k = 0
            for p in range(m.shape[1]):
                for _ in range(int(m[t, p])):
                    ids.append(f"{g}-{t}-{k}")
                    truth_.append(LABELS[t])
                    pred.append(LABELS[p])
                    spk.append(f"{prefix}{g:02d}")
                    k += 1
    order = np.argsort(ids)
    return {k: np.asarray(v)[order] for k, v in dict(id=ids, y_true=truth_, y_pred=pred, speaker=spk).items()}


@pytest.mark.parametrize("metric", ["uar", "macro_f1"])
@pytest.mark.parametrize("scenario", range(len(SCENARIOS)), ids=[s[0] for s in SCENARIOS])
def test_jackknife_t_holds_at_24_speakers(scenario, metric):
    name, setting = SCENARIOS[scenario]
    ca, cb = simulate(np.random.default_rng([scenario, G, 7]), REPS, G, **setting)
    _, true_diff = truth(metric, G, **setting)
    r = rates(*new_paired(ca, cb, metric), true_diff)
    assert r["agree"] == 1.0, r                  # CI excludes 0 exactly when p < 0.05, on every test set
    assert r["coverage"] >= 0.935, (name, r)
    if true_diff == 0:
        assert r["excludes0"] <= 0.06, (name, r)  # type I error
    else:
        assert r["excludes0"] > 0.15, (name, r)   # and it still finds the planted differences


def test_single_score_intervals_cover_at_24_speakers():
    setting = SCENARIOS[3][1]
    ca, _ = simulate(np.random.default_rng(11), REPS, G, **setting)
    for metric in ("uar", "wa", "macro_f1"):
        value, _ = truth(metric, G, **setting)
        low, high = new_single(ca, metric)
        assert np.mean((low <= value) & (value <= high)) >= 0.935, metric


def test_the_old_percentile_bootstrap_fails_the_same_bar():
    """The bar can fail: the old speaker bootstrap excludes 0 in > 6% of null test sets at 24
    speakers, and its CI and permutation p disagree when a few speakers carry a difference."""
    rng = np.random.default_rng(5)
    ca, cb = simulate(rng, REPS, G, **SCENARIOS[0][1])
    old = rates(*old_paired(ca, cb, "uar", rng, n_boot=400, n_perm=100), 0.0)
    assert old["excludes0"] > 0.06, old
    ca, cb = simulate(rng, 400, G, **SCENARIOS[5][1])
    old = rates(*old_paired(ca, cb, "uar", rng, n_boot=400, n_perm=400), truth("uar", G, **SCENARIOS[5][1])[1])
    assert old["agree"] < 0.97, old


def test_paired_compare_and_bootstrap_ci_are_the_simulated_method():
    """What the simulation measures is what users get: per-utterance rows through the public entry
    points give the batched jackknife-t's numbers for the same test sets."""
    ca, cb = simulate(np.random.default_rng(2), 3, G, **SCENARIOS[5][1])
    low, high, p = new_paired(ca, cb, "uar")
    slow, shigh = new_single(ca, "macro_f1")
    for i in range(3):
        a, b = rows_of(ca[i]), rows_of(cb[i])
        c = paired_compare(a, b, LABELS, metric="uar")
        assert (c.low, c.high, c.p) == pytest.approx((low[i], high[i], p[i]), abs=1e-12)
        assert c.method == "jackknife-t" and c.n_groups == G and c.diff == pytest.approx(c.value_a - c.value_b)
        iv = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, metric="macro_f1")
        assert (iv.low, iv.high, iv.method) == (pytest.approx(slow[i], abs=1e-12), pytest.approx(shigh[i], abs=1e-12),
                                                "jackknife-t")
        old = paired_compare(a, b, LABELS, metric="uar", method="percentile", n_boot=200, n_perm=200)
        assert old.method == "percentile" and old.diff == pytest.approx(c.diff)


def test_agreement_is_exact_at_the_boundary_and_in_degenerate_cases():
    # |value| / se exactly the t quantile: the interval touches 0 and p is not below 0.05
    from classifiers.results.stats import t_quantile

    q = float(t_quantile(0.95, 24))
    low, high, p = t_interval(q * 0.01, 0.01, 24)
    assert (low <= 0 <= high) and p >= 0.05
    low, high, p = t_interval(np.nextafter(q, 9) * 0.01, 0.01, 24)
    assert (low > 0) == (p < 0.05)
    # identical settings: difference 0 with SE 0 -> [0, 0], p = 1
    ca, _ = simulate(np.random.default_rng(3), 1, 12, **SCENARIOS[0][1])
    a = rows_of(ca[0])
    c = paired_compare(a, a, LABELS)
    assert (c.diff, c.low, c.high, c.p) == (0.0, 0.0, 0.0, 1.0)


def test_unknown_method_and_level_are_one_line_errors():
    ca, _ = simulate(np.random.default_rng(3), 1, 12, **SCENARIOS[0][1])
    a = rows_of(ca[0])
    with pytest.raises(StatsError, match="unknown interval method 'bca'"):
        bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, method="bca")
    with pytest.raises(StatsError, match="level 95"):
        paired_compare(a, a, LABELS, level=95)
    with pytest.raises(StatsError, match="at least 2 speakers"):
        bootstrap_ci(a["y_true"][:5], a["y_pred"][:5], a["speaker"][:5], LABELS)


# ---------------------------------------------------------------------------------------------
# the best of a family, picked on the test data (item 2)
# ---------------------------------------------------------------------------------------------

def test_best_layer_picked_on_the_test_data_is_adjusted_for_the_pick():
    """7 equal layers: the naive best-vs-others rows claim a difference in ~40% of test sets, the
    max-T adjusted ones in <= 9% (300 test sets: a 5% rate is 5 +- 1.3 points)."""
    r = family_rates(300, 24, [0.6] * 7, n_perm=99, seed=1)
    assert r["naive"] > 0.25, r
    assert r["adjusted"] <= 0.09, r
    assert r["simultaneous_coverage"] >= 0.91, r


def test_best_against_rest_rows_agree_and_are_seeded():
    rng = np.random.default_rng(4)
    cms = simulate_family(rng, 24, [0.55, 0.6, 0.6, 0.75])
    best, rows = best_against_rest_counts(cms, n_perm=199, seed=3)
    assert best == 3 and len(rows) == 3
    for r in rows:
        assert (r.low > 0) == (r.p < 0.05)
        assert r.diff >= 0 and r.family == 4 and "max-T" in r.method
        assert r.p >= r.p_unadjusted - 0.02       # the adjustment never makes the evidence stronger
        assert r.high - r.low >= r.high_unadjusted - r.low_unadjusted - 1e-12
    assert best_against_rest_counts(cms, n_perm=199, seed=3) == (best, rows)
    assert rows[0].p < 0.05                        # +0.20 over 24 speakers is found despite the pick
    sides = [rows_of(c) for c in cms]
    assert best_against_rest(sides, LABELS, n_perm=199, seed=3) == (best, rows)


def test_best_against_rest_refusals():
    cms = simulate_family(np.random.default_rng(4), 12, [0.6, 0.6])
    sides = [rows_of(c) for c in cms]
    with pytest.raises(StatsError, match="cannot give p < 0.05"):
        best_against_rest(sides, LABELS, n_perm=10)
    short = {k: v[:-3] for k, v in sides[1].items()}
    with pytest.raises(StatsError, match="different test utterances"):
        best_against_rest([sides[0], short], LABELS)
    with pytest.raises(StatsError, match="at least 2 settings"):
        best_against_rest(sides[:1], LABELS)


def test_layer_differences_labels_the_picked_best_exploratory():
    """`compare.layer_differences` (the report and the demo): with no reference the rows are the
    adjusted exploratory ones; with a reference fixed in advance, plain jackknife-t with Holm."""
    from types import SimpleNamespace

    from classifiers.results.compare import layer_differences

    cms = simulate_family(np.random.default_rng(8), 12, [0.5, 0.6, 0.7])
    blocks = []
    for layer, cm in enumerate(cms):
        r = rows_of(cm)
        n = len(r["id"])
        blocks.append(dict(id=r["id"], corpus=["x"] * n, speaker=r["speaker"], label=r["y_true"], predicted=r["y_pred"],
                           fold=["0"] * n, seed=[0] * n, layer=[str(layer)] * n, classifier=["logreg"] * n,
                           train_set=["x"] * n, test_set=["x"] * n))
    results = SimpleNamespace(predictions=blocks)
    rows = layer_differences(results, n_perm=199)
    assert [r["a"] for r in rows] == ["layer 2", "layer 2"] and [r["layer"] for r in rows] == ["0", "1"]
    assert all(r["exploratory"] and r["family"] == 3 and "p_holm" not in r for r in rows)
    assert all((r["low"] > 0) == (r["p"] < 0.05) for r in rows)
    fixed = layer_differences(results, reference=1)
    assert all(not r["exploratory"] and "p_holm" in r and r["method"] == "jackknife-t" for r in fixed)
