"""Store metadata and content under attack: a moved chunk address, swapped chunk bytes, an edited config,
and random bit flips are each refused in one line, never read silently, never a hang (issue 28)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.fuzz_store import as_format_2, fuzz, make_store, positions
from cli import app
from featstore.store import StoreError, open_store, verify_store

runner = CliRunner()


@pytest.fixture
def store(tmp_path) -> Path:
    return make_store(tmp_path / "cache" / "tiny" / "toy.h5")


def one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(error.value)
    assert "\n" not in msg and str(path) in msg and "re-run" in msg, msg
    return msg


def chunks(path: Path, name: str) -> list[tuple[int, int]]:
    """(byte offset, stored size) of every chunk of dataset `name`."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        return [(i.byte_offset, i.size) for i in map(ds.id.get_chunk_info, range(ds.id.get_num_chunks()))]


def swap_chunk_addresses(path: Path, name: str = "pooled/mean") -> None:
    """Swap the addresses of chunks 0 and 1 in the dataset's chunk index (the index bytes, nothing else)."""
    (a, _), (b, _) = chunks(path, name)[:2]
    data = bytearray(path.read_bytes())
    at_a, at_b = data.find(struct.pack("<Q", a)), data.find(struct.pack("<Q", b))
    assert data.count(struct.pack("<Q", a)) == data.count(struct.pack("<Q", b)) == 1
    data[at_a:at_a + 8], data[at_b:at_b + 8] = struct.pack("<Q", b), struct.pack("<Q", a)
    path.write_bytes(bytes(data))


def swap_chunk_bytes(path: Path, name: str = "pooled/mean") -> None:
    """Swap the stored bytes of chunks 0 and 1 (each keeps a valid Fletcher-32 checksum)."""
    (a, size_a), (b, size_b) = chunks(path, name)[:2]
    assert size_a == size_b
    data = bytearray(path.read_bytes())
    data[a:a + size_a], data[b:b + size_b] = data[b:b + size_b], data[a:a + size_a]
    path.write_bytes(bytes(data))


def test_swapped_chunk_addresses_are_refused(store, tmp_path):
    before = open_store(store).pooled_all("mean")
    old = as_format_2(store, tmp_path / "old.h5")      # the same edit on a format 2 store moves the data silently
    swap_chunk_addresses(old)
    np.testing.assert_array_equal(open_store(old).pooled(0), before[:, 1])
    assert verify_store(old).ok                          # ... and verify cannot see it: no digest, index unchecksummed
    swap_chunk_addresses(store)                          # format 3: the chunk index is checksummed
    for read in (lambda: open_store(store).pooled(0), lambda: open_store(store).pooled_all("mean")):
        with pytest.raises(StoreError) as e:
            read()
        assert "checksum" in one_line(e, store)
    report = verify_store(store)
    assert not report.ok and len(report.damaged) == 1 and "/pooled/mean" in report.damaged[0]
    result = runner.invoke(app, ["store", "verify", str(store)])
    assert result.exit_code == 2 and "Traceback" not in result.output and "/pooled/mean" in result.output


def test_swapped_chunk_bytes_are_refused_by_the_digest(store):
    before = open_store(store).pooled_all("mean")
    swap_chunk_bytes(store)
    with h5py.File(store, "r") as f:                     # every checksum still passes: HDF5 reads the swap
        np.testing.assert_array_equal(f["pooled/mean"][:, 0], before[:, 1])
    fs = open_store(store)
    for read in (lambda: fs.pooled(0), lambda: fs.pooled_all("mean"), lambda: fs.pooled(1, "mean+std")):
        with pytest.raises(StoreError) as e:
            read()
        assert "content digest mismatch" in one_line(e, store) and "/pooled/mean layer" in str(e.value)
    np.testing.assert_array_equal(fs.pooled(2), before[:, 2])   # intact layers still read
    report = verify_store(store)
    assert not report.ok and "/pooled/mean layer 0: content digest mismatch" in report.damaged[0]


def test_edited_config_is_refused(store, tmp_path):
    old = as_format_2(store, tmp_path / "old.h5")
    for path in (store, old):
        data = path.read_bytes()
        assert data.count(b'"dtype": "float32"') == 1
        path.write_bytes(data.replace(b'"dtype": "float32"', b'"dtype": "float16"'))
    assert open_store(old).config["dtype"] == "float16"   # format 2: read as edited; verify says it is unchecksummed
    assert verify_store(old).ok and verify_store(old).partial
    with pytest.raises(StoreError) as e:
        open_store(store)
    assert "checksum" in one_line(e, store)
    assert not verify_store(store).ok
    result = runner.invoke(app, ["store", "info", str(store)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "error:" in result.output


def test_bit_flips_are_harmless_or_refused_never_silent_never_a_hang(store):
    flips = positions(store.stat().st_size, flips=250, head=1024, seed=28)   # ~2 s idle, ~10 s busy
    counts, examples = fuzz(store, flips, timeout=10)
    assert counts["silent"] == 0, examples["silent"][:3]
    assert counts["hang"] == 0, examples["hang"][:3]
    assert counts["error"] == counts["crash"] == 0, (examples["error"] + examples["crash"])[:3]
    assert counts["refused"] > len(flips) // 2 and counts["harmless"] > 0, counts   # both kinds really occur
    assert sum(counts.values()) == len(flips)


def test_fuzz_tells_silent_flips_from_refused_ones(store, tmp_path):
    """The classifier itself: a flip that changes a value without an error is counted silent."""
    old = as_format_2(store, tmp_path / "old.h5")
    shutil.copy(old, tmp_path / "keep.h5")
    at = old.read_bytes().index(b'"hidden_states[k]"') + 2   # inside the unchecksummed config of format 2
    counts, examples = fuzz(old, [(at, 0)], timeout=10)
    assert counts["silent"] == 1 and "config" in examples["silent"][0][2], (counts, examples)
