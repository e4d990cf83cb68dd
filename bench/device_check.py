"""The GPU path, checked in one run: every figure of issue 17 in one table, also written as JSON.

    python bench/device_check.py --out device.json             # on a GPU: full sizes, < 8 min on one H100
    python bench/device_check.py --device cpu --out cpu.json   # tiny sizes (as --quick): what CI runs

Checks (random-weight models, a synthetic RAVDESS-shaped corpus with real durations, all
measured in this process against baselines run in the same process):

  1 exactness     fp32 batched (several lengths in one batch) vs each utterance alone, base-style
                  (GroupNorm) and large-style (stable LayerNorm) models: max abs diff, all layers;
                  on CUDA, when above 1e-4 with cuDNN's default TF32, again with TF32 off
  2 precision     fp16 / bf16 pooled features vs fp32: max and mean relative difference; probe UAR
                  (logistic regression, 5 speaker folds) on fp32 vs half features
  3 throughput    base- and large-size models: `ser extract` (featstore.extract.extract_manifest,
                  model load, reading, writing and all) vs a naive per-file loop (read, resample,
                  forward, one .npy per layer) vs the best-batch pure forward; reading alone; memory peak;
                  where extraction's time goes (seconds and % of wall per stage); the same extraction
                  without the pipeline's overlap (writer on the main thread, no launch-ahead): before/after
  4 OOM back-off  a --batch-seconds far too large under a memory cap (CUDA: a per-process memory
                  fraction; CPU: a simulated cap raising torch.OutOfMemoryError) completes, same features
  5 faiss         GPU vs CPU flat index: identical neighbour sets, speed ratio
  6 XGBoost       device="cuda" vs CPU: accuracy, speed ratio, no device-mismatch warning
  7 logistic      the batched L-BFGS (classifiers.estimators.linear.fit_many) on the device vs CPU
  8 fine-tuning   one epoch (ser finetune's Trainer path, mixed precision on CUDA): steps/s, peak memory;
                  against a plain transformers Trainer script on the same clips (AutoModelForAudioClassification,
                  padding collator, no exact masking): training steps/s of both, timed alike, and the ratio

`--only 1,3` runs some checks; a check that fails records its error and the others still run.
Goals are judged only at full size on CUDA; `--quick` and CPU runs print "-" in the ok column.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {
    # full: 2/3 of RAVDESS (about 3,500 s of audio); the whole check takes minutes on one H100
    "full": dict(n_utts=1440, max_duration=None, exact_utts=8, models=("base", "large"), naive_utts=240,
                 batch_seconds=(50, 100, 200, 400), oom_utts=96, oom_cap_gib=2.0,
                 faiss=(50_000, 1024, 10), xgb=(10_000, 128, 8, 60), logreg=(13, 1440, 768, 8, 10),
                 finetune_utts=240, finetune_batch=8, probe_layer=6),
    # quick: tiny models and clips, seconds on two CPU cores
    "quick": dict(n_utts=48, max_duration=1.5, exact_utts=4, models=("base", "large"), naive_utts=12,
                  batch_seconds=(2, 8), oom_utts=8, oom_cap_gib=None,
                  faiss=(2000, 64, 10), xgb=(300, 32, 4, 20), logreg=(3, 120, 16, 4, 4),
                  finetune_utts=48, finetune_batch=4, probe_layer=2),
}
CHECKS = ("1", "2", "3", "4", "5", "6", "7", "8")


@dataclass
class Row:
    """One line of the table."""

    check: str
    what: str
    value: float | str | None
    goal: str = ""
    ok: bool | None = None
    unit: str = ""

    def cells(self) -> list[str]:
        value = "" if self.value is None else self.value
        if isinstance(value, float):
            value = f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
        ok = {True: "yes", False: "NO", None: "-"}[self.ok]
        return [self.check, self.what, f"{value}{(' ' + self.unit) if self.unit else ''}", self.goal, ok]


@dataclass
class Context:
    """What the checks share: device, sizes, models, corpus, and the stores extracted so far."""

    device: torch.device
    quick: bool
    work: Path
    sizes: dict
    models: dict = field(default_factory=dict)       # "base"/"large" -> model directory
    manifest: object = None
    stores: dict = field(default_factory=dict)       # (model, dtype) -> store path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def judged(self) -> bool:
        """Whether goals are judged: full sizes on CUDA."""
        return self.cuda and not self.quick

    def verdict(self, ok: bool) -> bool | None:
        return bool(ok) if self.judged else None


# -- shared helpers -----------------------------------------------------------------------------

def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextmanager
def peak_memory(dev: torch.device, out: dict):
    """Sets out["peak_gib"]: CUDA memory peak inside the block (None on CPU)."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    yield
    out["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def model_config(kind: str, quick: bool):
    """Base-style (GroupNorm) or large-style (stable LayerNorm) wav2vec2 config; tiny with `quick`."""
    from transformers import Wav2Vec2Config

    if quick:
        size = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    elif kind == "base":
        size = {}
    else:
        size = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    if kind == "large":
        size.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                    feat_extract_activation="gelu")
    return Wav2Vec2Config(**size)


def build_model(directory: Path, kind: str, quick: bool) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        Wav2Vec2Model(model_config(kind, quick)).save_pretrained(directory)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=kind == "large").save_pretrained(directory)
    return directory


def extract(ctx: Context, model: str, dtype: str, tag: str = "", **kw):
    """Extract the corpus into a fresh store: (ExtractResult, wall seconds, peak GiB or None)."""
    from featstore.extract import extract_manifest

    cache = ctx.work / f"cache-{model}-{dtype}{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    mem: dict = {}
    profile = os.environ.get("SER_DEVICE_CHECK_PROFILE")   # a folder: where the time of each extraction went
    prof = cProfile.Profile() if profile else None
    with peak_memory(ctx.device, mem):
        t = time.perf_counter()
        if prof:
            prof.enable()
        res = extract_manifest(ctx.manifest, model=str(ctx.models[model]), cache=cache, device=str(ctx.device),
                               dtype=dtype, progress=False, **kw)
        sync(ctx.device)
        wall = time.perf_counter() - t
    if prof:
        prof.disable()
        with open(Path(profile) / f"extract-{model}-{dtype}{tag}.txt", "w") as f:
            pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(45)
    if not tag:
        ctx.stores[(model, dtype)] = res.store
    return res, wall, mem["peak_gib"]


def store(ctx: Context, model: str, dtype: str) -> Path:
    """The store of (model, dtype), extracted now unless an earlier check made it."""
    if (model, dtype) not in ctx.stores:
        extract(ctx, model, dtype)
    return ctx.stores[(model, dtype)]


def pooled(path: Path) -> tuple[np.ndarray, list]:
    """(N, L+1, D) pooled means and the utterances, rows in store order."""
    from featstore.store import open_store

    fs = open_store(path)
    return fs.pooled_all("mean"), fs.utterances


def aligned(a: Path, b: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """Pooled means of two stores of one corpus, rows matched by id: (N, L+1, D) twice, utterances."""
    xa, ua = pooled(a)
    xb, ub = pooled(b)
    pos = {u.id: i for i, u in enumerate(ub)}
    return xa, xb[[pos[u.id] for u in ua]], ua


# -- 1 exactness ---------------------------------------------------------------------------------

def batched_vs_alone(ctx: Context, model: str) -> float:
    """Max abs difference, all layers and valid frames, between one padded batch and each item alone."""
    from featstore.audio import load_audio
    from featstore.backbones.runtime import hidden_states, load_backbone

    bb = load_backbone(str(ctx.models[model]), device=ctx.device)
    utts = sorted(ctx.manifest.utterances, key=lambda u: u.duration)
    pick = [utts[round(i * (len(utts) - 1) / (ctx.sizes["exact_utts"] - 1))] for i in range(ctx.sizes["exact_utts"])]
    waves = [load_audio(u.path, bb.sample_rate) for u in pick]
    states, lengths = hidden_states(bb, waves, device=ctx.device)
    worst = 0.0
    for i, w in enumerate(waves):
        alone, n = hidden_states(bb, [w], device=ctx.device)
        n = int(n[0])
        worst = max(worst, float((states[:, i, :n].float() - alone[:, 0, :n].float()).abs().max()))
    return worst


@contextmanager
def tf32_allowed():
    """Inside the block, torch's defaults (cuDNN convolutions in TF32) instead of `ser`'s full float32."""
    import featstore.backbones.runtime as fb

    exact, old = fb.full_float32, torch.backends.cudnn.allow_tf32
    fb.full_float32 = lambda device, enabled=True: nullcontext()
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        fb.full_float32, torch.backends.cudnn.allow_tf32 = exact, old


def check_exactness(ctx: Context) -> list[Row]:
    rows = []
    for model in ctx.sizes["models"]:
        diff = batched_vs_alone(ctx, model)
        rows.append(Row("1", f"{model} fp32: batch of {ctx.sizes['exact_utts']} lengths vs alone, max abs diff",
                        diff, "<= 1e-4", ctx.verdict(diff <= 1e-4)))
        if ctx.cuda:  # what ser's full float32 avoids: torch's default TF32 convolutions
            with tf32_allowed():
                diff = batched_vs_alone(ctx, model)
            rows.append(Row("1", f"{model} fp32 with TF32 allowed (torch's default, not ser's): max abs diff", diff))
    return rows


# -- 2 precision ---------------------------------------------------------------------------------

def relative_diff(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per (utterance, layer) ||x - ref|| / ||ref|| over the feature axis: (N, L+1)."""
    num = np.linalg.norm(x.astype(np.float64) - ref, axis=-1)
    return num / np.maximum(np.linalg.norm(ref.astype(np.float64), axis=-1), 1e-12)


def probe_uar(X: np.ndarray, utterances: list) -> float:
    """Mean test UAR of a logistic-regression probe (C=1) over 5 speaker folds."""
    from sklearn.model_selection import GroupKFold

    from classifiers.estimators.linear import LogRegProbe
    from classifiers.results.metrics import scores

    y = np.array([u.label for u in utterances])
    groups = np.array([u.speaker for u in utterances])
    uars = []
    for train, test in GroupKFold(n_splits=min(5, len(set(groups)))).split(X, y, groups):
        clf = LogRegProbe(C=1.0, device="cpu").fit(X[train], y[train])
        uars.append(scores(y[test], clf.predict(X[test]), sorted(set(y)))["uar"])
    return float(np.mean(uars))


def check_precision(ctx: Context) -> list[Row]:
    ref_path = store(ctx, "base", "float32")
    layer = ctx.sizes["probe_layer"]
    rows = []
    uar32 = None
    for dtype in ("float16", "bfloat16"):
        if dtype == "float16" and not ctx.cuda:
            rows.append(Row("2", "base fp16 vs fp32", "n/a: --dtype float16 is refused on CPU"))
            continue
        half, ref, utts = aligned(store(ctx, "base", dtype), ref_path)
        rel = relative_diff(half, ref)
        name = "fp16" if dtype == "float16" else "bf16"
        rows.append(Row("2", f"base {name} vs fp32 pooled: max relative diff (all layers)", float(rel.max())))
        rows.append(Row("2", f"base {name} vs fp32 pooled: mean relative diff", float(rel.mean())))
        if uar32 is None:
            uar32 = probe_uar(ref[:, layer], utts)
            rows.append(Row("2", f"probe UAR, layer {layer}, fp32 features", 100 * uar32, unit="%"))
        uar = probe_uar(half[:, layer], utts)
        gap = 100 * abs(uar - uar32)
        rows.append(Row("2", f"probe UAR, layer {layer}, {name} features (gap {gap:.2f} points)", 100 * uar,
                        "within 0.5 point", ctx.verdict(gap <= 0.5), unit="%"))
    return rows


# -- 3 throughput --------------------------------------------------------------------------------

def read_only(ctx: Context, sample_rate: int, receptive_field: int, readers: int) -> float:
    """Audio seconds per second of extraction's reading alone (read + resample on `readers` threads)."""
    from featstore.extract import _Prefetcher

    utts = ctx.manifest.utterances
    t = time.perf_counter()
    seconds = sum(len(w) for _, w, _ in _Prefetcher(utts, sample_rate, receptive_field, readers=readers)
                  if w is not None)
    return seconds / sample_rate / (time.perf_counter() - t)


def forward_speed(ctx: Context, bb, waves: list, batch_size: int | None, batch_seconds: float | None) -> float | None:
    """Audio-s/s of the pure forward over `waves` in extraction's batches; None when it runs out of memory."""
    from featstore.backbones.runtime import hidden_states
    from featstore.extract import _batches, _out_of_memory

    seconds = sum(len(w) for w in waves) / bb.sample_rate
    try:
        sync(ctx.device)
        t = time.perf_counter()
        for batch in _batches([(None, w) for w in waves], ctx.device, batch_size, batch_seconds, bb.sample_rate):
            hidden_states(bb, [w for _, w in batch], device=ctx.device)
        sync(ctx.device)
    except RuntimeError as e:
        if not _out_of_memory(e):
            raise
        return None
    return seconds / (time.perf_counter() - t)


def best_forward(ctx: Context, model: str) -> tuple[float, str, dict]:
    """Best audio-s/s of the pure forward (audio preloaded, length-sorted batches), its batch, all speeds."""
    from featstore.audio import load_audio
    from featstore.backbones.runtime import hidden_states, load_backbone

    bb = load_backbone(str(ctx.models[model]), device=ctx.device)
    waves = sorted((load_audio(u.path, bb.sample_rate) for u in ctx.manifest.utterances), key=len, reverse=True)
    hidden_states(bb, waves[:2], device=ctx.device)  # warm-up
    sizes = {f"{s} s": (None, s) for s in ctx.sizes["batch_seconds"]} if ctx.cuda \
        else {f"{n} utts": (n, None) for n in (1, 4)}
    speeds = {name: forward_speed(ctx, bb, waves, *size) for name, size in sizes.items()}
    best = max((k for k in speeds if speeds[k]), key=lambda k: speeds[k])
    if ctx.cuda:  # what torch's default TF32 convolutions would give, at the price of exactness
        with tf32_allowed():
            speeds[f"{best}, TF32 allowed"] = forward_speed(ctx, bb, waves, *sizes[best])
    del bb
    return speeds[best], best, speeds


def naive(ctx: Context, model: str, exact: bool = True) -> float:
    """Audio-s/s of the research-script loop (bench/extract.py's naive_loop), model load included.

    Run on an evenly spread `naive_utts` subset: it writes every layer of every frame as .npy.
    exact: at `ser extract`'s precision (full float32 on CUDA); else with torch's defaults (TF32).
    """
    from extract import naive_loop

    from featstore.corpora.base import Manifest
    from featstore.device import full_float32

    utts = sorted(ctx.manifest.utterances, key=lambda u: u.id)
    subset = Manifest(ctx.manifest.corpus, ctx.manifest.root, utts[::max(1, len(utts) // ctx.sizes["naive_utts"])])
    with full_float32(ctx.device, exact):
        seconds, wall = naive_loop(ctx.models[model], subset, str(ctx.device), ctx.work / f"naive-{model}")
    shutil.rmtree(ctx.work / f"naive-{model}", ignore_errors=True)
    return seconds / wall


def load_seconds(ctx: Context, model: str) -> tuple[float, float]:
    """(seconds of load_backbone with the weights hash remembered, seconds of the weights hash itself).

    `ser extract` hashes a model's weights the first time it meets them and then remembers the hash
    (featstore.backbones.runtime.hash_memo_path): the hash is paid once per model, not once per run.
    """
    import featstore.backbones.runtime as fb

    fb.model_info(str(ctx.models[model]))                 # remembered, as for every extraction after the first
    t = time.perf_counter()
    bb = fb.load_backbone(fb.model_info(str(ctx.models[model])), device=ctx.device)
    sync(ctx.device)
    load = time.perf_counter() - t
    del bb
    import featstore.modelfiles as mf

    directory = Path(ctx.models[model]).resolve()
    read, remember = mf._read_hash_memo, mf._remember_hash
    mf._read_hash_memo, mf._remember_hash = dict, lambda *a, **k: None
    try:
        t = time.perf_counter()
        mf.weights_hash(directory)
        return load, time.perf_counter() - t
    finally:
        mf._read_hash_memo, mf._remember_hash = read, remember


def stage_line(stages: dict, wall: float) -> str:
    """`ExtractResult.stages` as one cell: each main-thread stage's seconds and share of the wall time, the
    rest (lock, checks, hashing) as `other`, then the writer thread's busy time (overlapped, not in the sum)."""
    from featstore.extract import Stages

    parts = [(k, stages[k]) for k in Stages.MAIN if stages.get(k, 0.0) > 0]
    parts.append(("other", max(0.0, wall - sum(v for _, v in parts))))
    cell = ", ".join(f"{k} {v:.2f} ({100 * v / wall:.0f}%)" for k, v in parts)
    if "writer_thread" in stages:
        cell += f"; writer thread {stages['writer_thread']:.2f} s, overlapped"
    return cell


def check_throughput(ctx: Context) -> list[Row]:
    from featstore.backbones.runtime import model_info
    from featstore.extract import GPU_READERS

    rows = []
    info = model_info(str(ctx.models["base"]))
    for readers in sorted({1, GPU_READERS if ctx.cuda else 1}):
        reading = read_only(ctx, info.sample_rate, info.receptive_field, readers)
        rows.append(Row("3", f"reading alone (read + resample, {readers} reader thread{'s' * (readers > 1)})",
                        reading, unit="audio-s/s"))
    for model in ctx.sizes["models"]:
        model_info(str(ctx.models[model]))   # the weights hash, remembered as after a first extraction
        res, wall, peak = extract(ctx, model, "float32")
        ser = res.audio_seconds / wall
        rows.append(Row("3", f"{model} fp32: ser extract stages, seconds (% of wall)", stage_line(res.stages, wall)))
        before, before_wall, _ = extract(ctx, model, "float32", tag="-sync", write_thread=False, lookahead=0)
        rows.append(Row("3", f"{model} fp32: before the overlap (writer on the main thread, no launch-ahead)",
                        before.audio_seconds / before_wall, unit="audio-s/s"))
        rows.append(Row("3", "... its stages, seconds (% of wall)", stage_line(before.stages, before_wall)))
        got, ref, _ = aligned(res.store, before.store)
        rows.append(Row("3", f"{model} fp32: pooled features with vs without the overlap, max abs diff (same batches)",
                        float(np.abs(got - ref).max())))
        forward, batch, speeds = best_forward(ctx, model)
        loop = naive(ctx, model)
        rows.append(Row("3", f"{model} fp32: ser extract (load, read, forward, write; weights hash remembered)", ser, unit="audio-s/s"))
        rows.append(Row("3", f"{model} fp32: naive per-file loop ({ctx.sizes['naive_utts']} files)", loop,
                        unit="audio-s/s"))
        if ctx.cuda:
            rows.append(Row("3", f"{model} fp32: naive loop with torch's default TF32 (not exact; not judged)",
                            naive(ctx, model, exact=False), unit="audio-s/s"))
        rows.append(Row("3", f"{model} fp32: pure forward, best batch ({batch}; "
                        + ", ".join(f"{k}: {v:.0f}" if v else f"{k}: OOM" for k, v in speeds.items()) + ")",
                        forward, unit="audio-s/s"))
        rows.append(Row("3", f"{model}: ser extract / naive loop", ser / loop, ">= 5x", ctx.verdict(ser / loop >= 5)))
        rows.append(Row("3", f"{model}: ser extract / best-batch forward", ser / forward, ">= 0.85x (issue 26)",
                        ctx.verdict(ser / forward >= 0.85)))
        rows.append(Row("3", f"{model}: ... before the overlap / best-batch forward; after / before",
                        f"{before.audio_seconds / before_wall / forward:.2f}; "
                        f"{ser / (before.audio_seconds / before_wall):.2f}"))
        rows.append(Row("3", f"{model}: ser extract GPU memory peak", peak if peak is not None else "n/a on cpu",
                        unit="GiB" if peak is not None else ""))
        load, hashing = load_seconds(ctx, model)
        rows.append(Row("3", f"{model}: ... of which model load {load:.1f} s; ser extract without it / best-batch "
                             f"forward", res.audio_seconds / max(wall - load, 1e-9) / forward))
        rows.append(Row("3", f"{model}: the first extraction ever with this model also hashes its weights "
                             f"({hashing:.1f} s, then remembered): / naive loop; / best-batch forward",
                        f"{res.audio_seconds / (wall + hashing) / loop:.2f}; "
                        f"{res.audio_seconds / (wall + hashing) / forward:.2f}"))
    return rows


# -- 4 out-of-memory back-off --------------------------------------------------------------------

@contextmanager
def memory_cap(ctx: Context, counter: dict):
    """Cap the memory extraction may use and count the out-of-memory errors in counter["oom"].

    CUDA: the per-process memory fraction (`oom_cap_gib`). CPU: a simulated cap, batches of more
    than 3 s of padded audio raising torch.OutOfMemoryError, as CUDA would.
    """
    import featstore.extract as fx

    real = fx.hidden_states
    limit = None if ctx.cuda else 3 * 16000

    def capped(backbone, waves, **kw):
        try:
            if limit is not None and max(len(w) for w in waves) * len(waves) > limit:
                raise torch.OutOfMemoryError("simulated: batch over the cap")
            return real(backbone, waves, **kw)
        except torch.OutOfMemoryError:
            counter["oom"] += 1
            raise

    index = None
    if ctx.cuda:  # set_per_process_memory_fraction wants an index: "cuda" alone is refused
        index = ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, ctx.sizes["oom_cap_gib"] * 2**30 / total), index)
    fx.hidden_states = capped
    try:
        yield
    finally:
        fx.hidden_states = real
        if ctx.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
            torch.cuda.empty_cache()


def check_oom(ctx: Context) -> list[Row]:
    from featstore.corpora.base import Manifest

    ref_path = store(ctx, "base", "float32")
    full = ctx.manifest
    utts = sorted(full.utterances, key=lambda u: -u.duration)[:ctx.sizes["oom_utts"]]
    counter = {"oom": 0}
    # everything in one batch: on CUDA far more than the cap holds, on CPU far over the simulated cap
    kw = dict(batch_seconds=1e6, prefetch_seconds=1e6) if ctx.cuda else dict(batch_size=len(utts))
    ctx.manifest = Manifest(full.corpus, full.root, utts)
    try:
        with memory_cap(ctx, counter):
            res, wall, _ = extract(ctx, "base", "float32", tag="-oom", **kw)
    finally:
        ctx.manifest = full
    got, ref, _ = aligned(res.store, ref_path)
    diff = float(np.abs(got - ref).max())
    done = res.extracted == len(utts) and not res.skipped
    cap = f"{ctx.sizes['oom_cap_gib']} GiB memory fraction" if ctx.cuda else "simulated 3 s cap"
    return [
        Row("4", f"batch of {len(utts)} utterances under a {cap}: out-of-memory errors met", counter["oom"],
            ">= 1", ctx.verdict(counter["oom"] >= 1)),
        Row("4", f"... completed: {res.extracted}/{len(utts)} extracted, {len(res.skipped)} skipped in {wall:.1f} s",
            "yes" if done else "NO", "all", ctx.verdict(done)),
        Row("4", "... pooled features vs the uncapped fp32 store, max abs diff", diff, "<= 1e-4",
            ctx.verdict(diff <= 1e-4)),
    ]


# -- 5 faiss -------------------------------------------------------------------------------------

def check_faiss(ctx: Context) -> list[Row]:
    from classifiers.estimators.knn_index import FlatIndex, NeighborError, faiss_module, normalize, search, use_gpu

    try:
        faiss_module()
    except NeighborError:
        return [Row("5", "faiss", "n/a: faiss is not installed here", "identical sets", ctx.verdict(False))]
    n, d, k = ctx.sizes["faiss"]
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, d))
    X = normalize(centers[rng.integers(0, 64, n)] + rng.normal(size=(n, d)))  # clustered, like features
    t = time.perf_counter()
    cpu = search(X, k=k, gpu=False)
    t_cpu = time.perf_counter() - t
    rows = [Row("5", f"faiss CPU flat index, {n} x {d} self-query k={k}", t_cpu, unit="s")]
    if not use_gpu():
        rows.append(Row("5", "GPU index", "n/a: no CUDA device", "identical sets", ctx.verdict(False)))
        return rows
    backend = FlatIndex(X[:16], gpu=True).on_gpu
    rows.append(Row("5", "GPU search backend", "faiss-gpu index" if backend == "faiss"
                    else "torch CUDA flat search (faiss here has no GPU support)"))
    search(X[:1000], k=k, gpu=True)  # warm-up: GPU resources, kernels
    t = time.perf_counter()
    gpu = search(X, k=k, gpu=True)
    t_gpu = time.perf_counter() - t
    same = np.array([set(a) == set(b) for a, b in zip(cpu.index, gpu.index)])
    # a differing set is a near-tie when the k-th similarities agree to float32 rounding
    ties = np.abs(cpu.sim[:, -1] - gpu.sim[:, -1]) <= 1e-5
    rows += [
        Row("5", "GPU vs CPU index: queries with identical neighbour sets", float(same.mean()), "1.0 (near-ties aside)",
            ctx.verdict(bool(np.all(same | ties)))),
        Row("5", f"... differing sets that are near-ties (k-th similarity within 1e-5): {int((~same & ties).sum())}"
                 f" of {int((~same).sum())}", float(np.abs(cpu.sim - gpu.sim).max())),
        Row("5", "GPU vs CPU index speed ratio", t_cpu / t_gpu, unit="x"),
    ]
    return rows


# -- 6 XGBoost -----------------------------------------------------------------------------------

def separable(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes in d dimensions, overlapping enough that accuracy is neither 1 nor chance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    means = rng.normal(scale=2.0 / np.sqrt(d), size=(classes, d))  # class distance ~2.8 noise sds at any d
    return (means[y] + rng.normal(size=(n, d))).astype(np.float32), y


def check_xgboost(ctx: Context) -> list[Row]:
    from classifiers.estimators.boosting import XGBProbe

    n, d, classes, trees = ctx.sizes["xgb"]
    X, y = separable(n, d, classes)
    cut = int(0.8 * n)
    out = {}
    for dev in (["cpu", str(ctx.device)] if ctx.cuda else ["cpu"]):
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf = XGBProbe(n_estimators=trees, device=dev).fit(X[:cut], y[:cut])
            acc = float((clf.predict(X[cut:]) == y[cut:]).mean())
        mismatch = [w for w in caught if "mismatched devices" in str(w.message)]
        out[dev] = (acc, time.perf_counter() - t, len(mismatch))
    rows = [Row("6", f"XGBoost CPU: accuracy ({n} x {d}, {classes} classes, {trees} trees)", out["cpu"][0]),
            Row("6", "XGBoost CPU: fit + predict time", out["cpu"][1], unit="s")]
    if not ctx.cuda:
        rows.append(Row("6", "XGBoost device=cuda", "n/a: no CUDA device"))
        return rows
    acc, t_gpu, mismatch = out[str(ctx.device)]
    # GPU and CPU draw different subsamples and quantiles: "the same" means within ~3 test-set standard errors
    noise = 3 * np.sqrt(out["cpu"][0] * (1 - out["cpu"][0]) / (n - cut))
    rows += [Row("6", "XGBoost CUDA: accuracy", acc, f"within {noise:.3f} of CPU",
                 ctx.verdict(abs(acc - out["cpu"][0]) <= noise)),
             Row("6", "XGBoost CUDA vs CPU speed ratio", out["cpu"][1] / t_gpu, unit="x"),
             Row("6", "XGBoost CUDA: device-mismatch warnings on predict", mismatch, "0", ctx.verdict(mismatch == 0))]
    return rows


# -- 7 batched logistic regression ---------------------------------------------------------------

def check_logreg(ctx: Context) -> list[Row]:
    """Batched L-BFGS on the device vs CPU. Both stop at the same gradient tolerance, from which the
    summation order of each device leads to slightly different points: the control is CPU against CPU
    on one thread, and the judged comparison is at a tolerance tight enough to reach the optimum."""
    from classifiers.estimators.linear import fit_many

    layers, n, d, classes, problems = ctx.sizes["logreg"]
    rng = np.random.default_rng(0)
    X0, y = separable(n, d, classes)
    X = np.stack([X0 + rng.normal(scale=0.5 * k, size=X0.shape).astype(np.float32) for k in range(layers)])
    masks = rng.random((problems, n)) < 0.8
    C = np.geomspace(1e-3, 1.0, problems)

    def fit(dev: str, tol: float = 1e-4, threads: int | None = None):
        old = torch.get_num_threads()
        torch.set_num_threads(threads or old)
        try:
            sync(torch.device(dev))
            t = time.perf_counter()
            proba = fit_many(X, y, masks, C, classes, device=dev, tol=tol, max_iter=300 if tol >= 1e-4 else 3000)
            sync(torch.device(dev))
            return proba, time.perf_counter() - t
        finally:
            torch.set_num_threads(old)

    def compare(a, b):
        return float((a.argmax(-1) == b.argmax(-1)).mean()), float(np.abs(a - b).max())

    cpu, t_cpu = fit("cpu")
    one, _ = fit("cpu", threads=1)
    agree, diff = compare(cpu, one)
    rows = [Row("7", f"fit_many CPU: {layers} layers x {problems} problems, N={n}, D={d}, tol 1e-4", t_cpu, unit="s"),
            Row("7", f"control, CPU 1 thread vs {torch.get_num_threads()} threads (tol 1e-4): same class; max prob diff",
                f"{agree:.4f}; {diff:.3g}")]
    if not ctx.cuda:
        rows.append(Row("7", "fit_many on CUDA", "n/a: no CUDA device"))
        return rows
    gpu, t_gpu = fit(str(ctx.device))
    agree, diff = compare(cpu, gpu)
    rows.append(Row("7", "CUDA vs CPU (tol 1e-4, the probes' own): same class; max prob diff", f"{agree:.4f}; {diff:.3g}"))
    agree, diff = compare(fit("cpu", 1e-6)[0], fit(str(ctx.device), 1e-6)[0])
    rows += [
        Row("7", "CUDA vs CPU at tol 1e-6: same predicted class", agree, ">= 0.999", ctx.verdict(agree >= 0.999)),
        Row("7", "CUDA vs CPU at tol 1e-6: max probability diff", diff, "<= 1e-2", ctx.verdict(diff <= 1e-2)),
        Row("7", "fit_many CUDA vs CPU speed ratio (tol 1e-4)", t_cpu / t_gpu, unit="x"),
    ]
    return rows


# -- 8 fine-tuning -------------------------------------------------------------------------------

class StepTimer:
    """A Trainer callback timing optimiser steps alike in both fine-tuning runs: the steps after the first
    (no warm-up, no evaluation, no checkpoint), the device synchronised at each step's end."""

    def __new__(cls, device: torch.device):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []

            def on_step_end(self, args, state, control, **kw):
                sync(device)
                self.times.append(time.perf_counter())

            @property
            def steps_per_second(self) -> float:
                t = self.times
                return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan")

        return _Timer()


def plain_trainer(ctx: Context, train: list, classes: list[str], batch_size: int, steps: int, out: Path) -> float:
    """Training steps/s of the script a user would write with transformers alone: the same backbone as an
    AutoModelForAudioClassification (its own head, mean over frames), its feature extractor, the default
    padding collator (no attention mask for base-style models: padding is not masked out of GroupNorm or
    the pooling), the feature encoder frozen as `ser finetune` does by default, the same clips, batch
    size, steps and mixed precision, no evaluation or checkpoints."""
    from transformers import (
        AutoFeatureExtractor,
        AutoModelForAudioClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    from classifiers.finetuning.finetune import _mixed_precision
    from featstore.audio import load_audio

    model_dir = str(ctx.models["base"])
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    index = {c: i for i, c in enumerate(classes)}
    data = [{"input_values": fe(load_audio(u.path, fe.sampling_rate), sampling_rate=fe.sampling_rate)
             ["input_values"][0], "label": index[u.label]} for u in train]
    torch.manual_seed(0)
    model = AutoModelForAudioClassification.from_pretrained(model_dir, num_labels=len(classes))
    model.freeze_feature_encoder()
    cpu = not ctx.cuda
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size, max_steps=steps,
                             learning_rate=3e-5, warmup_steps=0.1, eval_strategy="no", save_strategy="no",
                             report_to=[], disable_tqdm=True, seed=0, use_cpu=cpu, dataloader_pin_memory=not cpu,
                             logging_steps=max(1, steps // 4), **_mixed_precision(str(ctx.device)))
    timer = StepTimer(ctx.device)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(fe),
                      callbacks=[timer])
    trainer.remove_callback(PrinterCallback)   # no log dicts in the table's output
    trainer.train()
    return timer.steps_per_second


def check_finetune(ctx: Context) -> list[Row]:
    from transformers.utils import logging as hf_logging

    from classifiers.finetuning.finetune import (
        FinetuneConfig,
        _classes,
        _mixed_precision,
        _select_folds,
        _split,
        finetune,
    )
    from featstore.folds import make_folds

    utts = sorted(ctx.manifest.utterances, key=lambda u: u.id)
    step = max(1, len(utts) // ctx.sizes["finetune_utts"])
    utts = utts[::step][:ctx.sizes["finetune_utts"]]
    batch = ctx.sizes["finetune_batch"]
    config = FinetuneConfig(model=str(ctx.models["base"]), epochs=1, fold="0", batch_size=batch,
                            device=str(ctx.device), progress=False, plots=False, resume=False)
    mem: dict = {}
    timer = StepTimer(ctx.device)
    shutil.rmtree(ctx.work / "finetune", ignore_errors=True)   # a finished fold in --work would be reused, not timed
    with peak_memory(ctx.device, mem):
        run = finetune(utts, "speaker-kfold:3", config, out_dir=ctx.work / "finetune", callbacks=[timer])
    fold = run.folds[0]
    train = next((h for h in fold.log_history if "train_steps_per_second" in h), {})
    precision = [k for k, v in _mixed_precision(str(ctx.device)).items() if v] or ["fp32"]
    rows = [
        Row("8", f"fine-tune 1 epoch, {'tiny ' if ctx.quick else ''}base model, {fold.n_train} clips, batch {batch}, "
                 f"{precision[0]}: optimiser steps/s (Trainer's figure, with evaluation and saving)",
            float(train.get("train_steps_per_second", float("nan")))),
        Row("8", f"... {fold.global_step} steps, {fold.seconds:.1f} s with evaluation; test UAR {fold.metrics['uar']:.3f}",
            "done", "completes", ctx.verdict(fold.global_step > 0)),
        Row("8", "... GPU memory peak", mem["peak_gib"] if mem["peak_gib"] is not None else "n/a on cpu",
            unit="GiB" if mem["peak_gib"] is not None else ""),
    ]
    # the baseline: the same training clips (fold 0, validation speakers held out as ser does), same steps
    folds = _select_folds(make_folds(utts, "speaker-kfold:3", seed=config.seed), config.fold)
    classes = _classes(utts, folds, config.labels)
    split = _split(utts, folds[0], classes, config)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()      # the new classification head's "newly initialized" notice
    try:
        plain = plain_trainer(ctx, split.train, classes, batch, fold.global_step, ctx.work / "plain-trainer")
    finally:
        hf_logging.set_verbosity(verbosity)
    ours = timer.steps_per_second
    rows += [
        Row("8", f"ser finetune: training steps/s (steps 2-{len(timer.times)}, exact masking on)", ours),
        Row("8", f"plain transformers Trainer script, same {len(split.train)} clips and steps: training steps/s "
                 f"(AutoModelForAudioClassification, padding collator, no exact masking)", plain),
        Row("8", "ser finetune / plain Trainer, training steps/s", ours / plain, ">= 0.95x (issue 26)",
            ctx.verdict(ours / plain >= 0.95)),
    ]
    return rows


RUNNERS = {"1": check_exactness, "2": check_precision, "3": check_throughput, "4": check_oom,
           "5": check_faiss, "6": check_xgboost, "7": check_logreg, "8": check_finetune}
# 3 first: its fp32 extraction is the reference that 2 and 4 compare with
ORDER = ("1", "3", "2", "4", "5", "6", "7", "8")


# -- the run -------------------------------------------------------------------------------------

def environment(dev: torch.device) -> dict:
    env = dict(python=platform.python_version(), torch=torch.__version__, device=str(dev),
               cuda=torch.version.cuda, cudnn_tf32=torch.backends.cudnn.allow_tf32,
               matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported())
    for name in ("transformers", "xgboost", "faiss"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    return env


def prepare(ctx: Context) -> None:
    from featstore.corpora import load_manifest
    from featstore.synth import synthesize

    if ctx.cuda:  # CUDA context and cuBLAS handles, so that no timed check pays for them
        torch.ones(64, 64, device=ctx.device) @ torch.ones(64, 64, device=ctx.device)
        sync(ctx.device)
    for kind in ctx.sizes["models"]:
        ctx.models[kind] = build_model(ctx.work / f"model-{kind}", kind, ctx.quick)
    root = ctx.work / "ravdess"
    if not root.exists():
        synthesize("ravdess", root, n=ctx.sizes["n_utts"], seed=0, max_duration=ctx.sizes["max_duration"])
    ctx.manifest = load_manifest("ravdess", root)


def table(rows: list[Row]) -> str:
    cells = [["#", "check", "value", "goal", "ok"]] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(5)).rstrip() for c in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def run(device: str = "auto", quick: bool = False, only=CHECKS, work: Path | None = None,
        out: str | Path | None = None) -> dict:
    """Run the checks; returns {"environment", "quick", "sizes", "rows", "errors", "seconds"} (JSON-ready).

    With `out`, the JSON is rewritten after every check, so a run stopped by a time limit keeps
    what it measured; one progress line per check goes to stderr.
    """
    from featstore.device import resolve_device
    from featstore.serialize import write_json

    dev = resolve_device(device)
    quick = quick or dev.type == "cpu"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        ctx = Context(dev, quick, Path(work or tmp), SIZES["quick" if quick else "full"])
        ctx.work.mkdir(parents=True, exist_ok=True)
        rows: list[Row] = []
        result = dict(environment=environment(dev), quick=quick, sizes=ctx.sizes, rows=[], errors={}, seconds={})
        t0 = time.perf_counter()
        prepare(ctx)
        result["seconds"]["prepare"] = time.perf_counter() - t0
        for check in (c for c in ORDER if c in only):
            t = time.perf_counter()
            try:
                rows += RUNNERS[check](ctx)
            except Exception as e:  # one failed check must not cost the other figures of a scarce GPU run
                result["errors"][check] = traceback.format_exc()
                message = str(e).splitlines()[0] if str(e) else ""
                rows.append(Row(check, f"ERROR {type(e).__name__}: {message}"[:160], None, ok=False))
            result["seconds"][check] = time.perf_counter() - t
            result["seconds"]["total"] = time.perf_counter() - t0
            result["rows"] = [r.__dict__ for r in rows]
            print(f"[{result['seconds']['total']:6.0f} s] check {check} done in {result['seconds'][check]:.0f} s"
                  f"{' (failed)' if check in result['errors'] else ''}", file=sys.stderr, flush=True)
            if out:
                write_json(out, result)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (cpu implies --quick)")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (seconds)")
    p.add_argument("--only", default=",".join(CHECKS), help="checks to run, e.g. 1,3 (default: all)")
    p.add_argument("--out", default="device.json", help="JSON file with every figure (rewritten after each check)")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    args = p.parse_args(argv)
    only = tuple(c.strip() for c in args.only.split(",") if c.strip())
    if bad := [c for c in only if c not in CHECKS]:
        p.error(f"--only {','.join(bad)}: checks are {','.join(CHECKS)}")
    result = run(args.device, args.quick, only, Path(args.work) if args.work else None, out=args.out)
    rows = [Row(**r) for r in result["rows"]]
    env = result["environment"]
    print(f"device check on {env.get('gpu', env['device'])} (torch {env['torch']}, "
          f"{'quick sizes' if result['quick'] else 'full sizes'}), {result['seconds']['total']:.0f} s "
          f"({', '.join(f'{k}: {v:.0f} s' for k, v in result['seconds'].items() if k != 'total')})")
    print(table(rows))
    for check, tb in result["errors"].items():
        print(f"\ncheck {check} failed:\n{tb}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if result["errors"] or any(r.ok is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
