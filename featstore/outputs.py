"""Every file ser writes outside a store: checked before the work, written whole or not at all.

One helper per concern, shared by every command that writes (reports, figures, CSV/JSON/Parquet,
exports, synthetic corpora, study reports):

- `check_output(path, ...)`: before any heavy work, refuse what cannot be a regular output
  file (a directory, a device or a path under /proc, /sys, /dev, a parent that is a file, the
  wrong suffix) with one line naming the path and the fix.
- `inside(base, relative)`: a path a command derives from user data (a study name, a manifest
  entry) that must stay within the directory the command owns.
- `atomic_output(path)`: yields a temporary path beside `path`; the file lands under its real
  name (fsynced, given the umask's mode like any new file, renamed) only when the block ends
  without error. A full disk or any other
  failure removes the temporary file and leaves an earlier `path` untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import SerError

#: trees of the kernel and devices: never an output
_SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


class OutputError(SerError):
    """An output path that cannot be written as asked (the message names it and the fix)."""


class OutputDiskFull(OutputError):
    """Not enough space for an output; nothing was left behind and an earlier file is untouched."""

    def __init__(self, path: Path, needed: int | None, free: int):
        from featstore.units import human_size

        need = f"{human_size(needed)} needed, " if needed else ""
        super().__init__(f"disk full writing {path}: {need}{human_size(free)} free; free some space and re-run "
                         f"(nothing was written)")


def is_system_path(path: Path) -> bool:
    """Whether `path` (resolved) lies under /proc, /sys or /dev."""
    return any(path == root or root in path.parents for root in _SPECIAL_ROOTS)


def check_output(path: str | Path, *, option: str = "--out", suffixes: Sequence[str] = (),
                 directory: bool = False) -> Path:
    """The absolute `path`, checked as a place to write a file (or, with `directory=True`, a directory).

    Raises OutputError for a path under /proc, /sys or /dev, an existing path of the other kind
    (a directory where a file is asked for, or the reverse), a parent that exists but is not a
    directory, or a suffix not in `suffixes` (case-insensitive; empty: any).
    """
    p = Path(path).expanduser()
    resolved = p.resolve()
    if is_system_path(resolved):
        raise OutputError(f"{option} {path}: a system path ({resolved}) is not an output; "
                          f"choose a file in a directory of yours")
    if directory:
        if resolved.exists() and not resolved.is_dir():
            raise OutputError(f"{option} {path}: exists and is not a directory; choose a directory")
    else:
        if resolved.is_dir():
            raise OutputError(f"{option} {path}: is a directory; give a file name inside it, "
                              f"e.g. {p / ('out' + (suffixes[0] if suffixes else ''))}")
        if resolved.exists() and not resolved.is_file():
            raise OutputError(f"{option} {path}: is not a regular file; choose a file in a directory of yours")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise OutputError(f"{option} {path}: cannot write in {parent} (permission denied); "
                                  f"choose a directory of yours")
            break
    if not directory and suffixes and resolved.suffix.lower() not in {s.lower() for s in suffixes}:
        raise OutputError(f"{option} {path}: expected a {' or '.join(suffixes)} file")
    return resolved


def inside(base: str | Path, relative: str | Path, *, what: str = "path") -> Path:
    """`base / relative`, refused (OutputError) when it would leave `base` (`..`, an absolute path, a link)."""
    base_resolved = Path(base).resolve()
    target = (base_resolved / relative).resolve()
    if target != base_resolved and base_resolved not in target.parents:
        raise OutputError(f"{what} {str(relative)!r} leads outside {base_resolved}; use a plain name without "
                          f"'..' or '/'")
    return target


def ensure_space(path: str | Path, needed: int) -> None:
    """OutputDiskFull unless the file system of `path`'s directory has `needed` bytes free."""
    path = Path(path)
    directory = path.parent if not path.is_dir() else path
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OutputDiskFull(path, needed, free)


def _temp_for(path: Path) -> Path:
    # the suffix is kept last: writers such as matplotlib and numpy choose the format from it
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def umask() -> int:
    """The process' umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_created(tmp: Path) -> None:
    """Give `tmp` the mode a plain `open(path, "w")` would: 0666 (0777 for a directory) less the
    umask. Writers that make their temporary file private (mkstemp, safetensors: 0600) would
    otherwise leave outputs others in the group cannot read."""
    os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask())


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (a no-op where the directory cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | Path, *, needed: int = 0) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` only if the block succeeds.

    `needed`: bytes the output will take, checked before anything is written. On ENOSPC (or any
    error) the temporary file is removed; an out-of-space error becomes one OutputDiskFull line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if needed:
        ensure_space(path, needed)
    tmp = _temp_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{path}: nothing was written")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _as_created(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise OutputDiskFull(path, needed or None, shutil.disk_usage(path.parent).free) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """`data` written whole to `path` (temp, fsync, rename), or nothing written."""
    with atomic_output(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """`text` (UTF-8) written whole to `path`, or nothing written."""
    return write_bytes(path, text.encode("utf-8"))
