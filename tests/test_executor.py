"""Studies on a Dask cluster (issue 27): a real `distributed.LocalCluster` of 2 worker processes runs a
study's task graph (extraction tasks, then cell tasks) over synthetic corpora and a tiny model; the
registry it leaves equals a sequential run's; a worker SIGKILLed mid-cell loses nothing and registers
nothing twice; an interrupted study re-runs only its missing cells; the slurm job script is
dask-jobqueue's own."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from tests.helpers import build_tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic RAVDESS and EMO-DB under $SER_DATA, a tiny model, and a study of 4 cells (4 probe runs) over them."""
    from featstore.synth import synthesize

    base = tmp_path_factory.mktemp("executor")
    synthesize("ravdess", base / "data" / "ravdess", n=32, seed=0, max_duration=0.5, sample_rate=16000)
    synthesize("emodb", base / "data" / "emodb", n=24, seed=1, max_duration=0.5, sample_rate=16000)
    model = build_tiny_model(base / "tiny")
    study = base / "s.toml"
    study.write_text(f'''[study]
name = "grid"
models = ["{model}"]
layers = "all"
C = 1.0
[[cells]]
corpus = "ravdess"
protocol = "speaker-kfold:2"
train = ["ravdess", "ravdess,emodb"]
[[cells]]
corpus = "ravdess"
protocol = "speaker-kfold:3"
[[cells]]
train = ["ravdess"]
test = "emodb"
[[cells]]
train = ["emodb"]
test = "ravdess"
''')
    return dict(base=base, model=model, study=study)


@pytest.fixture
def env(world, monkeypatch, tmp_path):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("SER_DATA", str(world["base"] / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def cluster(world):
    """A LocalCluster of 2 single-threaded worker processes, reached as dask://HOST:PORT."""
    from distributed import Client, LocalCluster

    old = {k: os.environ.get(k) for k in ("SER_DATA", "OMP_NUM_THREADS")}
    os.environ["SER_DATA"] = str(world["base"] / "data")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as c, Client(c) as client:
        yield dict(address="dask://" + c.scheduler_address.removeprefix("tcp://"), client=client)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def study(world, cache, db, executor, **kw):
    from classifiers.results.registry import Registry
    from classifiers.runs.study import run_study

    log = {"failed": [], "start": []}
    hook = kw.get("hook", lambda r: None)
    done, page = run_study(kw.get("path", world["study"]), cache=cache, registry=Registry(db), default_model="unused",
                           executor=executor, on_cell=lambda c, r: hook(r),
                           on_fail=lambda c, why: log["failed"].append((c.describe(), why)), on_start=log["start"].append)
    return done, page, log


def scores(db) -> dict:
    """run key -> sorted score rows (everything but the run id)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT r.key, s.train_set, s.test_set, s.layer, s.classifier, s.fold, s.seed, s.metric, "
                            "s.value FROM scores s JOIN runs r ON r.id = s.run_id").fetchall()
    out: dict = {}
    for key, *rest in rows:
        out.setdefault(key, []).append(tuple(rest))
    return {k: sorted(v, key=repr) for k, v in out.items()}


def keys(db) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute("SELECT key FROM runs"))


@pytest.fixture(scope="module")
def sequential(world, tmp_path_factory):
    """The study run the way it always ran (executor local), single-threaded like a worker."""
    from classifiers.runs.executor import single_threaded

    work = tmp_path_factory.mktemp("sequential")
    old_cwd, old_data = os.getcwd(), os.environ.get("SER_DATA")
    os.environ["SER_DATA"] = str(world["base"] / "data")
    os.chdir(work)
    try:
        with single_threaded():
            done, _, _ = study(world, work / "cache", work / "ser.db", "local", hook=lambda r: None)
    finally:
        os.chdir(old_cwd)
        if old_data is None:
            os.environ.pop("SER_DATA", None)
        else:
            os.environ["SER_DATA"] = old_data
    assert len(done) == 4 and not any(r.reused for r in done)
    return dict(db=work / "ser.db", cache=work / "cache")


@pytest.mark.slow
def test_local_2_study_registers_what_a_sequential_run_does(world, env, sequential):
    """`ser study run --executor local:2` on a fresh cache: 2 extraction tasks, 4 cell tasks, the same run keys
    and identical scores as the sequential run; a second run registers nothing new."""
    db = env / "ser.db"
    r = runner.invoke(app, ["study", "run", str(world["study"]), "--cache", str(env / "cache"), "--db", str(db),
                            "--executor", "local:2"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Dask dashboard http" in r.output and r.output.count(": ran, run") == 4, r.output
    assert keys(db) == keys(sequential["db"]) and len(set(keys(db))) == 4
    assert scores(db) == scores(sequential["db"])
    again = runner.invoke(app, ["study", "run", str(world["study"]), "--cache", str(env / "cache"), "--db", str(db),
                                "--executor", "local:2"], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and again.output.count("registered already") == 4, again.output
    assert "dashboard" not in again.output             # nothing to run: no cluster started
    assert keys(db) == keys(sequential["db"])


@pytest.mark.slow
def test_a_worker_killed_mid_cell_loses_nothing_and_registers_nothing_twice(world, env, sequential, cluster):
    client = cluster["client"]
    killed = []

    def kill_one_running_cell(_reg):
        if killed:
            return
        running = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
        for addr, running_keys in running.items():
            if any(k.startswith("probe-") for k in running_keys):
                pid = client.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, running_keys))
                return

    done, _, log = study(world, sequential["cache"], env / "ser.db", cluster["address"], hook=kill_one_running_cell)
    assert killed, "no worker was running a cell when the first cell was registered"
    assert not log["failed"] and len(done) == 4
    assert keys(env / "ser.db") == keys(sequential["db"])         # each cell once, none lost
    assert scores(env / "ser.db") == scores(sequential["db"])
    assert all(".tmp-" not in r.run["out"] and (os.path.isfile(os.path.join(r.run["out"], "probe.json")))
               for r in done)
    assert killed[0][0] not in client.run(os.getpid).values()       # that worker process is gone


@pytest.mark.slow
def test_interrupted_study_reruns_only_the_missing_cells(world, env, sequential, cluster):
    db = env / "ser.db"

    def ctrl_c(_reg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study(world, sequential["cache"], db, cluster["address"], hook=ctrl_c)
    first = keys(db)
    assert len(first) == 1
    with sqlite3.connect(db) as conn:
        first_ids = {r[0] for r in conn.execute("SELECT id FROM runs")}
    done, _, log = study(world, sequential["cache"], db, cluster["address"], hook=lambda r: None)
    assert not log["failed"] and len(done) == 4
    assert sum(r.reused for r in done) == 1                          # the cell registered before Ctrl-C
    assert sum(not r.reused for r in done) == 3                       # computed now, or finished then and adopted
    assert keys(db) == keys(sequential["db"]) and scores(db) == scores(sequential["db"])
    with sqlite3.connect(db) as conn:
        assert first_ids <= {r[0] for r in conn.execute("SELECT id FROM runs")}


def test_a_failing_cell_fails_alone_with_one_line(world, env, sequential, cluster, tmp_path):
    """Two cells whose stores cannot be made fail with one line each while the other four run: CREMA-D's
    root is an empty folder (its extraction task fails on a worker), TESS has no root at all (refused
    before any task)."""
    (env / "data" / "cremad").mkdir(parents=True)
    (env / "data" / "ravdess").symlink_to(world["base"] / "data" / "ravdess")
    (env / "data" / "emodb").symlink_to(world["base"] / "data" / "emodb")
    os.environ["SER_DATA"] = str(env / "data")        # monkeypatched back by `env`
    bad = tmp_path / "bad.toml"
    bad.write_text(world["study"].read_text().replace('name = "grid"', 'name = "bad"')
                   + '[[cells]]\ntrain = ["ravdess"]\ntest = "cremad"\n[[cells]]\ntrain = ["tess"]\ntest = "emodb"\n')
    done, page, log = study(world, sequential["cache"], env / "bad.db", cluster["address"], path=bad)
    assert len(done) == 4 and page.exists() and len(log["start"]) == 1
    assert sorted(what.split("→ ")[-1] for what, _ in log["failed"]) == ["cremad", "emodb"], log["failed"]
    why = dict((what.split("→ ")[-1], why) for what, why in log["failed"])
    assert why["cremad"].startswith("extract-") and "cremad" in why["cremad"] and "failed" in why["cremad"]
    assert "tess" in why["emodb"] and "no corpus root" in why["emodb"]
    assert all("\n" not in w for _, w in log["failed"])
    assert len(keys(env / "bad.db")) == 4


def test_slurm_dry_run_prints_dask_jobqueues_own_job_script(world, env, tmp_path):
    from dask_jobqueue import SLURMCluster

    s = tmp_path / "slurm.toml"
    s.write_text(world["study"].read_text().replace('name = "grid"', 'name = "grid"\nexecutor = "slurm"')
                 + '[executor]\ncores = 8\nmemory = "32GB"\ngpus = 1\nwalltime = "02:00:00"\nqueue = "gpu"\n'
                   'job_extra = ["--constraint=a100"]\njobs = 2\n')
    r = runner.invoke(app, ["study", "run", str(s), "--dry-run", "--cache", str(env / "c")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    threads = [f"export {v}=1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")]
    with SLURMCluster(cores=8, processes=1, memory="32GB", walltime="02:00:00", queue="gpu",
                      job_extra_directives=["--constraint=a100", "--gres=gpu:1"], job_script_prologue=threads,
                      worker_extra_args=["--resources", "GPU=1"], scheduler_options={"dashboard_address": ":0"}) as c:
        expected = c.job_script()

    def norm(text: str) -> str:
        return re.sub(r"tcp://[\d.]+:\d+", "tcp://SCHEDULER", text).strip()

    printed = r.output[r.output.index("#!/usr/bin/env bash"):r.output.index("\ntask extract-")]
    assert norm(printed) == norm(expected)
    assert "#SBATCH --gres=gpu:1" in printed and "--nthreads 8" in printed and "--resources GPU=1" in printed
    assert "2 extraction task(s), 4 cell task(s)" in r.output


@pytest.mark.parametrize("spec, message", [("local:0", "1 or more worker processes"), ("cluster", "use local"),
                                           ("dask://host", "use local"), ("dask://h:70000", "not a port")])
def test_bad_executors_are_one_line_before_any_work(world, env, spec, message):
    r = runner.invoke(app, ["study", "run", str(world["study"]), "--executor", spec], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    from classifiers.runs.executor import parse_executor

    assert str(parse_executor("local:3")) == "local:3" and parse_executor("dask://10.0.0.1:8786").address == \
        "10.0.0.1:8786" and parse_executor(None).kind == "local"


def test_a_bad_executor_table_and_a_missing_extra_are_one_line(world, env, tmp_path, monkeypatch):
    s = tmp_path / "t.toml"
    s.write_text(world["study"].read_text() + '[executor]\ncores = "eight"\n')
    r = runner.invoke(app, ["study", "run", str(s)], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "[executor] cores = 'eight'" in r.output, r.output
    monkeypatch.setitem(sys.modules, "distributed", None)        # as if the extra were not installed
    r = runner.invoke(app, ["study", "run", str(world["study"]), "--executor", "local:2", "--cache",
                            str(env / "c")], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "pip install 'ser[dask]'" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.slow
def test_extract_many_corpora_as_tasks(world, env, cluster):
    """`ser extract --corpus ravdess,emodb --executor dask://...`: one task per corpus, one line each."""
    args = ["extract", "--corpus", "ravdess,emodb", "--model", str(world["model"]), "--cache", str(env / "cache"),
            "--device", "cpu"]
    r = runner.invoke(app, args + ["--executor", cluster["address"]], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Dask dashboard" in r.output and "2 of 2 extraction task(s) done" in r.output
    assert "ravdess.h5: extracted 32 utterances" in r.output and "emodb.h5: extracted 24 utterances" in r.output
    again = runner.invoke(app, args, env={"COLUMNS": "200"})       # several corpora, in this process
    assert again.exit_code == 0 and again.output.count("up to date") == 2, again.output


def _record_task(config: dict, *deps) -> dict:
    """Task kind "record" for the priority test: note the start in a file, wait a little."""
    import time

    with open(config["log"], "a") as f:
        f.write(config["name"] + "\n")
    time.sleep(config.get("sleep", 0.05))
    return {}


def test_cells_start_longest_first(monkeypatch, tmp_path):
    """cell_cost ranks cells by seeds x (folds - 1) x layers x training sets, and run_tasks hands each
    task's priority to Dask: on one busy worker, the waiting tasks start highest priority first."""
    from distributed import Client, LocalCluster

    from classifiers.runs import executor
    from classifiers.runs.executor import Task, run_tasks
    from classifiers.runs.study import CellPlan, cell_cost

    def plan(protocol, seeds=1, layers="all", train=()):
        return CellPlan(cells=[], model="m", corpus="ravdess", options=dict(seed=f"0-{seeds - 1}", layers=layers),
                        config=dict(protocol=protocol, train=list(train)), needed=[])

    costs = [cell_cost(plan("speaker-kfold:2")), cell_cost(plan("speaker-kfold:5", seeds=2)),
             cell_cost(plan("luna5", layers="6,12")), cell_cost(plan("loso", layers="3-9", train=["a", "b"]))]
    assert costs == [1 * 25, 4 * 2 * 25, 4 * 2, 4 * 7 * 2]
    monkeypatch.setitem(executor.TASK_KINDS, "record", "tests.test_executor:_record_task")
    log = tmp_path / "order.txt"
    tasks = [Task("first", "record", dict(name="first", sleep=0.5, log=str(log)), priority=100)]
    tasks += [Task(f"t{c:g}", "record", dict(name=f"t{c:g}", log=str(log)), priority=c) for c in costs]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        outcomes = run_tasks(tasks, client=client)
    assert all(o.ok for o in outcomes)
    assert log.read_text().split() == ["first", "t200", "t56", "t25", "t8"]
