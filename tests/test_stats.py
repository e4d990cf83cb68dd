"""Speaker-level intervals and paired comparisons: metrics, speaker vs utterance width, seeding,
refusals, Holm. Coverage, type I error and CI/p agreement are held in tests/test_intervals.py."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.results.metrics import scores
from classifiers.results.stats import (
    StatsError,
    bootstrap_ci,
    group_confusions,
    holm,
    metric_from_confusion,
    paired_compare,
)

LABELS = ["angry", "happy", "neutral", "sad"]


def simulate(rng, accuracy_a, accuracy_b, *, speakers=30, per_class=6, spread=0.12):
    """Two settings on the same utterances of `speakers` speakers (balanced classes); each speaker
    has its own base accuracy (a strong speaker effect), setting x is right with prob base + accuracy_x."""
    n = len(LABELS) * per_class
    spk = np.repeat([f"s{i:02d}" for i in range(speakers)], n)
    truth = np.tile(np.repeat(LABELS, per_class), speakers)
    base = np.repeat(rng.uniform(-spread, spread, speakers), n)
    ids = np.arange(len(truth)).astype(str)

    def predictions(acc):
        right = rng.random(len(truth)) < np.clip(base + acc, 0, 1)
        other = (np.array([LABELS.index(t) for t in truth]) + rng.integers(1, len(LABELS), len(truth))) % len(LABELS)
        return np.where(right, truth, np.array(LABELS)[other])

    a = dict(id=ids, y_true=truth, y_pred=predictions(accuracy_a), speaker=spk)
    b = dict(id=ids, y_true=truth, y_pred=predictions(accuracy_b), speaker=spk)
    return a, b


def test_metrics_from_confusion_equal_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.choice(LABELS[:3], 50)
    pred = rng.choice(LABELS, 50)  # "sad" predicted, never true: counts in macro-F1, not in UAR
    _, cm = group_confusions(truth, pred, None, LABELS)
    ref = scores(truth, pred, LABELS)
    for m in ("wa", "uar", "macro_f1"):
        assert metric_from_confusion(cm.sum(0), m) == pytest.approx(ref[m])


def test_planted_difference_is_detected():
    a, b = simulate(np.random.default_rng(0), 0.7, 0.5)
    c = paired_compare(a, b, LABELS, metric="wa", seed=0)
    assert c.p < 0.01 and c.low > 0 and c.diff == pytest.approx(c.value_a - c.value_b)


def test_speaker_interval_is_wider_than_utterance_interval(tmp_path):
    """Strong speaker effects: treating utterances as independent understates the uncertainty;
    leaving out whole speakers does not (both the jackknife-t and the old percentile bootstrap)."""
    a, _ = simulate(np.random.default_rng(3), 0.55, 0.55, spread=0.3)
    spk = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=0)
    utt = bootstrap_ci(a["y_true"], a["y_pred"], None, LABELS, seed=0)
    assert spk.value == pytest.approx(utt.value)
    assert spk.high - spk.low > 1.5 * (utt.high - utt.low)
    assert (spk.unit, spk.n_groups, utt.n_groups) == ("speaker", 30, 720)
    assert spk.method == "jackknife-t" and spk.se > 0
    old_spk = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=0, method="percentile")
    old_utt = bootstrap_ci(a["y_true"], a["y_pred"], None, LABELS, seed=0, method="percentile")
    assert old_spk.high - old_spk.low > 1.5 * (old_utt.high - old_utt.low)
    from classifiers.results.report import interval_figure

    png = interval_figure({"speaker bootstrap": spk, "utterance bootstrap": utt}, tmp_path / "ci.png",
                          title="UAR, strong speaker effects")
    assert png.stat().st_size > 5000


def test_intervals_are_reproducible():
    a, _ = simulate(np.random.default_rng(4), 0.6, 0.6)
    one = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=7)
    assert one == bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=8)  # deterministic
    old = bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=7, method="percentile")
    assert old == bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=7, method="percentile")
    assert old != bootstrap_ci(a["y_true"], a["y_pred"], a["speaker"], LABELS, seed=8, method="percentile")


def test_different_test_sets_are_refused():
    a, b = simulate(np.random.default_rng(5), 0.6, 0.6)
    b = {k: v[:-24] for k, v in b.items()}
    with pytest.raises(StatsError, match="different test utterances.*same utterances"):
        paired_compare(a, b, LABELS)


def test_holm():
    # statsmodels' multipletests(method="holm") on these p-values gives [0.04, 0.06, 0.06, 0.5]
    np.testing.assert_allclose(holm([0.01, 0.02, 0.03, 0.5]), [0.04, 0.06, 0.06, 0.5])
    np.testing.assert_allclose(holm([0.9, 0.001]), [0.9, 0.002])
