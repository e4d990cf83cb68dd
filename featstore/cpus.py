"""CPUs this process may really use, and the check of a thread count: system probing, no settings.

`available_cpus` counts what the process may run on: its CPU affinity (`os.sched_getaffinity`,
not `os.cpu_count()`: a job pinned to 4 of 64 cores gets 4) capped by the cgroup CPU quota
(cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up: a container
limited to 1.5 CPUs gets 2). `check_threads` is the one check of a thread count, shared by
``--threads``, ``$SER_THREADS`` and config ``threads``.

Below both `featstore.config` (which resolves the default count, `default_threads`) and
`featstore.threads` (which applies it): it imports neither, so neither imports the other back.
Nothing here imports torch or numpy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from featstore.errors import SerError

CGROUP_ROOT = Path("/sys/fs/cgroup")


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
    """A cgroup file's stripped text, or None where it is missing or unreadable."""
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
