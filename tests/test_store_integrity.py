"""Integrity: checksums on every dataset, one line naming the file and the fix on any damage."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import featstore.extract as ex
from cli import app
from featstore.store import StoreError, export_layer, list_stores, open_store, parts_dir, store_info, verify_store
from tests.test_extract import LENGTHS, write_corpus

runner = CliRunner()


def flip(path: Path, offset: int, n: int = 64) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def flip_in_dataset(path: Path, name: str) -> None:
    """Flip 64 bytes in the middle of the first chunk of dataset `name`."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    flip(path, info.byte_offset + info.size // 2 - 32)


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture
def store(tmp_path, tiny_models):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:6])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False)
    return manifest, kw, ex.extract_manifest(manifest, **kw).store


def test_every_dataset_is_checksummed(store):
    _, _, path = store
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names and all(f[n].fletcher32 for n in names), [n for n in names if not f[n].fletcher32]
        assert f.attrs["format_version"] == 3
        assert all(f.attrs.get_id(k).dtype.kind != "O" for k in f.attrs)  # no variable-length strings
        assert f["pooled/mean"].attrs["sha256"].shape == (5,)           # one digest per layer
    data = path.read_bytes()
    assert data[8] == 3 and b"GCOL" not in data                        # 1.10 superblock, no global heap
    info = store_info(path)
    assert info["checksums"] and info["format_version"] == 3 and info["digest"] == open_store(path).digest
    assert verify_store(path).ok and not verify_store(path).partial


def test_damaged_pooled_data_is_never_read_silently(store, tmp_path):
    manifest, kw, path = store
    flip_in_dataset(path, "pooled/mean")
    with pytest.raises(StoreError, match=f"{path}: damaged.*delete it and re-run"):
        export_layer(path, 0, tmp_path / "x.npz")
    with pytest.raises(StoreError, match="checksum"):
        open_store(path).pooled_all("mean")
    with pytest.raises(StoreError, match=str(path)):
        ex.extract_manifest(manifest, **kw)                        # a no-op re-run does not vouch for it
    report = verify_store(path)
    assert not report.ok and len(report.damaged) == 1 and "/pooled/mean" in report.damaged[0]
    code, out = cli("store", "export", path, "--layer", "0", "--out", tmp_path / "y.npz")
    assert code == 2 and out.count("error:") == 1 and str(path.name) in out
    code, out = cli("store", "verify", path)
    assert code == 2 and "damaged: " in out and "/pooled/mean" in out
    np.testing.assert_array_equal(open_store(path).pooled(1).shape, (6, 16))  # intact chunks still read


def test_damaged_part_names_the_part_and_rerun_recovers(tmp_path, tiny_models, monkeypatch):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:6])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False,
              checkpoint_seconds=0)

    def die(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "assemble", die)
    with pytest.raises(KeyboardInterrupt):
        ex.extract_manifest(manifest, **kw)
    monkeypatch.undo()
    parts = sorted(parts_dir(tmp_path / "cache" / f"local--{tiny_models['layer'].name}" / "toy.h5").glob("part-*"))
    assert len(parts) == 6
    flip_in_dataset(parts[2], "pooled/mean")
    with pytest.raises(StoreError, match=f"{parts[2]}: damaged.*delete the part and re-run; the store re-assembles"):
        ex.extract_manifest(manifest, **kw)
    assert len(list(parts[0].parent.glob("part-*"))) == 6          # nothing was lost to the failure
    parts[2].unlink()
    res = ex.extract_manifest(manifest, **kw)
    assert res.extracted == 1 and res.already == 5 and len(open_store(res.store)) == 6


def test_damaged_metadata_is_one_line(store):
    _, _, path = store
    data = path.read_bytes()
    at = data.index(b'"dtype": "float32"')                        # inside the config attribute
    flip(path, at, 8)
    code, out = cli("store", "info", path)
    assert code == 2 and out.count("error:") == 1 and len(out.strip().splitlines()) == 1, out
    flip(path, 0, 64)                                              # the superblock
    code, out = cli("store", "info", path)
    assert code == 2 and "damaged or not readable" in out and len(out.strip().splitlines()) == 1, out
    code, out = cli("store", "ls", "--cache", path.parent.parent)
    assert code == 0 and "damaged or" in out


def _as_format_1(src: Path, dst: Path) -> None:
    """The same store as ser wrote it before checksums: variable-length strings, no filters."""
    import json

    with h5py.File(src, "r") as f, h5py.File(dst, "w") as out:
        for key, value in f.attrs.items():
            if key != "digest":                                    # format 1 had no digest
                out.attrs[key] = value
        out.attrs["format_version"] = 1
        out.attrs["config"] = json.dumps({**json.loads(f.attrs["config"]), "format_version": 1}, sort_keys=True)

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if data.dtype.kind == "S":
                    out.create_dataset(name, data=[v.decode() for v in data], dtype=h5py.string_dtype("utf-8"))
                else:
                    out.create_dataset(name, data=data)

        f.visititems(copy)


def test_format_1_store_reads_and_is_reported_unverified(store, tmp_path):
    manifest, kw, path = store
    before = open_store(path).pooled_all()
    old = path.with_name("old.h5")
    _as_format_1(path, old)
    path.unlink()
    old.rename(path)
    fs = open_store(path)
    np.testing.assert_array_equal(fs.pooled_all(), before)
    assert not fs.checksums and not store_info(path)["checksums"]
    report = verify_store(path)
    assert report.ok and report.unverified
    code, out = cli("store", "info", path)
    assert code == 0 and "unverified" in out
    code, out = cli("store", "verify", path)
    assert code == 0 and "no checksums" in out
    assert "unverified" in list_stores(path.parent.parent)[0]["status"]
    grown = write_corpus(tmp_path / "audio", LENGTHS)              # an old store is extended, not refused
    res = ex.extract_manifest(grown, **kw)
    assert res.extracted == len(LENGTHS) - 6 and res.already == 6
    fs = open_store(res.store)
    assert fs.checksums and len(fs) == len(LENGTHS)
    np.testing.assert_array_equal(fs.pooled_all()[:6], before)


def test_digest_is_recorded_and_means_the_features(store, tmp_path):
    _, _, path = store
    fs = open_store(path)
    digest = fs.digest
    assert len(digest) == 64 and int(digest, 16) >= 0
    with h5py.File(path, "r") as f:
        assert f.attrs["digest"].decode() == digest                 # recorded when assembled
    old = path.with_name("old.h5")                                   # a format-1 copy: computed, the same
    _as_format_1(path, old)
    with h5py.File(old, "r") as f:
        assert "digest" not in f.attrs
    assert open_store(old).digest == digest
    other = path.with_name("other.h5")                               # one value changed: another digest
    _as_format_1(path, other)
    with h5py.File(other, "r+") as f:
        f["pooled/std"][3, 2, 5] += 1e-3
    assert open_store(other).digest != digest


def test_damaged_global_heap_of_a_format_2_store_is_one_line_not_a_hang(tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    import featstore.store as st
    from bench.fuzz_store import as_format_2, make_store

    path = tmp_path / "cache" / "tiny" / "toy.h5"
    path.parent.mkdir(parents=True)
    as_format_2(make_store(tmp_path / "new" / "toy.h5"), path)
    data = bytearray(path.read_bytes())
    data[data.index(b"GCOL") + 10] ^= 1                          # the global heap's collection size
    path.write_bytes(bytes(data))
    with pytest.raises(subprocess.TimeoutExpired):               # plain HDF5 loops forever on it
        subprocess.run([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1]); "
                        "[f.attrs[k] for k in f.attrs]", str(path)], timeout=5, capture_output=True)
    monkeypatch.setattr(st, "OLD_FORMAT_TIMEOUT", 3.0)
    t0 = time.perf_counter()
    with pytest.raises(StoreError, match=f"{path}: damaged or not readable .*did not finish.*delete it and re-run"):
        open_store(path)
    report = verify_store(path)
    assert not report.ok and "did not finish" in report.damaged[0]
    code, out = cli("store", "info", path)
    assert code == 2 and len(out.strip().splitlines()) == 1 and "did not finish" in out, out
    code, out = cli("store", "ls", "--cache", path.parent.parent)
    assert code == 0 and "damaged or" in out
    assert time.perf_counter() - t0 < 40
