"""Benchmark LoRA adapters (`ser finetune --adapter lora`) against full fine-tuning, on the CPU.

Model: a randomly initialised wav2vec2, base-style (GroupNorm CNN feature encoder with the standard
7 layers of 512 channels), transformer hidden size 256, 4 layers, 4 heads, feed-forward 1024,
saved once into the work folder. Data: `featstore.synth.synthesize("ravdess", ...)` (RAVDESS's
layout, actors and labels; noise-like clips of up to --max-duration seconds), luna5 fold 0, all 8
classes, validation speakers from the training actors as `ser finetune` draws them.

Each variant runs in a fresh process (so its peak resident set size is its own), one thread
(OMP/MKL/torch), the same seed, batches and epochs (`--epochs`, default 1):

    full    FinetuneConfig defaults: the CNN frozen (--freeze feature-encoder), everything above it
            and the head trained, learning rate 3e-5 (--lr)
    lora    --adapter lora:r=8,alpha=16,targets=q,v: only the adapters on every layer's query and
            value projections and the head trained, learning rate 1e-3 (LoRA's usual larger rate)

Printed side by side: optimiser steps per second (training steps only: the time from each step's
start to its end, summed, so per-epoch validation and the final test are left out), the process
CPU seconds per step (the steadier figure on a shared machine), the whole
fold's wall seconds, trainable / total parameters, peak RSS (ru_maxrss) and the export's size.

    python bench/lora.py [--n 160] [--max-duration 2.0] [--epochs 1] [--work /tmp/ser-bench-lora]
    python bench/lora.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"full": {"lr": 3e-5}, "lora": {"lr": 1e-3, "adapter": "lora:r=8,alpha=16,targets=q,v"}}


def build_model(directory: Path) -> Path:
    """A random wav2vec2 (hidden 256, 4 layers, the standard CNN) saved with save_pretrained."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=1024, layerdrop=0.0)).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


def run_variant(name: str, work: Path, epochs: float, n: int, max_duration: float) -> dict:
    """One fine-tuning run in this process; returns its figures."""
    import torch
    from transformers import TrainerCallback

    from classifiers.finetuning.finetune import FinetuneConfig, finetune
    from featstore.corpora import get_corpus
    from featstore.folds import make_folds

    torch.set_num_threads(1)

    class StepTimer(TrainerCallback):
        """Sums the wall time of the training steps alone (no evaluation, no saving)."""

        def __init__(self):
            self.seconds, self.cpu, self.steps, self.t0, self.c0 = 0.0, 0.0, 0, None, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.t0
            self.cpu += time.process_time() - self.c0
            self.steps += 1

    utterances = get_corpus("ravdess").load(work / "ravdess").utterances
    timer = StepTimer()
    config = FinetuneConfig(model=str(work / "model"), epochs=epochs, batch_size=8, fold=0, seed=0, progress=False,
                            plots=False, resume=False, device="cpu", **VARIANTS[name])
    out = work / f"run-{name}"
    shutil.rmtree(out, ignore_errors=True)    # the bench's own folder: a finished fold would be read back
    started = time.perf_counter()
    fold = finetune(utterances, make_folds(utterances, "luna5"), config, out_dir=out, callbacks=[timer]).folds[0]
    wall = time.perf_counter() - started
    export = sum(p.stat().st_size for p in Path(fold.model_dir).iterdir() if p.suffix == ".safetensors")
    return {"variant": name, "steps": timer.steps, "steps_per_s": timer.steps / timer.seconds,
            "cpu_s_per_step": timer.cpu / timer.steps, "fold_wall_s": wall,
            "trainable_params": fold.trainable_params, "total_params": fold.total_params,
            "peak_rss_mib": fold.peak_memory_mib, "export_bytes": export, "test_uar": fold.metrics["uar"],
            "n_train": fold.n_train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160, help="synthetic clips (RAVDESS layout)")
    ap.add_argument("--max-duration", type=float, default=2.0, help="longest clip, seconds")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ser-bench-lora"))
    ap.add_argument("--quick", action="store_true", help="48 clips of at most 1 s")
    ap.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.quick:
        args.n, args.max_duration = 48, 1.0
    sys.path.insert(0, str(ROOT))
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.work, args.epochs, args.n, args.max_duration)))
        return
    from featstore.synth import synthesize

    args.work.mkdir(parents=True, exist_ok=True)
    build_model(args.work / "model")
    if not (args.work / "ravdess").is_dir():
        synthesize("ravdess", args.work / "ravdess", n=args.n, max_duration=args.max_duration, sample_rate=16000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name, "--work", str(args.work), "--epochs", str(args.epochs),
               "--n", str(args.n), "--max-duration", str(args.max_duration)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.n} synthetic RAVDESS clips (<= {args.max_duration} s), luna5 fold 0 ({rows[0]['n_train']} training "
          f"clips), {args.epochs:g} epoch(s), batch 8, one thread; wav2vec2 hidden 256 x 4 layers, standard CNN")
    print(f"{'':8}{'steps':>6}{'steps/s':>9}{'CPU s/step':>11}{'fold s':>8}{'trainable':>12}{'total':>12}{'peak RSS MiB':>14}"
          f"{'export':>12}{'test UAR':>9}")
    for r in rows:
        print(f"{r['variant']:8}{r['steps']:>6}{r['steps_per_s']:>9.3f}{r['cpu_s_per_step']:>11.2f}{r['fold_wall_s']:>8.1f}"
              f"{r['trainable_params']:>12,}{r['total_params']:>12,}{r['peak_rss_mib']:>14.0f}"
              f"{r['export_bytes'] / 2**20:>10.2f}MB{r['test_uar']:>9.3f}")
    full, lora = rows
    print(f"lora / full: steps/s x{lora['steps_per_s'] / full['steps_per_s']:.2f}, CPU s/step "
          f"x{lora['cpu_s_per_step'] / full['cpu_s_per_step']:.2f}, peak RSS "
          f"x{lora['peak_rss_mib'] / full['peak_rss_mib']:.2f}, export {100 * lora['export_bytes'] / full['export_bytes']:.1f}%")


if __name__ == "__main__":
    main()
