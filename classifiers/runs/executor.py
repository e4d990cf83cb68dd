"""Where a study's tasks run: in this process one after another, or on a Dask cluster.

`ser study run FILE --executor SPEC` (or `executor = "SPEC"` in the study's [study] table):

- `local`: today's sequential run, in this process.
- `local:N`: a `distributed.LocalCluster` of N worker processes, one thread each.
- `dask://HOST:PORT`: a running Dask scheduler (`dask scheduler`, dask-kubernetes, ...).
- `slurm`: a `dask_jobqueue.SLURMCluster` built from the study's [executor] table (cores, memory,
  gpus, walltime, queue, job_extra, jobs, processes, retries); `--dry-run` prints its job script.

A task is generic: a kind (`TASK_KINDS`: "extract", "probe"; other kinds join that table) and a
plain config dict; `run_task` runs one on a worker, single-threaded (OMP/MKL/OpenBLAS threads and
torch threads set to 1: the machines are shared), and returns a plain dict. A `SerError` (a bad
corpus root, a store that cannot be read) is returned as `{"ok": False, "error": "one line"}`
so the task is not retried and its cell fails alone; anything else (a killed worker, an OOM)
raises and Dask retries it (`retries`). Tasks depend on other tasks through their `deps`, which
reach the worker as the results of those tasks.

Nothing here imports Dask at module level: `parse_executor` validates a spelling before any heavy
import, and a missing extra is one line naming ``pip install 'ser[dask]'``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from featstore.errors import SerError

#: task kind -> "module:function" run on the worker (config dict, *results of its deps) -> dict
TASK_KINDS = {"extract": "classifiers.runs.study:extract_task", "probe": "classifiers.runs.study:probe_task"}
#: the keys of an [executor] table, and what each must be
EXECUTOR_KEYS = {
    "cores": "a whole number of cores per job, e.g. 8",
    "memory": 'memory per job, e.g. "32GB"',
    "gpus": "a whole number of GPUs per job, e.g. 1 (0: none)",
    "walltime": 'a Slurm time limit, e.g. "02:00:00"',
    "queue": 'a Slurm partition, e.g. "gpu"',
    "account": 'a Slurm account to charge, e.g. "proj123"',
    "job_extra": 'extra #SBATCH directives, e.g. ["--constraint=a100"]',
    "jobs": "how many jobs to start, e.g. 4",
    "processes": "worker processes per job (default: cores, or gpus when a job has GPUs)",
    "retries": "how many times a task lost with its worker is run again (default 2)",
    "local_directory": "a directory on each node for the workers' scratch files",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
DASK_HINT = "pip install 'ser[dask]'"


class ExecutorError(SerError):
    """An executor that cannot be used as given (the message names the value and the fix)."""


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed `--executor` value: kind "local", "local-cluster" (workers), "dask" (address) or "slurm"."""

    kind: str
    workers: int = 1
    address: str = ""

    @property
    def distributed(self) -> bool:
        return self.kind != "local"

    def __str__(self) -> str:
        return {"local": "local", "local-cluster": f"local:{self.workers}", "dask": f"dask://{self.address}",
                "slurm": "slurm"}[self.kind]


_SPELLINGS = "local, local:N (N worker processes), dask://HOST:PORT or slurm"


def parse_executor(spec: str | None) -> ExecutorSpec:
    """The executor `spec` names (None: local); an ExecutorError line for anything else. No imports."""
    if spec is None or str(spec).strip() in ("", "local"):
        return ExecutorSpec("local")
    s = str(spec).strip()
    m = re.fullmatch(r"local:(\d+)", s)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ExecutorError(f"executor {s!r}: give 1 or more worker processes, e.g. local:2")
        return ExecutorSpec("local-cluster", workers=n)
    m = re.fullmatch(r"(?:dask|tcp)://([A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})", s)
    if m:
        if not 0 < int(m.group(2)) < 65536:
            raise ExecutorError(f"executor {s!r}: port {m.group(2)} is not a port (1-65535)")
        return ExecutorSpec("dask", address=f"{m.group(1)}:{m.group(2)}")
    if s == "slurm":
        return ExecutorSpec("slurm")
    raise ExecutorError(f"executor {s!r}: use {_SPELLINGS}")


def executor_problem(spec: str) -> str | None:
    """For typer callbacks: the problem with `spec`, or None."""
    try:
        parse_executor(spec)
    except ExecutorError as e:
        return str(e)
    return None


def check_executor_table(table, where: str = "[executor]") -> dict:
    """The [executor] table, its keys and value types checked (ExecutorError naming the key)."""
    if not isinstance(table, dict):
        raise ExecutorError(f"{where}: expected a table of keys ({', '.join(EXECUTOR_KEYS)})")
    for key, value in table.items():
        if key not in EXECUTOR_KEYS:
            raise ExecutorError(f"{where}: unknown key {key}; use {', '.join(EXECUTOR_KEYS)}")
        whole = isinstance(value, int) and not isinstance(value, bool)
        ok = {"cores": whole and value >= 1, "gpus": whole and value >= 0, "jobs": whole and value >= 1,
              "processes": whole and value >= 1, "retries": whole and value >= 0,
              "job_extra": isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value)
              }.get(key, isinstance(value, str) and value.strip() != "")
        if not ok:
            raise ExecutorError(f"{where} {key} = {value!r}: expected {EXECUTOR_KEYS[key]}")
    return dict(table)


def require_dask(what: str = "distributed") -> None:
    """ExecutorError (one line, the pip command) when the dask extra is missing."""
    try:
        if what == "dask_jobqueue":
            import dask_jobqueue  # noqa: F401
        else:
            import distributed  # noqa: F401
    except ImportError as e:
        raise ExecutorError(f"this executor needs the dask extra ({e.name or what} is not installed): "
                            f"{DASK_HINT}") from e


# -- tasks ---------------------------------------------------------------------------------------------------------

@dataclass
class Task:
    """One unit of work: `kind` (a TASK_KINDS key) over `config`; `deps` are keys of tasks it reads."""

    key: str
    kind: str
    config: dict
    deps: tuple[str, ...] = ()
    resources: dict | None = None
    label: str = ""
    priority: float = 0.0   # Dask starts higher first among ready tasks: the longest cells first balance the workers


@contextmanager
def single_threaded() -> Iterator[None]:
    """BLAS/OpenMP and torch limited to one thread for the block (a worker is one core of a shared machine)."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    limits = None
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1)
    except ImportError:  # scikit-learn brings threadpoolctl; without it the env vars above still apply
        pass
    old = None
    try:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        pass
    try:
        yield
    finally:
        if old is not None:
            import torch

            torch.set_num_threads(old)
        if limits is not None:
            limits.restore_original_limits()


def task_function(kind: str) -> Callable:
    import importlib

    if kind not in TASK_KINDS:
        raise ExecutorError(f"unknown task kind {kind!r}; known: {', '.join(TASK_KINDS)}")
    module, name = TASK_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def run_task(key: str, kind: str, config: dict, *deps: dict) -> dict:
    """Run task `key` here (a worker, or this process): the task's dict, or {"ok": False, "error": line}.

    `deps`: the results of the tasks it depends on; when one of them failed, this one fails
    without running (naming it)."""
    t0 = time.monotonic()
    bad = next((d for d in deps if not d.get("ok")), None)
    if bad is not None:
        return dict(ok=False, key=key, error=f"{bad.get('key', 'a task it needs')} failed: {bad.get('error', '')}",
                    seconds=0.0, pid=os.getpid())
    try:
        with single_threaded():
            out = task_function(kind)(config, *deps)
    except SerError as e:
        return dict(ok=False, key=key, error=one_line(e), seconds=time.monotonic() - t0, pid=os.getpid())
    return dict(ok=True, key=key, **out, seconds=time.monotonic() - t0, pid=os.getpid())


def one_line(e: BaseException | str) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if not isinstance(e, SerError) and not isinstance(e, str):
        first = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return first


# -- clusters ------------------------------------------------------------------------------------------------------

def slurm_kwargs(table: dict) -> dict:
    """`dask_jobqueue.SLURMCluster` keyword arguments for an [executor] table.

    Workers are single-threaded (processes = cores), except that a job with GPUs runs one worker
    per GPU (each with `cores / gpus` threads and the resource GPU=1, which extraction tasks ask for).
    BLAS/OpenMP threads are set to 1 in the job's environment.
    """
    table = check_executor_table(table)
    cores = int(table.get("cores", 1))
    gpus = int(table.get("gpus", 0))
    processes = int(table.get("processes", gpus or cores))
    if processes > cores:
        raise ExecutorError(f"[executor] processes = {processes} is more than cores = {cores}; give at most "
                            f"one worker process per core")
    extra = list(table.get("job_extra", []))
    if gpus:
        extra.append(f"--gres=gpu:{gpus}")
    kw = dict(cores=cores, processes=processes, memory=table.get("memory", f"{4 * cores}GB"),
              job_extra_directives=extra,
              job_script_prologue=[f"export {v}=1" for v in THREAD_VARS],
              scheduler_options={"dashboard_address": ":0"})
    for key in ("walltime", "queue", "account", "local_directory"):
        if key in table:
            kw[key] = table[key]
    if gpus:
        kw["worker_extra_args"] = ["--resources", "GPU=1"]
    return kw


def slurm_job_script(table: dict) -> str:
    """The job script a `slurm` executor would submit (nothing is submitted)."""
    require_dask("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**slurm_kwargs(table))
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextmanager
def open_client(spec: ExecutorSpec, table: dict | None = None) -> Iterator:
    """A `distributed.Client` for a distributed `spec` (its cluster closed on exit)."""
    require_dask()
    import dask
    from distributed import Client, LocalCluster

    table = check_executor_table(table or {})
    retries = int(table.get("retries", 2))
    cluster = None
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.nanny.pre-spawn-environ": {v: "1" for v in THREAD_VARS}}):
        try:
            if spec.kind == "local-cluster":
                cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
                client = Client(cluster)
            elif spec.kind == "dask":
                try:
                    client = Client(f"tcp://{spec.address}", timeout=20)
                except OSError as e:
                    raise ExecutorError(f"executor dask://{spec.address}: no Dask scheduler answers there ({e}); "
                                        f"start one (dask scheduler) or check the address") from e
            elif spec.kind == "slurm":
                require_dask("dask_jobqueue")
                from dask_jobqueue import SLURMCluster

                cluster = SLURMCluster(**slurm_kwargs(table))
                cluster.scale(jobs=int(table.get("jobs", 1)))
                client = Client(cluster)
            else:
                raise ExecutorError(f"executor {spec} runs in this process; there is no cluster to open")
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
    try:
        client.ser_retries = retries
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def gpu_workers(client) -> int:
    """How many of the cluster's workers advertise a GPU resource."""
    info = client.scheduler_info()
    return sum(1 for w in info.get("workers", {}).values() if w.get("resources", {}).get("GPU", 0) >= 1)


@dataclass
class Outcome:
    """What became of one task: its result dict (ok or not), or the error that ended it."""

    task: Task
    result: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    @property
    def error(self) -> str:
        return self.result.get("error", "")


def run_tasks(tasks: Sequence[Task], *, client=None, on_done: Callable[[Outcome], None] | None = None,
              retries: int | None = None) -> list[Outcome]:
    """Run `tasks` (in an order where every dep comes first): inline when `client` is None, else as
    Dask futures (a task's deps passed as futures, so Dask starts it when they are done). `on_done`
    is called in this process for each task as it finishes, in the order they finish.

    A task whose dep failed fails without running; an exception on a worker (after `retries`
    re-runs) fails that task alone. KeyboardInterrupt cancels what is still pending and re-raises.
    """
    by_key = {t.key: t for t in tasks}
    for t in tasks:
        missing = [d for d in t.deps if d not in by_key]
        if missing:
            raise ExecutorError(f"task {t.key} depends on unknown task(s) {', '.join(missing)}")
    outcomes: dict[str, Outcome] = {}

    def finish(task: Task, result: dict) -> None:
        outcome = Outcome(task, result)
        outcomes[task.key] = outcome
        if on_done:
            on_done(outcome)

    if client is None:
        for t in tasks:
            finish(t, run_task(t.key, t.kind, t.config, *(outcomes[d].result for d in t.deps)))
        return [outcomes[t.key] for t in tasks]

    from distributed import as_completed

    retries = getattr(client, "ser_retries", 2) if retries is None else retries
    futures = {}
    for t in tasks:
        futures[t.key] = client.submit(run_task, t.key, t.kind, t.config, *(futures[d] for d in t.deps), key=t.key,
                                       resources=t.resources, retries=retries, pure=False, priority=t.priority)
    pending = as_completed(list(futures.values()))
    task_of = {f.key: by_key[k] for k, f in futures.items()}
    try:
        for future in pending:
            task = task_of[future.key]
            if future.status == "finished":
                finish(task, future.result())
                continue
            try:
                future.result()
                error = "the task ended without a result"
            except Exception as e:  # noqa: BLE001 - any worker-side failure fails this task alone
                error = one_line(e)
            failed = [d for d in task.deps if d in outcomes and not outcomes[d].ok]
            if failed:
                error = f"{failed[0]} failed: {outcomes[failed[0]].error}"
            finish(task, dict(ok=False, key=task.key, error=error))
    except BaseException:
        client.cancel(list(futures.values()), force=True)
        raise
    return [outcomes[t.key] for t in tasks if t.key in outcomes]


def extract_corpora(corpora: Sequence[str], roots: Sequence, *, model: str, cache, device: str = "auto",
                    spec: ExecutorSpec | None = None, table: dict | None = None, shards: int = 1,
                    options: dict | None = None, on_done: Callable[[Outcome], None] | None = None,
                    on_start: Callable[[str], None] | None = None) -> list[Outcome]:
    """`ser extract --corpus a,b,c --executor ...`: one extraction task per (corpus, shard), each
    store (or shard file) written by its task alone; inline for "local", else on the Dask cluster.
    An extraction task carries the resource GPU=1 when the cluster has GPU workers and `device`
    is not "cpu"."""
    from pathlib import Path

    from featstore.backbones.runtime import model_slug

    spec = spec or ExecutorSpec("local")
    p = Path(model).expanduser()
    model_path = str(p.resolve()) if p.exists() else model
    tasks = [Task(f"extract-{model_slug(model)}-{c}" + (f"-shard{s}" if shards > 1 else ""), "extract",
                  dict(corpus=c, root=str(Path(r).expanduser().resolve()), model=model_path,
                       cache=str(Path(cache).resolve()), device=device,
                       options=dict(options or {}, shards=shards, shard=s)),
                  label=f"{c}" + (f" shard {s}/{shards}" if shards > 1 else ""))
             for c, r in zip(corpora, roots) for s in range(shards)]
    if not spec.distributed:
        return run_tasks(tasks, on_done=on_done)
    with open_client(spec, table) as client:
        if on_start:
            on_start(client.dashboard_link)
        if gpu_workers(client) and device != "cpu":
            for t in tasks:
                t.resources = {"GPU": 1}
        return run_tasks(tasks, client=client, on_done=on_done)
