"""`--threads N`, $SER_THREADS and config `threads`: what the process may use (affinity, cgroup quota),
how the count is applied (BLAS/OpenMP variables, no-spin waits, threadpoolctl, torch), and who reads it."""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

import cli
from featstore import config
from featstore import threads as th

runner = CliRunner()
COMPUTE = {"extract": "extract", "probe": "probe", "neighbors": "neighbors", "evaluate": "evaluate",
           "finetune": "finetune", "predict": "predict", "align": "align", "demo": "demo", "study run": "study_run",
           "results rerun": "results_rerun"}


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """An empty config file, no SER_THREADS, thread variables and the applied count restored after."""
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "ser.toml"))
    monkeypatch.delenv("SER_THREADS", raising=False)
    for var in (*th.THREAD_VARS, *th.NO_SPIN):
        monkeypatch.setenv(var, os.environ.get(var, "")) if var in os.environ else monkeypatch.delenv(var, raising=False)
    import torch

    before, torch_before = th._state["threads"], torch.get_num_threads()
    yield tmp_path
    th._state["threads"] = before
    torch.set_num_threads(torch_before)
    th._limit_loaded(torch_before)


# -- what the process may use --------------------------------------------------------------------

def _cgroup(tmp_path, files: dict[str, str], own: str = "0::/\n"):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own)
    return root, proc


def test_available_cpus_follows_affinity_not_cpu_count(tmp_path, monkeypatch):
    root, proc = _cgroup(tmp_path, {})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert th.available_cpus(root, proc) == 3
    if hasattr(os, "sched_setaffinity"):  # and the real call, pinned to one core
        monkeypatch.undo()
        cpus = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {min(cpus)})
            assert th.available_cpus(root, proc) == 1
        finally:
            os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("files, own, quota", [
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),                       # v2, container view
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),                         # v2, no limit
    ({"job/x/cpu.max": "100000 100000\n"}, "0::/job/x\n", 1.0),            # v2, the process' own cgroup
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n", 3.0),   # v1
    ({"cpu,cpuacct/slurm/cpu.cfs_quota_us": "50000", "cpu,cpuacct/slurm/cpu.cfs_period_us": "100000"},
     "4:cpu,cpuacct:/slurm\n", 0.5),                                       # v1, joined controllers
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n", None),
])
def test_cgroup_quota(tmp_path, monkeypatch, files, own, quota):
    root, proc = _cgroup(tmp_path, files, own)
    assert th.cgroup_cpus(root, proc) == quota
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    expected = 8 if quota is None else max(1, -(-quota // 1))
    assert th.available_cpus(root, proc) == expected


def test_cpus_config_threads_are_layered_without_a_cycle():
    """`featstore.cpus` (probing, the count check) imports neither config nor threads; config resolves
    the default from cpus; threads applies it and re-exports the moved names, the very same objects."""
    from featstore import cpus
    from tests.test_import_graph import import_graph

    graph = import_graph()
    assert not graph["featstore.cpus"] & {"featstore.config", "featstore.threads"}
    assert "featstore.threads" not in graph["featstore.config"]
    assert th.available_cpus is cpus.available_cpus and th.cgroup_cpus is cpus.cgroup_cpus
    assert th.check_threads is cpus.check_threads and th.ThreadsError is cpus.ThreadsError
    assert th.default_threads is config.default_threads


# -- the setting and where it comes from ---------------------------------------------------------

def test_precedence_env_config_omp_default(clean, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert th.default_threads() == (th.available_cpus(), "default (CPUs usable: affinity, cgroup quota)")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert th.default_threads() == (7, "env $OMP_NUM_THREADS")
    config.set_value("threads", " 3 ")
    assert config.get("threads") == "3"
    assert th.default_threads() == (3, "config file")
    rows = {k: (v, s) for k, v, s in config.show()}
    assert rows["threads"] == ("3", "config file")
    monkeypatch.setenv("SER_THREADS", "5")
    assert th.default_threads() == (5, "env $SER_THREADS")
    assert {k: (v, s) for k, v, s in config.show()}["threads"] == ("5", "env $SER_THREADS")
    assert th.apply_threads() == 5 and th.threads() == 5
    assert all(os.environ[v] == "5" for v in th.THREAD_VARS)
    assert th.apply_threads(2) == 2 and th.threads() == 2      # --threads beats them all


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_values_are_one_line(clean, monkeypatch, bad):
    with pytest.raises(config.SerError) as e:
        config.set_value("threads", bad)
    assert "\n" not in str(e.value) and "threads" in str(e.value)
    monkeypatch.setenv("SER_THREADS", bad)
    with pytest.raises(th.ThreadsError) as e:
        th.default_threads()
    assert "\n" not in str(e.value) and "$SER_THREADS" in str(e.value)
    result = runner.invoke(cli.app, ["config", "show"])
    assert result.exit_code == 2 and result.output.startswith("error: $SER_THREADS=") and result.output.count("\n") == 1


def test_apply_sets_torch_threadpoolctl_and_no_spin(clean, monkeypatch):
    import torch
    from threadpoolctl import threadpool_info

    for var in th.NO_SPIN:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(th, "idle_cpus", lambda *a, **k: 0.0)   # a busy machine: threads sleep while waiting
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")               # a user's own value is kept
    n = 3 if torch.get_num_threads() != 3 else 4
    with th.limited(n):
        assert torch.get_num_threads() == n
        assert th.threads() == n
        assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == str(n)
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
        assert os.environ["GOMP_SPINCOUNT"] == "1000"
        limited = [p for p in threadpool_info() if p["user_api"] in ("blas", "openmp")]
        assert limited and all(p["num_threads"] == n for p in limited), limited
    assert "OMP_WAIT_POLICY" not in os.environ and torch.get_num_threads() != n


# -- the command line ----------------------------------------------------------------------------

def test_every_compute_command_has_the_one_threads_option():
    group = typer.main.get_command(cli.app)
    for name in COMPUTE:
        cmd = group
        for part in name.split():
            cmd = cmd.commands[part]
        opts = [p for p in cmd.params if "--threads" in p.opts]
        assert len(opts) == 1, name
        fn = getattr(cli, COMPUTE[name])
        default = inspect.signature(inspect.unwrap(fn)).parameters["threads"].default
        assert default is cli.THREADS_OPT, name                  # one definition, reused
    assert len([p for p in group.commands["config"].commands["show"].params if "--threads" in p.opts]) == 0


def test_threads_applied_first_in_every_compute_command():
    """The first statement after the docstring applies the count (before any heavy import); the demo
    hands it to `classifiers.runs.demo.demo`, whose default is one thread."""
    for name, attr in COMPUTE.items():
        fn = inspect.unwrap(getattr(cli, attr))
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        body = tree.body[0].body[1:]                               # after the docstring
        calls = [n for n in ast.walk(body[0]) if isinstance(n, ast.Call)] if name != "demo" else []
        if name == "demo":
            assert "threads=threads" in ast.unparse(tree), name
        else:
            assert any(getattr(c.func, "id", "") == "_threads" for c in calls), (name, ast.unparse(body[0]))


@pytest.mark.parametrize("name", list(COMPUTE))
def test_threads_zero_is_one_line(name):
    result = runner.invoke(cli.app, [*name.split(), "--threads", "0"])
    assert result.exit_code == 2, result.output
    assert result.output == "error: --threads 0: must be a whole number of at least 1 (default: the CPUs this " \
                            "process may use)\n"


def test_cli_applies_the_count(clean, monkeypatch):
    monkeypatch.setenv("SER_THREADS", "3")
    result = runner.invoke(cli.app, ["neighbors", "--cache", str(clean / "empty"), "--threads", "2"])
    assert th.threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2", result.output
    runner.invoke(cli.app, ["neighbors", "--cache", str(clean / "empty")])
    assert th.threads() == 3                                       # $SER_THREADS without --threads


# -- who reads it --------------------------------------------------------------------------------

def test_xgboost_n_jobs_from_the_setting(clean, monkeypatch):
    from classifiers.estimators import boosting
    from classifiers.runs import crossval as evaluate
    from featstore.corpora.base import Utterance
    from featstore.folds import Fold

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)).astype(np.float32), np.repeat(["angry", "sad"], 20)
    with th.limited(3):
        assert boosting.XGBProbe(n_estimators=2, device="cpu").fit(X, y).model_.get_params()["n_jobs"] == 3
        assert boosting.XGBProbe(n_estimators=2, device="cpu", n_jobs=1).fit(X, y).model_.get_params()["n_jobs"] == 1

        seen = []

        class Spy(boosting.XGBProbe):
            def fit(self, *a, **kw):
                seen.append(self.n_jobs)
                raise KeyboardInterrupt

        monkeypatch.setattr(boosting, "XGBProbe", Spy)
        utts = [Utterance(id=f"u{i}", path="", corpus="ravdess", language="en", speaker=f"s{i % 4}", gender=None,
                          label=str(y[i]), label_raw=str(y[i])) for i in range(40)]
        fold = Fold("f0", np.arange(30), np.arange(30, 40))
        with pytest.raises(KeyboardInterrupt):
            evaluate.run_classifier("xgboost", evaluate.ProbeTask(X[:, None, :], utts, [fold], [0], device="cpu"))
    assert seen == [3]


def test_waits_spin_only_where_the_cpus_are_idle(clean, monkeypatch):
    """OpenMP keeps its short spin where at least n - 0.5 CPUs are idle, sleeps where fewer are
    (the XGBoost repro: 14-16 s spinning vs 22 s sleeping when idle, 60 s sleeping vs 103 s
    spinning under load); one thread is not measured; a user's OMP_WAIT_POLICY is kept."""
    for var in th.NO_SPIN:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(th, "idle_cpus", lambda *a, **k: 2.0)
    with th.limited(2):
        assert th.waits() == "spin" and not any(var in os.environ for var in th.NO_SPIN)
    monkeypatch.setattr(th, "idle_cpus", lambda *a, **k: 1.2)
    with th.limited(2):
        assert th.waits() == "sleep" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(th, "idle_cpus", lambda *a, **k: None)   # cannot watch the CPUs: the safe choice
    with th.limited(2):
        assert th.waits() == "sleep"

    def never(*a, **k):
        raise AssertionError("one thread needs no measurement")

    monkeypatch.setattr(th, "idle_cpus", never)
    with th.limited(1):
        assert th.waits() == "sleep"
    monkeypatch.setattr(th, "idle_cpus", lambda *a, **k: 0.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with th.limited(2):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_idle_cpus_reads_proc_stat_for_the_processes_own_cpus():
    stat = ("cpu  10 0 10 100 0 0 0 0 0 0\n"
            "cpu0 1 0 1 50 10 0 0 0 0 0\n"
            "cpu1 100 0 50 25 0 0 0 0 0 0\n"
            "cpu2 0 0 0 7 0 0 0 0 0 0\nintr 5 6\n")
    assert th._cpu_times(stat, {0, 1}) == (1 + 1 + 50 + 10 + 100 + 50 + 25, 50 + 10 + 25)
    assert th._cpu_times(stat, {2}) == (7, 7)
    idle = th.idle_cpus(0.02)
    if sys.platform.startswith("linux"):
        assert idle is not None and 0.0 <= idle <= len(os.sched_getaffinity(0)) + 1e-9
