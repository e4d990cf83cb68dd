"""CPU threads: how many this process may really use, and the one place that sets them.

`available_cpus` counts what the process may run on: its CPU affinity (`os.sched_getaffinity`,
not `os.cpu_count()`: a job pinned to 4 of 64 cores gets 4) capped by the cgroup CPU quota
(cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up: a container
limited to 1.5 CPUs gets 2).

`apply_threads(n)` is called first thing by every compute command (``--threads N``): it sets
the thread variables that BLAS and OpenMP read when they load (OMP/MKL/OpenBLAS/...), chooses how
OpenMP threads wait (below), limits libraries already loaded through threadpoolctl, and torch's
threads when torch is imported.

Waiting: on a busy machine spinning is what hurts: a thread waiting at an OpenMP barrier for a
descheduled sibling burns the core that sibling needs (measured, issue 24: an XGBoost probe
413.6 s with the default threads, 25.9 s on one). On an idle machine spinning is what makes
short parallel regions fast (the same probe, 2 threads, 14-16 s spinning, 22 s sleeping). So
`apply_threads` looks at the CPUs it will run on for `SAMPLE_SECONDS` (`idle_cpus`, from
/proc/stat): where fewer are idle than threads it will start, OpenMP threads sleep while they
wait (``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=0``, ``KMP_BLOCKTIME=0``); otherwise the
libraries' own short spin is kept. A user's own values of these variables are always kept; one
thread has no one to wait for and is not measured.
XGBoost (`classifiers.estimators.boosting`), the logistic-regression layer pool (`classifiers.runs.crossval`)
and faiss (`classifiers.estimators.knn_index`) read the setting through `threads()`.

Precedence of the count: ``--threads``, ``$SER_THREADS``, config ``threads``,
``$OMP_NUM_THREADS``, else `available_cpus()`. Nothing here imports torch or numpy.

Layers (no import cycle): `featstore.cpus` probes the system (`available_cpus`, `cgroup_cpus`) and
checks a count (`check_threads`, `ThreadsError`); `featstore.config.default_threads` resolves the
count from the settings; this module applies it. The names moved down are re-exported here, so
``from featstore.threads import available_cpus, default_threads, check_threads`` keeps working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featstore.config import default_threads
from featstore.cpus import (  # noqa: F401 - re-exported: featstore.threads stays the one import for callers
    CGROUP_ROOT,
    ThreadsError,
    available_cpus,
    cgroup_cpus,
    check_threads,
)

#: variables BLAS/OpenMP libraries read once, when they load (so children and later imports follow)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
#: OpenMP waits by sleeping, not spinning (GNU, LLVM/Intel); a user's own value is kept
NO_SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}
#: how long `apply_threads` watches the CPUs before choosing how OpenMP threads wait
SAMPLE_SECONDS = 0.05
HELP = ("CPU threads for torch, BLAS, OpenMP, XGBoost and faiss; default: $SER_THREADS, config `threads`, "
        "or the CPUs this process may use (affinity and cgroup quota).")

_state: dict = {"threads": None, "limits": None, "waits": None}


# -- the setting in force ---------------------------------------------------------------------

def threads() -> int:
    """The thread count in force: the last `apply_threads`, else the default (`default_threads`)."""
    return _state["threads"] if _state["threads"] is not None else default_threads()[0]


def apply_threads(n: int | None = None) -> int:
    """Use `n` CPU threads in this process (None: `default_threads()`); returns the count.

    Sets the BLAS/OpenMP variables (libraries loading later and child processes read them), the
    no-spin OpenMP waits (kept if the user set them), threadpoolctl limits on libraries already
    loaded, and torch's intra-op threads (and inter-op where torch still allows it) if torch is
    imported; torch imported later reads OMP_NUM_THREADS itself.
    """
    if n is not None:
        try:
            n = check_threads(n)
        except ThreadsError as e:
            raise ThreadsError(f"threads={n!r}: {e}") from None
    else:
        n = default_threads()[0]
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    _state["waits"] = waits = wait_policy(n)
    if waits == "sleep":
        for var, value in NO_SPIN.items():
            os.environ.setdefault(var, value)
    _state["threads"] = n
    _limit_loaded(n)
    return n


def _cpu_times(stat: str, cpus: set[int]) -> tuple[int, int]:
    """(total, idle) jiffies of `cpus` from the text of /proc/stat (idle includes iowait)."""
    total = idle = 0
    for line in stat.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in values[:8]]
        total += sum(v)
        idle += v[3] + (v[4] if len(v) > 4 else 0)
    return total, idle


def idle_cpus(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """How many of the CPUs this process may run on were idle over the next `seconds` (a float:
    1.5 = one and a half CPUs' worth); None where /proc/stat cannot be read (not Linux)."""
    import time

    try:
        cpus = set(os.sched_getaffinity(0))
        first = _cpu_times(stat.read_text(), cpus)
        time.sleep(seconds)
        second = _cpu_times(stat.read_text(), cpus)
    except (AttributeError, OSError, ValueError):
        return None
    total = second[0] - first[0]
    if total <= 0:
        return None
    return len(cpus) * (second[1] - first[1]) / total


def wait_policy(n: int) -> str:
    """"spin" (keep the OpenMP libraries' short spin) when at least n - 0.5 of this process's CPUs
    are idle now, else "sleep"; "sleep" for one thread (nothing to wait for) and where the CPUs
    cannot be watched (the safe choice on a shared machine)."""
    if n <= 1:
        return "sleep"
    idle = idle_cpus()
    return "spin" if idle is not None and idle >= n - 0.5 else "sleep"


def waits() -> str | None:
    """How OpenMP threads wait in this process ("spin", "sleep"), as the last `apply_threads` chose."""
    return _state["waits"]


def _limit_loaded(n: int) -> None:
    """threadpoolctl limits for BLAS/OpenMP already loaded; torch's own pools if torch is loaded."""
    if "numpy" in sys.modules or "xgboost" in sys.modules or "faiss" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn brings threadpoolctl; without it the variables still apply
            pass
        else:
            _state["limits"] = threadpool_limits(limits=n)
    faiss = sys.modules.get("faiss")   # None where its import was blocked or failed
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only allowed once, before any inter-op work started
            pass


@contextmanager
def limited(n: int) -> Iterator[int]:
    """`apply_threads(n)` inside, the previous count (and variables) restored after."""
    saved = {var: os.environ.get(var) for var in (*THREAD_VARS, *NO_SPIN)}
    before = _state["threads"]
    try:
        yield apply_threads(n)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        _state["threads"] = before
        _limit_loaded(before if before is not None else default_threads()[0])
