"""The HDF5 feature store: one file per (model, corpus), crash-safe while it is being written.

On disk (`cache/<model-slug>/`):

    <corpus>.h5                  the finished store (or <corpus>.shard-<i>-of-<n>.h5 per shard)
    <corpus>.h5.lock             held by the one process writing the store
    <corpus>.h5.parts/           while extracting: part-<shard>-<seq>-<pid>-<tag>.h5 files
    .<name>.tmp-<pid>-<tag>      a file being written (deleted at the next start if its writer died)

Only this module knows that layout: `find_store`, `cached_corpora`, `list_stores`,
`read_progress`, `new_part_path` and `clean_dead_temps` are how everything else reaches it.

Crash safety: a killed h5py writer can leave an unreadable file, so no file is ever written in
place. Work is flushed as small, complete part files (written to a temporary name, fsynced,
then renamed), and the finished store is assembled from them the same way. A `kill -9` loses at
most the part in flight; the next run reads the finished parts and goes on. Rows of a finished
store are sorted by utterance id, so a resumed run gives the same store as an uninterrupted one.
Space is checked before each write: h5py cannot survive a failed write (it crashes on close).

Integrity (format 3): nothing HDF5 parses or ser returns is unchecksummed.
  - The file uses HDF5's 1.10 format (`libver=("v110", "latest")`): the superblock (v3), object
    headers (v2), chunk indexes (fixed/extensible arrays, v2 B-trees) and fractal heaps carry
    checksums that HDF5 verifies before it uses them, so a moved chunk address or a damaged header
    is refused rather than parsed.
  - Every root attribute is a number or a fixed-length UTF-8 string, stored inside the checksummed
    object header (checked: editing "float32" to "float16" in `config` makes HDF5 refuse the
    file); variable-length strings would sit in the global heap, which has no checksum and on
    which one flipped bit made HDF5 loop forever. A format 3 file has no global heap at all.
  - Every dataset has a Fletcher-32 checksum per chunk (HDF5 verifies it on every read).
  - Every dataset carries a `sha256` attribute (per layer, `[:, k, :]`, for /pooled/mean and
    /pooled/std): what ser reads is checked against it (pooled(k) checks just layer k; opening a
    store checks /utterances and /skipped; assembly checks every part), which catches what
    Fletcher-32 cannot: two chunks whose bytes were swapped. Frames read one utterance at a time
    are covered by Fletcher-32 and the checksummed index; `verify_store` checks their digests.
  - The root `digest` (FeatureStore.digest) is one sha256 over the digests of every dataset under
    /utterances, /pooled and /frames: two stores with different features never share it (the
    registry's fingerprint uses it). Stores of format 1 and 2 have it computed from their data.
A read failure is one StoreError naming the file and the fix. Stores of format 1 (no checksums)
and 2 (checksummed data, unchecksummed metadata: v1 B-tree chunk indexes, global-heap strings)
stay readable; their metadata is first read by a child process with a timeout (OLD_FORMAT_TIMEOUT),
so damage there is one line, never a hang; `verify_store` reports them as less verified. A run
of format 3 resumes or extends the parts and store of a format 1 or 2 run (same numbers: each is
read back, checked as far as its format allows, and re-written in format 3 with its digests);
an older ser refuses format 3 parts and stores (another format_version). One writer at a time
per store (a lock file).

Schema (format "ser-featstore", version 3), readable with plain h5py (strings read as bytes):

    /                    attrs: format, format_version, config (JSON: model_id, revision,
                         weights_sha256, model_type, dtype, frame_layers, max_seconds,
                         sample_rate, do_normalize, layer_convention), num_layers (L+1),
                         hidden_size, corpus, code_version, created (ISO time), shard,
                         digest (hex sha256 of the features)
    /utterances/<field>  (N,) one dataset per Utterance field (strings fixed-length UTF-8), plus
                         n_samples (model-rate samples) and n_frames (output frames); start/end
                         float64, -1 for a whole file
    /utterances/{arousal,valence,dominance}  (N,) float64 on the corpus' own scale, NaN where an
                         utterance has none, and /utterances/dimension_scale (N, 2) float64 (low,
                         high of that scale, NaN without dimensions): only in stores of which some
                         utterance has dimensional labels, so the stores (and digests) of
                         categorical corpora are as before; a store without them reads as None
    /pooled/mean         (N, L+1, D) float32: mean over valid frames of hidden_states[k]
    /pooled/std          (N, L+1, D) float32: population std over the same frames
    /frames/offsets      (N+1,) int64, only with frame layers: utterance i is rows
                         offsets[i]:offsets[i+1] of every /frames/layer_<k>
    /frames/layer_<k>    (total_frames, D) float16
    /skipped/{id,path,reason}  (S,) what was not extracted, and why
    every dataset        attrs: sha256 (hex of dtype, shape and little-endian bytes; strings by
                         value), an (L+1,) array of them for /pooled/*; Fletcher-32 per chunk
Part files have the same layout, attributes and digests, with format "ser-featstore-part".
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from featstore import __version__
from featstore.corpora.base import UTTERANCE_FIELDS, Utterance
from featstore.errors import SerError
from featstore.options import reversed_range_problem
from featstore.outputs import fsync_dir

FORMAT = "ser-featstore"
#: 2: a Fletcher-32 checksum per chunk of every dataset, fixed-length UTF-8 strings;
#: 3: HDF5 1.10 file format (checksummed chunk indexes), fixed-length string attributes (no global heap),
#:    a sha256 per dataset (per layer of /pooled) checked on read, and the store's digest
FORMAT_VERSION = 3
#: format versions that hold the same numbers (2 added checksums, 3 checksummed metadata and digests), so a
#: run of one may resume or extend the parts and store of another: every number is read back (checked as
#: well as its format allows) and re-written, with its digests, in the current format
_SAME_FEATURES = {1: 3, 2: 3}
#: HDF5 1.10 file format: superblock, object headers, chunk indexes (fixed/extensible arrays, v2 B-trees),
#: fractal heaps all carry checksums that HDF5 verifies before it uses them
_LIBVER = ("v110", "latest")
#: seconds a child process may take to read the unchecksummed metadata of a format 1 or 2 store
OLD_FORMAT_TIMEOUT = 60.0
_INT_FIELDS = {"sample_rate"}
_FLOAT_FIELDS = {"duration"}
_OPTIONAL_FLOAT_FIELDS = {"start", "end"}  # segments, in seconds; -1 on disk where the utterance is a whole file
#: dimensional labels (NaN on disk where missing) and their scale ((N, 2), NaN rows): written only when some
#: utterance has them; a store written before them (or of a corpus without them) reads as None
_DIMENSION_FIELDS = ("arousal", "valence", "dominance")
_SCALE_FIELD = "dimension_scale"
#: config keys that must agree for two runs to write into the same store
FINGERPRINT_KEYS = ("weights_sha256", "model_type", "dtype", "frame_layers", "max_seconds",
                    "sample_rate", "do_normalize", "format_version")


class StoreError(SerError):
    """A store that cannot be read, or that does not match the run asked for."""


@dataclass
class Skipped:
    id: str
    path: str
    reason: str


@dataclass
class Batch:
    """Extracted features of some utterances, as a part file holds them."""

    utterances: list[Utterance]
    mean: np.ndarray                      # (n, L+1, D) float32
    std: np.ndarray                       # (n, L+1, D) float32
    n_samples: np.ndarray                 # (n,) int64
    n_frames: np.ndarray                  # (n,) int64
    frames: dict[int, list[np.ndarray]] = field(default_factory=dict)  # layer -> n arrays (T_i, D) float16
    skipped: list[Skipped] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# integrity
# ---------------------------------------------------------------------------------------------

#: attribute of every dataset (format 3): its sha256, per layer for /pooled/{mean,std}; root: the store's digest
_DIGEST_ATTR = "sha256"
#: what the store digest covers: every dataset under these groups (not /skipped: no features)
_DIGESTED = ("utterances/", "pooled/", "frames/")


def _put_str(obj: h5py.Group | h5py.Dataset, key: str, value: str | Sequence[str]) -> None:
    """A fixed-length UTF-8 string attribute (or 1-d array of them): stored inside the object header,
    which HDF5 checksums; a variable-length string would sit in the unchecksummed global heap."""
    values = [value] if isinstance(value, str) else list(value)
    encoded = [v.encode("utf-8") for v in values]
    kind = h5py.string_dtype("utf-8", max([1, *map(len, encoded)]))
    data = np.array(encoded[0] if isinstance(value, str) else encoded, dtype=kind)
    obj.attrs.create(key, data=data)


def _get_str(obj: h5py.Group | h5py.Dataset, key: str, default=None):
    """An attribute as str (fixed- or variable-length), a list of str for an array of strings."""
    if key not in obj.attrs:
        return default
    value = obj.attrs[key]
    if isinstance(value, np.ndarray) and value.ndim:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if hasattr(value, "item") else value


def _is_text(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "SOU"


def _sha_update(h, data: np.ndarray) -> None:
    if _is_text(data.dtype):  # strings by value: fixed-length (format 2+) and variable-length (1) alike
        for v in np.asarray(data).reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            h.update(len(b).to_bytes(8, "little") + b)
        return
    a = np.ascontiguousarray(data)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if a.size:
        h.update(a.reshape(-1).view(np.uint8))


def _sha_start(dtype: np.dtype, shape: tuple) -> hashlib._Hash:
    kind = "text" if _is_text(dtype) else np.dtype(dtype).newbyteorder("<").str
    return hashlib.sha256(f"{kind} {tuple(int(n) for n in shape)}\n".encode())


def _sha(data: np.ndarray) -> str:
    """sha256 of an array: its dtype, shape and little-endian C-order bytes."""
    h = _sha_start(data.dtype, data.shape)
    _sha_update(h, data)
    return h.hexdigest()


def _slabs(ds: h5py.Dataset, slab_bytes: int = 64 << 20) -> Iterator[np.ndarray]:
    """A dataset's rows, in slabs of about `slab_bytes` (the whole of a scalar)."""
    if not ds.shape:
        yield ds[()]
        return
    step = max(1, slab_bytes // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
    for start in range(0, ds.shape[0], step):
        yield ds[start:start + step]


def _compute_digest(ds: h5py.Dataset) -> str | list[str]:
    """The sha256 of a dataset as read now; per layer (`[:, k, :]`) for a pooled (N, L+1, D) dataset."""
    if ds.name.startswith("/pooled/") and len(ds.shape) == 3:
        n, layers, d = ds.shape
        hs = [_sha_start(ds.dtype, (n, d)) for _ in range(layers)]
        for slab in _slabs(ds):
            for k, h in enumerate(hs):
                _sha_update(h, slab[:, k, :])
        return [h.hexdigest() for h in hs]
    h = _sha_start(ds.dtype, ds.shape)
    for slab in _slabs(ds):
        _sha_update(h, slab)
    return h.hexdigest()


def _combine(digests: dict[str, str | list[str]]) -> str:
    """One sha256 over named digests (sorted by name)."""
    h = hashlib.sha256(b"ser-featstore digest 1\n")
    for name in sorted(digests):
        value = digests[name]
        h.update(f"{name} {' '.join(value) if isinstance(value, list) else value}\n".encode())
    return h.hexdigest()


def _record_digests(f: h5py.File) -> str:
    """Compute and record every dataset's sha256 (an attribute of it) and the file's digest (root `digest`)."""
    digests = {}
    for name, ds in _datasets(f):
        digests[name] = _compute_digest(ds)
        _put_str(ds, _DIGEST_ATTR, digests[name])
    digest = _combine({k: v for k, v in digests.items() if k.startswith(_DIGESTED)})
    _put_str(f, "digest", digest)
    return digest


def _file_digest(f: h5py.File) -> str:
    """The digest recorded in a store, or (a store of format 1 or 2) computed from its data."""
    recorded = _get_str(f, "digest")
    if recorded:
        return recorded
    return _combine({name: _compute_digest(ds) for name, ds in _datasets(f) if name.startswith(_DIGESTED)})


def _recorded(ds: h5py.Dataset) -> str | list[str] | None:
    """The sha256 recorded for a dataset (a list, per layer, for pooled), None before format 3."""
    return _get_str(ds, _DIGEST_ATTR)


def _mismatch(path: Path, name: str, layer: int | None = None) -> str:
    where = f"/{name.lstrip('/')}" + ("" if layer is None else f" layer {layer}")
    return (f"{path}: damaged ({where}: content digest mismatch: the numbers read are not the ones written although "
            f"every checksum passed, e.g. chunks moved or the file edited); {_fix_for(path)}")


def _check(path: Path, ds: h5py.Dataset, data: np.ndarray, layer: int | None = None) -> None:
    """Refuse `data`, read from all of `ds` (or from `ds[:, layer, :]`), if it is not what was recorded."""
    recorded = _recorded(ds)
    if recorded is None:
        return
    per_layer = ds.name.startswith("/pooled/") and len(ds.shape) == 3
    if isinstance(recorded, list) != per_layer or per_layer and len(recorded) != ds.shape[1]:
        raise StoreError(_mismatch(path, ds.name))
    if layer is None and isinstance(recorded, list):
        bad = [k for k, want in enumerate(recorded) if _sha(data[:, k]) != want]
        if bad:
            raise StoreError(_mismatch(path, ds.name, bad[0]))
        return
    if _sha(data) != (recorded if layer is None else recorded[layer]):
        raise StoreError(_mismatch(path, ds.name, layer))


def _read_checked(ds: h5py.Dataset) -> np.ndarray:
    """All of a dataset, checked against its recorded sha256."""
    data = ds[()]
    _check(Path(ds.file.filename), ds, data)
    return data


def _create(group: h5py.Group, name: str, **kwargs) -> h5py.Dataset:
    """A dataset with a Fletcher-32 checksum per chunk, which HDF5 verifies on every read."""
    return group.create_dataset(name, fletcher32=True, **kwargs)


def _create_strings(group: h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    """UTF-8 strings, fixed length (HDF5 cannot checksum variable-length strings)."""
    encoded = [v.encode("utf-8") for v in values]
    kind = h5py.string_dtype("utf-8", max([1, *map(len, encoded)]))
    return _create(group, name, data=np.array(encoded, dtype=kind))


def _fix_for(path: Path) -> str:
    if path.parent.name.endswith(".parts"):
        return "delete the part and re-run; the store re-assembles from what is intact"
    return (f"delete it and re-run the `ser extract` that made it (`ser store verify {path}` lists what is "
            f"damaged)")


def _describe(error: BaseException) -> str:
    """HDF5's top-level message, or what it means when it is about a checksum."""
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if "filter returned failure" in detail or "checksum" in detail:
        return f"checksum mismatch: the bytes on disk are not the ones written; {detail}"
    return detail


def _short(error: BaseException) -> str:
    """The cause of a StoreError from `_reading` (or the error itself), for a table cell."""
    cause = error.__cause__ if isinstance(error, StoreError) and error.__cause__ else error
    return _describe(cause).split(";")[0]


def _damaged(path: Path, error: BaseException) -> str:
    return f"{path}: damaged or not readable ({_describe(error)}); {_fix_for(path)}"


#: files (path, inode, size, mtime) whose old-format metadata a child process has read in time
_BOUNDED_OK: set[tuple] = set()
#: ... and those it could not read in time (or crashed on): the one line, so that a process waits once
_BOUNDED_BAD: dict[tuple, str] = {}

#: what the child process of `_bounded_check` reads: every attribute, dataset header, chunk index, string
_PROBE = """
import sys, h5py
def walk(name, obj):
    for key in obj.attrs:
        obj.attrs[key]
    if isinstance(obj, h5py.Dataset):
        if obj.chunks:
            obj.id.get_num_chunks()
        if obj.dtype.kind in "OS":
            obj[()]
with h5py.File(sys.argv[1], "r") as f:
    walk("/", f)
    f.visititems(walk)
"""


def _superblock_version(path: Path) -> int | None:
    """The HDF5 superblock version (3 from the 1.10 format: checksummed metadata), None if not HDF5."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return None
    return head[8] if len(head) == 9 and head[:8] == b"\x89HDF\r\n\x1a\n" else None


def _bounded_check(path: Path) -> None:
    """Read the metadata of a format 1 or 2 file in a child process first, with a timeout.

    Their metadata (v1 B-tree chunk indexes, variable-length strings in the global heap) carry no
    checksums, and one flipped bit there can make HDF5 loop forever; a format 3 file is checksummed
    throughout, so HDF5 refuses damage before it parses it, and is not checked here. Once per file
    identity per process.
    """
    version = _superblock_version(path)
    if version is None or version >= 3:
        return
    try:
        st = path.stat()
    except OSError:
        return
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _BOUNDED_OK:
        return
    if key in _BOUNDED_BAD:
        raise StoreError(_BOUNDED_BAD[key])
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE, str(path)], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=OLD_FORMAT_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        _BOUNDED_BAD[key] = (f"{path}: damaged or not readable (HDF5 did not finish reading its metadata in "
                             f"{OLD_FORMAT_TIMEOUT:g} s: a store written before format 3 has unchecksummed metadata, "
                             f"which damage can make HDF5 loop on); {_fix_for(path)}")
        raise StoreError(_BOUNDED_BAD[key]) from e
    if child.returncode < 0:
        _BOUNDED_BAD[key] = (f"{path}: damaged or not readable (reading its metadata crashed HDF5, signal "
                             f"{-child.returncode}); {_fix_for(path)}")
        raise StoreError(_BOUNDED_BAD[key])
    if child.returncode == 0:
        _BOUNDED_OK.add(key)


@contextmanager
def _reading(path: Path):
    """Open `path` for reading; any read failure inside the block is one StoreError naming it and the fix."""
    _bounded_check(Path(path))
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise StoreError(_damaged(Path(path), e)) from e


def verify_file(f: h5py.File, *, frames: bool = True, slab_bytes: int = 64 << 20) -> list[str]:
    """Read every dataset of an open store or part end to end (checksums are verified by HDF5).

    Returns one line per damaged dataset (empty when all is intact). `frames=False` skips
    /frames (the bulk of a store with frame layers).
    """
    damaged = []
    for name, ds in _datasets(f):
        if not frames and name.startswith("frames/"):
            continue
        step = max(1, slab_bytes // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        try:
            if not ds.shape:
                ds[()]
            for start in range(0, ds.shape[0] if ds.shape else 0, step):
                ds[start:start + step]  # reading is the check: HDF5 verifies each chunk's checksum
        except (OSError, ValueError, RuntimeError) as e:
            damaged.append(f"/{name}: {_describe(e)}")
    return damaged


def verify_digests(f: h5py.File, *, frames: bool = True) -> list[str]:
    """Every dataset's content against the sha256 recorded for it, and the file's digest against those.

    One line per dataset that differs; empty for a file without digests (before format 3).
    `frames=False` skips /frames.
    """
    damaged, recorded = [], {}
    for name, ds in _datasets(f):
        want = _recorded(ds)
        if want is None:
            continue
        recorded[name] = want
        if not frames and name.startswith("frames/"):
            continue
        try:
            got = _compute_digest(ds)
        except (OSError, ValueError, RuntimeError) as e:
            damaged.append(f"/{name}: {_describe(e)}")
            continue
        if got != want:
            layers = [k for k, (a, b) in enumerate(zip(got, want)) if a != b] if isinstance(got, list) else []
            damaged.append(f"/{name}{f' layer {layers[0]}' if layers else ''}: content digest mismatch")
    digest = _get_str(f, "digest")
    if digest is not None and digest != _combine({k: v for k, v in recorded.items() if k.startswith(_DIGESTED)}):
        damaged.append("/: the store digest does not match its datasets' digests")
    return damaged


def _raise_damage(path: Path, damaged: list[str]) -> None:
    if damaged:
        raise StoreError(f"{path}: damaged ({'; '.join(damaged[:3])}); {_fix_for(path)}")


@dataclass
class Verification:
    """What `verify_store` found, per file of a store."""

    files: list[Path]
    damaged: list[str] = field(default_factory=list)      # "<file>: /<dataset>: <error>"
    unverified: list[str] = field(default_factory=list)   # "<file>: /<dataset>" written without checksums
    #: "<file>: ..." of files written before format 3: chunk indexes, root attributes unchecksummed, no digests
    partial: list[str] = field(default_factory=list)
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.damaged


def _datasets(f: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    """Every dataset of an open file, with its path."""
    found: list[tuple[str, h5py.Dataset]] = []
    f.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return found


def checksummed(f: h5py.File) -> bool:
    """Whether every dataset of an open store carries a Fletcher-32 checksum (stores from format 2 on)."""
    return all(ds.fletcher32 for _, ds in _datasets(f))


def verify_store(path: str | Path) -> Verification:
    """Read a store (every shard) end to end: damaged datasets, and datasets without checksums.

    A store written before checksums (format 1) can only be checked for being readable; its
    numbers cannot be proven intact, which `unverified` says.
    """
    files = store_files(path)
    report = Verification(files=files)
    for p in files:
        try:
            with _reading(p) as f:
                damaged = verify_file(f)
                report.damaged.extend(f"{p}: {line}" for line in damaged)
                if not damaged:
                    report.damaged.extend(f"{p}: {line}" for line in verify_digests(f))
                report.unverified.extend(f"{p}: /{name}" for name, ds in _datasets(f) if not ds.fletcher32)
                version = int(f.attrs.get("format_version", 0))
                if version < 3 or _superblock_version(p) < 3:
                    report.partial.append(f"{p}: format {version}: its chunk indexes and root attributes carry no "
                                          f"checksums" + ("" if "digest" in f.attrs else
                                                          " and no content digest was recorded"))
        except StoreError as e:
            report.damaged.append(str(e))
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            report.damaged.append(_damaged(p, e))
        report.bytes_read += p.stat().st_size
    return report


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def _temp_name(path: Path) -> Path:
    """Where `path` is written before its rename: hidden, tagged with the writer's pid (see clean_dead_temps)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _ensure_space(path: Path, needed: int) -> None:
    """Refuse to start a write of about `needed` bytes that the disk cannot hold.

    Checked before writing because HDF5 cannot recover from a failed write: h5py crashes when
    it closes such a file, so an out-of-space error must not reach it.
    """
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise DiskFull(path.parent, needed, free)


class DiskFull(StoreError):
    """Not enough space to write a store or part; nothing was left behind."""

    def __init__(self, directory: Path, needed: int, free: int):
        from featstore.units import human_size

        super().__init__(f"disk full at {directory}: {human_size(needed)} needed, {human_size(free)} free; "
                         f"free some space and re-run the same command (finished work is kept)")


@contextmanager
def _atomic_h5(path: Path, needed: int):
    """An h5py.File written at a temporary name, fsynced, renamed to `path`; `needed`: bytes it takes.

    On an error the temporary file is deleted; a process killed meanwhile leaves it for
    `clean_dead_temps` at the next start.
    """
    _ensure_space(path, needed)
    tmp = _temp_name(path)
    try:
        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            yield f
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write `data` at a temporary name, fsync, rename to `path`; a full disk is one DiskFull line."""
    _ensure_space(path, len(data))
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DiskFull(path.parent, len(data), shutil.disk_usage(path.parent).free) from e
        raise
    fsync_dir(path.parent)


def _root_attrs(f: h5py.File, config: dict, **attrs) -> None:
    """The root attributes of a store: strings fixed-length (inside the checksummed object header)."""
    _put_str(f, "format", FORMAT)
    f.attrs["format_version"] = FORMAT_VERSION
    _put_str(f, "config", json.dumps(config, sort_keys=True))
    f.attrs["num_layers"] = int(attrs["num_layers"])
    f.attrs["hidden_size"] = int(attrs["hidden_size"])
    _put_str(f, "corpus", str(attrs["corpus"]))
    _put_str(f, "code_version", __version__)
    _put_str(f, "created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _put_str(f, "shard", str(attrs["shard"]))


def _has_dimensions(utterances: Sequence[Utterance]) -> bool:
    return any(u.dimension_scale is not None or any(getattr(u, k) is not None for k in _DIMENSION_FIELDS)
               for u in utterances)


def _write_dimensions(group: h5py.Group, utterances: Sequence[Utterance]) -> None:
    """The dimensional labels and their scale, when some utterance has them (see the module docstring)."""
    if not _has_dimensions(utterances):
        return
    for name in _DIMENSION_FIELDS:
        values = [getattr(u, name) for u in utterances]
        _create(group, name, data=np.asarray([np.nan if v is None else v for v in values], dtype=np.float64))
    scales = np.full((len(utterances), 2), np.nan, dtype=np.float64)
    for i, u in enumerate(utterances):
        if u.dimension_scale is not None:
            scales[i] = u.dimension_scale
    _create(group, _SCALE_FIELD, data=scales)


def _read_dimensions(group: h5py.Group, n: int) -> dict[str, list]:
    """Columns arousal, valence, dominance (float or None) and dimension_scale ((low, high) or None)."""
    if _SCALE_FIELD not in group:  # written before dimensions existed, or a corpus without them
        return {name: [None] * n for name in (*_DIMENSION_FIELDS, _SCALE_FIELD)}
    columns = {}
    for name in _DIMENSION_FIELDS:
        columns[name] = [None if np.isnan(v) else float(v) for v in _read_checked(group[name])]
    columns[_SCALE_FIELD] = [None if np.isnan(row).any() else (float(row[0]), float(row[1]))
                             for row in _read_checked(group[_SCALE_FIELD])]
    return columns


def _write_utterances(group: h5py.Group, utterances: Sequence[Utterance]) -> None:
    for name in UTTERANCE_FIELDS:
        if name in _DIMENSION_FIELDS or name == _SCALE_FIELD:
            continue
        values = [getattr(u, name) for u in utterances]
        if name in _INT_FIELDS:
            _create(group, name, data=np.asarray(values, dtype=np.int64))
        elif name in _FLOAT_FIELDS:
            _create(group, name, data=np.asarray(values, dtype=np.float64))
        elif name in _OPTIONAL_FLOAT_FIELDS:
            _create(group, name, data=np.asarray([-1.0 if v is None else v for v in values], dtype=np.float64))
        else:
            _create_strings(group, name, ["" if v is None else str(v) for v in values])
    _write_dimensions(group, utterances)


def _read_utterances(group: h5py.Group) -> list[Utterance]:
    columns = _read_dimensions(group, len(group["id"]))
    for name in UTTERANCE_FIELDS:
        if name in columns:
            continue
        if name in _OPTIONAL_FLOAT_FIELDS and name not in group:  # a store written before segments existed
            columns[name] = [None] * len(group["id"])
            continue
        data = _read_checked(group[name])
        if name in _INT_FIELDS:
            columns[name] = [int(v) for v in data]
        elif name in _FLOAT_FIELDS:
            columns[name] = [float(v) for v in data]
        elif name in _OPTIONAL_FLOAT_FIELDS:
            columns[name] = [None if v < 0 else float(v) for v in data]
        else:
            strings = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in data]
            columns[name] = strings if name in ("id", "path", "corpus", "language", "speaker", "label", "label_raw") \
                else [s or None for s in strings]
    n = len(columns["id"])
    return [Utterance(**{k: columns[k][i] for k in UTTERANCE_FIELDS}) for i in range(n)]


def _write_skipped(f: h5py.File, skipped: Sequence[Skipped]) -> None:
    g = f.create_group("skipped")
    _create_strings(g, "id", [s.id for s in skipped])
    _create_strings(g, "path", [s.path for s in skipped])
    _create_strings(g, "reason", [s.reason for s in skipped])


def _read_skipped(f: h5py.File) -> list[Skipped]:
    if "skipped" not in f:
        return []
    g = f["skipped"]
    cols = [_strings(_read_checked(g[k])) for k in ("id", "path", "reason")]
    return [Skipped(*row) for row in zip(*cols)]


def write_part(path: Path, batch: Batch, config: dict) -> None:
    """Write one complete part file atomically (built in memory, so a full disk fails cleanly)."""
    image = io.BytesIO()
    with h5py.File(image, "w", libver=_LIBVER) as f:
        _put_str(f, "format", FORMAT + "-part")
        f.attrs["format_version"] = FORMAT_VERSION
        _put_str(f, "config", json.dumps(config, sort_keys=True))
        _write_utterances(f.create_group("utterances"), batch.utterances)
        _create(f["utterances"], "n_samples", data=batch.n_samples.astype(np.int64))
        _create(f["utterances"], "n_frames", data=batch.n_frames.astype(np.int64))
        _create(f, "pooled/mean", data=batch.mean.astype(np.float32))
        _create(f, "pooled/std", data=batch.std.astype(np.float32))
        for layer, arrays in batch.frames.items():
            g = f.require_group("frames")
            data = np.concatenate(arrays) if arrays else np.zeros((0, batch.mean.shape[-1]), np.float16)
            _create(g, f"layer_{layer}", data=data.astype(np.float16))
        _write_skipped(f, batch.skipped)
        _record_digests(f)
    _write_bytes(path, image.getvalue())


def parts_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".parts")


def new_part_path(store_path: Path, shard: int) -> Path:
    """A fresh part name: after every existing part of the shard (a later part wins on assembly),
    with the writer's pid and a random tag so that two writers can never pick the same name."""
    pdir = parts_dir(store_path)
    pdir.mkdir(parents=True, exist_ok=True)
    seqs = [int(m[1]) for p in pdir.glob(f"part-{shard:03d}-*.h5") if (m := re.match(r"part-\d+-(\d+)", p.name))]
    return pdir / f"part-{shard:03d}-{1 + max(seqs, default=0):06d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"


def config_matches(a: dict, b: dict) -> list[str]:
    """Names of fingerprint keys on which two store configs differ."""
    def key(c: dict, k: str):
        return _SAME_FEATURES.get(c.get(k), c.get(k)) if k == "format_version" else c.get(k)

    return [k for k in FINGERPRINT_KEYS if key(a, k) != key(b, k)]


def _readable_parts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("part-*.h5"))


def assemble(store_path: Path, config: dict, *, corpus: str, shard: str = "0/1",
             keep_ids: set[str] | None = None) -> Path:
    """Merge an existing store (if any) and the finished parts into `store_path`, atomically.

    Rows are sorted by utterance id; a later part wins over an earlier one for the same id.
    Skipped entries of ids that were extracted since are dropped. Memory: one part at a time.
    """
    sources: list[Path] = []
    if store_path.exists():
        sources.append(store_path)
    pdir = parts_dir(store_path)
    if pdir.exists():
        sources.extend(_readable_parts(pdir))
    where: dict[str, tuple[int, int]] = {}   # id -> (source index, row)
    utt_of: dict[str, Utterance] = {}
    n_frames_of: dict[str, int] = {}
    n_samples_of: dict[str, int] = {}
    skipped: dict[str, Skipped] = {}
    num_layers = hidden = None
    frame_layers: list[int] = [int(k) for k in config.get("frame_layers", [])]
    for si, src in enumerate(sources):
        with _reading(src) as f:
            utts = _read_utterances(f["utterances"])
            nf = _read_checked(f["utterances/n_frames"])
            ns = _read_checked(f["utterances/n_samples"])
            if len(utts):
                num_layers, hidden = f["pooled/mean"].shape[1:]
            for row, u in enumerate(utts):
                where[u.id] = (si, row)
                utt_of[u.id] = u
                n_frames_of[u.id] = int(nf[row])
                n_samples_of[u.id] = int(ns[row])
                skipped.pop(u.id, None)
            for s in _read_skipped(f):
                if s.id not in where:
                    skipped[s.id] = s
    if keep_ids is not None:
        skipped = {k: v for k, v in skipped.items() if k in keep_ids}
    ids = sorted(where)
    row_of = {uid: i for i, uid in enumerate(ids)}
    n = len(ids)
    if num_layers is None:
        num_layers = int(config.get("num_layers", 0))
        hidden = int(config.get("hidden_size", 0))
    n_frames = np.array([n_frames_of[i] for i in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    # the sources hold every row once at least, so their size bounds the store's
    with _atomic_h5(store_path, needed=sum(p.stat().st_size for p in sources) + (1 << 16)) as out:
        _root_attrs(out, config, num_layers=num_layers, hidden_size=hidden, corpus=corpus, shard=shard)
        g = out.create_group("utterances")
        _write_utterances(g, [utt_of[i] for i in ids])
        _create(g, "n_samples", data=np.array([n_samples_of[i] for i in ids], dtype=np.int64))
        _create(g, "n_frames", data=n_frames)
        chunk = (max(1, min(n, 256)), 1, hidden) if n else None
        mean = _create(out, "pooled/mean", shape=(n, num_layers, hidden), dtype=np.float32, chunks=chunk)
        std = _create(out, "pooled/std", shape=(n, num_layers, hidden), dtype=np.float32, chunks=chunk)
        fr = {}
        if frame_layers:
            _create(out, "frames/offsets", data=offsets)
            total = int(offsets[-1])
            for k in frame_layers:
                fr[k] = _create(out, f"frames/layer_{k}", shape=(total, hidden), dtype=np.float16,
                                           chunks=(max(1, min(total, 4096)), hidden) if total else None)
        for si, src in enumerate(sources):
            with _reading(src) as f:
                src_ids = [u for u in _read_checked(f["utterances/id"])]
                src_ids = [v.decode("utf-8") if isinstance(v, bytes) else v for v in src_ids]
                rows = [(row_of[uid], r) for r, uid in enumerate(src_ids) if where.get(uid) == (si, r)]
                if not rows:
                    continue
                rows.sort()
                dst = np.array([d for d, _ in rows])
                srcr = np.array([s for _, s in rows])
                m = _read_checked(f["pooled/mean"])
                s_ = _read_checked(f["pooled/std"])
                _scatter(mean, dst, m[srcr])
                _scatter(std, dst, s_[srcr])
                if frame_layers:
                    src_nf = _read_checked(f["utterances/n_frames"]).astype(np.int64)
                    src_off = np.concatenate([[0], np.cumsum(src_nf)])
                    for k in frame_layers:
                        data = _read_checked(f[f"frames/layer_{k}"])
                        for d, r in zip(dst, srcr):
                            fr[k][offsets[d]:offsets[d + 1]] = data[src_off[r]:src_off[r + 1]]
        _write_skipped(out, sorted(skipped.values(), key=lambda s: s.id))
        _record_digests(out)
    if pdir.exists():
        for p in pdir.iterdir():
            p.unlink()
        pdir.rmdir()
    return store_path


def _scatter(ds: h5py.Dataset, dst: np.ndarray, values: np.ndarray) -> None:
    """ds[dst] = values for sorted row indices, in contiguous runs (fast in h5py)."""
    start = 0
    for i in range(1, len(dst) + 1):
        if i == len(dst) or dst[i] != dst[i - 1] + 1:
            ds[dst[start]:dst[i - 1] + 1] = values[start:i]
            start = i


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

_SHARD_RE = re.compile(r"^(?P<corpus>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)\.h5$")


def _read_config(f: h5py.File, path: Path) -> dict:
    if _get_str(f, "format") != FORMAT:
        raise StoreError(f"{path}: not a ser feature store (format attribute {_get_str(f, 'format')!r})")
    if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(f"{path}: written by a newer ser (format {f.attrs['format_version']}); upgrade ser")
    return json.loads(_get_str(f, "config"))


class FeatureStore:
    """One or several stores (shards of one corpus, or several corpora of one model) read as one.

    Rows follow the order of the files given, then the rows of each file (sorted by id).
    """

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise StoreError("no store files given")
        self.paths = [Path(p) for p in paths]
        self._digest: str | None = None
        self.utterances: list[Utterance] = []
        self.skipped: list[Skipped] = []
        self._rows: list[tuple[int, int, int]] = []  # per file: (first global row, n rows, file index)
        self.n_frames = []
        self.n_samples = []
        configs = []
        checksums: list[bool] = []
        versions: list[int] = []
        for fi, p in enumerate(self.paths):
            with _reading(p) as f:
                configs.append(_read_config(f, p))
                utts = _read_utterances(f["utterances"])
                self._rows.append((len(self.utterances), len(utts), fi))
                self.utterances.extend(utts)
                self.n_frames.extend(_read_checked(f["utterances/n_frames"]).tolist())
                self.n_samples.extend(_read_checked(f["utterances/n_samples"]).tolist())
                self.skipped.extend(_read_skipped(f))
                checksums.append(checksummed(f))
                versions.append(int(f.attrs.get("format_version", 1)))
                self.num_layers = int(f.attrs["num_layers"])
                self.hidden_size = int(f.attrs["hidden_size"])
                if fi == 0:
                    self.attrs = {k: _get_str(f, k) for k in f.attrs}
        base = configs[0]
        for p, c in zip(self.paths[1:], configs[1:]):
            if c.get("weights_sha256") != base.get("weights_sha256") or c.get("dtype") != base.get("dtype"):
                raise StoreError(f"{p} was extracted with another model or dtype than {self.paths[0]}; "
                                 f"stores read together must share the model")
        self.config = base
        #: every dataset carries a checksum verified on read (False: a store written before format 2)
        self.checksums = all(checksums)
        #: the oldest format among the files: 3 has checksummed metadata and content digests checked on read
        self.format_version = min(versions)
        self.frame_layers = [int(k) for k in set.intersection(*[set(c.get("frame_layers", [])) for c in configs])]
        self.frame_layers.sort()
        self.n_frames = np.asarray(self.n_frames, dtype=np.int64)
        self.n_samples = np.asarray(self.n_samples, dtype=np.int64)
        ids = [u.id for u in self.utterances]
        if len(set(ids)) != len(ids):
            raise StoreError("the same utterance id occurs in two of the stores given: "
                             + ", ".join(str(p) for p in self.paths))

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def digest(self) -> str:
        """Hex sha256 of the features: every dataset under /utterances, /pooled and /frames of each file.

        Recorded when a store is assembled; for a store of format 1 or 2, computed from its data on
        first access (the same function, so a re-assembled store keeps its digest). Several files:
        one sha256 over theirs, in order.
        """
        if self._digest is None:
            per_file = []
            for p in self.paths:
                with _reading(p) as f:
                    per_file.append(_file_digest(f))
            self._digest = per_file[0] if len(per_file) == 1 else _combine(
                {f"{i:06d}": d for i, d in enumerate(per_file)})
        return self._digest

    @property
    def model_id(self) -> str:
        return self.config.get("model_id", "")

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.utterances]

    @property
    def corpora(self) -> list[str]:
        return sorted({u.corpus for u in self.utterances})

    @property
    def dimension_scales(self) -> dict[str, tuple[float, float]]:
        """corpus -> (low, high) of its arousal/valence/dominance scale, for the corpora here that have
        dimensional labels (what `featstore.corpora.base.dimension_array(..., scales=)` takes)."""
        scales: dict[str, tuple[float, float]] = {}
        for u in self.utterances:
            if u.dimension_scale is None:
                continue
            seen = scales.setdefault(u.corpus, u.dimension_scale)
            if seen != u.dimension_scale:
                raise StoreError(f"corpus {u.corpus} has two dimension scales in {', '.join(map(str, self.paths))} "
                                 f"({seen} and {u.dimension_scale}, e.g. at {u.id}); re-run `ser extract` for it so "
                                 f"its labels are read again")
        return scales

    def _check_layer(self, layer: int) -> int:
        if not -self.num_layers <= layer < self.num_layers:
            raise StoreError(f"layer {layer} out of range: the store has layers 0..{self.num_layers - 1}")
        return layer % self.num_layers

    def pooled(self, layer: int, stat: str = "mean") -> np.ndarray:
        """Pooled features of one layer: `(N, D)` for "mean"/"std", `(N, 2D)` for "mean+std"."""
        layer = self._check_layer(layer)
        if stat == "mean+std":
            return np.concatenate([self.pooled(layer, "mean"), self.pooled(layer, "std")], axis=1)
        if stat not in ("mean", "std"):
            raise StoreError(f"unknown statistic {stat!r}: use mean, std or mean+std")
        out = np.empty((len(self), self.hidden_size), dtype=np.float32)
        for (start, n, fi) in self._rows:
            if n:
                with _reading(self.paths[fi]) as f:
                    ds = f[f"pooled/{stat}"]
                    ds.read_direct(out, np.s_[:, layer, :], np.s_[start:start + n])
                    _check(self.paths[fi], ds, out[start:start + n], layer)
        return out

    def pooled_all(self, stat: str = "mean", layers: Sequence[int] | None = None) -> np.ndarray:
        """Pooled features of several layers: `(N, len(layers), D)` (or 2D for mean+std).

        Reads each file once (one HDF5 selection for all the layers), not once per layer.
        """
        layers = list(range(self.num_layers)) if layers is None else [self._check_layer(k) for k in layers]
        if stat == "mean+std":
            return np.concatenate([self.pooled_all("mean", layers), self.pooled_all("std", layers)], axis=2)
        if stat not in ("mean", "std"):
            raise StoreError(f"unknown statistic {stat!r}: use mean, std or mean+std")
        order = sorted(set(layers))
        out = np.empty((len(self), len(order), self.hidden_size), dtype=np.float32)
        for (start, n, fi) in self._rows:
            if n:
                with _reading(self.paths[fi]) as f:
                    ds = f[f"pooled/{stat}"]
                    out[start:start + n] = ds[()] if order == list(range(self.num_layers)) else ds[:, order, :]
                    for j, k in enumerate(order):
                        _check(self.paths[fi], ds, out[start:start + n, j], k)
        return out[:, [order.index(k) for k in layers], :]

    def frames(self, layer: int, index: int) -> np.ndarray:
        """Frame-level features of utterance `index` at `layer`: `(frames, D)` float16."""
        layer = self._check_layer(layer)
        if layer not in self.frame_layers:
            raise StoreError(f"layer {layer} has no frame-level features in this store (it has "
                             f"{self.frame_layers or 'none'}); re-extract with --frames {layer}")
        for (start, n, fi) in self._rows:
            if start <= index < start + n:
                with _reading(self.paths[fi]) as f:
                    off = f["frames/offsets"]
                    a, b = int(off[index - start]), int(off[index - start + 1])
                    return f[f"frames/layer_{layer}"][a:b]
        raise IndexError(index)

    def iter_frames(self, layer: int, indices: Iterable[int] | None = None) -> Iterator[tuple[Utterance, np.ndarray]]:
        """Yield `(utterance, frames (T, D) float16)` for the given rows (all by default)."""
        indices = range(len(self)) if indices is None else indices
        for i in indices:
            yield self.utterances[i], self.frames(layer, i)

    def subset(self, mask) -> tuple[np.ndarray, list[Utterance]]:
        """Row indices and utterances where `mask(utterance)` is true."""
        idx = np.array([i for i, u in enumerate(self.utterances) if mask(u)], dtype=np.int64)
        return idx, [self.utterances[i] for i in idx]


def parse_layers(spec: str | int | Sequence[int], num_layers: int, option: str = "--layer") -> list[int]:
    """`12`, `-1`, `all`, `3-9`, `0,6,12` (or a list of ints) -> sorted layer indices 0..num_layers-1.

    A negative layer counts from the end (-1 = the last, L).
    """
    if isinstance(spec, int):
        spec = str(spec)
    if spec == "all":
        return list(range(num_layers))
    layers: list[int] = []
    try:
        for part in (spec.split(",") if isinstance(spec, str) else spec):
            part = str(part).strip()
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m and int(m[1]) > int(m[2]):
                raise StoreError(f"{option} {spec!r}: {reversed_range_problem(m[1], m[2])}")
            layers.extend(range(int(m[1]), int(m[2]) + 1) if m else [int(part)])
    except ValueError as e:
        raise StoreError(f"{option} {spec!r}: use a layer number, all, or layers like 6,12 or 3-9") from e
    if not layers:
        raise StoreError(f"{option} {spec!r}: names no layer; use a layer number, all, or layers like 6,12 or 3-9")
    bad = sorted({k for k in layers if not -num_layers <= k < num_layers})
    if bad:
        raise StoreError(f"{option}: layer(s) {_runs(bad)} out of range; the model has layers 0..{num_layers - 1}")
    return sorted({k % num_layers for k in layers})


def _runs(numbers: list[int]) -> str:
    """Sorted distinct ints as runs: [7, 8, 9, 12] -> "7-9, 12"."""
    runs: list[list[int]] = []
    for k in numbers:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def store_files(path: str | Path) -> list[Path]:
    """The files making up one store: the file itself, or every shard of a sharded store.

    `path` is a store file, one shard file, or the `<corpus>.h5` name of a sharded store.
    """
    path = Path(path)
    m = _SHARD_RE.match(path.name)
    if path.is_file() and not m:
        return [path]
    corpus = m["corpus"] if m else (path.name[:-3] if path.name.endswith(".h5") else path.name)
    found = sorted(path.parent.glob(f"{corpus}.shard-*-of-*.h5"))
    if not found:
        raise StoreError(f"no store at {path}; `ser store ls` lists the stores in the cache")
    n = int(_SHARD_RE.match(found[0].name)["n"])
    shards = [path.parent / f"{corpus}.shard-{i}-of-{n}.h5" for i in range(n)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise StoreError(f"sharded store {path.parent / corpus}.h5 is incomplete: missing {', '.join(missing)}; "
                         f"finish those shards with `ser extract ... --shards {n} --shard I`")
    return shards


def open_store(*paths: str | Path) -> FeatureStore:
    """Open one or several stores (files, or `<corpus>.h5` names of sharded stores) as one."""
    files: list[Path] = []
    for p in paths:
        files.extend(store_files(p))
    return FeatureStore(files)


def store_path(cache: str | Path, model_slug: str, corpus: str, shard: int = 0, shards: int = 1) -> Path:
    name = f"{corpus}.h5" if shards == 1 else f"{corpus}.shard-{shard}-of-{shards}.h5"
    return Path(cache) / model_slug / name


def _model_dir(cache: str | Path, model: str) -> Path:
    from featstore.backbones.runtime import model_slug

    return Path(cache) / model_slug(model)


def _corpus_of(name: str) -> str | None:
    """`ravdess.h5` / `ravdess.shard-0-of-2.h5` -> "ravdess"; None for other names."""
    m = _SHARD_RE.match(name)
    if m:
        return m["corpus"]
    return name[:-3] if name.endswith(".h5") and not name.startswith(".") else None


def cached_corpora(cache: str | Path, model: str) -> list[str]:
    """Corpora with a finished store (or shard) for `model` under `cache`, sorted."""
    directory = _model_dir(cache, model)
    names = sorted({c for p in directory.glob("*.h5") if (c := _corpus_of(p.name))}) if directory.is_dir() else []
    if not names:
        raise StoreError(f"no extracted corpora for model {model!r} under {directory}; run "
                         f"`ser extract --corpus NAME --model {model}` first (or pass --model / --cache)")
    return names


def find_store(cache: str | Path, model: str, corpus: str) -> Path:
    """Where `ser extract` put (model, corpus): `<corpus>.h5`, also the name of a sharded store.

    Raises StoreError naming the `ser extract` command when there is no such store.
    """
    directory = _model_dir(cache, model)
    path = directory / f"{corpus}.h5"
    if path.is_file() or any(directory.glob(f"{corpus}.shard-*-of-*.h5")):
        return path
    have = sorted({c for p in directory.glob("*.h5") if (c := _corpus_of(p.name))}) if directory.is_dir() else []
    raise StoreError(f"no features for corpus {corpus!r} with model {model!r} in {directory} "
                     f"(found: {', '.join(have) or 'nothing'}); run `ser extract --corpus {corpus} --model {model}` first")


@dataclass
class Progress:
    """What an earlier run left for a store: ids done (store + finished parts) and skips recorded."""

    done: set[str] = field(default_factory=set)
    skipped: dict[str, Skipped] = field(default_factory=dict)
    mtime: float = 0.0                  # newest of the store and its parts
    parts: int = 0                      # finished part files waiting to be assembled
    labels: dict[str, str] = field(default_factory=dict)  # id -> label in the store file itself
    #: id -> (arousal, valence, dominance, dimension_scale) in the store file itself (None where it has none)
    dimensions: dict[str, tuple] = field(default_factory=dict)


def read_progress(path: Path, config: dict) -> Progress:
    """Read a store and its part files as a resumed run needs them; refuse another configuration."""
    progress = Progress()
    sources = []
    if path.exists():
        sources.append(path)
        progress.mtime = path.stat().st_mtime
    pdir = parts_dir(path)
    if pdir.exists():
        parts = _readable_parts(pdir)
        progress.parts = len(parts)
        sources.extend(parts)
    for src in sources:
        with _reading(src) as f:
            other = json.loads(_get_str(f, "config"))
            diff = config_matches(other, config)
            if diff == ["frame_layers"]:
                raise StoreError(_frame_layers_differ(src, path, other, config))
            if diff:
                details = ", ".join(f"{k}: {other.get(k)!r} vs {config.get(k)!r}" for k in diff)
                if diff == ["sample_rate"] and other.get("model_type") == "opensmile":  # before native-rate openSMILE
                    details += (f"; openSMILE now reads each file at its own rate; that store was computed at "
                                f"{other.get('sample_rate')} Hz (--model {str(other.get('model_id')).partition('@')[0]}"
                                f"@{other.get('sample_rate')} makes such a store in its own directory)")
                raise StoreError(
                    f"{src} was extracted with a different configuration ({details}); it is never mixed "
                    f"with another run: pass --cache DIR for a separate store, or delete {path} to start over")
            progress.done.update(_strings(_read_checked(f["utterances/id"])))
            progress.skipped.update((s.id, s) for s in _read_skipped(f))
            if src == path:
                # a no-op re-run must not vouch for damaged numbers; frames are checked when read
                _raise_damage(path, verify_file(f, frames=False) or verify_digests(f, frames=False))
                ids = _strings(_read_checked(f["utterances/id"]))
                progress.labels = dict(zip(ids, _strings(_read_checked(f["utterances/label"]))))
                dims = _read_dimensions(f["utterances"], len(ids))
                progress.dimensions = dict(zip(ids, zip(*(dims[k] for k in (*_DIMENSION_FIELDS, _SCALE_FIELD)))))
            if src != path:
                progress.mtime = max(progress.mtime, src.stat().st_mtime)
    return progress


def _frame_layers_differ(src: Path, path: Path, other: dict, config: dict) -> str:
    """The one line for a run whose --frames differs from what `src` was extracted with."""
    def spec(c):
        return ",".join(map(str, c.get("frame_layers", []))) or "none"

    if src == path and not parts_dir(path).exists():
        union = sorted(set(other.get("frame_layers", [])) | set(config.get("frame_layers", [])))
        return (f"{path} has frame layers {spec(other)}; frame layers are only ever added to a store: "
                f"re-run with --frames {spec(dict(frame_layers=union))}")
    return (f"an interrupted run with --frames {spec(other)} waits in {parts_dir(path)}: finish it with "
            f"--frames {spec(other)}, then re-run with --frames {spec(config)} to add frame layers")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_dead_temps(path: Path) -> list[Path]:
    """Delete the temporary files a dead writer of this store left (its parts', the store's), and
    an empty parts directory.

    A temporary name carries its writer's pid; files of a live process are left alone (the
    store lock keeps live writers of one store apart; this guards what the lock cannot see).
    """
    removed = []
    pdir = parts_dir(path)
    candidates = list(path.parent.glob(f".{path.name}.tmp-*"))
    candidates += list(pdir.glob(".part-*.tmp-*")) if pdir.is_dir() else []
    for tmp in candidates:
        m = re.search(r"\.tmp-(\d+)", tmp.name)
        if m and int(m[1]) != os.getpid() and _alive(int(m[1])):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if pdir.is_dir() and not any(pdir.iterdir()):
        pdir.rmdir()
    return removed


@contextmanager
def store_lock(path: Path, *, timeout: float | None = None, on_wait: Callable[[str], None] | None = None):
    """Hold `<store>.lock` for the block: one writer per store (another one waits, or gives up after `timeout` s)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait:
            on_wait(f"another ser extract is writing {path}; waiting for it to finish (lock {lock.lock_file})")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout as e:
            raise StoreError(f"{path} is being written by another ser extract (lock {lock.lock_file}); "
                             f"wait for it to finish, or stop it and re-run") from e
    try:
        yield
    finally:
        lock.release()


def missing_frame_layers(path: Path, config: dict) -> list[int]:
    """Frame layers `config` asks for that the finished store at `path` lacks, when that is its only
    difference from `config` and no interrupted run waits in its parts; else []."""
    if not path.is_file() or parts_dir(path).exists():
        return []
    try:
        with _reading(path) as f:
            have = json.loads(_get_str(f, "config"))
    except (StoreError, OSError, KeyError, ValueError):
        return []  # read_progress reports an unreadable store
    want = [int(k) for k in config.get("frame_layers", [])]
    if config_matches(have, config) != ["frame_layers"] or not set(have.get("frame_layers", [])) < set(want):
        return []
    return sorted(set(want) - set(have.get("frame_layers", [])))


@contextmanager
def adding_frame_layers(path: Path, config: dict, layers: Sequence[int]):
    """Yield `(utterances, put)` to add frame `layers` to the finished store at `path`.

    `put(id, {layer: (T, D) array})` writes one utterance's frames; T must equal its stored
    n_frames. The store is copied (pooled data byte for byte) to a temporary file that replaces
    it only when the block ends without error; `config` becomes the store's configuration.
    """
    with _reading(path) as src:
        total = int(src["utterances/n_frames"][()].sum())
        needed = path.stat().st_size + total * int(src.attrs["hidden_size"]) * 2 * len(layers) + (1 << 16)
    with _atomic_h5(path, needed) as out:
        with _reading(path) as src:
            _copy_datasets(path, src, out)
            _root_attrs(out, config, num_layers=src.attrs["num_layers"], hidden_size=src.attrs["hidden_size"],
                        corpus=_get_str(src, "corpus", ""), shard=_get_str(src, "shard", "0/1"))
        utterances = _read_utterances(out["utterances"])
        n_frames = out["utterances/n_frames"][()].astype(np.int64)
        if "frames/offsets" in out:
            offsets = out["frames/offsets"][()]
        else:
            offsets = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
            _create(out, "frames/offsets", data=offsets)
        total, hidden = int(offsets[-1]), int(out.attrs["hidden_size"])
        datasets = {k: _create(out, f"frames/layer_{k}", shape=(total, hidden), dtype=np.float16,
                                          chunks=(max(1, min(total, 4096)), hidden) if total else None)
                    for k in layers}
        row = {u.id: i for i, u in enumerate(utterances)}
        filled: set[str] = set()

        def put(uid: str, frames: dict[int, np.ndarray]) -> None:
            filled.add(uid)
            a, b = int(offsets[row[uid]]), int(offsets[row[uid] + 1])
            for k, x in frames.items():
                if x.shape != (b - a, hidden):
                    raise StoreError(f"{path}: {uid} now gives {x.shape[0]} frames, the store has {b - a}; "
                                     f"its audio changed since it was extracted: delete {path} and re-extract")
                datasets[k][a:b] = x

        yield utterances, put
        if len(filled) != len(utterances):
            raise StoreError(f"{path}: frames of {len(utterances) - len(filled)} utterances were not added; "
                             f"the store is left as it was")
        _record_digests(out)


def dimensions_of(u: Utterance) -> tuple:
    """(arousal, valence, dominance, dimension_scale) of an utterance, as `Progress.dimensions` holds them."""
    return (u.arousal, u.valence, u.dominance, u.dimension_scale)


def relabel(path: Path, labels: Mapping[str, str | Utterance]) -> int:
    """Give the utterances of the finished store at `path` new labels (the corpus' labels changed since
    extraction, e.g. CSV codes now read through `featstore.labels`' aliases, or dimensional labels the
    corpus has now and the store was extracted without).

    `labels`: id -> the new label, or id -> the utterance as the corpus reads it now (its label,
    arousal, valence, dominance and dimension scale are taken). The store is copied (features byte for
    byte, each dataset checked against its digest) to a temporary file with the new labels and fresh
    digests, which replaces it only when whole. Returns how many utterances changed. The features
    digest changes with them, so runs registered over the old labels are never answered for the new ones.
    """
    with _atomic_h5(path, path.stat().st_size + (1 << 16)) as out:
        with _reading(path) as src:
            _copy_datasets(path, src, out)
            config = json.loads(_get_str(src, "config"))
            _root_attrs(out, config, num_layers=src.attrs["num_layers"], hidden_size=src.attrs["hidden_size"],
                        corpus=_get_str(src, "corpus", ""), shard=_get_str(src, "shard", "0/1"))
        group = out["utterances"]
        ids = _strings(group["id"][()])
        old = _strings(group["label"][()])
        new = [_label_of(labels.get(i, lab)) for i, lab in zip(ids, old)]
        old_dims = _read_dimensions(group, len(ids))
        before = list(zip(*(old_dims[k] for k in (*_DIMENSION_FIELDS, _SCALE_FIELD))))
        after = [dimensions_of(labels[i]) if isinstance(labels.get(i), Utterance) else d for i, d in zip(ids, before)]
        del group["label"]
        _create_strings(group, "label", new)
        for name in (*_DIMENSION_FIELDS, _SCALE_FIELD):
            if name in group:
                del group[name]
        _write_dimensions(group, [_Dims(*d) for d in after])
        _record_digests(out)
    return sum(a != b or da != db for a, b, da, db in zip(old, new, before, after))


def _label_of(value: str | Utterance) -> str:
    return value.label if isinstance(value, Utterance) else value


@dataclass(frozen=True)
class _Dims:
    """The dimension fields of an utterance, as `_write_dimensions` reads them."""

    arousal: float | None
    valence: float | None
    dominance: float | None
    dimension_scale: tuple[float, float] | None


def _copy_datasets(path: Path, src: h5py.File, out: h5py.File) -> None:
    """Every dataset of `src` re-written into `out` in the current format (values byte for byte, strings
    fixed-length), each checked against the digest `src` recorded for it."""
    for name, ds in _datasets(src):
        if _is_text(ds.dtype):
            _create_strings(out, name, _strings(ds[()]))
            continue
        copy = _create(out, name, shape=ds.shape, dtype=ds.dtype, chunks=ds.chunks)
        start = 0
        for slab in _slabs(ds):
            if not ds.shape:
                copy[()] = slab
                break
            copy[start:start + len(slab)] = slab
            start += len(slab)
        recorded = _recorded(ds)
        if recorded is not None and _compute_digest(copy) != recorded:
            raise StoreError(_mismatch(path, name))


def _strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def list_stores(cache: str | Path) -> list[dict]:
    """Every finished store under `cache`: model slug, corpus, path(s), utterances, size.

    One model id per weights: stores whose weights hash is the same (e.g. recorded once as a relative
    and once as an absolute path, or under two cache directories) all show `model` = one of their
    recorded ids (`_one_id`); `recorded` keeps each store's own, `weights_sha256` the hash. Finished
    stores come grouped by model, then corpus.
    """
    cache = Path(cache)
    seen, rows = set(), []
    for p in sorted(cache.glob("*/*.h5")):
        m = _SHARD_RE.match(p.name)
        corpus = m["corpus"] if m else p.name[:-3]
        key = (p.parent, corpus)
        if key in seen:
            continue
        seen.add(key)
        try:
            files = store_files(p)
            with _reading(files[0]) as f:
                config = json.loads(_get_str(f, "config"))
                model, sha, rate = config.get("model_id", ""), config.get("weights_sha256", ""), config.get("sample_rate")
                layers = int(f.attrs["num_layers"])
            n, verified, version = 0, True, FORMAT_VERSION
            for fp in files:
                with _reading(fp) as f:
                    n += len(f["utterances/id"])
                    verified = verified and checksummed(f)
                    version = min(version, int(f.attrs.get("format_version", 1)))
            status = ("complete" if version >= 3 else "complete, metadata unchecksummed (format 2)" if verified
                      else "complete, unverified (no checksums: format 1)")
        except (StoreError, OSError, KeyError) as e:
            files, model, sha, rate, layers, n, status = [p], "", "", None, 0, 0, f"damaged or unreadable: {_short(e)}"
        rows.append(dict(model_slug=p.parent.name, model=model, recorded=model, weights_sha256=sha,
                         same_weights=f"{sha}@{rate}" if sha else "", corpus=corpus, utterances=n,
                         layers=layers, size=sum(f.stat().st_size for f in files if f.exists()),
                         path=str(files[0] if len(files) == 1 else p.parent / f"{corpus}.h5"),
                         shards=len(files), status=status))
    ids: dict[str, list[str]] = {}   # weights hash @ input rate (openSMILE's sets hash alike at every rate)
    for r in rows:
        if r["same_weights"] and r["recorded"]:
            ids.setdefault(r["same_weights"], []).append(r["recorded"])
    for r in rows:
        key = r.pop("same_weights")
        if key in ids:
            r["model"] = _one_id(ids[key])
    rows.sort(key=lambda r: (r["model"] or r["model_slug"], r["corpus"], r["path"]))
    for pdir in sorted(cache.glob("*/*.h5.parts")):
        rows.append(dict(model_slug=pdir.parent.name, model="", recorded="", weights_sha256="", corpus=pdir.name[:-9],
                         utterances=0, layers=0,
                         size=sum(p.stat().st_size for p in pdir.iterdir()), path=str(pdir), shards=0,
                         status="in progress / interrupted (re-run `ser extract` to finish)"))
    return rows


def _one_id(ids: Sequence[str]) -> str:
    """One name for the stores of one set of weights recorded under several ids: a local directory that
    is there (absolute), else a hub id, else a recorded absolute path, else the first recorded. (The
    hub-id test is featstore.backbones.runtime.is_local_id's, without importing torch for `ser store ls`.)"""
    def rank(i: str) -> int:
        path = Path(i).expanduser()
        if path.is_absolute():
            return 0 if path.is_dir() else 2
        hub = not path.exists() and not i.startswith((".", "~")) and len([s for s in i.split("/") if s]) <= 2
        return 1 if hub else 3

    return min(ids, key=rank)


def store_info(path: str | Path) -> dict:
    """Counts, layers, size, frame layers, skipped utterances with reasons, attributes."""
    fs = open_store(path)
    from collections import Counter

    return dict(
        paths=[str(p) for p in fs.paths], model=fs.model_id, config=fs.config, attrs=fs.attrs,
        utterances=len(fs), layers=fs.num_layers, hidden_size=fs.hidden_size,
        frame_layers=fs.frame_layers, size=sum(p.stat().st_size for p in fs.paths),
        labels=Counter(u.label for u in fs.utterances), speakers=len({u.speaker for u in fs.utterances}),
        seconds=float(sum(u.duration for u in fs.utterances)),
        skipped=[(s.id, s.path, s.reason) for s in fs.skipped], checksums=fs.checksums,
        format_version=fs.format_version, digest=fs.digest if fs.format_version >= 3 else None,
        dimension_scales=fs.dimension_scales,
    )


def export_layer(path: str | Path, layer: int, out: str | Path, stat: str = "mean") -> Path:
    """Write one layer's pooled matrix with its labels as .npz: id, X, label, speaker, corpus (and, for a store
    with dimensional labels, arousal, valence, dominance on each corpus' scale, NaN where missing, and
    dimension_scale (N, 2)).

    `out` gets ".npz" appended when its name lacks it (as numpy.savez does). It is checked before the
    store is read (not a directory or a system path) and written whole or not at all: a full disk is
    one OutputDiskFull line and leaves neither a partial file nor a temporary one.
    """
    from featstore.outputs import atomic_output, check_output

    out = check_output(out, option="--out")
    if not out.name.endswith(".npz"):
        out = check_output(out.with_name(out.name + ".npz"), option="--out")
    fs = open_store(path)
    arrays = dict(id=np.array(fs.ids), X=fs.pooled(layer, stat), label=np.array([u.label for u in fs.utterances]),
                  speaker=np.array([u.speaker for u in fs.utterances]),
                  corpus=np.array([u.corpus for u in fs.utterances]))
    if fs.dimension_scales:  # raw values on each corpus' scale (NaN where missing) and that scale
        arrays.update({k: np.array([np.nan if getattr(u, k) is None else getattr(u, k) for u in fs.utterances])
                       for k in _DIMENSION_FIELDS})
        arrays[_SCALE_FIELD] = np.array([u.dimension_scale or (np.nan, np.nan) for u in fs.utterances], dtype=float)
    with atomic_output(out, needed=sum(a.nbytes for a in arrays.values()) + 64 * 1024) as tmp:
        with open(tmp, "wb") as fh:  # a file object: numpy adds no suffix to the temporary name
            np.savez(fh, **arrays)
    return out
