"""One run registry per user (issue 22, item 6): without --db every command and the library use
$SER_DB, else the config file's `db`, else $XDG_DATA_HOME/ser/ser.db, whatever the working
directory, so a run registered from one directory is found from any other."""

from __future__ import annotations

from pathlib import Path

from tests.test_results import MODEL, RAVDESS, invoke, planted, write_store


def test_the_default_registry_is_one_per_user(tmp_path, monkeypatch):
    from classifiers.results.registry import Registry
    from featstore import config

    monkeypatch.delenv("SER_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.chdir(tmp_path)
    from classifiers.results.registry import DEFAULT_DB  # read now: it follows the environment
    assert Registry().path == tmp_path / "data" / "ser" / "ser.db" == config.default_db()
    assert DEFAULT_DB == tmp_path / "data" / "ser" / "ser.db"       # the module constant follows it too
    config.set_value("db", str(tmp_path / "team" / "runs.db"))
    assert Registry().path == tmp_path / "team" / "runs.db"
    assert ("db", str(tmp_path / "team" / "runs.db"), "config file") in config.show()
    monkeypatch.setenv("SER_DB", str(tmp_path / "env.db"))
    assert Registry().path == tmp_path / "env.db"


def test_a_run_registered_in_one_directory_is_found_from_another(tmp_path, monkeypatch):
    monkeypatch.delenv("SER_DB")
    monkeypatch.delenv("SER_RESULTS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    cache = tmp_path / "cache"
    write_store(cache, "ravdess", *planted("ravdess", RAVDESS[:4], n_speakers=4, per=2))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = ["probe", "--corpus", "ravdess", "--layer", "1", "--model", MODEL, "--cache", str(cache)]
    monkeypatch.chdir(tmp_path / "a")
    first = invoke(*args)
    assert first.exit_code == 0 and "registered run" in first.output, first.output
    monkeypatch.chdir(tmp_path / "b")
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "already holds this configuration" in again.output
    assert not Path("results").exists() or not any(Path("results").glob("probe-*"))   # nothing computed here
    assert (tmp_path / "data" / "ser" / "ser.db").is_file() and not (tmp_path / "a" / "results" / "ser.db").exists()
    from classifiers.results.registry import Registry

    [run] = Registry().runs()
    # the run's folder is under the user's results root, not the directory it was started from
    assert Path(run["out"]).parent == tmp_path / "data" / "ser" / "results"
    assert not (tmp_path / "a" / "results").exists()


def test_the_results_root_follows_env_and_config(tmp_path, monkeypatch):
    from classifiers.runs.probe import default_out
    from featstore import config

    monkeypatch.delenv("SER_RESULTS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    assert default_out("probe", "ravdess", "m", {}).parent == tmp_path / "data" / "ser" / "results"
    config.set_value("results", str(tmp_path / "project-runs"))
    assert default_out("probe", "ravdess", "m", {}).parent == tmp_path / "project-runs"
    assert ("results", str(tmp_path / "project-runs"), "config file") in config.show()
    monkeypatch.setenv("SER_RESULTS", str(tmp_path / "scratch"))
    assert config.results_root() == tmp_path / "scratch"

