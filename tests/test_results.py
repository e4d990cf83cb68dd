"""One result schema: sklearn metrics, typed records, one harmonisation, the classifier registry,
cross-corpus class policies, the transfer matrix, result directories and progress bars."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.results.records import Record, declared_labels, harmonise, make_record
from classifiers.runs.crossval import CLASSIFIERS, probe_layers
from featstore.corpora.base import Utterance
from featstore.folds import make_folds

MODEL = "org/toy"
RAVDESS = ["neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise"]
CREMAD = ["neutral", "happy", "sad", "angry", "fear", "disgust"]


def planted(corpus: str, labels: list[str], n_speakers: int = 6, per: int = 2, layers: int = 3, dim: int = 12,
            seed: int = 0, like: dict | None = None):
    """Pooled features (N, layers, dim): layer 1 holds a class centroid (shared across corpora by
    name; `like` plants a class on another class' centroid), plus noise and speaker offsets."""
    rng = np.random.default_rng(seed)
    centroid = {lab: 4 * np.random.default_rng(abs(hash(lab)) % 2**32).standard_normal(dim) for lab in RAVDESS}
    X, utts = [], []
    for s in range(n_speakers):
        offset = 0.3 * rng.standard_normal(dim)
        for lab in labels:
            for i in range(per):
                row = rng.standard_normal((layers, dim)) + offset
                row[1] += centroid[(like or {}).get(lab, lab)]
                X.append(row)
                utts.append(Utterance(id=f"{corpus}-{s}-{lab}-{i}", path=f"{corpus}/{s}/{lab}{i}.wav", corpus=corpus,
                                      language="en", speaker=f"{corpus}-{s + 1:02d}", gender=None, label=lab,
                                      label_raw=lab))
    return np.asarray(X, dtype=np.float32), utts


def write_store(cache, corpus: str, X: np.ndarray, utts: list) -> None:
    """A real store of pooled features at cache/<model slug>/<corpus>.h5 (no model run)."""
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, write_part

    path = cache / model_slug(MODEL) / f"{corpus}.h5"
    config = {"model_id": MODEL, "frame_layers": [], "num_layers": X.shape[1], "hidden_size": X.shape[2]}
    n = len(utts)
    batch = Batch(utts, X, np.abs(X), np.full(n, 16000), np.full(n, 50))
    parts_dir(path).mkdir(parents=True)
    write_part(parts_dir(path) / "part-0-0.h5", batch, config)
    assemble(path, config, corpus=corpus)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """ravdess (24 actors, 8 classes) and cremad (6; its neutral planted where ravdess' calm lies)."""
    cache = tmp_path_factory.mktemp("cache")
    write_store(cache, "ravdess", *planted("ravdess", RAVDESS, n_speakers=24, per=1))
    write_store(cache, "cremad", *planted("cremad", CREMAD, seed=1, like={"neutral": "calm"}))
    return cache


def invoke(*args, env=None):
    from cli import app

    result = CliRunner().invoke(app, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


# -- metrics and records -----------------------------------------------------------------------

def test_macro_f1_counts_a_predicted_class_absent_from_the_test_set_as_sklearn_does():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

    from classifiers.results.metrics import scores

    labels = ["neutral", "happy", "sad", "angry"]
    t = ["neutral"] * 5 + ["happy"] * 5 + ["sad"] * 5          # no angry in the test rows ...
    p = ["neutral"] * 4 + ["angry"] + ["happy"] * 3 + ["angry", "sad"] + ["sad"] * 5   # ... but predicted
    s = scores(t, p, labels)
    assert s["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
    assert s["macro_f1"] < np.mean(f1_score(t, p, labels=["neutral", "happy", "sad"], average=None)) - 0.1
    with pytest.warns(UserWarning, match="not in y_true"):                  # sklearn notices the absent class too
        assert s["uar"] == pytest.approx(balanced_accuracy_score(t, p))
    assert s["wa"] == pytest.approx(accuracy_score(t, p))
    assert np.array_equal(s["confusion"], confusion_matrix(t, p, labels=labels))
    assert set(s["recall"]) == {"neutral", "happy", "sad"}


def test_make_record_is_the_typed_record_and_reads_back_as_a_dict():
    rec = make_record(layer=np.int64(3), fold="f0", y_true=["sad", "happy"], y_pred=["sad", "sad"],
                      labels=["happy", "sad"], n_train=10, classifier="logreg", seed=0, train_set="a", test_set="a",
                      shuffled=False, C=0.1, classes="train")
    documented = set(Record.__annotations__)
    assert set(rec) == documented and type(rec["layer"]) is int
    assert json.loads(json.dumps(rec)) == rec and rec["uar"] == 0.5 and rec["n_test"] == 2


def test_every_registry_classifier_writes_the_same_record_keys():
    X, utts = planted("ravdess", RAVDESS[:4], n_speakers=4)
    folds = make_folds(utts, "speaker-kfold:2")
    keys = set(Record.__annotations__)
    for name in ("logreg", "xgboost", "knn"):
        res = probe_layers(X[:, [1]], utts, folds, [1], classifier=name, C=0.1)
        assert [r["classifier"] for r in res.records] == [name] * 2
        assert all(keys <= set(r) and r["layer"] == 1 for r in res.records)
        assert res.best()["uar"] > 0.8
    assert set(CLASSIFIERS) == {"logreg", "xgboost", "attention", "knn"}


def test_harmonise_policies_and_declared_labels():
    y = np.array(["a", "b", "c", "a", "b", "d"], dtype=object)
    h = harmonise(y, [0, 1, 2], [3, 4, 5])
    assert h.classes == h.scored and h.test.tolist() == [3, 4] and h.dropped == {"d": 1}
    h = harmonise(y, [0, 1, 2], [3, 4, 5], policy="shared", shared={"a", "b", "d"})
    assert h.train.tolist() == [0, 1] and h.dropped_train == {"c": 1} and h.dropped == {"d": 1}
    h = harmonise(y, [0, 1, 2], [3, 4, 5], policy="all")
    assert h.test.tolist() == [3, 4, 5] and "d" in h.scored and "d" not in h.classes and not h.dropped
    assert declared_labels(["cremad"]) == set(CREMAD)
    assert declared_labels(["ravdess", "emodb"]) == set(RAVDESS) | {"boredom"}
    csv_utts = [Utterance(id="x", path="", corpus="mine", language="en", speaker="s", gender=None, label="happy",
                          label_raw="happy")]
    assert declared_labels(["mine"], csv_utts) == {"happy"}


# -- cross-corpus classes ----------------------------------------------------------------------

def test_cross_corpus_shared_versus_all(cache):
    from classifiers.runs.probe import run_probe

    kw = dict(layers="1", train=["ravdess"], test=["cremad"], model=MODEL, cache=cache, C=0.1)
    shared = run_probe(None, **kw).results
    (rec,) = shared.records
    assert rec["labels"] == [c for c in RAVDESS if c in CREMAD] and rec["classes"] == "shared"
    assert shared.dropped_train == {"train-ravdess-test-cremad": {"calm": 24, "surprise": 24}}
    assert rec["n_test"] == 6 * 2 * 6 and not shared.dropped            # nothing dropped on the test side
    assert np.sum(rec["confusion"]) == rec["n_test"] and rec["uar"] > 0.75  # every prediction a shared class
    info = shared.meta["classes"]["ravdess"]
    assert info["train_only"] == ["calm", "surprise"] and info["test_only"] == []
    everything = run_probe(None, classes="all", **kw).results
    (rec_all,) = everything.records
    assert rec_all["labels"] == RAVDESS and rec_all["n_test"] == rec["n_test"] and not everything.dropped_train
    cm = np.asarray(rec_all["confusion"])
    assert cm[RAVDESS.index("neutral"), RAVDESS.index("calm")] >= 10   # CREMA-D neutral predicted as calm
    assert rec_all["recall"]["neutral"] < 0.2 and set(rec_all["recall"]) == set(CREMAD)


def test_cli_reports_training_only_classes(cache, tmp_path):
    r = invoke("probe", "--train", "ravdess", "--test", "cremad", "--layer", "1", "--model", MODEL,
               "--cache", str(cache), "--out", str(tmp_path / "x"), "--C", "0.1")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())                                    # lines wrap at 80 columns
    assert "training-only classes (left out of training): calm, surprise" in text
    rows = list(csv.DictReader(open(tmp_path / "x" / "probe.csv")))
    assert rows[0]["model"] == MODEL and rows[0]["classes"] == "shared"


# -- transfer matrix ---------------------------------------------------------------------------

def test_matrix_needs_one_layer_and_records_it(cache, tmp_path):
    r = invoke("probe", "--matrix", "ravdess,cremad", "--model", MODEL, "--cache", str(cache),
               "--out", str(tmp_path / "m"))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--matrix needs one layer" in r.output
    r = invoke("probe", "--matrix", "ravdess,cremad", "--layer", "1", "--model", MODEL, "--cache", str(cache),
               "--out", str(tmp_path / "m"), "--C", "0.1")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "m" / "transfer_matrix.json").read_text())
    assert data["layer"] == 1 and {c["layer"] for c in data["cells"]} == {1}
    rows = list(csv.DictReader(open(tmp_path / "m" / "transfer_matrix.csv")))
    assert len(rows) == 4 and {row["model"] for row in rows} == {MODEL} and {row["layer"] for row in rows} == {"1"}
    cell = next(row for row in rows if row["train"] == "ravdess" and row["test"] == "cremad")
    assert float(cell["uar"]) == pytest.approx(data["uar"][0][1])


# -- result directories, validation, progress --------------------------------------------------

def test_results_are_never_silently_overwritten(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["probe", "--corpus", "ravdess", "--layer", "1", "--protocol", "speaker-kfold:2", "--model", MODEL,
            "--cache", str(cache), "--C", "0.1"]
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--classifier", "knn").exit_code == 0
    dirs = sorted(p.name for p in (tmp_path / "results").iterdir() if p.is_dir())  # results/ser.db: the registry
    assert len(dirs) == 2 and all(d.startswith("probe-ravdess-org--toy-") for d in dirs)
    assert any("-logreg-L1-speaker-kfold2-" in d for d in dirs) and any("-knn-" in d for d in dirs)
    assert "already holds this configuration" in invoke(*args).output   # the registered run, not a new one
    assert invoke(*args, "--force").exit_code == 0                       # a new run, into a new directory
    assert len([p for p in (tmp_path / "results").iterdir() if p.is_dir()]) == 3
    out = ["--out", str(tmp_path / "results" / dirs[0])]
    again = invoke(*args, *out, "--force")
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    assert invoke(*args, *out, "--force", "--overwrite").exit_code == 0
    nb = ["neighbors", "--corpus", "ravdess", "--layer", "1", "--model", MODEL, "--cache", str(cache)]
    assert invoke(*nb).exit_code == 0
    again = invoke(*nb)   # registered: an identical re-run shows that run and writes nothing
    assert again.exit_code == 0 and "already holds this configuration" in " ".join(again.output.split())
    assert len(list((tmp_path / "results").glob("neighbors-ravdess-*"))) == 1
    assert invoke(*nb, "--force").exit_code == 0                        # a new run, into a new directory
    assert len(list((tmp_path / "results").glob("neighbors-ravdess-*"))) == 2
    nb_dir = sorted((tmp_path / "results").glob("neighbors-ravdess-*"))[0]
    nb_out = ["--out", str(nb_dir), "--force"]
    assert invoke(*nb, *nb_out).exit_code == 2 and invoke(*nb, *nb_out, "--overwrite").exit_code == 0
    assert next(csv.DictReader(open(nb_dir / "neighbors.csv")))["model"] == MODEL


def test_unknown_classifier_is_one_line_listing_the_registry(cache):
    r = invoke("probe", "--classifier", "xgb", "--model", MODEL, "--cache", str(cache))
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert all(name in r.output for name in CLASSIFIERS)
    r = invoke("probe", "--classes", "some", "--model", MODEL, "--cache", str(cache))
    assert r.exit_code == 2 and "choose one of shared, all" in r.output


def test_xgboost_probe_shows_a_progress_bar_with_eta(cache, tmp_path):
    r = invoke("probe", "--corpus", "ravdess", "--layer", "0-1", "--protocol", "speaker-kfold:2", "--classifier",
               "xgboost", "--model", MODEL, "--cache", str(cache), "--out", str(tmp_path / "x"),
               env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    assert r.exit_code == 0, r.output
    assert "xgboost ravdess→ravdess: layer×fold×seed" in r.output
    assert "4/4" in r.output and "ETA" in r.output and "\x1b[" in r.output   # a live, coloured terminal bar


def test_tables_fold_long_values_instead_of_cutting_them():
    from rich.console import Console

    from classifiers.results.records import table

    t = table("train → test", "UAR")
    t.add_row("ravdess,emodb,emovo,cremad,iemocap → savee,tess,aesdd", "0.123±0.045")
    console = Console(width=40, record=True)
    console.print(t)
    text = console.export_text()
    assert "…" not in text and "0.123±0.045" in text and "aesdd" in text.replace("\n", "").replace("│", "")
