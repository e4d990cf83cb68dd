"""Benchmark the attention probe's training loop against the previous one (issue 18).

Data: RAVDESS-shaped synthetic frame-level features held in memory (seeded numpy, float16 as the
store keeps frames): the 1440 clips of RAVDESS with their real actors, emotions and lengths (from
the EmoBox table shipped in the package: 2.9-5.3 s, i.e. 146-263 frames at 50 frames/s), 13
layers x 768 dimensions. Every frame is noise plus a per-actor offset; a quarter of each clip's
frames (a random window) also carries its emotion's direction, with a strength that rises and falls
over the layers (peak at layer 8). Folds: luna5, the 5 actor folds of Luna-Jiménez et al. 2022;
validation (early stopping) on whole training actors drawn by `featstore.folds.validation_split`.

Measured one after the other in this process, on the same frames, folds and seed (wall and process
CPU seconds; on a shared machine the CPU seconds and the ratios are the figures to compare):

  previous   `bench/legacy_attention.py` (the probe before issue 18, kept verbatim): per fold the
             statistics from the training frames, padded batches of every layer in float32,
             standardised then mixed, then projected
  new        `classifiers.estimators.attention`: the per-clip sums once for all folds, unpadded batches,
             standardisation folded into the mix and the projection, validation in large batches

Both run the all-folds loop of `probe_attention` (fold -> validation split -> fit -> predict) on
one shared `Packed`, once with one layer (--layer, default 8) and once with the learned mix of all
layers; `--epochs` epochs per fit without early stopping (patience = epochs), so that both loops
do the same work (`--defaults`: the estimator's 40 epochs at most, early stopping after 10 without
a better validation UAR). Every fit draws the same batches from the same seed, so UARs differ only
by floating-point rounding (the standardisation is folded differently), which can grow over epochs.

    python bench/attention.py [--epochs 1 | --defaults] [--threads 2] [--layers 13] [--every 1] [--device cpu]
    python bench/attention.py --quick
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def ravdess_frames(n_layers: int = 13, dim: int = 768, every: int = 1, seed: int = 0, signal: float = 0.15):
    """(layers: n_layers float16 tensors (frames, dim), start (N,), length (N,), utterances) for N RAVDESS clips.

    signal: the emotion's strength per dimension at the peak layer (15% of it at the ends).
    """
    import torch

    from featstore.corpora.base import Utterance
    from featstore.reference import reference

    files = reference("ravdess").files[::every]
    actors = np.array([int(f.key.split("-")[-1]) for f in files])
    labels = np.array([int(f.key.split("-")[3]) - 1 for f in files])
    length = np.array([int((f.duration * 16000 - 400) // 320 + 1) for f in files], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((1 << 17, dim), dtype=np.float32)  # noise windows drawn from one bank: fast
    layers = []
    for k in range(n_layers):
        strength = signal * (0.15 + 0.85 * np.exp(-0.5 * ((k - 8 * (n_layers - 1) / 12) / 2.5) ** 2))
        emotion = rng.standard_normal((8, dim)).astype(np.float32) * strength
        offset = rng.standard_normal((25, dim)).astype(np.float32) * 0.6
        out = np.empty((int(length.sum()), dim), np.float16)
        for i, T in enumerate(length):
            x = bank[(a := rng.integers(0, len(bank) - T)):a + T] + offset[actors[i]]
            cue = rng.integers(0, T - T // 4)
            x[cue:cue + T // 4] += emotion[labels[i]]
            out[start[i]:start[i] + T] = x
        layers.append(torch.from_numpy(out))
    names = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    utts = [Utterance(id=f.key, path="", corpus="ravdess", language="en", speaker=f"ravdess-{a:02d}", gender=None,
                      label=names[y], label_raw=str(y + 1)) for f, a, y in zip(files, actors, labels)]
    return layers, start, length, utts


def all_folds(module, frames, utts, folds, epochs: int | None, threads: int, device: str = "cpu", seed: int = 0) -> dict:
    """The fold loop of `probe_attention` with `module`'s estimator: UAR per fold, seconds, epochs.

    epochs: that many epochs per fit, no early stopping; None: the estimator's defaults.
    """
    from sklearn.metrics import balanced_accuracy_score

    from featstore.folds import validation_split

    y = np.array([u.label for u in utts], dtype=object)
    t0, c0 = time.perf_counter(), time.process_time()
    if hasattr(frames, "with_sums"):
        frames = frames.with_sums()                   # what `probe_attention` does once for all folds
    frames = module._to_device(frames, module.resolve_device(device))  # once for all folds, as `probe_attention`
    uar, n_epochs = [], []
    for f in folds:
        train, val = validation_split(utts, f.train, fraction=0.15, seed=seed)
        fixed = {} if epochs is None else dict(max_epochs=epochs, patience=epochs)
        est = module.AttentionProbe(**fixed, threads=threads, random_state=seed, device=device)
        est._fit_packed(frames.subset(train), y[train], frames.subset(val), y[val])
        pred = est.classes_[est.predict_proba(frames.subset(f.test)).argmax(1)]
        uar.append(balanced_accuracy_score(y[f.test], pred))
        n_epochs.append(est.n_epochs_)
    return dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0, uar=np.array(uar), epochs=n_epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1, help="epochs per fit (no early stopping: same work on both sides)")
    ap.add_argument("--defaults", action="store_true", help="the estimator's max_epochs and patience (early "
                                                            "stopping) instead of --epochs")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads of both loops")
    ap.add_argument("--layers", type=int, default=13, help="layers stored and mixed (1: the one-layer run only)")
    ap.add_argument("--layer", type=int, default=8, help="the layer of the one-layer run")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--every", type=int, default=1, help="keep every k-th RAVDESS clip")
    ap.add_argument("--signal", type=float, default=0.15, help="the emotion's strength at the peak layer")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (frames moved once, as `probe_attention` does)")
    ap.add_argument("--quick", action="store_true", help="every 4th clip, 5 layers, 1 epoch, signal 0.3")
    args = ap.parse_args()
    if args.quick:
        args.every, args.layers, args.layer, args.epochs, args.signal = 4, 5, 3, 1, 0.3
    if args.layers == 1:
        args.layer = 0
    epochs = None if args.defaults else args.epochs
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    import bench.legacy_attention as legacy
    import classifiers.estimators.attention as new
    from featstore.folds import make_folds

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    layers, start, length, utts = ravdess_frames(args.layers, args.dim, args.every, signal=args.signal)
    folds = make_folds(utts, "luna5")
    print(f"{len(utts)} clips, {int(length.sum())} frames ({length.min()}-{length.max()} per clip), "
          f"{args.layers} layers x {args.dim} float16, luna5 folds, "
          f"{'early stopping' if epochs is None else f'{epochs} epoch(s) per fit'}, "
          f"{args.threads} thread(s), {args.device}; data in {time.perf_counter() - t0:.1f} s")
    print(f"{'run':<16}{'loop':<10}{'wall s':>8}{'cpu s':>8}  epochs  UAR per fold                     mean")
    runs = [(f"layer {args.layer}", [args.layer])] + ([(f"{args.layers} mixed", list(range(args.layers)))]
                                                      if args.layers > 1 else [])
    for name, picked in runs:
        chosen = [layers[k] for k in picked]
        both = {"previous": all_folds(legacy, legacy.Packed(chosen, start, length), utts, folds, epochs,
                                      args.threads, args.device),
                "new": all_folds(new, new.Packed(chosen, start, length), utts, folds, epochs, args.threads,
                                 args.device)}
        for loop, r in both.items():
            print(f"{name:<16}{loop:<10}{r['wall']:8.1f}{r['cpu']:8.1f}  {sum(r['epochs']):6d}  "
                  f"{' '.join(f'{u:.3f}' for u in r['uar'])}   {r['uar'].mean():.3f}")
        p, n = both["previous"], both["new"]
        print(f"{'':<16}{'ratio':<10}{p['wall'] / n['wall']:7.2f}x{p['cpu'] / n['cpu']:7.2f}x          "
              f"|UAR new - previous| max {np.abs(n['uar'] - p['uar']).max():.3f}, "
              f"mean {n['uar'].mean() - p['uar'].mean():+.3f}")


if __name__ == "__main__":
    main()
