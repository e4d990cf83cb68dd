"""Start-up of the commands that touch no model: median wall time of 5 runs each, in fresh processes,
and whether torch or transformers was imported (they must not be).

    python bench/startup.py [--runs 5] [--repo DIR]     # --repo: another checkout, e.g. a worktree of an older commit

Each run is `python -c "import cli; cli.main()" ARGS` with a private config, cache (one toy store) and
registry, so the figures do not depend on this machine's settings. Only ratios measured in one run
mean anything (CPU speed and load vary); `uptime` is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "sklearn", "matplotlib", "xgboost", "faiss")
COMMANDS = (("--help",), ("config", "show"), ("models",), ("corpora",), ("store", "ls"), ("store", "info", "{store}"),
            ("results", "ls"), ("probe", "--help"), ("extract", "--help"), ("finetune", "--help"),
            ("extract", "--corpus", "ravdess", "--root", "{root}", "--model", "{model}", "--device", "cpu"))
CODE = ("import sys, cli\n"
        "try:\n    cli.app(sys.argv[1:], prog_name='ser')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")


def toy_store(cache: Path) -> Path:
    import numpy as np

    from featstore.corpora.base import Utterance
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    utts = [Utterance(id=f"u{i}", path="", corpus="toy", language="en", speaker=f"s{i % 2}", gender=None,
                      label="happy" if i % 2 else "sad", label_raw="x") for i in range(4)]
    X = np.random.default_rng(0).normal(size=(4, 3, 8)).astype(np.float32)
    config = {"model_id": "toy/model", "frame_layers": [], "num_layers": 3, "hidden_size": 8, "weights_sha256": "ab" * 32}
    path = store_path(cache, "toy--model", "toy")
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(utts, X, np.abs(X), np.full(4, 16000), np.full(4, 50)), config)
    assemble(path, config, corpus="toy")
    return path


def extracted_corpus(tmp: Path, cache: Path) -> tuple[Path, Path]:
    """A 24-file synthetic RAVDESS and a tiny local wav2vec2, extracted once (the no-op re-run is timed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.synth import synthesize
    from tests.helpers import build_tiny_model

    root, model = tmp / "ravdess", build_tiny_model(tmp / "tiny")
    synthesize("ravdess", root, n=24, max_duration=1.0, sample_rate=16000)
    extract_manifest(load_manifest("ravdess", root, progress=False), model=str(model), cache=cache, device="cpu",
                     progress=False)
    return root, model


def measure(repo: Path, args: tuple[str, ...], env: dict, runs: int) -> tuple[float, str]:
    times, heavy = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", CODE, *args], cwd=env["SER_HOME_TMP"], env=env,
                           capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        heavy = next((line[6:] for line in r.stderr.splitlines() if line.startswith("HEAVY")), "?")
    return statistics.median(times), heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = toy_store(tmp / "cache")
        root, model = extracted_corpus(tmp, tmp / "cache")
        env = dict(os.environ, PYTHONPATH=str(args.repo.resolve()), SER_CONFIG=str(tmp / "ser.toml"),
                   SER_CACHE=str(tmp / "cache"), SER_DB=str(tmp / "ser.db"), SER_HOME_TMP=str(tmp),
                   HF_HUB_OFFLINE="1", COLUMNS="120")
        print(f"{args.repo.resolve()}  ({os.uname().nodename}; {os.getloadavg()[0]:.1f} load)")
        print(f"{'command':28s} {'median s':>9s}  heavy modules imported")
        for cmd in COMMANDS:
            argv = tuple(a.format(store=store, root=root, model=model) for a in cmd)
            median, heavy = measure(args.repo, argv, env, args.runs)
            name = "extract (no-op re-run)" if "--root" in cmd else " ".join(cmd)
            print(f"{name:28s} {median:9.2f}  {heavy or '-'}")


if __name__ == "__main__":
    main()
