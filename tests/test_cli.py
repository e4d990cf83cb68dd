"""The card's command lines, literally, and the one-line errors when nothing is configured."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cli import app
from tests.helpers import TINY

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic RAVDESS, a 12-layer tiny model, and a config pointing at both."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from featstore.synth import synthesize

    base = tmp_path_factory.mktemp("cardlines")
    root = base / "RAVDESS"
    synthesize("ravdess", root, n=48, seed=0, max_duration=1.0, sample_rate=16000)
    torch.manual_seed(0)
    model = base / "tiny12"
    Wav2Vec2Model(Wav2Vec2Config(**{**TINY, "num_hidden_layers": 12})).save_pretrained(model)
    Wav2Vec2FeatureExtractor().save_pretrained(model)
    return dict(base=base, root=root, model=model)


@pytest.fixture
def configured(world, monkeypatch, tmp_path):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("SER_DATA", raising=False)
    monkeypatch.delenv("SER_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    for key, value in [("corpora.ravdess.root", world["root"]), ("model", world["model"]),
                       ("cache", tmp_path / "cache"), ("corpus", "ravdess")]:
        assert run("config", "set", key, str(value)).exit_code == 0
    return tmp_path


def test_card_lines_work_as_written(configured):
    r = run("extract", "--corpus", "ravdess")
    assert r.exit_code == 0, r.output
    assert "extracted 48 utterances" in r.output
    assert list((configured / "cache").glob("*/ravdess.h5"))
    again = run("extract", "--corpus", "ravdess")
    assert again.exit_code == 0 and "up to date" in again.output
    p = run("probe", "--layer", "12")
    assert p.exit_code == 0, p.output
    # a table cell "12" (the layer), not the model directory's name "tiny12"
    assert re.search(r"(?<![\w/.:-])12(?![\w.])", p.output) and "UAR" in p.output, p.output
    results = list((configured / "results").glob("probe-ravdess-*/probe.json"))
    assert results
    data = json.loads(results[0].read_text())
    assert {r["layer"] for r in data["records"]} == {12} and data["meta"]["protocol"] == "luna5"
    assert len({r["fold"] for r in data["records"]}) == 5


def test_config_show_lists_sources(configured):
    r = run("config", "show")
    assert r.exit_code == 0 and "corpora.ravdess.root" in r.output and "config file" in r.output


def test_nothing_configured_fails_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SER_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    r = run("extract", "--corpus", "ravdess")
    assert r.exit_code == 2
    assert "ser download ravdess" in r.output and "ser config set corpora.ravdess.root" in r.output
    r = run("extract")
    assert r.exit_code == 2 and "--corpus" in r.output
    r = run("probe", "--layer", "12")
    assert r.exit_code == 2 and "ser extract" in r.output


def test_manifest_and_folds_commands(world, tmp_path):
    out = tmp_path / "m.csv"
    r = run("manifest", "--corpus", "ravdess", "--root", str(world["root"]), "--out", str(out))
    assert r.exit_code == 0 and "48 utterances" in r.output and out.exists()
    r = run("folds", "--corpus", "ravdess", "--root", str(world["root"]), "--protocol", "luna5")
    assert r.exit_code == 0 and "luna-4" in r.output and "overlap between train and test: 0" in r.output


def test_bad_input_is_one_line(tmp_path):
    r = run("manifest", "--corpus", "ravdess", "--root", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "does not exist" in r.output
    (tmp_path / "empty").mkdir()
    r = run("manifest", "--corpus", "ravdess", "--root", str(tmp_path / "empty"))
    assert r.exit_code == 2 and "no .wav files" in r.output
    r = run("manifest", "--corpus", "nope", "--root", str(tmp_path))
    assert r.exit_code == 2 and "unknown corpus" in r.output


@pytest.mark.slow
def test_card_finetune_line_and_predict(configured, world):
    r = run("finetune")
    assert r.exit_code == 0, r.output
    assert "luna5" in r.output and "mean" in r.output
    runs = list((configured / "results").glob("finetune-ravdess-*"))   # the results root (SER_RESULTS)
    assert len(runs) == 1
    data = json.loads((runs[0] / "finetune.json").read_text())
    assert len({rec["fold"] for rec in data["records"]}) == 5
    model_dir = next(runs[0].glob("*/model"))
    wav = sorted(world["root"].rglob("*.wav"))[:2]
    p = run("predict", *map(str, wav), "--trained", str(model_dir), "--json")
    assert p.exit_code == 0, p.output
    out = json.loads(p.output)
    assert len(out) == 2 and abs(sum(v for k, v in out[0].items() if k.startswith("p_")) - 1) < 1e-4


def test_saved_probe_predicts(configured, world):
    assert run("extract").exit_code == 0
    r = run("probe", "--layer", "6", "--C", "0.1", "--save-probe", str(configured / "probe12"))
    assert r.exit_code == 0, r.output
    wav = sorted(world["root"].rglob("*.wav"))[:3]
    p = run("predict", *map(str, wav), "--trained", str(configured / "probe12"), "--json")
    assert p.exit_code == 0, p.output
    out = json.loads(p.output)
    assert [o["file"] for o in out] == [str(w) for w in wav]
    assert all(abs(sum(v for k, v in o.items() if k.startswith("p_")) - 1) < 1e-4 for o in out)
