"""Benchmark a study's cells on `local:2` (a Dask LocalCluster of 2 single-threaded worker processes)
against the sequential run (issue 27).

Data: a synthetic RAVDESS (`featstore.synth`, --utterances clips of at most 1 s at 16 kHz) extracted
once, before any timing, with a tiny random wav2vec2 (tests/helpers.py, 4 layers x 16 dimensions).
The study has 8 cells, all reading that one store: speaker-kfold:2..5 x seeds 1, 2, logistic
regression over every layer with C searched by inner folds (each cell single-threaded CPU work).

Measured one after the other in this process, each with a registry and a results folder of its own
(nothing re-used):

  sequential  `run_study(..., executor="local")` under `single_threaded()` (what a worker gets)
  local:2     `run_study(..., executor="local:2")`: cluster start-up + the 8 cell tasks

Reported: wall clock of each, their ratio (with and without the cluster's start-up), the cell
tasks' own seconds (measured on the workers), and the scheduling overhead per task: (2 x the
wall clock of the task phase - sum of the tasks' own seconds) / tasks, plus the round trip of an
empty task on the same cluster (--empty of them). `uptime`'s load is printed before and after:
other jobs share this machine, and a loaded machine slows the parallel run first.

With --ravdess-size the store is instead a RAVDESS-sized feature set written directly (bench/probe.py's
synthetic_ravdess: 1440 utterances of 24 actors x --layers x 768, no audio, no model): each cell is
then a real-sized default sweep (tens of seconds), where the cluster's fixed costs (start-up: worker
processes importing ser; shut-down) weigh little and the ratio shows what the cells themselves gain.

    python bench/study_executor.py [--utterances 96] [--empty 200]
    python bench/study_executor.py --ravdess-size [--layers 13]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def features_store(cache: Path, model: str, layers: int) -> Path:
    """A finished RAVDESS store of `model` holding bench/probe.py's synthetic RAVDESS-sized features."""
    import numpy as np

    from bench.probe import synthetic_ravdess
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    X, utts = synthetic_ravdess(n_layers=layers)
    n = len(utts)
    config = {"model_id": model, "frame_layers": [], "num_layers": layers, "hidden_size": X.shape[2],
              "weights_sha256": "be" * 32}
    path = store_path(cache, model_slug(model), "ravdess")
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(utts, X, np.abs(X), np.full(n, 16000), np.full(n, 150)),
               config)
    assemble(path, config, corpus="ravdess")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=96)
    ap.add_argument("--empty", type=int, default=200)
    ap.add_argument("--ravdess-size", action="store_true",
                    help="a 1440 x layers x 768 synthetic feature store instead of extracted synthetic audio")
    ap.add_argument("--layers", type=int, default=13, help="layers of the --ravdess-size store")
    ap.add_argument("--no-phase", action="store_true", help="skip the task phase on a running cluster")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from classifiers.results.registry import Registry
    from classifiers.runs.executor import ExecutorSpec, open_client, single_threaded
    from classifiers.runs.study import run_study
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.synth import synthesize
    from tests.helpers import build_tiny_model

    base = Path(tempfile.mkdtemp(prefix="ser-bench-executor-"))
    os.environ["SER_CONFIG"] = str(base / "none.toml")
    os.environ["SER_CACHE_HOME"] = str(base / "ser-cache")
    if args.ravdess_size:
        model = "bench/ravdess-size"
        features_store(base / "cache", model, args.layers)
    else:
        synthesize("ravdess", base / "data" / "ravdess", n=args.utterances, seed=0, max_duration=1.0,
                   sample_rate=16000)
        model = build_tiny_model(base / "tiny")
        with single_threaded():
            extract_manifest(load_manifest("ravdess", base / "data" / "ravdess"), model=str(model),
                             cache=base / "cache", device="cpu", progress=False)
    cells = "".join(f'[[cells]]\ncorpus = "ravdess"\nprotocol = "speaker-kfold:{k}"\nseeds = {s}\n'
                    for k in (2, 3, 4, 5) for s in (1, 2))
    study = base / "s.toml"
    study.write_text(f'[study]\nname = "bench"\nmodels = ["{model}"]\nlayers = "all"\n{cells}')

    print(f"load before: {load()}")
    walls = {}
    for mode in ("local", "local:2"):
        work = base / mode.replace(":", "")
        work.mkdir()
        os.chdir(work)
        t0 = time.perf_counter()
        with single_threaded():
            done, _ = run_study(study, cache=base / "cache", registry=Registry(work / "ser.db"), default_model="x",
                                executor=mode)
        walls[mode] = time.perf_counter() - t0
        assert len(done) == 8 and not any(r.reused for r in done), "every cell must run"
        print(f"{mode:>10}: {walls[mode]:.1f} s wall for 8 cells")

    print(f"sequential / local:2 wall clock: {walls['local'] / walls['local:2']:.2f}x (cluster start-up included)",
          flush=True)
    if args.no_phase:
        return
    # the task phase alone, on a cluster already up, and the overhead of one task
    from classifiers.runs.executor import Task, run_tasks

    os.chdir(base / "local2")
    with open_client(ExecutorSpec("local-cluster", workers=2)) as client:
        client.run(lambda: __import__("classifiers.runs.study") and None)  # workers import ser once, before timing
        t0 = time.perf_counter()
        futures = [client.submit(len, (i,), pure=False) for i in range(args.empty)]
        client.gather(futures)
        empty = (time.perf_counter() - t0) / args.empty
        from classifiers.runs.study import cell_cost, plan_study, read_study

        _, cell_list = read_study(study)
        plans, _, _ = plan_study(cell_list, cache=base / "cache", default_model="x")
        tasks = []
        for i, plan in enumerate(plans):
            o = dict(plan.options)
            out = base / "phase" / f"cell-{i}"
            tasks.append(Task(f"bench-{i}", "probe", dict(
                corpus=plan.corpus, model_path=str(model), cache=str(base / "cache"), device=None, needed=plan.needed,
                config=plan.config, out=str(out), options=dict(o, classifier=plan.config["classifier"],
                                                               protocol=plan.config["protocol"], test=None)),
                              priority=cell_cost(plan)))
        (base / "phase").mkdir()
        t0 = time.perf_counter()
        outcomes = run_tasks(tasks, client=client)
        phase = time.perf_counter() - t0
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    own = sum(o.result["seconds"] for o in outcomes)
    print(f"load after: {load()}")
    print(f"task phase on a running cluster: {phase:.1f} s for 8 cells whose own work is {own:.1f} s "
          f"-> {own / phase:.2f}x of one core; sequential / task phase: {walls['local'] / phase:.2f}x")
    print(f"scheduling overhead per cell task: {(2 * phase - own) / len(tasks) * 1000:.0f} ms "
          f"(2 workers x phase wall - tasks' own seconds, per task)")
    print(f"round trip of an empty task ({args.empty} of them, 2 workers): {empty * 1000:.1f} ms")


if __name__ == "__main__":
    main()
