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
XGBoost (`classifiers.boosting`), the logistic-regression layer pool (`classifiers.evaluate`)
and faiss (`classifiers.knn_index`) read the setting through `threads()`.

Precedence of the count: ``--threads``, ``$SER_THREADS``, config ``threads``,
``$OMP_NUM_THREADS``, else `available_cpus()`. Nothing here imports torch or numpy.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import SerError

#: variables BLAS/OpenMP libraries read once, when they load (so children and later imports follow)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")
#: OpenMP waits by sleeping, not spinning (GNU, LLVM/Intel); a user's own value is kept
NO_SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: how long `apply_threads` watches the CPUs before choosing how OpenMP threads wait
SAMPLE_SECONDS = 0.05
HELP = ("CPU threads for torch, BLAS, OpenMP, XGBoost and faiss; default: $SER_THREADS, config `threads`, "
        "or the CPUs this process may use (affinity and cgroup quota).")

_state: dict = {"threads": None, "limits": None, "waits": None}


class ThreadsError(SerError):
    """A thread count that is not a whole number of at least 1."""


def check_threads(value) -> int:
    """`value` (int or text) as a thread count >= 1; else a ThreadsError saying what is wrong (the
    caller names the option, variable or key in front of it)."""
    problem = "must be a whole number of at least 1 (default: the CPUs this process may use)"
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ThreadsError(problem) from None
    if n < 1:
        raise ThreadsError(problem)
    return n


# -- what the process may use -----------------------------------------------------------------

def _own_cgroup(proc: Path) -> dict[str, str]:
    """{controller (v1) or "" (v2): this process' cgroup path} from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        text = proc.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpus(root: Path = CGROUP_ROOT, proc: Path = Path("/proc/self/cgroup")) -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 1.5), or None without a limit.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); v1: ``cpu/cpu.cfs_quota_us`` (-1: none)
    over ``cpu.cfs_period_us``. Read in this process' own cgroup and in the root (a container sees
    its own cgroup there); the smallest limit found wins.
    """
    root = Path(root)
    own = _own_cgroup(Path(proc))
    limits = []
    for base in {root, root / own.get("", "/").lstrip("/")}:
        text = _read(base / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max" and period:
                try:
                    limits.append(int(quota) / int(period))
                except (ValueError, ZeroDivisionError):
                    pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        rel = (own.get("cpu") or "/").lstrip("/")
        for base in {root / folder, root / folder / rel}:
            quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
            try:
                if quota and period and int(quota) > 0 and int(period) > 0:
                    limits.append(int(quota) / int(period))
            except ValueError:
                pass
    return min(limits) if limits else None


def available_cpus(root: Path = CGROUP_ROOT, proc: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may really use: its affinity, capped by the cgroup quota (rounded up), >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpus(root, proc)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


# -- the setting ------------------------------------------------------------------------------

def default_threads() -> tuple[int, str]:
    """(count, where it comes from) without --threads: $SER_THREADS, config `threads`,
    $OMP_NUM_THREADS, else `available_cpus()`. A bad value is a one-line ThreadsError."""
    env = os.environ.get("SER_THREADS", "").strip()
    if env:
        try:
            return check_threads(env), "env $SER_THREADS"
        except ThreadsError as e:
            raise ThreadsError(f"$SER_THREADS={env!r}: {e}; fix or unset it") from None
    from featstore.config import get

    configured = get("threads")
    if configured:
        return check_threads(configured), "config file"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "env $OMP_NUM_THREADS"
    return available_cpus(), "default (CPUs usable: affinity, cgroup quota)"


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
