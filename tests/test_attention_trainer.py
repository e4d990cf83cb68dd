"""The one training loop shared by `AttentionProbe` and `AttentionRegressorProbe` (`_train_head`):
early stopping keeps the best epoch's weights, the history names each estimator's score, the scores
are those of the restored model on the validation clips, and the global torch RNG is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score

from classifiers.estimators.attention import AttentionProbe, AttentionRegressorProbe
from classifiers.estimators.regression import ccc

N_TRAIN = 40


def problem(seed=7, n=60, n_layers=2, dim=6):
    """n clips (T_i, n_layers, dim) of 3-11 frames; labels a/b/c and a 2-column target, both carried
    by layer 1's first feature (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    clips = []
    for c in y:
        f = rng.normal(size=(int(rng.integers(3, 12)), n_layers, dim)).astype(np.float32)
        f[:, 1, 0] += {"a": 1.0, "b": -1.0, "c": 0.0}[c]
        clips.append(f)
    cue = np.array([f[:, 1, 0].mean() for f in clips])
    Y = np.stack([cue, -cue + rng.normal(scale=0.2, size=n)], 1)
    return clips, y, Y


FAST = dict(hidden=8, heads=2, batch_size=8, threads=1, random_state=3)
ESTIMATORS = {"classifier": (AttentionProbe, "val_uar"), "regressor-mse": (AttentionRegressorProbe, "val_ccc"),
              "regressor-ccc": (AttentionRegressorProbe, "val_ccc")}


def unfitted(name, **params):
    """The estimator `name` (FAST settings, its loss for a regressor), its clips and its targets."""
    cls, _ = ESTIMATORS[name]
    clips, y, Y = problem()
    extra = {"loss": name.split("-")[1]} if cls is AttentionRegressorProbe else {}
    return cls(**FAST, **extra, **params), clips, (y if cls is AttentionProbe else Y)


def fit_split(est, clips, target):
    """`est` fitted on the first N_TRAIN clips, validated on the rest (`val=`)."""
    return est.fit(clips[:N_TRAIN], target[:N_TRAIN], val=(clips[N_TRAIN:], target[N_TRAIN:]))


def fitted(name, **params):
    """The estimator `name` fitted by `fit_split`, its clips and its targets."""
    est, clips, target = unfitted(name, **params)
    return fit_split(est, clips, target), clips, target


def predictions(est, clips):
    return est.predict_proba(clips) if isinstance(est, AttentionProbe) else est.predict(clips)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_early_stopping_keeps_the_best_epoch_bit_for_bit(name):
    est, clips, _ = fitted(name, max_epochs=60, lr=0.05, patience=2)
    score = ESTIMATORS[name][1]
    b = est.best_epoch_
    assert b + 2 == est.n_epochs_ < 60, "the problem must stop early for this test to mean anything"
    scores = [h[score] for h in est.history_]
    assert getattr(est, score + "_") == scores[b - 1] == max(scores) and scores.index(max(scores)) == b - 1
    # the restored weights are those after epoch b: a run stopped there by max_epochs predicts the same
    short, _, _ = fitted(name, max_epochs=b, lr=0.05, patience=2)
    assert short.history_ == est.history_[:b] and short.best_epoch_ == b
    assert np.array_equal(predictions(short, clips), predictions(est, clips))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_history_names_the_estimators_score_and_scores_the_restored_model(name):
    est, clips, target = fitted(name, max_epochs=6)
    score = ESTIMATORS[name][1]
    assert [list(h) for h in est.history_] == [["epoch", "train_loss", "val_loss", score]] * est.n_epochs_
    assert [h["epoch"] for h in est.history_] == list(range(1, est.n_epochs_ + 1))
    best = est.history_[est.best_epoch_ - 1]
    val_clips, val_target = clips[N_TRAIN:], target[N_TRAIN:]
    if score == "val_uar":
        assert est.val_uar_ == pytest.approx(balanced_accuracy_score(val_target, est.predict(val_clips)), abs=1e-12)
    else:  # the regressor's validation loss is the MSE of standardised targets, its score their mean CCC
        # (scored in training by the float32 head, predicted by its float64 copy: equal to float32 precision;
        # another epoch's model would differ in the second or third digit)
        z = (est.predict(val_clips) - est.y_mean_) / est.y_scale_
        zv = (val_target - est.y_mean_) / est.y_scale_
        assert best["val_loss"] == pytest.approx(float(((z - zv) ** 2).mean()), rel=1e-5)
        assert est.val_ccc_ == pytest.approx(float(np.mean(ccc(zv, z))), rel=1e-5)
        others = [h["val_loss"] for h in est.history_ if h["epoch"] != est.best_epoch_]
        assert all(abs(v - best["val_loss"]) > 1e-4 * best["val_loss"] for v in others)
    assert est.layer_weights_.shape == (2,) and est.model_.training is False


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_without_validation_every_epoch_runs_and_no_score(name):
    score = ESTIMATORS[name][1]
    est, clips, target = unfitted(name, max_epochs=4, patience=1)
    est.fit(clips, target)
    assert est.n_epochs_ == est.best_epoch_ == 4 and getattr(est, score + "_") is None
    assert [list(h) for h in est.history_] == [["epoch", "train_loss"]] * 4


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_seeded_and_global_rng_untouched(name):
    state = torch.get_rng_state()
    a, clips, target = fitted(name, max_epochs=5)
    assert torch.equal(state, torch.get_rng_state())
    b = fit_split(clone(a), clips, target)
    assert a.history_ == b.history_ and np.array_equal(predictions(a, clips), predictions(b, clips))
    c = fit_split(clone(a).set_params(random_state=4), clips, target)
    assert not np.array_equal(predictions(a, clips), predictions(c, clips))
