"""One re-run behaviour (issue 24, item 7): an identical configuration over identical stores shows the
registered run, for `ser neighbors` and `ser demo` as for `ser probe`; --force runs it again."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cli import app
from tests.test_results import MODEL, RAVDESS, planted, write_store

ENV = {"COLUMNS": "200"}


def _mtimes(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _run_id(output: str) -> str:
    return re.search(r"registered run ([0-9a-f]{10})", output).group(1)


@pytest.fixture
def cache(tmp_path):
    write_store(tmp_path / "cache", "ravdess", *planted("ravdess", RAVDESS[:4], n_speakers=4, per=2))
    return tmp_path / "cache"


def _neighbors(tmp_path, cache, *extra):
    args = ["neighbors", "--corpus", "ravdess", "--model", MODEL, "--cache", str(cache), "--layer", "all",
            "--db", str(tmp_path / "ser.db"), *extra]
    r = CliRunner().invoke(app, args, env=ENV)
    assert r.exit_code == 0, r.output
    return r.output


def test_neighbors_rerun_shows_the_registered_run(tmp_path, cache, monkeypatch):
    from classifiers.results.registry import Registry

    monkeypatch.chdir(tmp_path)
    first = _neighbors(tmp_path, cache, "--k", "3")
    run_id = _run_id(first)
    folders = sorted((tmp_path / "results").iterdir())
    assert len(folders) == 1
    before = _mtimes(folders[0])
    assert {p.name for p in before} >= {"neighbors.json", "knn.json", "knn_predictions.parquet"}
    knn_table = first[first.index("kNN emotion classification"):first.index("wrote:")]

    second = _neighbors(tmp_path, cache, "--k", "3")
    assert f"run {run_id} (" in second
    assert "already holds this configuration over these stores: showing it (--force runs it again)" in " ".join(
        second.split())
    assert knn_table in second                                  # the headline kNN table, from the registered files
    assert str(folders[0].resolve()) in second and "wrote:" not in second
    assert sorted((tmp_path / "results").iterdir()) == folders   # no new folder
    assert _mtimes(folders[0]) == before                          # nothing rewritten

    registry = Registry(tmp_path / "ser.db")
    run = registry.run(run_id)
    assert run["kind"] == "neighbors" and run["config"]["k"] == 3 and run["predictions"].endswith(".parquet")
    assert {s["metric"] for s in registry.scores(run_id)} >= {"uar", "wa"}

    forced = _neighbors(tmp_path, cache, "--k", "3", "--force")
    forced_id = _run_id(forced)
    assert forced_id != run_id and "registered run" in forced and "wrote:" in forced
    now = sorted((tmp_path / "results").iterdir())
    assert len(now) == 2 and now[0] == folders[0] and now[1].name == folders[0].name + "-2"
    assert _mtimes(folders[0]) == before                          # the registered run's files untouched

    changed = _neighbors(tmp_path, cache, "--k", "5")
    assert _run_id(changed) not in (run_id, forced_id) and "identical configuration" not in changed
    assert len(list((tmp_path / "results").iterdir())) == 3

    ls = CliRunner().invoke(app, ["results", "ls", "--kind", "neighbors", "--db", str(tmp_path / "ser.db")], env=ENV)
    assert ls.exit_code == 0 and "3 run(s)" in ls.output, ls.output
    ls = CliRunner().invoke(app, ["results", "ls", "--kind", "probe", "--db", str(tmp_path / "ser.db")], env=ENV)
    assert ls.exit_code == 0 and "0 run(s)" in ls.output, ls.output


def test_neighbors_user_out_keeps_overwrite(tmp_path, cache):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["neighbors", "--corpus", "ravdess", "--model", MODEL, "--cache", str(cache), "--k", "3",
            "--db", str(tmp_path / "ser.db"), "--out", str(out)]
    r = CliRunner().invoke(app, args, env=ENV)
    assert r.exit_code == 2 and "--overwrite" in r.output and r.output.count("\n") == 1, r.output
    r = CliRunner().invoke(app, [*args, "--overwrite"], env=ENV)
    assert r.exit_code == 0 and (out / "knn.json").exists(), r.output
    r = CliRunner().invoke(app, args, env=ENV)                   # registered now: shown, not refused
    assert r.exit_code == 0 and "already holds this configuration" in " ".join(r.output.split()), r.output


def test_neighbors_run_is_re_executed_from_its_registered_config(tmp_path, cache, monkeypatch):
    """`ser results rerun` re-executes a neighbors run too (its config read back by NeighborsConfig.from_key)."""
    from classifiers.results.registry import Registry

    monkeypatch.chdir(tmp_path)
    run_id = _run_id(_neighbors(tmp_path, cache, "--k", "3"))
    r = CliRunner().invoke(app, ["results", "rerun", run_id, "--cache", str(cache), "--db", str(tmp_path / "ser.db")],
                           env=ENV)
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and f"re-ran run {run_id}" in text and "every score identical" in text, r.output
    runs = Registry(tmp_path / "ser.db").runs(kind="neighbors")
    assert len(runs) == 2 and runs[0]["config"] == runs[1]["config"] and runs[0]["out"] != runs[1]["out"]
    import json
    from pathlib import Path

    for run in runs:       # every run folder holds its registry record: the config block, stores and command
        record = json.loads((Path(run["out"]) / "run.json").read_text(encoding="utf-8"))
        assert (record["id"], record["kind"], record["config"], record["stores"]) == (
            run["id"], "neighbors", run["config"], run["stores"])
