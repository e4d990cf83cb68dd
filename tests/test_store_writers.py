"""One writer per store, part names that cannot collide, full disks and dead runs' temp files."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featstore.extract as ex
import featstore.store as st
from featstore.store import DiskFull, StoreError, open_store, parts_dir
from tests.test_extract import LENGTHS, assert_same_store, write_corpus


def leftovers(cache: Path) -> list[str]:
    """Temporary files anywhere under the cache."""
    return sorted(p.name for p in cache.rglob(".*tmp-*"))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_second_writer_waits_or_says_why(tmp_path, tiny_models):
    from filelock import FileLock

    manifest = write_corpus(tmp_path / "audio", LENGTHS[:2])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False)
    store = tmp_path / "cache" / f"local--{tiny_models['layer'].name}" / "toy.h5"
    store.parent.mkdir(parents=True)
    said = []
    with FileLock(str(store) + ".lock"):
        with pytest.raises(StoreError, match="being written by another ser extract"):
            ex.extract_manifest(manifest, **kw, lock_timeout=0.3, on_wait=said.append)
    assert len(said) == 1 and "waiting" in said[0] and str(store) in said[0]
    assert ex.extract_manifest(manifest, **kw, lock_timeout=0.3).extracted == 2


def test_part_names_cannot_collide(tmp_path):
    store = tmp_path / "toy.h5"
    a, b = st.new_part_path(store, 0), st.new_part_path(store, 0)
    assert a != b and f"-{os.getpid()}-" in a.name
    a.touch()
    c = st.new_part_path(store, 0)
    assert c.name.split("-")[2] == "000002"                       # after the existing part: it wins on assembly


def test_only_dead_writers_temps_are_cleaned(tmp_path):
    store = tmp_path / "toy.h5"
    parts_dir(store).mkdir(parents=True)
    dead, live = dead_pid(), os.getppid()
    files = {name: tmp_path / name for name in (f".toy.h5.tmp-{dead}-aaaa", f".toy.h5.tmp-{dead}",
                                                 f".toy.h5.tmp-{live}-bbbb", f".other.h5.tmp-{dead}-cccc")}
    files["part"] = parts_dir(store) / f".part-000-000001-{dead}-dddd.h5.tmp-{dead}-eeee"
    for p in files.values():
        p.touch()
    removed = st.clean_dead_temps(store)
    assert sorted(p.name for p in removed) == sorted([f".toy.h5.tmp-{dead}-aaaa", f".toy.h5.tmp-{dead}",
                                                      files["part"].name])
    assert files[f".toy.h5.tmp-{live}-bbbb"].exists() and files[f".other.h5.tmp-{dead}-cccc"].exists()
    assert not parts_dir(store).exists()                          # an empty parts directory goes too


def test_enospc_at_write_time_is_one_line_and_leaves_nothing(tmp_path, tiny_models, monkeypatch):
    """Where no small disk can be mounted: the write itself fails with ENOSPC."""
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:3])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False)
    real_open = open

    def full_disk_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        if "w" in mode and ".tmp-" in str(file):
            def fail(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = fail
        return fh

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(DiskFull, match=r"disk full at .*: .* needed"):
        ex.extract_manifest(manifest, **kw)
    monkeypatch.undo()
    assert leftovers(tmp_path / "cache") == [] and not list((tmp_path / "cache").rglob("*.parts"))
    assert len(open_store(ex.extract_manifest(manifest, **kw).store)) == 3


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root to mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {out.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` until about `leave` bytes are free."""
    import shutil

    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
    return filler


def test_full_disk_one_line_nothing_left_then_completes(tmp_path, tiny_models, small_disk):
    manifest = write_corpus(tmp_path / "audio", LENGTHS)
    kw = dict(model=str(tiny_models["layer"]), device="cpu", progress=False, frames="all")
    size = ex.extract_manifest(manifest, **kw, cache=tmp_path / "clean").store.stat().st_size
    cache = small_disk / "cache"
    # no room for even the part: refused before writing, nothing left behind
    filler = fill(small_disk, size // 4)
    with pytest.raises(DiskFull, match=f"disk full at {cache}"):
        ex.extract_manifest(manifest, **kw, cache=cache)
    assert leftovers(cache) == [] and not list(cache.rglob("*.parts"))
    # room for the part but not for the assembled store: the part is kept, no temp file
    filler.unlink()
    filler = fill(small_disk, size + size // 2)
    with pytest.raises(DiskFull, match="needed"):
        ex.extract_manifest(manifest, **kw, cache=cache)
    assert leftovers(cache) == [] and len(list(cache.rglob("part-*.h5"))) == 1
    filler.unlink()
    res = ex.extract_manifest(manifest, **kw, cache=cache)
    assert res.extracted == 0 and res.already == len(LENGTHS)     # the kept part was assembled
    assert leftovers(cache) == [] and len(open_store(res.store)) == len(LENGTHS)


JOB = """
import json, os, signal, sys
import featstore.store as st
from featstore.corpora.base import Manifest, Utterance
from featstore.extract import extract_manifest
spec = json.load(open(sys.argv[1]))
if spec.get("die_in_assembly"):
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    st._scatter = die
if spec.get("hold_until"):  # with the lock held, wait for the test to say go
    import time
    import featstore.extract as ex
    real = ex.hidden_states

    def held(*a, **k):
        print("HOLDING", flush=True)
        while not os.path.exists(spec["hold_until"]):
            time.sleep(0.02)
        return real(*a, **k)
    ex.hidden_states = held
m = Manifest("toy", spec["root"], [Utterance(**u) for u in spec["utts"]], [])
r = extract_manifest(m, model=spec["model"], cache=spec["cache"], device="cpu", progress=False,
                     checkpoint_seconds=0, on_wait=lambda line: print("WAIT", line, flush=True))
print("DONE", r.extracted, r.already)
"""


def job(tmp_path: Path, tiny_models, n: int, cache: Path, name: str, **extra) -> list[str]:
    manifest = write_corpus(tmp_path / "audio", [8000 + 997 * i for i in range(n)])
    spec = dict(root=str(tmp_path), model=str(tiny_models["layer"]), cache=str(cache),
                utts=[u.to_dict() for u in manifest.utterances], **extra)
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    (tmp_path / "job.py").write_text(JOB)
    return [sys.executable, str(tmp_path / "job.py"), str(tmp_path / f"{name}.json")]


@pytest.mark.slow
def test_two_concurrent_extractions_lose_nothing(tmp_path, tiny_models):
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    holding = job(tmp_path, tiny_models, 30, cache, "hold", hold_until=str(go))
    cmd = job(tmp_path, tiny_models, 30, cache, "spec")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(holding, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert first.stdout.readline().startswith("HOLDING")
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    waited = second.stdout.readline()
    go.touch()
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert "DONE 30 0" in out1 and "DONE 0 30" in out2
    assert waited.startswith("WAIT another ser extract is writing")
    assert leftovers(cache) == [] and not (cache / f"local--{tiny_models['layer'].name}" / "toy.h5.parts").exists()
    clean = tmp_path / "clean"
    assert subprocess.run(job(tmp_path, tiny_models, 30, clean, "clean"), env=env, capture_output=True).returncode == 0
    name = f"local--{tiny_models['layer'].name}/toy.h5"
    assert_same_store(cache / name, clean / name)


@pytest.mark.slow
def test_kill_9_during_assembly_then_next_run_completes_and_cleans(tmp_path, tiny_models):
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    dying = subprocess.run(job(tmp_path, tiny_models, 6, cache, "die", die_in_assembly=True), env=env,
                           capture_output=True, timeout=300)
    assert dying.returncode == -signal.SIGKILL
    slug = cache / f"local--{tiny_models['layer'].name}"
    assert [n.startswith(".toy.h5.tmp-") for n in leftovers(cache)] == [True]  # killed mid-assembly
    assert len(list((slug / "toy.h5.parts").glob("part-*.h5"))) == 6 and not (slug / "toy.h5").exists()
    again = subprocess.run(job(tmp_path, tiny_models, 6, cache, "again"), env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "DONE 0 6" in again.stdout, again.stderr
    assert leftovers(cache) == [] and not (slug / "toy.h5.parts").exists()
    fs = open_store(slug / "toy.h5")
    assert len(fs) == 6 and np.isfinite(fs.pooled_all()).all()
