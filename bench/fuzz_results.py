"""Random bit flips over a predictions file and a saved probe: is every flip harmless or refused?

    python bench/fuzz_results.py [--flips 300] [--seed 0] [--timeout 10]

Builds a predictions Parquet file (with its `.sha256` sidecar, as `ser probe` writes it) and a
saved probe (probe.json, probe.safetensors, probe.sha256, as `--save-probe` writes it) in a
temporary directory. For each target, `--flips` times (seeded): flip one random bit of one of its
files (a byte chosen uniformly over all of the target's bytes, so a file is hit in proportion to
its size), read it back in a forked child (`read_predictions` / `load_probe`), restore the byte.

Each flip is classified:
  harmless   the read succeeds and equals the pristine read
  refused    one `SerError` line (e.g. "checksum mismatch ...; re-run ...")
  silent     the read succeeds with different content and no error   (must be 0)
  traceback  any other exception                                      (must be 0)
  hang       the child runs past --timeout seconds and is killed      (must be 0)

Prints one table of counts per target and exits 1 when silent, traceback or hang is not 0.
`--without-checksums` turns the digest checks off (as before issue 28) to show what they catch:
the parsers' own validation alone lets flips through silently.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

KINDS = ("harmless", "refused", "silent", "traceback", "hang")


def make_predictions(directory: Path) -> Path:
    """A predictions file like a small probe's: 3 layers x 2 folds of 60 utterances, 4 classes."""
    from classifiers.results.predictions import block, write_predictions
    from featstore.corpora.base import Utterance

    rng = np.random.default_rng(0)
    labels = ["angry", "happy", "neutral", "sad"]
    utts = [Utterance(id=f"toy-{i:03d}", path="", corpus="toy", language="en", speaker=f"spk{i % 6}", gender=None,
                      label=labels[i % 4], label_raw="") for i in range(120)]
    blocks = []
    for layer in (0, 1, 2):
        for fold, rows in (("f0", np.arange(0, 60)), ("f1", np.arange(60, 120))):
            proba = rng.dirichlet(np.ones(4), size=len(rows))
            blocks.append(block(utts, rows, np.asarray(labels)[proba.argmax(1)], proba=proba, classes=labels,
                                fold=fold, seed=0, layer=layer, classifier="logreg", train_set="toy",
                                test_set="toy"))
    return write_predictions(blocks, directory / "probe_predictions.parquet")


def make_probe(directory: Path) -> Path:
    from classifiers.finetuning.inference import save_probe

    rng = np.random.default_rng(1)
    d = 32
    return save_probe(directory / "probe", "facebook/wav2vec2-base", 7, "mean", rng.normal(size=d),
                      rng.uniform(0.5, 2.0, d), rng.normal(size=(4, d)), rng.normal(size=4),
                      ["angry", "happy", "neutral", "sad"], max_seconds=12.5, weights_sha256="ab" * 32,
                      extra=dict(trained_on=["toy"], C=1.0))


def read_predictions_canonical(path: Path):
    from classifiers.results.predictions import read_predictions

    cols = read_predictions(path)
    return {k: [repr(x) for x in v.tolist()] for k, v in sorted(cols.items())}


def read_probe_canonical(path: Path):
    from classifiers.finetuning.inference import load_probe

    p = load_probe(path)
    return dict(backbone_id=p.backbone_id, layer=p.layer, stat=p.stat, classes=p.classes, max_seconds=p.max_seconds,
                weights_sha256=p.weights_sha256, extra=repr(p.extra),
                **{k: getattr(p, k).tobytes() for k in ("scaler_mean", "scaler_scale", "coef", "intercept")})


def _child(reader, path, conn) -> None:
    from featstore.errors import SerError

    try:
        conn.send(("ok", reader(path)))
    except SerError as e:
        conn.send(("refused" if "\n" not in str(e) else "traceback", f"{type(e).__name__}: {e}"))
    except BaseException as e:  # noqa: BLE001 - every other exception is what the fuzz looks for
        conn.send(("traceback", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def read_in_child(reader, path: Path, timeout: float):
    """(status, value) of `reader(path)` in a forked child: "ok" + value, "refused"/"traceback" + message,
    or "hang" when it runs past `timeout` seconds."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(reader, path, child))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        proc.join()
        return "hang", f"no answer within {timeout:g} s"
    try:
        status, value = parent.recv()
    except EOFError:
        status, value = "traceback", f"child died (exit {proc.exitcode})"
    proc.join(timeout)
    return status, value


def fuzz(name: str, files: list[Path], reader, target: Path, flips: int, rng: np.random.Generator,
         timeout: float) -> dict:
    baseline = reader(target)
    sizes = np.array([f.stat().st_size for f in files])
    counts = {k: 0 for k in KINDS}
    per_file = {f.name: {k: 0 for k in KINDS} for f in files}
    examples: dict[str, str] = {}
    for _ in range(flips):
        pos = int(rng.integers(sizes.sum()))
        i = int(np.searchsorted(np.cumsum(sizes), pos, side="right"))
        offset = pos - int(sizes[:i].sum())
        bit = int(rng.integers(8))
        f = files[i]
        raw = bytearray(f.read_bytes())
        original = raw[offset]
        raw[offset] ^= 1 << bit
        f.write_bytes(bytes(raw))
        try:
            status, value = read_in_child(reader, target, timeout)
        finally:
            raw[offset] = original
            f.write_bytes(bytes(raw))
        kind = ({"ok": "harmless" if status == "ok" and value == baseline else "silent"}.get(status, status))
        counts[kind] += 1
        per_file[f.name][kind] += 1
        examples.setdefault(kind, f"{f.name} byte {offset} bit {bit}: {value if status != 'ok' else 'read ok'}")
    assert reader(target) == baseline, "the files were not restored"
    return dict(name=name, counts=counts, per_file=per_file, examples=examples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=300, help="flips per target (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a read counts as a hang")
    ap.add_argument("--without-checksums", action="store_true",
                    help="skip the sha256 checks (the state before issue 28), for comparison")
    args = ap.parse_args(argv)
    if args.without_checksums:
        import classifiers.finetuning.inference as predict
        import classifiers.results.predictions as predictions

        predictions.verify_predictions = lambda path, sha256=None: ""
        predict.verify_probe = lambda directory: None
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ser-fuzz-"))
    t0 = time.monotonic()
    try:
        pred = make_predictions(work)
        probe = make_probe(work)
        from classifiers.results.predictions import sidecar

        reports = [
            fuzz("predictions", [pred, sidecar(pred)], read_predictions_canonical, pred, args.flips, rng, args.timeout),
            fuzz("saved probe", [probe / "probe.json", probe / "probe.safetensors", probe / "probe.sha256"],
                 read_probe_canonical, probe, args.flips, rng, args.timeout),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.flips} seeded bit flips per target (seed {args.seed}, hang after {args.timeout:g} s"
          f"{', WITHOUT checksums' if args.without_checksums else ''}), "
          f"{time.monotonic() - t0:.1f} s")
    print(f"{'target / file':34s}" + "".join(f"{k:>11s}" for k in KINDS))
    bad = 0
    for r in reports:
        print(f"{r['name']:34s}" + "".join(f"{r['counts'][k]:11d}" for k in KINDS))
        for fname, c in r["per_file"].items():
            print(f"  {fname:32s}" + "".join(f"{c[k]:11d}" for k in KINDS))
        bad += r["counts"]["silent"] + r["counts"]["traceback"] + r["counts"]["hang"]
    for r in reports:
        for kind, ex in r["examples"].items():
            print(f"e.g. {r['name']}, {kind}: {ex}")
    print("silent + traceback + hang:", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
