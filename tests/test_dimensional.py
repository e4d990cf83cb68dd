"""`ser probe --target arousal|valence|dominance|avd` (issue 25): the layer that carries each
dimension is found, the headline CCC and its speaker CI are those of the written predictions, runs
are registered, and bad targets or options are one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from classifiers.estimators.regression import ccc, ccc_interval
from featstore.corpora.base import Utterance
from featstore.errors import SerError
from tests.test_results import MODEL, invoke, write_store

CORPUS = "mydims"    # not a registered corpus: its utterances carry their own scale (1-5)


def planted_dims(n_speakers: int = 10, per: int = 12, dim: int = 8, seed: int = 0, dominance: bool = True,
                 corpus: str = CORPUS):
    """Pooled features (N, 3 layers, dim): arousal planted linearly in layer 1, valence in layer 2
    (the same directions in every corpus), layer 0 noise only; ratings on a 1-5 scale."""
    wa, wv = np.random.default_rng(100).standard_normal((2, dim))
    rng = np.random.default_rng(seed)
    X, utts = [], []
    for s in range(n_speakers):
        offset = 0.2 * rng.standard_normal(dim)
        for i in range(per):
            a, v = rng.uniform(1, 5), rng.uniform(1, 5)
            row = rng.standard_normal((3, dim)) + offset
            row[1] += 1.5 * (a - 3) * wa
            row[2] += 1.5 * (v - 3) * wv
            X.append(row)
            utts.append(Utterance(id=f"{corpus}-{s}-{i}", path=f"/x/{s}/{i}.wav", corpus=corpus, language="en",
                                  speaker=f"{corpus}-{s:02d}", gender=None, label="neutral", label_raw="neu",
                                  arousal=float(a), valence=float(v),
                                  dominance=float(rng.uniform(1, 5)) if dominance else None,
                                  dimension_scale=(1.0, 5.0)))
    return np.asarray(X, dtype=np.float32), utts


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    write_store(cache, CORPUS, *planted_dims())
    write_store(cache, "otherdims", *planted_dims(seed=3, n_speakers=6, per=10, corpus="otherdims"))
    write_store(cache, "nodims", *planted_dims(seed=1, n_speakers=6, per=4, dominance=False)[:1],
                [Utterance(id=f"nodims-{i}", path=f"/y/{i}.wav", corpus="nodims", language="en",
                           speaker=f"nodims-{i % 6:02d}", gender=None, label="neutral", label_raw="neu")
                 for i in range(24)])
    return cache


def test_the_layer_carrying_each_dimension_is_found(cache, tmp_path):
    from classifiers.runs.dimensional import run_dimensional

    run = run_dimensional(CORPUS, target="avd", model=MODEL, cache=cache, out=tmp_path / "r")
    by_layer = {r["layer"]: r for r in run.summary}
    assert run.best("arousal")["layer"] == 1 and run.best("valence")["layer"] == 2
    assert by_layer[1]["ccc_arousal_pooled"] > 0.8 and by_layer[2]["ccc_valence_pooled"] > 0.8
    assert abs(by_layer[0]["ccc_arousal_pooled"]) < 0.3 and abs(by_layer[1]["ccc_valence_pooled"]) < 0.3
    # dominance is random: no layer carries it, and its CI says so
    assert all(r["ccc_dominance_ci_low"] < 0.2 for r in run.summary)
    # records: one per layer x fold, with the per-dimension and mean metrics ser results lists
    assert len(run.records) == 3 * run.summary[0]["n_folds"]
    assert {"ccc_arousal", "ccc_valence", "ccc_dominance", "ccc", "pearson_arousal", "rmse_valence"} <= set(run.records[0])
    assert run.meta["scales"] == {CORPUS: [1.0, 5.0]}


def test_headline_is_the_ccc_of_the_written_predictions(cache, tmp_path):
    from classifiers.runs.dimensional import run_dimensional

    run = run_dimensional(CORPUS, target="arousal", model=MODEL, cache=cache, out=tmp_path / "r", alpha=1.0)
    with (tmp_path / "r" / "probe_predictions.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["layer"] == "1"]
    y = np.array([float(r["true_arousal"]) for r in rows])
    p = np.array([float(r["pred_arousal"]) for r in rows])
    spk = np.array([r["speaker"] for r in rows])
    row = next(r for r in run.summary if r["layer"] == 1)
    assert len(rows) == 120 and y.min() >= -1 and y.max() <= 1          # every clip once, on [-1, 1]
    assert row["ccc_arousal_pooled"] == pytest.approx(ccc(y, p), abs=1e-5)
    iv = ccc_interval(y, p, spk)
    assert (row["ccc_arousal_ci_low"], row["ccc_arousal_ci_high"]) == pytest.approx((iv.low, iv.high), abs=1e-4)
    # the normalisation: (raw - 3) / 2 for a 1-5 scale
    utt = {u: float(r["true_arousal"]) for u, r in zip([r["id"] for r in rows], rows)}
    assert all(-1 <= v <= 1 for v in utt.values())
    saved = json.loads((tmp_path / "r" / "probe.json").read_text())
    assert saved["meta"]["target"] == "arousal" and all(r["alpha"] == 1.0 for r in saved["records"])
    assert (tmp_path / "r" / "probe_layers.png").stat().st_size > 1000
    assert (tmp_path / "r" / "probe_scatter.png").stat().st_size > 1000


def test_target_without_annotations_is_one_line(cache, tmp_path):
    from classifiers.runs.dimensional import TargetError, run_dimensional

    with pytest.raises(TargetError, match="nodims has no arousal annotations"):
        run_dimensional("nodims", target="arousal", model=MODEL, cache=cache)
    with pytest.raises(TargetError, match="unknown target 'pleasure'; choose one of emotion, arousal"):
        run_dimensional(CORPUS, target="pleasure", model=MODEL, cache=cache)


def test_cli_target_is_registered_and_found_again(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "ser.db")
    args = ["probe", "--corpus", CORPUS, "--target", "valence", "--model", MODEL, "--cache", str(cache), "--db", db]
    first = invoke(*args, "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    assert "registered run" in first.output and "valence: best layer 2" in first.output
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "already holds this configuration" in again.output and "valence: best layer 2" in again.output
    assert not any(p.name.startswith("probe-") for p in tmp_path.iterdir())   # nothing computed or written again
    from classifiers.results.registry import Registry

    [run] = Registry(db).runs(kind="probe")
    metrics = {s["metric"] for s in Registry(db).scores(run["id"])}
    assert {"ccc_valence", "ccc"} <= metrics


@pytest.mark.parametrize("extra, words", [
    (["--target", "pleasure"], "choose one of emotion, arousal, valence, dominance, avd"),
    (["--target", "arousal", "--C", "1"], "--C"),
    (["--target", "arousal", "--classifier", "svm"], "choose one of logreg, xgboost, attention, knn, ridge"),
    (["--target", "arousal", "--classifier", "logreg", "--shuffle-labels"], "--shuffle-labels"),
    (["--target", "arousal", "--classifier", "xgboost", "--alpha", "1"], "--alpha is ridge's penalty"),
    (["--target", "arousal", "--seed", "0-1"], "--seed"),
    (["--alpha", "2"], "--alpha"),
])
def test_cli_options_that_do_not_apply_are_refused(cache, tmp_path, extra, words):
    r = invoke("probe", "--corpus", CORPUS, "--model", MODEL, "--cache", str(cache), "--db", str(tmp_path / "d.db"),
               *extra)
    assert r.exit_code != 0
    assert words in " ".join(r.output.split())
    assert not (tmp_path / "d.db").exists() or "registered run" not in r.output


def test_results_show_ls_and_rerun_speak_dimensions(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # the re-run writes its own folder under results/
    db = str(tmp_path / "ser.db")
    first = invoke("probe", "--corpus", CORPUS, "--target", "arousal", "--model", MODEL, "--cache", str(cache),
                   "--db", db, "--out", str(tmp_path / "a"), env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    from classifiers.results.registry import Registry

    [run] = Registry(db).runs()
    shown = invoke("results", "show", run["id"], "--db", db, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "arousal CCC pooled [95% CI]" in text and 'target = "arousal"' in text
    listed = " ".join(invoke("results", "ls", "--db", db, env={"COLUMNS": "200"}).output.split())
    best = max(r["ccc_arousal_mean"] for r in json.loads((tmp_path / "a" / "probe.json").read_text())["summary"])
    assert f"CCC {best:.3f}" in listed
    again = invoke("results", "rerun", run["id"], "--db", db, "--cache", str(cache), env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "every score identical" in again.output


@pytest.mark.parametrize("regressor", ["xgboost", "knn"])
def test_other_regressors_run_the_same_sweep(cache, tmp_path, regressor):
    """xgboost and kNN through the same folds and scoring: each fold's predictions equal a fit of
    the registry's estimator on that fold's training rows (regression.fold_predictions)."""
    from classifiers.estimators.regression import fold_predictions
    from classifiers.runs.dimensional import run_dimensional

    run = run_dimensional(CORPUS, target="arousal", model=MODEL, cache=cache, regressor=regressor, layers="1")
    p = run.predictions
    masks = [np.isin(np.arange(len(p["utterances"])), f.train) for f in p["folds"]]
    from classifiers.runs.probe import store_for
    from featstore.store import open_store

    X = open_store(store_for(cache, MODEL, CORPUS)).pooled(1)
    expected = fold_predictions(regressor, X, p["y"], masks, np.array([u.speaker for u in p["utterances"]]))
    assert np.allclose(p["pred"][0], expected, atol=1e-6)
    assert {r["classifier"] for r in run.records} == {regressor} and "alpha" not in run.records[0]
    assert run.summary[0]["ccc_arousal_pooled"] > 0.3       # the planted layer is found by either


def test_cross_corpus_ccc_matrix_is_registered_and_shown(cache, tmp_path, monkeypatch):
    """ser probe --matrix A,B --target: each cell is the run_dimensional run of that train→test pair
    (the diagonal on the corpus' own folds); registered as a matrix, shown again without computing."""
    from classifiers.runs.dimensional import run_dimensional

    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "ser.db")
    args = ["probe", "--matrix", f"{CORPUS},otherdims", "--target", "arousal", "--layer", "1", "--model", MODEL,
            "--cache", str(cache), "--db", db]
    first = invoke(*args, "--out", str(tmp_path / "m"), env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "m" / "transfer_ccc.json").read_text())
    cells = {(c["train_set"], c["test_set"]): c for c in saved["cells"]}
    assert len(cells) == 4 and (tmp_path / "m" / "transfer_ccc_arousal.png").stat().st_size > 1000
    cross = run_dimensional(None, target="arousal", model=MODEL, cache=cache, layers="1", train=["otherdims"],
                            test=[CORPUS])
    assert cells[("otherdims", CORPUS)]["ccc_arousal_pooled"] == pytest.approx(cross.summary[0]["ccc_arousal_pooled"])
    own = run_dimensional(CORPUS, target="arousal", model=MODEL, cache=cache, layers="1")
    assert cells[(CORPUS, CORPUS)]["ccc_arousal_pooled"] == pytest.approx(own.summary[0]["ccc_arousal_pooled"])
    assert min(c["ccc_arousal_pooled"] for c in cells.values()) > 0.8     # the same direction in both corpora
    text = " ".join(first.output.split())
    assert f"otherdims → {CORPUS}" in text and "registered run" in text
    again = invoke(*args, env={"COLUMNS": "200"})
    assert "already holds this configuration" in again.output
    from classifiers.results.registry import Registry

    [run] = Registry(db).runs(kind="matrix")
    shown = " ".join(invoke("results", "show", run["id"], "--db", db, env={"COLUMNS": "200"}).output.split())
    assert f"{CORPUS} → otherdims" in shown and 'target = "arousal"' in shown
    refused = invoke(*args, "--test", "otherdims")
    assert refused.exit_code != 0 and "leave out --test" in " ".join(refused.output.split())


def test_results_compare_pairs_dimensional_runs_on_ccc(cache, tmp_path, monkeypatch):
    """ser results compare A B --metric ccc_arousal: each run's CCC and the paired difference on the
    clips both predicted, equal to regression.paired_ccc of the runs' own prediction files."""
    from classifiers.estimators.regression import paired_ccc
    from classifiers.results.registry import Registry

    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "ser.db")
    base = ["probe", "--corpus", CORPUS, "--target", "arousal", "--model", MODEL, "--cache", str(cache), "--db", db]
    assert invoke(*base, "--out", str(tmp_path / "ridge")).exit_code == 0
    assert invoke(*base, "--classifier", "knn", "--out", str(tmp_path / "knn")).exit_code == 0
    ridge, knn = sorted(Registry(db).runs(), key=lambda r: r["classifier"] != "ridge")
    r = invoke("results", "compare", ridge["id"], knn["id"], "--metric", "ccc_arousal", "--layer", "1", "--db", db,
               "--out", str(tmp_path / "cmp.png"), env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output

    def layer1(folder):
        with (tmp_path / folder / "probe_predictions.csv").open() as fh:
            return {row["id"]: row for row in csv.DictReader(fh) if row["layer"] == "1"}

    a, b = layer1("ridge"), layer1("knn")
    ids = sorted(a)
    c = paired_ccc(np.array([float(a[i]["true_arousal"]) for i in ids]),
                   np.array([float(b[i]["pred_arousal"]) for i in ids]),
                   np.array([float(a[i]["pred_arousal"]) for i in ids]), np.array([a[i]["speaker"] for i in ids]))
    text = " ".join(r.output.split())
    assert f"{c.diff:+.3f}" in text and f"[{c.low:+.3f}, {c.high:+.3f}]" in text
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    wrong = invoke("results", "compare", ridge["id"], knn["id"], "--db", db)          # --metric uar
    assert wrong.exit_code != 0 and "scored on emotion dimensions: compare with --metric ccc" in " ".join(
        wrong.output.split())


def test_attention_regressor_reads_the_stored_frames(tmp_path):
    """--classifier attention --target: the attention pooler trained per fold on the frames of the
    stored frame layer (arousal planted in a few frames of each clip), predictions of every clip."""
    from classifiers.runs.dimensional import run_dimensional
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, write_part

    rng = np.random.default_rng(0)
    w = rng.standard_normal(6)
    utts, clips = [], []
    for s in range(6):
        for i in range(8):
            a = rng.uniform(1, 5)
            clip = rng.standard_normal((int(rng.integers(6, 12)), 6))
            clip[:3] += 2.0 * (a - 3) * w                     # the rating lives in the first frames only
            clips.append(clip.astype(np.float32))
            utts.append(Utterance(id=f"fr-{s}-{i}", path=f"/f/{s}/{i}.wav", corpus="frdims", language="en",
                                  speaker=f"frdims-{s:02d}", gender=None, label="neutral", label_raw="neu",
                                  arousal=float(a), dimension_scale=(1.0, 5.0)))
    pooled = np.stack([np.stack([c.mean(0)] * 2) for c in clips]).astype(np.float32)
    path = tmp_path / "cache" / model_slug(MODEL) / "frdims.h5"
    config = {"model_id": MODEL, "frame_layers": [1], "num_layers": 2, "hidden_size": 6}
    parts_dir(path).mkdir(parents=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(utts, pooled, pooled, np.full(48, 16000), np.array(
        [len(c) for c in clips]), frames={1: [c.astype(np.float16) for c in clips]}), config)
    assemble(path, config, corpus="frdims")
    run = run_dimensional("frdims", target="arousal", model=MODEL, cache=tmp_path / "cache", regressor="attention")
    assert [r["layer"] for r in run.summary] == [1]                       # "all" = the stored frame layers
    assert run.summary[0]["ccc_arousal_pooled"] > 0.5 and {r["classifier"] for r in run.records} == {"attention"}
    with pytest.raises(SerError, match="re-extract with --frames 0"):
        run_dimensional("frdims", target="arousal", model=MODEL, cache=tmp_path / "cache", regressor="attention",
                        layers="0")


def test_results_rerun_of_matrices(cache, tmp_path, monkeypatch):
    """ser results rerun of a dimensional CCC matrix and of an emotion UAR matrix: a new folder,
    every score identical."""
    from classifiers.results.registry import Registry
    from tests.test_results import RAVDESS, planted

    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "ser.db")
    r = invoke("probe", "--matrix", f"{CORPUS},otherdims", "--target", "valence", "--layer", "2", "--model", MODEL,
               "--cache", str(cache), "--db", db)
    assert r.exit_code == 0, r.output
    write_store(tmp_path / "c2", "ravdess", *planted("ravdess", RAVDESS[:4], n_speakers=6, per=2))
    write_store(tmp_path / "c2", "emodb", *planted("emodb", RAVDESS[:4], n_speakers=4, per=2, seed=1))
    r = invoke("probe", "--matrix", "ravdess,emodb", "--layer", "1", "--model", MODEL, "--cache", str(tmp_path / "c2"),
               "--db", db)
    assert r.exit_code == 0, r.output
    for run, cache_dir in zip(sorted(Registry(db).runs(kind="matrix"), key=lambda x: "target" not in x["config"]),
                              (cache, tmp_path / "c2")):
        again = invoke("results", "rerun", run["id"], "--db", db, "--cache", str(cache_dir), env={"COLUMNS": "200"})
        assert again.exit_code == 0, again.output
        assert "every score identical" in again.output
    assert len(Registry(db).runs(kind="matrix")) == 4
