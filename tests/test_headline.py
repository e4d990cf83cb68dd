"""One headline number (issue 23): every summary leads with the pooled score and its 95% speaker CI,
folds mean ± std beside it and named, no std for a single split, the classes and chance with it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from classifiers.results.metrics import scores
from classifiers.results.predictions import read_predictions
from classifiers.results.stats import bootstrap_ci
from tests.test_runs import MODEL, cli, toy_store


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("headline-cache")
    for i, c in enumerate(("ravdess", "emodb")):
        toy_store(root, c, seed=i)
    return root


def _run(cache, out, *extra):
    cli("probe", "--corpus", "ravdess", "--layer", "all", "--C", "1", "--model", MODEL, "--cache", str(cache),
        "--db", str(out.parent / "ser.db"), "--out", str(out), *extra)
    return json.loads((out / "probe.json").read_text()), list(csv.DictReader((out / "probe_summary.csv").open()))


def test_sweep_headline_is_the_pooled_score_with_the_ci_of_its_predictions(cache, tmp_path):
    results, rows = _run(cache, tmp_path / "sweep", "--protocol", "speaker-kfold:4")
    preds = read_predictions(tmp_path / "sweep" / "probe_predictions.parquet")
    assert len(results["summary"]) == 3 and len(rows) == 3
    for s, row in zip(results["summary"], rows):
        keep = preds["layer"] == str(s["layer"])
        truth, pred, spk = preds["label"][keep], preds["predicted"][keep], preds["speaker"][keep]
        labels = sorted(set(truth))
        iv = bootstrap_ci(truth, pred, spk, labels, metric="uar")
        assert s["headline"] == "uar" and s["pooled"] == pytest.approx(scores(truth, pred, labels)["uar"])
        assert (s["ci_low"], s["ci_high"]) == pytest.approx((iv.low, iv.high)) and s["ci_low"] < s["pooled"] < s["ci_high"]
        assert s["n_speakers"] == 8 and s["n_folds"] == 4 and s["n_classes"] == 8 and s["chance"] == pytest.approx(1 / 8)
        folds = [r["uar"] for r in results["records"] if r["layer"] == s["layer"]]
        assert s["uar"] == pytest.approx(np.mean(folds)) and s["uar_std"] == pytest.approx(np.std(folds))
        assert float(row["pooled"]) == pytest.approx(s["pooled"]) and float(row["ci_low"]) == pytest.approx(s["ci_low"])
        assert row["folds_std"] != "" and int(row["n_classes"]) == 8


def test_cross_corpus_cell_shows_no_std_and_names_its_classes(cache, tmp_path):
    results, rows = _run(cache, tmp_path / "cross", "--train", "emodb", "--test", "ravdess")
    (s,) = [r for r in results["summary"] if str(r["layer"]) == "1"]
    assert s["n_folds"] == 1 and s["ci_low"] < s["pooled"] < s["ci_high"]
    assert s["n_classes"] == 6 and s["chance"] == pytest.approx(1 / 6)          # the classes both sides declare
    row = next(r for r in rows if r["layer"] == "1")
    assert row["folds_std"] == ""                                                  # a single split has no std
    table = cli("probe", "--corpus", "ravdess", "--train", "emodb", "--test", "ravdess", "--layer", "1", "--C", "1",
                "--model", MODEL, "--cache", str(cache), "--db", str(tmp_path / "ser.db"), "--out", str(tmp_path / "again"),
                "--force").output
    flat = " ".join(table.split())   # captions wrap at the table's width: compare words, not lines
    assert "±" not in table and f"{s['pooled']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]" in table
    assert "6 classes: neutral, happy, sad, angry, fear, disgust; chance UAR 0.167 (1/6)" in flat
