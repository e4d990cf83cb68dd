"""Probes: agreement with plain sklearn, shuffled-label control, cross-corpus harmonisation, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from classifiers.estimators.linear import LogRegProbe, fit_many, inner_masks
from classifiers.results.metrics import scores
from classifiers.runs.crossval import probe_layers, transfer_matrix
from featstore.corpora.base import Utterance
from featstore.folds import Fold, make_folds

LABELS = ["neutral", "happy", "sad", "angry"]


def synthetic(n_speakers=12, per=16, layers=4, dim=24, signal_layer=2, seed=0, corpus="toy", labels=LABELS):
    """Features (N, layers, dim) with the emotion planted in `signal_layer` and speaker offsets everywhere."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((len(labels), dim)) * 1.2
    utts, X = [], []
    for s in range(n_speakers):
        offset = rng.standard_normal(dim) * 0.5
        for i in range(per):
            k = i % len(labels)
            row = rng.standard_normal((layers, dim)) + offset
            row[signal_layer] += centroids[k]
            row[signal_layer - 1] += 0.4 * centroids[k]
            X.append(row)
            utts.append(Utterance(id=f"{corpus}-{s}-{i}", path="", corpus=corpus, language="en",
                                  speaker=f"{corpus}-{s:02d}", gender=None, label=labels[k], label_raw=labels[k]))
    return np.array(X, dtype=np.float32), utts


def test_batched_solver_matches_sklearn():
    X, utts = synthetic(signal_layer=1, layers=2)
    y = np.array([LABELS.index(u.label) for u in utts])
    train = np.array([int(u.speaker[-2:]) < 9 for u in utts])
    for C in (0.01, 1.0):
        proba = fit_many(X[:, 1][None], y, train[None], np.array([C]), 4, tol=1e-7)
        sc = StandardScaler().fit(X[train, 1])
        ref = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(sc.transform(X[train, 1]), y[train])
        ours = proba[0, 0][~train]
        theirs = ref.predict_proba(sc.transform(X[~train, 1]))
        assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99
        assert np.abs(ours - theirs).max() < 0.02


def test_best_layer_uar_matches_plain_sklearn_and_beats_chance():
    X, utts = synthetic()
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    res = probe_layers(X, utts, folds, layers=[0, 1, 2, 3], C=0.1)
    best = res.best()
    assert best["layer"] == 2 and best["uar"] > 0.8
    # independent plain sklearn on the same features and folds
    y = np.array([u.label for u in utts])
    recalls = []
    for f in folds:
        sc = StandardScaler().fit(X[f.train, 2])
        clf = LogisticRegression(C=0.1, max_iter=5000).fit(sc.transform(X[f.train, 2]), y[f.train])
        recalls.append(balanced_accuracy_score(y[f.test], clf.predict(sc.transform(X[f.test, 2]))))
    assert abs(best["uar"] - np.mean(recalls)) <= 0.01


def test_inner_cv_chooses_C_on_training_speakers_only():
    X, utts = synthetic()
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    speakers = np.array([u.speaker for u in utts])
    y = np.array([LABELS.index(u.label) for u in utts])
    for f in folds:
        m = np.zeros(len(utts), bool)
        m[f.train] = True
        for inner in inner_masks(m, speakers, y, 3, 0):
            assert not inner[f.test].any()                       # never a test row
            val = m & ~inner
            assert not set(speakers[inner]) & set(speakers[val])  # speaker-disjoint inner split
    res = probe_layers(X[:, [2]], utts, folds, layers=[2])
    assert all(r["C"] in (1e-3, 1e-2, 1e-1, 1.0) for r in res.records)
    assert res.best()["uar"] > 0.8


def test_shuffled_labels_fall_to_chance():
    X, utts = synthetic(n_speakers=16, per=20)
    folds = make_folds(utts, "speaker-kfold:4", seed=0)
    res = probe_layers(X[:, [2]], utts, folds, layers=[2], C=0.1, shuffle_labels=True, seeds=(0, 1))
    uar = np.mean([r["uar"] for r in res.records])
    assert uar < 0.25 + 0.12  # chance 0.25
    assert all(r["shuffled"] for r in res.records)


def test_cross_corpus_harmonised_and_dropped_reported():
    Xa, ua = synthetic(corpus="a", labels=["neutral", "happy", "sad", "angry"], seed=1)
    Xb, ub = synthetic(corpus="b", labels=["neutral", "happy", "sad", "calm"], seed=1)
    X = np.concatenate([Xa, Xb])
    utts = ua + ub
    fold = Fold("a->b", np.arange(len(ua)), np.arange(len(ua), len(utts)))
    res = probe_layers(X[:, [2]], utts, [fold], layers=[2], C=0.1, train_set="a", test_set="b")
    rec = res.records[0]
    assert rec["labels"] == ["neutral", "happy", "sad", "angry"]          # training classes, canonical order
    assert res.dropped == {"a->b": {"calm": len(ub) // 4}}                # calm absent from training
    assert rec["n_test"] == len(ub) - len(ub) // 4
    # same centroids (seed) for shared classes: transfer works on them
    assert rec["recall"]["neutral"] > 0.5
    M, details = transfer_matrix({"a": Xa, "b": Xb}, {"a": ua, "b": ub}, ["a", "b"], 2,
                                 within_folds={"a": make_folds(ua, "speaker-kfold:3"), "b": make_folds(ub, "speaker-kfold:3")},
                                 C=0.1)
    assert M.shape == (2, 2) and np.all(M[np.diag_indices(2)] > 0.8)
    assert details[("a", "b")]["dropped"] == {"a->b": {"calm": len(ub) // 4}}


def test_metrics_against_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    rng = np.random.default_rng(0)
    t = rng.choice(LABELS, 200)
    p = rng.choice(LABELS, 200)
    s = scores(t, p, LABELS)
    assert s["wa"] == pytest.approx(accuracy_score(t, p))
    assert s["uar"] == pytest.approx(balanced_accuracy_score(t, p))
    assert s["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    assert np.array_equal(s["confusion"], confusion_matrix(t, p, labels=LABELS))


def test_logreg_probe_estimator_and_xgboost():
    from classifiers.estimators.boosting import XGBProbe

    X, utts = synthetic()
    y = np.array([u.label for u in utts])
    g = np.array([u.speaker for u in utts])
    tr = np.array([int(s[-2:]) < 9 for s in g])
    probe = LogRegProbe().fit(X[tr, 2], y[tr], groups=g[tr])
    assert probe.C_ in probe.Cs and (probe.predict(X[~tr, 2]) == y[~tr]).mean() > 0.8
    np.testing.assert_allclose(probe.predict_proba(X[~tr, 2]).sum(1), 1, atol=1e-6)
    xgb = XGBProbe(n_estimators=60, n_jobs=2).fit(X[tr, 2], y[tr])
    assert (xgb.predict(X[~tr, 2]) == y[~tr]).mean() > 0.5


def test_results_files_and_plots(tmp_path):
    from classifiers.results.records import read_results
    from classifiers.runs.probe import write_outputs

    X, utts = synthetic()
    res = probe_layers(X, utts, make_folds(utts, "speaker-kfold:3"), layers=[0, 1, 2, 3], C=0.1,
                       train_set="toy", test_set="toy")
    res.meta = dict(corpus="toy", protocol="speaker-kfold:3", stores=["x.h5"])
    files = write_outputs(res, tmp_path)
    names = {f.name for f in files}
    assert {"probe.json", "probe.csv", "probe_layers.png", "probe_confusion.png"} <= names
    data = json.loads((tmp_path / "probe.json").read_text())
    assert data["meta"]["versions"]["sklearn"] and data["meta"]["protocol"] == "speaker-kfold:3"
    back = read_results(tmp_path / "probe.json")
    assert back.best()["layer"] == res.best()["layer"] == 2
    lines = (tmp_path / "probe.csv").read_text().splitlines()
    assert lines[0].startswith("train_set,test_set,classifier,layer,fold,seed,wa,uar,macro_f1")
    assert lines[0].endswith(",classes,model,store,protocol,n_classes,chance")   # each record's classes and chance
    assert len(lines) == 1 + 4 * 3
    from PIL import Image

    w, h = Image.open(tmp_path / "probe_layers.png").size
    assert w > 800 and h > 400
