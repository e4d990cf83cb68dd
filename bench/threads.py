"""Threads on a shared machine (issue 24): the two repros before and after `--threads`, under load and quiet.

The repros (a shared 2-core machine at load 5-9): `ser probe --corpus ravdess --layer 6 --classifier
xgboost` 413.6 s with the default threads, 25.9 s with OMP_NUM_THREADS=1; `ser extract --corpus
emovo` 132.7 s vs 38.6 s. Here, as whole fresh processes on data built in a temporary folder:

  probe     a synthetic 1440 x 13 x 768 RAVDESS store (`bench/probe.py`'s `write_synthetic_store`),
            `ser probe --corpus ravdess --layer 6 --classifier xgboost` (luna5, early stopping)
  extract   a synthetic EMOVO tree (`ser synth --like emovo`), `ser extract --corpus emovo` with a
            randomly initialised wav2vec2 (--hidden, 7 conv layers of --conv channels, 4 blocks)

each with four settings:

  before, default threads   the code before `featstore/threads.py` (a git worktree of the commit
                            before the one that added it), environment without thread variables
  before, OMP_NUM_THREADS=1 the repro's workaround
  after, default            this tree, no --threads (the CPUs this process may use)
  after, --threads 1

under load (--load N busy Python processes started here and killed afterwards, on top of whatever
else runs) and without them ("quiet": only what else runs on the machine; `uptime` is printed
before each block). A run past --timeout is stopped and shown as ">T" (a lower bound). Ratios are
of figures measured in this same run: each setting over the best of its block, and before/after.

    python bench/threads.py [--load 4] [--timeout 300] [--repeats 1] [--only probe|extract] [--no-quiet | --no-load]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "SER_THREADS")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def before_tree(tmp: Path, rev: str | None) -> Path:
    """A worktree of `rev` (default: the commit before featstore/threads.py was added)."""
    if rev is None:
        added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "featstore/threads.py"],
                               cwd=HERE, capture_output=True, text=True, check=True).stdout.split()
        if not added:
            raise SystemExit("featstore/threads.py is not committed: pass --before REV")
        rev = added[-1] + "~1"
    path = tmp / "before"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=HERE, check=True)
    return path


def build_model(path: Path, hidden: int, conv: int) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=2 * hidden, conv_dim=(conv,) * 7)
    Wav2Vec2Model(config).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(path)
    return path


class Load:
    """`n` busy processes (one core each when they get it) for the duration of the block."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(5 if self.n else 0)  # let the load average see them
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def timed(cmd: list[str], env: dict, cwd: Path, timeout: float) -> tuple[float, float, bool]:
    """(wall s, children's CPU s, finished) of one fresh process."""
    before = os.times()
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        done = True
        if out.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    except subprocess.TimeoutExpired:
        done = False
    wall = time.perf_counter() - t
    after = os.times()
    return wall, after.children_user + after.children_system - before.children_user - before.children_system, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", type=int, default=4, help="busy processes started for the loaded block (default 4)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before a run is stopped (shown as >T)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting; the best wall is shown")
    ap.add_argument("--only", choices=("probe", "extract"), default=None)
    ap.add_argument("--no-quiet", action="store_true", help="skip the block without added load")
    ap.add_argument("--no-load", action="store_true", help="skip the block under added load")
    ap.add_argument("--before", default=None, help="git revision of the 'before' code (default: the commit "
                                                   "before featstore/threads.py was added)")
    ap.add_argument("--emovo-n", type=int, default=588, help="synthetic EMOVO utterances (the corpus has 588)")
    ap.add_argument("--hidden", type=int, default=256, help="extraction model width")
    ap.add_argument("--conv", type=int, default=256, help="extraction model conv channels")
    ap.add_argument("--dim", type=int, default=768, help="probe store dimension")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from bench.probe import write_synthetic_store
    from featstore.threads import available_cpus

    with tempfile.TemporaryDirectory(prefix="ser-bench-threads-") as tmp:
        tmp = Path(tmp)
        old = before_tree(tmp, args.before)
        try:
            env0 = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
            env0.update(SER_CONFIG=str(tmp / "config.toml"), PYTHONDONTWRITEBYTECODE="1")
            repros = {}
            if args.only in (None, "probe"):
                store = tmp / "cache" / "synthetic" / "ravdess.h5"
                store.parent.mkdir(parents=True)
                write_synthetic_store(store, 1440, n_layers=13, dim=args.dim, seed=0)
                repros["probe"] = (lambda tag: ["probe", "--corpus", "ravdess", "--layer", "6", "--classifier",
                                                "xgboost", "--model", "synthetic", "--cache", str(tmp / "cache"),
                                                "--out", str(tmp / f"out-{tag}"), "--force", "--overwrite",
                                                "--db", str(tmp / f"db-{tag}.db")],
                                   f"1440 x 13 x {args.dim} store, layer 6, XGBoost, luna5")
            if args.only in (None, "extract"):
                model = build_model(tmp / "model", args.hidden, args.conv)
                subprocess.run([sys.executable, str(HERE / "cli.py"), "synth", "--like", "emovo", "--out",
                                str(tmp / "emovo"), "--n", str(args.emovo_n)], env=env0, check=True,
                               capture_output=True)
                repros["extract"] = (lambda tag: ["extract", "--corpus", "emovo", "--root", str(tmp / "emovo"),
                                                  "--model", str(model), "--cache", str(tmp / f"cache-{tag}")],
                                     f"synthetic EMOVO ({args.emovo_n} utterances), random wav2vec2 "
                                     f"(hidden {args.hidden}, conv {args.conv}, 4 blocks)")
            settings = [
                ("before, default threads", old, {}, []),
                ("before, OMP_NUM_THREADS=1", old, {"OMP_NUM_THREADS": "1"}, []),
                ("after, default", HERE, {}, []),
                ("after, --threads 1", HERE, {}, ["--threads", "1"]),
            ]
            print(f"CPUs this process may use: {available_cpus()} (os.cpu_count() {os.cpu_count()}); "
                  f"before = {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=old, capture_output=True, text=True).stdout.strip()}"
                  f", after = this tree", flush=True)
            blocks = ([] if args.no_load else [("under load", args.load)]) + ([] if args.no_quiet else [("quiet", 0)])
            table = {}
            for block, n in blocks:
                with Load(n):
                    print(f"\n{block} (+{n} busy processes): {uptime()}", flush=True)
                    for name, (cmd, what) in repros.items():
                        print(f"  {name}: {what}", flush=True)
                        for label, tree, extra_env, extra in settings:
                            runs = []
                            for r in range(args.repeats):
                                tag = f"{name}-{block}-{label}-{r}".replace(" ", "_").replace(",", "").replace("=", "")
                                runs.append(timed([sys.executable, str(tree / "cli.py"), *cmd(tag), *extra],
                                                  dict(env0, **extra_env), tmp, args.timeout))
                            wall, cpu, done = min(runs)
                            table[block, name, label] = (wall, cpu, done)
                            print(f"    {label:<28} {'' if done else '>'}{wall:7.1f} s wall {cpu:7.1f} s CPU", flush=True)
                    print(f"  after the block: {uptime()}", flush=True)
            print("\nratios (same run; '>' where a run hit --timeout, so the ratio is a lower bound):")
            for block, _ in blocks:
                for name in repros:
                    rows = {label: table[block, name, label] for label, *_ in settings}
                    best = min(w for w, _, _ in rows.values())
                    after, before = rows["after, default"], rows["before, default threads"]
                    fmt = "{}{:.2f}x"
                    print(f"  {block:<10} {name:<8} after default / best setting "
                          f"{fmt.format('' if after[2] else '>', after[0] / best)} (target <= 1.3); before default / "
                          f"after default {fmt.format('' if before[2] else '>', before[0] / after[0])}; "
                          f"after default / after --threads 1 {rows['after, default'][0] / rows['after, --threads 1'][0]:.2f}x")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=HERE, capture_output=True)


if __name__ == "__main__":
    main()
