"""Issue 28, the registry side: nothing silently wrong. Exact run keys (NaN refused), checksummed
predictions and saved probes, a registry never half-made, damaged rows as one line, run folders
found again after a move, identical concurrent probes registered once, outputs whole or absent."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.finetuning.inference import PredictError, load_probe, save_probe
from classifiers.results.predictions import PredictionsError, block, read_predictions, sidecar, write_predictions
from classifiers.results.registry import Registry, RegistryError, run_key
from cli import app
from featstore.corpora.base import Utterance
from featstore.outputs import OutputError
from tests.test_runs import MODEL, toy_store

runner = CliRunner()


def one_line(exc_info, *needles) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    for n in needles:
        assert str(n) in text, text
    return text


def cli_one_line(*args, needles=()):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert str(n) in r.output, r.output
    return r.output


def _records():
    from classifiers.results.records import ProbeResults, make_record

    return ProbeResults([make_record(layer=1, fold="f", y_true=["a", "b"], y_pred=["a", "a"], labels=["a", "b"],
                                     n_train=2, classifier="logreg", seed=0, train_set="x", test_set="x")])


def _predictions(path: Path) -> Path:
    utts = [Utterance(id=f"u{i}", path="", corpus="toy", language="en", speaker=f"s{i % 3}", gender=None,
                      label=("a", "b")[i % 2], label_raw="") for i in range(40)]
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1], size=40)
    pred = np.array(["a", "b"])[proba.argmax(1)]
    return write_predictions([block(utts, np.arange(40), pred, proba=proba, classes=["a", "b"], fold="f0", seed=0,
                                    layer=3, classifier="logreg", train_set="toy", test_set="toy")], path)


# -- 1. exact keys ----------------------------------------------------------------------------------

def test_nan_config_is_refused_and_float_keys_are_exact(tmp_path):
    base = dict(corpus="ravdess", layers="all", seeds=1)
    with pytest.raises(RegistryError) as e:
        run_key("probe", dict(base, C=float("nan")), [])
    one_line(e, "config.C", "nan")
    with pytest.raises(RegistryError):
        run_key("probe", dict(base, params=dict(scale=[1.0, float("inf")])), [])
    # before: C=nan was saved as null, so the default-C (None) probe was answered with the NaN run
    keys = {run_key("probe", dict(base, C=c), []) for c in (None, 0.1, float(np.nextafter(0.1, 1)), 1.0)}
    assert len(keys) == 4
    assert run_key("probe", dict(base, C=np.float64(0.1)), []) == run_key("probe", dict(base, C=0.1), [])
    reg = Registry(tmp_path / "ser.db")
    with pytest.raises(RegistryError):
        reg.register(kind="probe", config=dict(base, C=float("nan")), stores=[], results=_records())
    assert not (tmp_path / "ser.db").exists()  # nothing was registered
    reg.register(kind="probe", config=dict(base, C=1.0), stores=[], results=_records())
    assert reg.find("probe", dict(base, C=None), []) is None
    assert reg.find("probe", dict(base, C=1.0), []) is not None


# -- 2. checksums: predictions and saved probes ---------------------------------------------------------

def test_predictions_bit_flip_and_missing_sidecar_are_refused(tmp_path):
    path = _predictions(tmp_path / "p.parquet")
    assert sidecar(path).read_text().endswith(f"  {path.name}\n")
    good = read_predictions(path)
    assert list(good["predicted"][:3]) and good["seed"].dtype.kind == "i"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04                               # one bit in the data pages
    path.write_bytes(bytes(raw))
    with pytest.raises(PredictionsError) as e:
        read_predictions(path)
    one_line(e, path, "checksum mismatch", "re-run")
    sidecar(path).unlink()
    with pytest.raises(PredictionsError) as e:
        read_predictions(path)
    one_line(e, path, "p.parquet.sha256", "missing")
    other = _predictions(tmp_path / "q.parquet")
    with pytest.raises(PredictionsError) as e:                # a registered digest that is not this file's
        read_predictions(other, sha256="0" * 64)
    one_line(e, other, "registry")


def test_predictions_without_predicted_column_is_one_line(tmp_path):
    import pyarrow.parquet as pq

    from classifiers.results.predictions import file_sha256

    path = _predictions(tmp_path / "p.parquet")
    table = pq.read_table(path).drop(["predicted"])
    pq.write_table(table, path)
    sidecar(path).write_text(f"{file_sha256(path)}  {path.name}\n")  # a consistent file, just not ser's
    with pytest.raises(PredictionsError) as e:
        read_predictions(path)
    one_line(e, path, "predicted missing")


def _probe(directory: Path) -> Path:
    rng = np.random.default_rng(1)
    d = 8
    return save_probe(directory, "toy/backbone", 2, "mean", rng.normal(size=d), rng.uniform(0.5, 2, d),
                      rng.normal(size=(3, d)), rng.normal(size=3), ["a", "b", "c"])


def test_saved_probe_flipped_byte_in_config_or_weights_is_refused(tmp_path):
    import shutil

    src = _probe(tmp_path / "probe")
    assert load_probe(src).layer == 2
    flipped = tmp_path / "layer"
    shutil.copytree(src, flipped)
    text = (flipped / "probe.json").read_text()
    assert '"layer": 2' in text
    (flipped / "probe.json").write_text(text.replace('"layer": 2', '"layer": 3'))   # valid JSON, other layer
    with pytest.raises(PredictError) as e:
        load_probe(flipped)
    one_line(e, flipped / "probe.json", "checksum mismatch")
    weights = tmp_path / "weights"
    shutil.copytree(src, weights)
    raw = bytearray((weights / "probe.safetensors").read_bytes())
    raw[-20] ^= 0x01                                        # a low bit of a coefficient: still finite
    (weights / "probe.safetensors").write_bytes(bytes(raw))
    with pytest.raises(PredictError) as e:
        load_probe(weights)
    one_line(e, weights / "probe.safetensors", "checksum mismatch")
    (weights / "probe.sha256").unlink()
    with pytest.raises(PredictError) as e:
        load_probe(weights)
    one_line(e, "probe.sha256", "save the probe again")


# -- 3. registry never half-made -------------------------------------------------------------------

def test_full_disk_at_first_registration_leaves_no_registry(tmp_path, monkeypatch):
    import classifiers.results.registry as registry

    db = tmp_path / "results" / "ser.db"

    def full(path):
        Path(path).write_bytes(b"")                        # as sqlite leaves it: created, nothing written
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(registry, "_build", full)
    with pytest.raises(RegistryError) as e:
        Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    one_line(e, db, "disk full")
    assert not db.exists()
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.startswith("ser.db.lock")) == []
    monkeypatch.undo()
    Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    assert len(Registry(db).runs()) == 1 and Registry(db).check() == "ok"


def test_full_disk_during_the_insert_is_one_line(tmp_path, monkeypatch):
    db = tmp_path / "ser.db"
    Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    real = sqlite3.connect

    class Full:
        def __init__(self, conn):
            self.conn = conn

        def __getattr__(self, name):
            return getattr(self.conn, name)

        def executemany(self, *a):
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(RegistryError) as e:
        Registry(db).register(kind="probe", config=dict(a=2), stores=[], results=_records())
    one_line(e, db, "disk full")
    monkeypatch.undo()
    assert [r["config"] for r in Registry(db).runs()] == [dict(a=1)]   # all of a run's rows or none


@pytest.mark.parametrize("kind", ["zero-bytes", "zero-bytes-stale-wal", "schema-less", "empty-sqlite"])
def test_empty_or_schema_less_registry_is_reinitialised(tmp_path, kind):
    db = tmp_path / "ser.db"
    if kind.startswith("zero-bytes"):
        db.write_bytes(b"")
        if kind.endswith("wal"):
            Path(f"{db}-wal").write_bytes(os.urandom(4096))
    elif kind == "schema-less":
        sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.close()
    else:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 7")
        conn.close()
    reg = Registry(db)
    assert reg.runs() == [] and reg.find("probe", dict(a=1), []) is None
    cli_one_line("results", "show", "abc", "--db", db, needles=("no run", str(db)))
    run_id = reg.register(kind="probe", config=dict(a=1), stores=[], results=_records())
    assert [r["id"] for r in reg.runs()] == [run_id] and reg.check() == "ok"
    assert reg.find("probe", dict(a=1), [])["id"] == run_id


def test_foreign_file_as_registry_is_one_line(tmp_path):
    bad = tmp_path / "ser.db"
    bad.write_bytes(b"not a database, a text file\n" * 10)
    with pytest.raises(RegistryError) as e:
        Registry(bad).register(kind="probe", config={}, stores=[], results=_records())
    one_line(e, bad, "not a SQLite run registry", "--db")
    assert bad.read_bytes().startswith(b"not a database")    # never overwritten
    cli_one_line("results", "ls", "--db", bad, needles=(bad,))


@pytest.mark.parametrize("column,value,needle", [
    ("config", "{not json", "config is not valid JSON"),
    ("config", "[1, 2]", "config is not a JSON object"),
    ("stores", '"ravdess"', "stores is not a JSON list"),
    ("out", b"\x01", "out is b'\\x01'"),
])
def test_damaged_run_row_is_one_line(tmp_path, column, value, needle):
    db = tmp_path / "ser.db"
    run_id = Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE runs SET {column} = ?", (value,))
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError) as e:
        Registry(db).runs()
    one_line(e, db, run_id, needle, "DELETE FROM runs")
    cli_one_line("results", "ls", "--db", db, needles=(needle,))
    cli_one_line("results", "show", run_id, "--db", db, needles=(needle,))


def test_damaged_score_row_is_one_line(tmp_path):
    db = tmp_path / "ser.db"
    run_id = Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    conn = sqlite3.connect(db)
    conn.execute("UPDATE scores SET value = 'high' WHERE metric = 'uar'")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError) as e:
        Registry(db).best_mean(run_id)            # AVG('high') would have been a silent 0.0
    one_line(e, db, "damaged", "'high'")
    cli_one_line("results", "ls", "--db", db, needles=("damaged",))


def test_damaged_results_json_is_one_line(tmp_path):
    from classifiers.results.records import ResultsError, read_results, write_results

    jpath, _ = write_results(_records(), tmp_path / "run")
    good = read_results(jpath)
    assert good.records[0]["uar"] == pytest.approx(0.5)
    text = jpath.read_text()
    for damaged, needle in ((text[: len(text) // 2], "not valid JSON"),
                            (text.replace('"uar": 0.5', '"uar": "0.5"'), "'uar' is '0.5'"),
                            ('{"records": [1]}', "record 0"),
                            ("[]", "not a ser results file")):
        jpath.write_text(damaged)
        with pytest.raises(ResultsError) as e:
            read_results(jpath)
        one_line(e, jpath, needle)


# -- registered probes over a tiny store: folders, moves, concurrency ----------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety-cache")
    toy_store(root, "ravdess", speakers=4, per_class=2)
    return root


def _probe_args(cache, db):
    return dict(model=MODEL, cache=cache, registry=Registry(db), layers="1", protocol="speaker-kfold:2", C=1.0)


def test_run_folder_is_absolute_and_found_after_the_results_root_moved(cache, tmp_path, monkeypatch):
    import shutil

    from classifiers.runs.study import registered_probe

    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)
    reg = registered_probe("ravdess", **_probe_args(cache, first / "results" / "ser.db"))
    assert Path(reg.run["out"]).is_absolute() and Path(reg.run["predictions"]).is_absolute()
    shutil.move(first / "results", tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    db = tmp_path / "moved" / "ser.db"
    run = Registry(db).run(reg.run["id"])
    assert Path(run["out"]).parent == tmp_path / "moved" and Path(run["predictions"]).is_file()
    r = runner.invoke(app, ["results", "show", reg.run["id"], "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "95% speaker CI" in r.output, r.output   # before: "probe.json is gone"
    again = registered_probe("ravdess", **_probe_args(cache, db))        # from another directory: re-used
    assert again.reused and again.run["id"] == reg.run["id"]
    # the run's damaged probe.json: one line
    (Path(run["out"]) / "probe.json").write_text("{")
    cli_one_line("results", "show", reg.run["id"], "--db", db, needles=("probe.json", "not valid JSON"))


def test_a_folder_written_over_belongs_to_the_later_run(tmp_path):
    db = tmp_path / "ser.db"
    out = tmp_path / "run"
    out.mkdir()
    reg = Registry(db)
    old = reg.register(kind="probe", config=dict(a=1), stores=[], results=_records(), out=out)
    new = reg.register(kind="probe", config=dict(a=2), stores=[], results=_records(), out=out)
    assert [r["id"] for r in reg.runs()] == [new]
    with pytest.raises(RegistryError) as e:
        reg.run(old)
    one_line(e, old, new, "written over")


def test_registered_predictions_replaced_by_another_file_are_refused(tmp_path):
    db = tmp_path / "ser.db"
    path = _predictions(tmp_path / "p.parquet")
    run_id = Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records(), predictions=path)
    assert Registry(db).run(run_id)["predictions_sha256"] == sidecar(path).read_text()[:64]
    import pyarrow.parquet as pq

    from classifiers.results.predictions import file_sha256

    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)                 # another, self-consistent predictions file
    sidecar(path).write_text(f"{file_sha256(path)}  {path.name}\n")
    with pytest.raises(RegistryError) as e:
        Registry(db).run(run_id)
    one_line(e, run_id, path, "sha256 differs")


def test_four_identical_concurrent_probes_register_once(cache, tmp_path, monkeypatch):
    from classifiers.runs.study import registered_probe

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "results" / "ser.db"
    done, errors = [], []
    start = threading.Barrier(4)

    def one():
        try:
            start.wait()
            done.append(registered_probe("ravdess", **_probe_args(cache, db)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    runs = Registry(db).runs()
    assert len(runs) == 1 and sorted(r.reused for r in done) == [False, True, True, True]
    assert {r.run["id"] for r in done} == {runs[0]["id"]}
    assert not any(Path(f"{runs[0]['out']}-2").exists() for _ in [0])


def test_a_failed_probe_releases_its_claim(cache, tmp_path, monkeypatch):
    """A probe that fails gives up its run key: an identical probe (another thread) runs instead of waiting."""
    import classifiers.runs.probe
    from classifiers.runs.study import registered_probe

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "results" / "ser.db"
    real = classifiers.runs.probe.run_probe

    def failing(*a, **k):
        raise RuntimeError("the first run fails")

    monkeypatch.setattr(classifiers.runs.probe, "run_probe", failing)
    with pytest.raises(RuntimeError, match="first run fails"):
        registered_probe("ravdess", **_probe_args(cache, db))
    monkeypatch.setattr(classifiers.runs.probe, "run_probe", real)
    done = []
    t = threading.Thread(target=lambda: done.append(registered_probe("ravdess", **_probe_args(cache, db))))
    t.start()
    t.join(60)
    assert not t.is_alive(), "the identical probe waited on the failed run's claim"
    assert len(done) == 1 and not done[0].reused and len(Registry(db).runs()) == 1


def test_a_run_whose_predictions_are_gone_is_one_line(cache, tmp_path, monkeypatch):
    from classifiers.runs.study import load_registered, registered_probe

    monkeypatch.chdir(tmp_path)
    reg = registered_probe("ravdess", **_probe_args(cache, tmp_path / "results" / "ser.db"))
    Path(reg.run["predictions"]).unlink()
    with pytest.raises(Exception) as e:
        load_registered(reg.run)
    one_line(e, reg.run["id"], "predictions", "are gone")


# -- 6. outputs: checked first, whole or absent --------------------------------------------------------

def test_outputs_are_checked_and_written_whole(tmp_path, monkeypatch):
    with pytest.raises(OutputError) as e:
        _predictions(tmp_path)                                # a directory
    one_line(e, tmp_path, "is a directory")
    db = tmp_path / "ser.db"
    Registry(db).register(kind="probe", config=dict(a=1), stores=[], results=_records())
    with pytest.raises(OutputError):
        Registry(db).export("/proc/self/scores.csv")
    cli_one_line("results", "export", "--out", tmp_path, "--db", db, needles=("is a directory",))
    cli_one_line("predict", tmp_path / "x.wav", "--trained", tmp_path, "--out", "/proc/x.csv",
                 needles=("system path",))                    # refused before any model is read

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "out" / "p.parquet"
    with pytest.raises(OutputError) as e:
        _predictions(target)
    one_line(e, "disk full", target)
    with pytest.raises(OutputError):
        Registry(db).export(tmp_path / "all.csv")
    with pytest.raises(OutputError):
        _probe(tmp_path / "probe")
    monkeypatch.undo()
    left = [p.name for p in tmp_path.rglob("*") if p.is_file() and "tmp" in p.name]
    assert left == [] and not target.exists() and not (tmp_path / "all.csv").exists()
