"""`ser evaluate --map/--drop` apply to the model's classes as well as the test truth (issue 23, item 6).

The repro: a RAVDESS-trained probe scored on CREMA-D with `--map calm=neutral --drop surprise` (the
README's example) used to change nothing: CREMA-D has neither class, the model's calm predictions
stayed errors. Here CREMA-D's neutral utterances carry RAVDESS' calm signal, so the mapping matters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.runs.evaluate import EvaluateError, relabel, unused_relabels
from cli import app
from featstore.corpora.base import Utterance

runner = CliRunner()
MODEL = "toy/model"
RAVDESS = ["angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
CREMAD = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


def test_relabel_adds_mapped_columns_and_renormalises_after_a_drop():
    P = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    classes, Q = relabel(["calm", "neutral", "sad", "surprise"], P, {"calm": "neutral"}, [])
    assert classes == ["neutral", "sad", "surprise"]
    np.testing.assert_allclose(Q, [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    classes, Q = relabel(["calm", "neutral", "sad", "surprise"], P, {"calm": "neutral"}, ["surprise"])
    assert classes == ["neutral", "sad"]
    np.testing.assert_allclose(Q, [[0.7 / 0.9, 0.2 / 0.9], [0.5, 0.5]])
    classes, Q = relabel(["a", "b"], P[:, :2], {"a": "b", "b": "a"}, [])  # a swap, not a chain
    assert classes == ["b", "a"] and np.array_equal(Q, P[:, :2])
    with pytest.raises(EvaluateError, match="--drop a, b leaves none of the model's classes"):
        relabel(["a", "b"], P[:, :2], {}, ["a", "b"])


def test_unused_relabels_name_what_changes_nothing():
    assert unused_relabels({"calm": "neutral"}, ["surprise"], CREMAD, RAVDESS) == []
    assert unused_relabels({"calm": "neutral"}, ["surprise"], CREMAD, CREMAD) == ["--map calm=neutral", "--drop surprise"]
    assert unused_relabels({"fear": "sad"}, ["fear"], CREMAD, RAVDESS) == ["--drop fear"]  # fear is mapped away first
    assert unused_relabels({}, ["contempt"], CREMAD, RAVDESS) == ["--drop contempt"]


def _store(cache: Path, corpus: str, labels: list[str], signal: dict[str, str], seed: int) -> list[Utterance]:
    """A finished store for MODEL: 4 speakers x labels x 4, layer 1 carrying the mean of `signal[label]`."""
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(len(RAVDESS), 12)) * 2
    utts = [Utterance(id=f"{corpus}-{s}-{label}-{r}", path="", corpus=corpus, language="en", speaker=f"{corpus}-{s}",
                      gender=None, label=label, label_raw=label) for s in range(4) for label in labels for r in range(4)]
    X = np.stack([np.stack([rng.normal(size=12), means[RAVDESS.index(signal.get(u.label, u.label))]
                            + rng.normal(size=12)]) for u in utts]).astype(np.float32)
    n = len(utts)
    config = {"model_id": MODEL, "frame_layers": [], "num_layers": 2, "hidden_size": 12, "weights_sha256": "ab" * 32}
    path = store_path(cache, model_slug(MODEL), corpus)
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(utts, X, np.abs(X), np.full(n, 16000), np.full(n, 50)), config)
    assert assemble(path, config, corpus=corpus)
    return utts


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """Synthetic RAVDESS and CREMA-D stores (CREMA-D's neutral sounds like RAVDESS' calm) and a saved probe."""
    root = tmp_path_factory.mktemp("mapdrop")
    _store(root / "cache", "ravdess", RAVDESS, {}, seed=1)
    _store(root / "cache", "cremad", CREMAD, {"neutral": "calm"}, seed=2)
    r = runner.invoke(app, ["probe", "--corpus", "ravdess", "--protocol", "speaker-kfold:4", "--layer", "1", "--C", "1",
                            "--model", MODEL, "--cache", str(root / "cache"), "--out", str(root / "probe-run"),
                            "--save-probe", str(root / "probe")])
    assert r.exit_code == 0, r.output
    return root


def _evaluate(root: Path, out: str, *extra: str):
    r = runner.invoke(app, ["evaluate", "--trained", str(root / "probe"), "--corpus", "cremad", "--cache",
                            str(root / "cache"), "--out", str(root / out), *extra])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    records = {rec["classes"]: rec for rec in json.loads((root / out / "evaluate.json").read_text())["records"]}
    from classifiers.results.predictions import read_predictions

    return " ".join(r.output.split()), records, read_predictions(root / out / "predictions.parquet")


def test_map_and_drop_reach_the_models_predictions(probe_dir, monkeypatch):
    monkeypatch.chdir(probe_dir)
    out0, rec0, pred0 = _evaluate(probe_dir, "ev0")
    assert "trained classes the test corpus lacks (never true; excluded from predictions under shared): calm, surprise" \
        in out0
    calm = np.asarray(pred0["predicted"]) == "calm"
    assert calm.sum() >= 12                                    # CREMA-D's neutral is predicted calm ...
    assert rec0["all"]["recall"]["neutral"] < 0.3              # ... and counted as an error

    out1, rec1, pred1 = _evaluate(probe_dir, "ev1", "--map", "calm=neutral", "--drop", "surprise")
    assert "warning:" not in out1 and "lacks" not in out1
    assert "predictions over the model's 6 classes after --map/--drop (of 8 trained)" in out1
    assert sorted(rec1["all"]["labels"]) == CREMAD and sorted(rec1["shared"]["labels"]) == CREMAD
    assert rec1["all"]["recall"]["neutral"] > 0.7             # a calm prediction counts as neutral
    assert rec1["all"]["uar"] > rec0["all"]["uar"] + 0.1
    assert not {"calm", "surprise"} & set(pred1["predicted"]) and "p_calm" not in pred1 and "p_surprise" not in pred1
    # the mapped run's probabilities are the unmapped run's, calm added to neutral, surprise removed, renormalised
    assert list(pred1["id"]) == list(pred0["id"])
    cols = {c: np.asarray(pred0[f"p_{c}"], dtype=np.float64) for c in RAVDESS}
    cols["neutral"] = cols["neutral"] + cols.pop("calm")
    cols.pop("surprise")
    total = sum(cols.values())
    for c in CREMAD:
        np.testing.assert_allclose(pred1[f"p_{c}"], cols[c] / total, rtol=1e-5, atol=1e-6)
    expected = np.asarray(CREMAD, dtype=object)[np.stack([cols[c] for c in CREMAD], 1).argmax(1)]
    assert list(pred1["predicted"]) == list(expected)
    assert set(np.asarray(pred1["predicted"])[calm]) == {"neutral"}


def test_a_map_or_drop_neither_side_has_is_one_warning(probe_dir, monkeypatch):
    monkeypatch.chdir(probe_dir)
    r = runner.invoke(app, ["evaluate", "--trained", str(probe_dir / "probe"), "--corpus", "cremad", "--cache",
                            str(probe_dir / "cache"), "--out", str(probe_dir / "ev2"), "--map", "boredom=neutral",
                            "--drop", "contempt"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.output
    assert "--map boredom=neutral, --drop contempt" in warnings[0] and "change nothing" in warnings[0]
    r = runner.invoke(app, ["evaluate", "--trained", str(probe_dir / "probe"), "--corpus", "cremad", "--cache",
                            str(probe_dir / "cache"), "--out", str(probe_dir / "ev3"), "--drop", "surprise"])
    assert r.exit_code == 0 and "warning:" not in r.output, r.output  # CREMA-D lacks surprise, the model has it


def test_an_evaluation_is_re_run_from_its_registered_config(probe_dir, tmp_path):
    """`ser results rerun` re-executes an evaluate run (EvaluateConfig.from_key): --map/--drop included,
    every score identical; a model whose files changed since is one line."""
    import re
    import shutil

    db = str(tmp_path / "ser.db")
    r = runner.invoke(app, ["evaluate", "--trained", str(probe_dir / "probe"), "--corpus", "cremad", "--cache",
                            str(probe_dir / "cache"), "--out", str(tmp_path / "ev"), "--map", "calm=neutral",
                            "--drop", "surprise", "--db", db], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    run_id = re.search(r"run ([0-9a-f]{10})", r.output).group(1)
    again = runner.invoke(app, ["results", "rerun", run_id, "--cache", str(probe_dir / "cache"), "--db", db],
                          env={"COLUMNS": "200"})
    text = " ".join(again.output.split())
    assert again.exit_code == 0 and f"re-ran run {run_id}" in text and "every score identical" in text, again.output
    moved = tmp_path / "probe"
    shutil.copytree(probe_dir / "probe", moved)
    from classifiers.results.registry import Registry

    registry = Registry(db)
    config = dict(registry.run(run_id)["config"], model_dir=str(moved))
    with registry._connect(write=True) as conn:       # the registered model's folder, now a changed copy
        conn.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), run_id))
    (moved / "probe.json").write_text((moved / "probe.json").read_text() + " ", encoding="utf-8")
    bad = runner.invoke(app, ["results", "rerun", run_id, "--cache", str(probe_dir / "cache"), "--db", db])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "changed since it was registered" in bad.output
