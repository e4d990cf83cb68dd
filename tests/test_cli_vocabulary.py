"""One CLI vocabulary (issue 22, item 8) and a thin CLI (item 9) for ser predict, align, evaluate,
store export and results compare: `--trained` / `--ctc-model` with `--model` kept one release as a
deprecated alias (one warning line; both spellings refused in one line), `--layer` read by the one
layer parser and refused in one line where a command takes one layer, and the library functions a
notebook calls giving what the CLI prints and writes."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli import app, deprecated_alias
from tests.test_runs import toy_store

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
ROWS = [("a.wav", {"sad": 0.25, "angry": 0.75}), ("b.wav", {"sad": 0.875, "angry": 0.125})]


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert "Traceback" not in r.output, r.output
    return r


def lines(r) -> list[str]:
    """The output's lines, whitespace collapsed (rich may wrap anywhere)."""
    return [" ".join(line.split()) for line in r.output.splitlines() if line.strip()]


def one_line(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    [line] = lines(r)
    assert line.startswith("error:") and all(n in line for n in needles), line
    return line


@pytest.fixture
def fake_predict(monkeypatch, tmp_path):
    """`classifiers.finetuning.inference.predict` answering ROWS without a model; a model directory to name."""
    import classifiers.finetuning.inference as predict

    seen = []
    monkeypatch.setattr(predict, "predict", lambda files, model_dir, **kw: seen.append(Path(model_dir)) or ROWS)
    (tmp_path / "m").mkdir()
    return tmp_path / "m", seen


# -- the deprecated alias ------------------------------------------------------------------------

def test_predict_old_spelling_works_and_warns_once(fake_predict):
    model, seen = fake_predict
    new = invoke("predict", "a.wav", "b.wav", "--trained", model, "--json")
    assert new.exit_code == 0 and "warning" not in new.output, new.output
    for old in ("--model", "-m"):
        r = invoke("predict", "a.wav", "b.wav", old, model, "--json")
        assert r.exit_code == 0, r.output
        warned = [line for line in lines(r) if line.startswith("warning:")]
        assert warned == ["warning: --model is deprecated for ser predict: use --trained (the old spelling goes in "
                          "the next release)"]
        assert r.output.replace(r.output.splitlines()[0] + "\n", "", 1) == new.output   # the same JSON
    assert seen == [model] * 3


def test_both_spellings_are_one_error_line(fake_predict, tmp_path):
    model, seen = fake_predict
    one_line(invoke("predict", "a.wav", "--model", model, "--trained", model), "--model", "--trained", "ser predict")
    one_line(invoke("evaluate", "--corpus", "ravdess", "--trained", model, "-m", model), "--trained only",
             "ser evaluate")
    one_line(invoke("align", "--show", "ravdess-1", "--ctc-model", "a", "--model", "b"), "--ctc-model only",
             "ser align")
    assert seen == []                                  # refused before anything ran


def test_the_new_spelling_stays_required():
    r = invoke("predict", "a.wav")
    assert r.exit_code == 2 and "Missing option '--trained'" in " ".join(r.output.split())
    shown = " ".join(invoke("evaluate", "--help").output.split())
    assert "saved probe (--save-probe). (required)" in shown and "--model" not in shown   # the old spelling hidden


def test_evaluate_old_spelling_reaches_the_library(monkeypatch, tmp_path):
    import classifiers.runs.evaluate as scoring
    from featstore.errors import SerError

    seen = {}

    def fake(model_dir, corpus, **kw):
        seen.update(model=model_dir, corpus=corpus)
        raise SerError("stopped here")

    monkeypatch.setattr(scoring, "evaluate_model", fake)
    r = invoke("evaluate", "--model", tmp_path / "probe", "--corpus", "ravdess", "--db", tmp_path / "ser.db")
    assert r.exit_code == 2 and seen == {"model": str(tmp_path / "probe"), "corpus": "ravdess"}
    assert lines(r) == ["warning: --model is deprecated for ser evaluate: use --trained (the old spelling goes in "
                        "the next release)", "error: stopped here"]


def _alignment_file(cache: Path, model: str, corpus: str, ids: list[str]) -> None:
    from featstore.align import FORMAT, alignment_path

    path = alignment_path(cache, model, corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"format": FORMAT, "model": model, "weights_sha256": "x", "corpus": corpus},
            *({"id": i, "text": "the door", "words": [{"word": "THE", "start": 0.1, "end": 0.2, "score": 0.9},
                                                      {"word": "DOOR", "start": 0.3, "end": 0.5, "score": 0.8}]}
              for i in ids),
            {"id": "emodb-bad", "error": "no transcript"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_align_show_old_spelling_and_the_library_function(tmp_path):
    from featstore.align import AlignError, show_alignment

    cache = tmp_path / "cache"
    _alignment_file(cache, "someone/ctc-a", "emodb", ["emodb-03a01Wa"])
    _alignment_file(cache, "someone/ctc-b", "emodb", ["emodb-08b02Nb"])
    found = show_alignment(cache, "emodb-03a01Wa", model="someone/ctc-a")
    assert found.table() == (["word", "start (s)", "end (s)", "score"],
                             [["THE", "0.100", "0.200", "0.900"], ["DOOR", "0.300", "0.500", "0.800"]])
    assert show_alignment(cache, "emodb-08b02Nb").text == "the door"   # the model holding that id
    assert show_alignment(cache, "emodb-bad", model="someone/ctc-a").error == "no transcript"
    with pytest.raises(AlignError, match="mystery-1 does not start with a corpus name"):
        show_alignment(cache, "mystery-1")
    with pytest.raises(AlignError, match="emodb-nope is not in"):
        show_alignment(cache, "emodb-nope", model="someone/ctc-a")
    for spelling in ("--ctc-model", "--model"):
        r = invoke("align", "--show", "emodb-03a01Wa", spelling, "someone/ctc-a", "--cache", cache)
        assert r.exit_code == 0 and "DOOR" in r.output and "0.300" in r.output, r.output
        assert ("deprecated" in r.output) == (spelling == "--model")
    r = invoke("align", "--show", "emodb-bad", "--ctc-model", "someone/ctc-a", "--cache", cache)
    assert r.exit_code == 0 and lines(r) == ["emodb-bad: not aligned: no transcript"]


def test_ctc_model_for_checks_the_example_id_first(tmp_path):
    from featstore.align import AlignError, Alignment, AlignRun, ctc_model_for
    from featstore.corpora.base import Utterance

    utts = [Utterance(id="emodb-03a01Wa", path="", corpus="emodb", language="de", speaker="03", gender=None,
                      label="happy", label_raw="F")]
    with pytest.raises(AlignError, match="emodb-nope is not an utterance of emodb"):
        ctc_model_for(tmp_path, "emodb", utts, model="given/model", utterance_id="emodb-nope")
    assert ctc_model_for(tmp_path, "emodb", utts, model="given/model") == "given/model"
    assert ctc_model_for(tmp_path, "emodb", utts) == "jonatasgrosman/wav2vec2-large-xlsr-53-german"
    _alignment_file(tmp_path, "someone/ctc-a", "emodb", ["emodb-03a01Wa"])
    assert ctc_model_for(tmp_path, "emodb", utts, utterance_id="emodb-03a01Wa") == "someone/ctc-a"
    run = AlignRun(tmp_path / "x.jsonl", 13, 1, 0, [Alignment(f"u{i}", error=f"why {i}") for i in range(12)])
    assert run.failure_lines(limit=10) == [f"why {i}" for i in range(10)] + ["2 more"]
    assert run.summary() == f"aligned 0 utterances (1 already there, 12 not aligned) -> {tmp_path / 'x.jsonl'}"


# -- the library functions give what the CLI writes ----------------------------------------------

def test_predict_files_gives_the_rows_of_the_cli_csv(fake_predict, tmp_path):
    from classifiers.finetuning.inference import predict_files

    model, _ = fake_predict
    r = invoke("predict", "a.wav", "b.wav", "--trained", model, "--out", tmp_path / "cli.csv")
    assert r.exit_code == 0, r.output
    found = predict_files(["a.wav", "b.wav"], model)                    # what a notebook calls
    assert (found.labels, found.dims) == (["sad", "angry"], [])
    found.write_csv(tmp_path / "lib.csv")
    assert (tmp_path / "lib.csv").read_bytes() == (tmp_path / "cli.csv").read_bytes()
    with open(tmp_path / "cli.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["predicted"] for r in table] == [r["predicted"] for r in found.records()] == ["angry", "sad"]
    head, rows = found.table()
    assert head == ["file", "predicted", "sad", "angry"] and rows[1] == ["b.wav", "sad", "0.875", "0.125"]
    for cells in rows:
        assert all(c in " ".join(r.output.split()) for c in cells)   # the CLI printed that table


def test_predict_files_target_choice(monkeypatch, tmp_path):
    import classifiers.finetuning.inference as predict
    from classifiers.finetuning.inference import PredictError, predict_files

    both = [("a.wav", {"sad": 0.5, "angry": 0.5, "arousal": 0.25, "valence": -0.5})]
    monkeypatch.setattr(predict, "predict", lambda *a, **kw: both)
    monkeypatch.setattr(predict, "model_dimensions", lambda d: ["arousal", "valence"])
    (tmp_path / "m").mkdir()
    every = predict_files(["a.wav"], tmp_path / "m")
    assert (every.labels, every.dims) == (["sad", "angry"], ["arousal", "valence"])
    emotion = predict_files(["a.wav"], tmp_path / "m", target="emotion")
    assert (emotion.labels, emotion.dims, emotion.rows[0][1]) == (["sad", "angry"], [], {"sad": 0.5, "angry": 0.5})
    valence = predict_files(["a.wav"], tmp_path / "m", target="valence")
    assert (valence.labels, valence.rows[0][1]) == ([], {"valence": -0.5})
    assert valence.records() == [{"file": "a.wav", "valence": -0.5, "model": str(tmp_path / "m")}]
    with pytest.raises(PredictError, match="--target avd: .* predicts arousal, valence, not dominance"):
        predict_files(["a.wav"], tmp_path / "m", target="avd")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"labels": []}))   # dimensions only
    with pytest.raises(PredictError, match="--target emotion: .* has no classes"):
        predict_files(["a.wav"], tmp_path / "m", target="emotion")


# -- --layer: one spec everywhere; one layer where a command writes one ----------------------------

def test_store_export_takes_one_layer_of_the_common_spec(tmp_path):
    from featstore.store import open_store

    store = toy_store(tmp_path / "cache", "ravdess")
    ok = invoke("store", "export", store, "--layer", "2", "--out", tmp_path / "l2.npz")
    assert ok.exit_code == 0, ok.output
    with np.load(tmp_path / "l2.npz") as z:
        np.testing.assert_array_equal(z["X"], open_store(store).pooled(2, "mean"))
    for spec in ("1-2", "0,2", "all", "0-999999999"):     # a wide range is refused, never expanded
        one_line(invoke("store", "export", store, "--layer", spec, "--out", tmp_path / "x.npz"),
                 "ser store export writes one layer: give one, e.g. --layer 12")
    one_line(invoke("store", "export", store, "--layer", "-1", "--out", tmp_path / "x.npz"), "--layer '-1'")
    one_line(invoke("store", "export", store, "--layer", "2-1", "--out", tmp_path / "x.npz"),
             "the range 2-1 runs downwards: write 1-2")
    bad = invoke("store", "export", store, "--layer", "7", "--out", tmp_path / "x.npz")
    assert bad.exit_code == 2 and "7" in bad.output and len(lines(bad)) == 1
    assert not (tmp_path / "x.npz").exists()


def test_results_compare_takes_one_layer(tmp_path):
    one_line(invoke("results", "compare", "a", "b", "--layer", "3-5", "--db", tmp_path / "ser.db"),
             "ser results compare compares at one layer")


# -- the generic helper and the CLI's size ---------------------------------------------------------

def test_deprecated_alias_is_generic():
    """The helper as another command would use it: an int option with a default (--seeds -> --seed)."""
    toy = typer.Typer()
    got = []

    @toy.command()
    @deprecated_alias("--seeds", "--seed")
    def run(seed: int = typer.Option(1, "--seed", min=0), other: str = typer.Option("x", "--other")):
        got.append((seed, other))

    assert runner.invoke(toy, []).exit_code == 0 and got[-1] == (1, "x")
    r = runner.invoke(toy, ["--seeds", "3", "--other", "y"])
    assert r.exit_code == 0 and got[-1] == (3, "y")
    assert lines(r) == ["warning: --seeds is deprecated for ser: use --seed (the old spelling goes in the next release)"]
    r = runner.invoke(toy, ["--seeds", "3", "--seed", "1"])     # the new spelling at its default value: still both
    assert r.exit_code == 2 and len(lines(r)) == 1 and got[-1] == (3, "y")
    assert "--seeds" not in runner.invoke(toy, ["--help"]).output          # hidden


def test_every_cli_function_is_under_40_lines():
    """Issue 22, item 9: a thin CLI; every function of cli.py (nested ones too) under 40 lines."""
    tree = ast.parse((REPO / "cli.py").read_text(encoding="utf-8"))
    size = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert {"predict", "align", "evaluate", "probe", "finetune", "extract"} <= set(size)
    assert {k: v for k, v in size.items() if v >= 40} == {}
