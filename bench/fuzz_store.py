"""Bit-flip fuzz of a feature store: every flip is harmless or refused in one line; none is silent, none hangs.

A small store of the current format (12 utterances, 5 layers x 16, pooled mean/std, frame layer 1,
one skipped entry; about 25 KiB) is written with featstore.store's own writers (no model needed).
Each flip changes one bit of a copy of it; the damaged copy is then read in a forked child the way
ser reads a store: `open_store` (attributes, config, utterances, skipped, n_frames, n_samples),
`digest`, `pooled(k)` and `pooled_all` of mean and std, the frames of every utterance, and last
`verify_store`. Each flip is one of

    harmless  every read equals the intact store's, and verify_store finds nothing
    refused   a StoreError of one line naming the file (by a read, or by verify_store)
    silent    a read differs from the intact store's without an error            must be 0
    hang      the child gave no answer within --timeout seconds                   must be 0
    error     any other exception, or an error of several lines (a traceback)     must be 0
    crash     the child died (a signal inside HDF5)                               must be 0

Positions: every byte of the first --head bytes (where the superblock and root header live), one
random bit each, plus --flips random positions over the whole file; seeded.

    python bench/fuzz_store.py --flips 600 [--head 4096] [--seed 0] [--timeout 10] [--format 2]

`--format 2` fuzzes the same store written as ser wrote it before format 3 (for comparison: its
unchecksummed metadata is where silent flips and hangs came from).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from featstore import store as st  # noqa: E402
from featstore.corpora.base import Utterance  # noqa: E402

KINDS = ("harmless", "refused", "silent", "hang", "error", "crash")


def make_store(path: Path, *, n: int = 12, layers: int = 5, hidden: int = 16, seed: int = 0) -> Path:
    """A small finished store at `path`, assembled from two parts as `ser extract` does."""
    rng = np.random.default_rng(seed)
    utts = [Utterance(id=f"toy-{i:03d}", path=f"/corpus/toy/{i:03d}.wav", corpus="toy", language="en",
                      speaker=f"toy-{i % 3}", gender=("female", "male", None)[i % 3], label=("ang", "hap", "neu")[i % 3],
                      label_raw=f"0{i % 3}", text=f"sentence {i}" if i % 2 else None, duration=1.0 + i / 8,
                      sample_rate=16000, start=None if i % 4 else 0.5, end=None if i % 4 else 1.5 + i / 8)
            for i in range(n)]
    n_frames = rng.integers(3, 9, n)
    config = dict(model_id="tiny", revision=None, weights_sha256="ab" * 32, model_type="wav2vec2", dtype="float32",
                  frame_layers=[1], max_seconds=20.0, sample_rate=16000, do_normalize=True, num_layers=layers,
                  hidden_size=hidden, layer_convention="hidden_states[k]", format_version=st.FORMAT_VERSION)
    for part in (slice(0, n // 2), slice(n // 2, n)):
        u, nf = utts[part], n_frames[part]
        batch = st.Batch(u, rng.standard_normal((len(u), layers, hidden)).astype(np.float32),
                         rng.random((len(u), layers, hidden)).astype(np.float32), nf * 320, nf,
                         {1: [rng.standard_normal((int(t), hidden)).astype(np.float16) for t in nf]},
                         [st.Skipped("toy-zz", "/corpus/toy/zz.wav", "too short")] if part.start else [])
        st.write_part(st.new_part_path(path, 0), batch, config)
    return st.assemble(path, config, corpus="toy")


def as_format_2(src: Path, dst: Path) -> Path:
    """The same store as ser wrote it before format 3: HDF5 1.8 objects (v1 B-tree chunk indexes),
    variable-length string attributes (the global heap), no digests."""
    import h5py

    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver=("v108", "latest")) as out:
        for key in f.attrs:
            if key != "digest":
                value = st._get_str(f, key)
                out.attrs[key] = value.replace('"format_version": 3', '"format_version": 2') if key == "config" \
                    else 2 if key == "format_version" else value

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                out.create_dataset(name, data=obj[()], chunks=obj.chunks, fletcher32=True)

        f.visititems(copy)
    return dst


def signature(path: Path) -> dict[str, str]:
    """Everything ser reads from a store, each as a short sha256."""
    fs = st.open_store(path)
    parts: dict[str, bytes] = {
        "config": json.dumps(fs.config, sort_keys=True).encode(),
        "attrs": repr(sorted((k, str(v)) for k, v in fs.attrs.items() if k != "digest")).encode(),
        "utterances": repr([u.to_dict() for u in fs.utterances]).encode(),
        "skipped": repr(fs.skipped).encode(),
        "n_frames": fs.n_frames.tobytes(), "n_samples": fs.n_samples.tobytes(),
        "shape": repr((len(fs), fs.num_layers, fs.hidden_size, fs.frame_layers)).encode(),
        "digest": fs.digest.encode(),
    }
    for stat in ("mean", "std"):
        parts[f"pooled_all/{stat}"] = fs.pooled_all(stat).tobytes()
        for k in range(fs.num_layers):
            parts[f"pooled/{stat}/{k}"] = fs.pooled(k, stat).tobytes()
    for k in fs.frame_layers:
        parts[f"frames/{k}"] = b"".join(x.tobytes() + repr(x.shape).encode() for _, x in fs.iter_frames(k))
    return {k: hashlib.sha256(v).hexdigest()[:16] for k, v in parts.items()}


def classify(path: Path, original: dict[str, str]) -> tuple[str, str]:
    """(kind, detail) of reading the damaged store at `path` against the intact store's signature."""
    try:
        got = signature(path)
    except st.StoreError as e:
        msg = str(e)
        return ("refused" if "\n" not in msg and str(path) in msg else "error"), msg
    except Exception as e:  # anything but a StoreError is a bug
        return "error", f"{type(e).__name__}: {e}"
    differ = sorted(k for k in original if got.get(k) != original[k])
    if differ:
        return "silent", "reads differ: " + ", ".join(differ)
    try:
        report = st.verify_store(path)
    except Exception as e:
        return "error", f"verify_store: {type(e).__name__}: {e}"
    if not report.ok:
        lines = report.damaged
        return ("refused" if all("\n" not in x for x in lines) else "error"), "verify_store: " + lines[0]
    return "harmless", ""


def _child(conn, image: bytes, flips: list[tuple[int, int]], start: int, original: dict, workdir: str) -> None:
    """Apply each flip from `start` on to a copy of `image`, classify it, send (index, kind, detail)."""
    for i in range(start, len(flips)):
        offset, bit = flips[i]
        data = bytearray(image)
        data[offset] ^= 1 << bit
        path = Path(workdir) / f"store-{i}.h5"
        path.write_bytes(bytes(data))
        kind, detail = classify(path, original)
        path.unlink(missing_ok=True)
        conn.send((i, kind, detail[:400]))
    conn.close()


def fuzz(store: Path, flips: list[tuple[int, int]], *, timeout: float = 10.0,
         on_result=None) -> tuple[Counter, dict[str, list[tuple[int, int, str]]]]:
    """Classify every (offset, bit) flip of `store`, reading each damaged copy in a forked child.

    One child works through the flips in turn; a child that answers nothing within `timeout` s is
    killed (that flip: hang) and a new one goes on with the next flip. Returns the counts and, per
    kind, the (offset, bit, detail) of its flips.
    """
    image = store.read_bytes()
    original = signature(store)
    ctx = mp.get_context("fork")
    counts: Counter = Counter({k: 0 for k in KINDS})
    examples: dict[str, list] = {k: [] for k in KINDS}
    workdir = tempfile.mkdtemp(prefix="fuzz-store-", dir=store.parent)
    i = 0
    try:
        while i < len(flips):
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(send, image, flips, i, original, workdir), daemon=True)
            child.start()
            send.close()
            while i < len(flips):
                if not recv.poll(timeout):
                    kind, detail = "hang", f"no answer in {timeout:g} s"
                    child.kill()
                else:
                    try:
                        j, kind, detail = recv.recv()
                        assert j == i
                    except EOFError:
                        child.join()
                        kind, detail = "crash", f"child died (exit {child.exitcode})"
                counts[kind] += 1
                examples[kind].append((*flips[i], detail))
                if on_result:
                    on_result(i, kind, detail)
                i += 1
                if kind in ("hang", "crash"):
                    break
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join()
            recv.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return counts, examples


def positions(size: int, *, flips: int, head: int, seed: int) -> list[tuple[int, int]]:
    """Every byte of the first `head` bytes (a random bit each) and `flips` random (offset, bit) over the file."""
    rng = random.Random(seed)
    out = [(offset, rng.randrange(8)) for offset in range(min(head, size))]
    out += [(rng.randrange(size), rng.randrange(8)) for _ in range(flips)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=600, help="random flips over the whole file")
    ap.add_argument("--head", type=int, default=4096, help="flip every byte of the first HEAD bytes too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a child counts as hung")
    ap.add_argument("--format", type=int, default=st.FORMAT_VERSION, choices=(2, st.FORMAT_VERSION),
                    help="fuzz a store of this format")
    ap.add_argument("--show", type=int, default=3, help="examples printed per kind")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="fuzz-store-") as tmp:
        store = make_store(Path(tmp) / "toy.h5")
        if args.format == 2:
            # its metadata is read in a child first; that child must give up before the fuzz's own timeout
            st.OLD_FORMAT_TIMEOUT = min(st.OLD_FORMAT_TIMEOUT, args.timeout / 2)
            old = as_format_2(store, Path(tmp) / "old.h5")
            store.unlink()
            store = old.rename(store)
        flips = positions(store.stat().st_size, flips=args.flips, head=args.head, seed=args.seed)
        t0 = time.perf_counter()
        counts, examples = fuzz(store, flips, timeout=args.timeout)
        wall = time.perf_counter() - t0
        print(f"store: format {args.format}, {store.stat().st_size} bytes; {len(flips)} flips "
              f"({min(args.head, store.stat().st_size)} head bytes + {args.flips} random, seed {args.seed}), "
              f"{wall:.1f} s")
        print("  ".join(f"{k} {counts[k]}" for k in KINDS))
        for kind in KINDS:
            for offset, bit, detail in examples[kind][:args.show if kind != "harmless" else 0]:
                print(f"  {kind}: byte {offset} bit {bit}: {detail}")
    return 0 if counts["silent"] == counts["hang"] == counts["error"] == counts["crash"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
