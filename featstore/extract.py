"""`ser extract`: every layer of a backbone (see `ser models`) over a corpus, into the feature store.

The run is resumable and exact:
  - utterances already in the store (or in finished part files of an interrupted run) are not
    extracted again; a grown corpus extracts only its new utterances;
  - batches give the same features as running each utterance alone (see featstore.backbone);
  - work is flushed as atomic part files every `checkpoint_seconds`, so `kill -9` loses at most
    the work since the last flush (see featstore.store);
  - a store made with another model, dtype or frame-layer choice is never mixed into.

Long clips: a clip longer than `max_seconds` is cut into near-equal consecutive windows of at
most `max_seconds`, each run through the model alone; the windows' frames are concatenated and
the pooled mean/std are over all frames (combined exactly from per-window statistics). Context
does not cross window borders, which is what bounds memory. A model with its own input limit
caps the window (Whisper: 30 s; the store records the window used); openSMILE functionals
describe the whole clip and are never windowed.

Batching depends on the device: on CUDA, length-sorted batches of at most `batch_seconds` of
padded audio (halved automatically on out-of-memory); on CPU batches of `batch_size` windows in
reading order, 1 by default, which measured fastest on 2 cores (bench/extract.py).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featstore.audio import model_audio, validate_extract_options, wave_seconds, windows
from featstore.backbone import DEFAULT_MODEL, Backbone, ModelInfo, hidden_states, load_backbone, model_info, model_slug
from featstore.corpora import Manifest, Utterance, load_manifest
from featstore.device import resolve_device
from featstore.errors import AudioError, SerError
from featstore.plan import plan
from featstore.store import (
    Batch,
    Skipped,
    StoreError,
    adding_frame_layers,
    assemble,
    clean_dead_temps,
    missing_frame_layers,
    new_part_path,
    relabel,
    store_lock,
    store_path,
    write_part,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExtractResult:
    store: Path
    extracted: int = 0                 # utterances extracted by this run
    already: int = 0                   # utterances found done (store or parts of an earlier run)
    skipped: list[Skipped] = field(default_factory=list)   # skipped by this run
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    up_to_date: bool = False
    frames_added: list[int] = field(default_factory=list)  # frame layers added to a finished store
    relabelled: int = 0                # stored labels brought up to the corpus' labels (no features recomputed)

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


def parse_frame_layers(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """`--frames`: `none`, `all`, or layers like `6,12` / `3-9` -> sorted layer indices 0..num_layers-1.

    A negative layer is refused (SerError), never counted from the end: `--frames=-1` once added
    layer L's frames to a finished store.
    """
    from featstore.store import parse_layers

    if spec is not None:
        validate_extract_options(frames=spec, num_layers=num_layers)
    return [] if spec in (None, "", "none") else parse_layers(spec, num_layers, option="--frames")


def window_seconds(info: ModelInfo, max_seconds: float) -> float:
    """The longest window a run feeds the model: `--max-seconds`, capped by the model's own input limit."""
    return min(max_seconds, info.max_input_seconds or max_seconds)


def store_config(info: ModelInfo, dtype: str, frame_layers: list[int], max_seconds: float) -> dict:
    from featstore.store import FORMAT_VERSION

    return dict(
        model_id=info.model_id, revision=info.revision, weights_sha256=info.weights_sha256,
        model_type=info.model_type, dtype=dtype, frame_layers=frame_layers,
        max_seconds=float(window_seconds(info, max_seconds)), sample_rate=info.sample_rate or "native",
        do_normalize=info.do_normalize, num_layers=info.num_layers, hidden_size=info.hidden_size,
        layer_convention=info.layer_convention, format_version=FORMAT_VERSION,
    )


#: reader threads feeding a GPU: one reads and resamples about 1,000-1,600 audio-s/s, less than a GPU's forward
GPU_READERS = 4


def _read(u: Utterance, sample_rate: int | None, min_samples: int) -> tuple:
    """(utterance, wave as the model is fed (`featstore.audio.model_audio`) or None, skip reason or None)."""
    try:
        return u, model_audio(u.path, sample_rate, min_samples, start=u.start, end=u.end), None
    except AudioError as e:
        return u, None, e.reason
    except Exception as e:  # anything else a broken file can raise
        return u, None, f"unreadable audio: {type(e).__name__}: {e}"


class _Prefetcher:
    """Reads and resamples audio ahead of the model, in order, on `readers` threads."""

    def __init__(self, utterances: Sequence[Utterance], sample_rate: int | None, min_samples: int, depth: int = 16,
                 readers: int = 1):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(utterances, sample_rate, min_samples, readers),
                                        daemon=True)
        self._thread.start()

    def _run(self, utterances, sample_rate, min_samples, readers):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=readers) as pool:
            ahead: deque = deque()
            for u in utterances:
                if self._stop.is_set():
                    break
                ahead.append(pool.submit(_read, u, sample_rate, min_samples))
                if len(ahead) >= 2 * readers:
                    self._q.put(ahead.popleft().result())
            while ahead and not self._stop.is_set():
                self._q.put(ahead.popleft().result())
        self._q.put(None)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)


@dataclass
class _Pending:
    """Per-utterance accumulation over its windows (Chan et al.'s parallel mean/variance)."""

    utt: Utterance
    n_samples: int
    windows_left: int
    seconds: float = 0.0               # audio seconds of the utterance
    count: int = 0
    mean: np.ndarray | None = None     # (L+1, D) float32 for one window; float64 once windows merge
    m2: np.ndarray | None = None       # (L+1, D) likewise
    frames: dict = field(default_factory=dict)

    def add(self, n: int, mean: np.ndarray, m2: np.ndarray, frames: dict[int, np.ndarray]) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
        else:
            total = self.count + n
            delta = mean.astype(np.float64) - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
            self.count = total
        for k, a in frames.items():
            self.frames.setdefault(k, []).append(a)
        self.windows_left -= 1


class _Writer:
    """Buffers finished utterances and flushes them as atomic part files."""

    def __init__(self, path: Path, config: dict, shard: int, checkpoint_seconds: float, max_bytes: int = 256 << 20):
        self.path = path
        self.config = config
        self.shard = shard
        self.checkpoint_seconds = checkpoint_seconds
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self):
        self.items: list[_Pending] = []
        self.skipped: list[Skipped] = []
        self.bytes = 0
        self.last_flush = time.monotonic()

    def add(self, item: _Pending) -> None:
        self.items.append(item)
        self.bytes += item.mean.nbytes + sum(a.nbytes for v in item.frames.values() for a in v)
        self._maybe_flush()

    def skip(self, s: Skipped) -> None:
        self.skipped.append(s)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= self.checkpoint_seconds or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.items and not self.skipped:
            return
        layers = self.config["frame_layers"]
        shape = (self.config["num_layers"], self.config["hidden_size"])
        if self.items:
            mean = np.stack([p.mean for p in self.items]).astype(np.float32, copy=False)
            std = np.stack([p.m2 for p in self.items])
            std /= np.array([p.count for p in self.items], dtype=std.dtype)[:, None, None]
            std = np.sqrt(std, out=std).astype(np.float32, copy=False)
        else:
            mean = std = np.zeros((0, *shape), np.float32)
        batch = Batch(
            utterances=[p.utt for p in self.items], mean=mean, std=std,
            n_samples=np.array([p.n_samples for p in self.items], dtype=np.int64),
            n_frames=np.array([p.count for p in self.items], dtype=np.int64),
            frames={k: [np.concatenate(p.frames[k]) for p in self.items] for k in layers},
            skipped=self.skipped,
        )
        write_part(new_part_path(self.path, self.shard), batch, self.config)
        self._reset()


def _pool(states: torch.Tensor, lengths: torch.Tensor, frame_layers: list[int], layer_chunk: int = 8):
    """Per item: (n, mean (L+1, D) f32, M2 (L+1, D) f32, frames {layer: (T, D) f16}).

    states: (L+1, B, T, D) on the model's device, padded frames past each item's length. The whole
    batch is pooled on the device at once (masked sums, a few layers at a time to bound memory)
    and copied to the host in one transfer: per-item pooling was a dozen small kernels and two
    host syncs per utterance.
    """
    dev = states.device
    n = lengths.to(dev)
    valid = (torch.arange(states.shape[2], device=dev)[None, :] < n[:, None]).to(torch.float32)[:, :, None]
    count = n.to(torch.float32)[None, :, None]
    means, m2s = [], []
    for lo in range(0, states.shape[0], layer_chunk):
        x = states[lo:lo + layer_chunk].float()                              # (l, B, T, D)
        mean = (x * valid).sum(dim=2) / count                                # (l, B, D)
        m2 = (((x - mean[:, :, None]) * valid) ** 2).sum(dim=2)
        means.append(mean)
        m2s.append(m2)
    pooled = torch.stack([torch.cat(means), torch.cat(m2s)], dim=2).cpu().numpy()   # (L+1, B, 2, D)
    frames = states[frame_layers].to(torch.float16).cpu().numpy() if frame_layers else None   # (F, B, T, D)
    out = []
    for i, k in enumerate(lengths.tolist()):
        item = {layer: frames[j, i, :k] for j, layer in enumerate(frame_layers)}
        out.append((k, pooled[:, i, 0], pooled[:, i, 1], item))
    return out


DEFAULT_BATCH_SECONDS = 200.0   # GPU: padded audio seconds per batch


def _batches(pieces: list, device: torch.device, batch_size: int | None, batch_seconds: float | None, sr: int,
             min_input: int = 0):
    """Group (pending, wave) pieces: fixed size on CPU, by padded seconds on GPU.

    min_input: samples every window is padded to by the model itself (Whisper: 30 s), so it counts that much.
    """
    if device.type != "cuda":
        size = batch_size or 1
        for i in range(0, len(pieces), size):
            yield pieces[i:i + size]
        return
    limit = (batch_seconds or DEFAULT_BATCH_SECONDS) * sr
    batch, longest = [], 0
    for piece in pieces:
        n = max(len(piece[1]), min_input)
        if batch and (max(longest, n) * (len(batch) + 1) > limit or (batch_size and len(batch) >= batch_size)):
            yield batch
            batch, longest = [], 0
        batch.append(piece)
        longest = max(longest, n)
    if batch:
        yield batch


def extract_manifest(
    manifest: Manifest, *, model: str = DEFAULT_MODEL, cache: str | Path = "cache", device: str = "auto",
    dtype: str = "float32", frames: str | Sequence[int] | None = "none", max_seconds: float = 30.0,
    batch_size: int | None = None, batch_seconds: float | None = None, shards: int = 1, shard: int = 0,
    checkpoint_seconds: float = 60.0, progress: bool = True, on_skip: Callable[[Skipped], None] | None = None,
    prefetch_seconds: float = 120.0, lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract every layer of `model` for the utterances of `manifest` into the store.

    Returns what was done; the store is at `result.store` (`<cache>/<model-slug>/<corpus>.h5`, or
    `<corpus>.shard-<i>-of-<n>.h5` with shards > 1). Frame layers asked for that a finished
    store lacks are added to it (`result.frames_added`), its pooled data untouched.

    One writer per store: while another process writes it, this one calls `on_wait` with one
    line and waits (at most `lock_timeout` seconds; None waits for as long as it takes).
    """
    t0 = time.monotonic()
    validate_extract_options(max_seconds=max_seconds, batch_seconds=batch_seconds)  # --frames: with the model's L
    if dtype not in DTYPES:
        raise SerError(f"unknown --dtype {dtype!r}: use {', '.join(DTYPES)}")
    if not 0 <= shard < shards:
        raise SerError(f"--shard {shard} out of range for --shards {shards}")
    if batch_size is not None and batch_size < 1:
        raise SerError(f"--batch-size {batch_size}: use 1 or more utterances per batch")
    dev = resolve_device(device)
    if dev.type == "cpu" and dtype == "float16":
        raise SerError("--dtype float16 is for GPUs; on CPU use float32 (or bfloat16)")
    info = model_info(model)
    # checks that need the model, before any store file is touched
    frame_layers = parse_frame_layers(frames, info.num_layers)
    if info.input_kind != "functionals":  # openSMILE describes whole clips: never windowed
        validate_extract_options(max_seconds=window_seconds(info, max_seconds), receptive_field=info.receptive_field,
                                 sample_rate=info.sample_rate)
    if not manifest.utterances and not manifest.problems:
        raise SerError(f"corpus {manifest.corpus} at {manifest.root}: no utterances to extract and no file "
                       f"skipped; check the corpus root and --corpus")
    config = store_config(info, dtype, frame_layers, max_seconds)
    path = store_path(cache, model_slug(info.model_id), manifest.corpus, shard, shards)
    settings = _RunSettings(device=dev, autocast=DTYPES[dtype] if (dev.type == "cpu" and dtype == "bfloat16") else None,
                            max_seconds=config["max_seconds"], batch_size=batch_size, batch_seconds=batch_seconds,
                            prefetch_seconds=prefetch_seconds, progress=progress, on_skip=on_skip)
    backbone = _BackboneOnce(info, dev, DTYPES[dtype] if dev.type == "cuda" else torch.float32)
    with store_lock(path, timeout=lock_timeout, on_wait=on_wait):
        clean_dead_temps(path)
        try:
            result = _extract_locked(manifest, path, config, backbone, settings, shard=shard, shards=shards,
                                     checkpoint_seconds=checkpoint_seconds)
        finally:
            clean_dead_temps(path)  # nothing of this run is in flight any more: leave no temp behind
    result.wall_seconds = time.monotonic() - t0
    return result


def _extract_locked(manifest: Manifest, path: Path, config: dict, backbone: _BackboneOnce, settings: _RunSettings,
                    *, shard: int, shards: int, checkpoint_seconds: float) -> ExtractResult:
    """The run itself, with the store's lock held: frame layers to add, then what is not done yet."""
    result = ExtractResult(store=path)
    missing = missing_frame_layers(path, config)
    if missing:
        _add_frame_layers(path, config, missing, manifest, backbone(), settings)
        result.frames_added = missing
    work = plan(manifest, path, config, shard=shard, shards=shards)
    state, todo, problems = work.state, work.todo, work.problems
    if work.relabel and not state.parts:
        result.relabelled = relabel(path, work.relabel)
    result.already = work.already
    if not todo and not problems:
        if state.parts:
            assemble(path, config, corpus=manifest.corpus, shard=f"{shard}/{shards}")
        result.up_to_date = not state.parts and not missing and not result.relabelled
        return result

    writer = _Writer(path, config, shard, checkpoint_seconds)
    for s in problems:
        writer.skip(s)
        result.skipped.append(s)
        if settings.on_skip:
            settings.on_skip(s)
    if todo:
        # GPU: longest first, so an out-of-memory batch shows up at once and batches pad little
        todo.sort(key=lambda u: (-u.duration, u.id) if settings.device.type == "cuda" else (u.id,))
        _run(backbone(), todo, writer, result, settings)
    writer.flush()
    assemble(path, config, corpus=manifest.corpus, shard=f"{shard}/{shards}")
    return result


class _BackboneOnce:
    """Loads the backbone on first use (a no-op run never loads the model)."""

    def __init__(self, info: ModelInfo, device: torch.device, dtype: torch.dtype):
        self.info, self.device, self.dtype = info, device, dtype
        self.backbone: Backbone | None = None

    def __call__(self) -> Backbone:
        if self.backbone is None:
            self.backbone = load_backbone(self.info, device=self.device, dtype=self.dtype)
        return self.backbone


class _FrameSink:
    """Takes `_run`'s finished utterances and puts their frames of the new layers into the store."""

    def __init__(self, put: Callable[[str, dict[int, np.ndarray]], None], layers: list[int]):
        self.put = put
        self.config = {"frame_layers": layers}

    def add(self, item: _Pending) -> None:
        self.put(item.utt.id, {k: np.concatenate(v) for k, v in item.frames.items()})

    def skip(self, s: Skipped) -> None:
        raise StoreError(f"{s.path}: {s.reason}; it was extracted before, so its frames cannot be added "
                         f"without it: restore the file, or pass --cache DIR to extract into a new store")


def _add_frame_layers(path: Path, config: dict, layers: list[int], manifest: Manifest, backbone: Backbone,
                      settings: _RunSettings) -> None:
    """Run the model over the utterances of a finished store, keeping only frame `layers`."""
    here = {u.id: u for u in manifest.utterances}
    with adding_frame_layers(path, config, layers) as (stored, put):
        # the corpus may have moved since: read each file where the manifest says it is now
        todo = sorted((here.get(u.id, u) for u in stored), key=lambda u: u.id)
        _run(backbone, todo, _FrameSink(put, layers), ExtractResult(store=path), settings)


@dataclass(frozen=True)
class TorchRun:
    """This process's place in a `torchrun --nproc-per-node N` job: one shard per rank."""

    rank: int
    world_size: int
    local_rank: int

    def device(self, requested: str) -> str:
        """The rank's own GPU when `requested` is auto/cuda and CUDA is there; else `requested`."""
        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def barrier(self) -> None:
        """Wait until every rank has finished its shard (gloo: works with or without GPUs)."""
        import torch.distributed as tdist

        tdist.init_process_group("gloo")
        try:
            tdist.barrier()
        finally:
            tdist.destroy_process_group()


def torchrun(environ: dict[str, str] | None = None) -> TorchRun | None:
    """The torchrun job this process is part of, from RANK/WORLD_SIZE/LOCAL_RANK; None for one process."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(env.get("RANK", "0"))
    return TorchRun(rank=rank, world_size=world, local_rank=int(env.get("LOCAL_RANK", rank)))


@dataclass(frozen=True)
class _RunSettings:
    """How `_run` feeds the model: device, precision, windowing, batching, reporting."""

    device: torch.device
    autocast: torch.dtype | None        # CPU bfloat16 runs under autocast; None = model dtype
    max_seconds: float
    batch_size: int | None
    batch_seconds: float | None
    prefetch_seconds: float
    progress: bool
    on_skip: Callable[[Skipped], None] | None


def _run(backbone: Backbone, todo: list[Utterance], writer: _Writer | _FrameSink, result: ExtractResult,
         settings: _RunSettings) -> None:
    """Read, window, batch and run `todo` through the model; hand finished utterances to `writer`."""
    dev, sr = settings.device, backbone.sample_rate
    bar = _progress(settings.progress, len(todo), float(sum(u.duration for u in todo)))
    whole = backbone.input_kind == "functionals"  # functionals describe the whole clip; openSMILE streams it
    max_samples = 0 if whole else int(settings.max_seconds * sr)
    min_input = 0 if whole else int((backbone.max_input_seconds or 0) * sr)  # Whisper pads every window to 30 s
    frame_layers = writer.config["frame_layers"]
    cpu_batch = settings.batch_size or 1
    # gather two batches' worth at least: a smaller buffer would cap batches below --batch-seconds
    gather = max(settings.prefetch_seconds, 2 * (settings.batch_seconds or DEFAULT_BATCH_SECONDS))
    depth = 16
    if dev.type == "cuda":  # read the next gather while the GPU runs this one (bounded in audio seconds)
        mean_seconds = sum(u.duration for u in todo) / max(len(todo), 1)
        depth = int(min(512, max(16, gather / max(mean_seconds, 0.5))))
    fetch = _Prefetcher(todo, sr, backbone.receptive_field, depth=depth,
                        readers=GPU_READERS if dev.type == "cuda" else 1)
    pieces: list = []
    buffered = 0.0

    def skip(u: Utterance, reason: str) -> None:
        s = Skipped(u.id, u.path, reason)
        writer.skip(s)
        result.skipped.append(s)
        if settings.on_skip:
            settings.on_skip(s)
        bar.advance(u.duration, 1)

    def run_pieces(pieces):
        pieces.sort(key=lambda p: -len(p[1]))  # batches pad little
        # openSMILE at the files' own rates (sr None) runs clip by clip: batches by 16 kHz-seconds are as good as any
        for batch in _batches(pieces, dev, settings.batch_size, settings.batch_seconds, sr or 16000, min_input):
            for pending, stats in _forward(backbone, batch, dev, settings.autocast, frame_layers, skip):
                pending.add(*stats)
                if pending.windows_left == 0:
                    writer.add(pending)
                    result.extracted += 1
                    result.audio_seconds += pending.seconds
                    bar.advance(pending.seconds, 1)

    try:
        with bar:
            for u, wave, reason in fetch:
                if wave is None:
                    skip(u, reason)
                    continue
                cut = [wave] if whole else windows(wave, max_samples, backbone.receptive_field)
                if not cut:  # never lose an utterance silently
                    skip(u, f"no window of at most {settings.max_seconds:g} s holds the model's receptive field; "
                            f"raise --max-seconds")
                    continue
                pending = _Pending(u, len(wave), len(cut), wave_seconds(wave, sr))
                pieces.extend((pending, w) for w in cut)
                buffered += pending.seconds
                # GPU: gather audio so batches can be length-sorted; CPU: run each full batch as it fills
                if dev.type == "cuda" and buffered >= gather:
                    run_pieces(pieces)
                    pieces, buffered = [], 0.0
                elif dev.type != "cuda" and len(pieces) >= cpu_batch:
                    full = len(pieces) - len(pieces) % cpu_batch
                    run_pieces(pieces[:full])
                    pieces = pieces[full:]
            if pieces:
                run_pieces(pieces)
    finally:
        fetch.close()


def _forward(backbone, batch, dev, autocast, frame_layers, skip):
    """Yield (pending, (n, mean, m2, frames)) per piece; halves the batch on CUDA out-of-memory."""
    waves = [w for _, w in batch]
    pooled = None
    try:
        states, lengths = hidden_states(backbone, waves, device=dev, autocast_dtype=autocast)
        pooled = _pool(states, lengths, frame_layers)
    except RuntimeError as e:  # torch.OutOfMemoryError is one
        if not _out_of_memory(e):
            raise
    states = None
    # retried outside the handler: the exception's traceback holds the failed forward's tensors
    if pooled is None:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) > 1:
            half = len(batch) // 2
            yield from _forward(backbone, batch[:half], dev, autocast, frame_layers, skip)
            yield from _forward(backbone, batch[half:], dev, autocast, frame_layers, skip)
            return
        pending, wave = batch[0]
        pending.windows_left = -1  # never completes
        skip(pending.utt, f"out of memory on {dev} for a {wave_seconds(wave, backbone.sample_rate):.1f} s window; "
                          f"lower --max-seconds")
        return
    for (pending, _), stats in zip(batch, pooled):
        if pending.windows_left > 0:
            yield pending, stats


def _out_of_memory(e: BaseException) -> bool:
    """A CUDA allocation failure: torch's OutOfMemoryError, a CUDA error, or cuDNN/cuBLAS failing to allocate."""
    return isinstance(e, torch.OutOfMemoryError) or any(
        s in str(e) for s in ("CUDA error: out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED"))


class _NullBar:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def advance(self, seconds: float, n: int) -> None:
        pass


class _RichBar:
    def __init__(self, n: int, seconds: float):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        class _Speed(TextColumn):
            def render(self, task):
                elapsed = task.elapsed or 0.0
                done = task.fields.get("seconds", 0.0)
                return f"{done / elapsed:6.1f} audio-s/s" if elapsed > 0 else "   ... audio-s/s"

        self.progress = Progress(
            TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(), TextColumn("utts"),
            _Speed(""), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("extract", total=n, seconds=0.0)
        self.seconds = 0.0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *a):
        return self.progress.__exit__(*a)

    def advance(self, seconds: float, n: int) -> None:
        self.seconds += seconds
        self.progress.update(self.task, advance=n, seconds=self.seconds)


def _progress(enabled: bool, n: int, seconds: float):
    return _RichBar(n, seconds) if enabled else _NullBar()


def extract(corpus: str, root: str | Path, **kwargs) -> ExtractResult:
    """Load the corpus manifest at `root` and extract it (see `extract_manifest`)."""
    manifest = load_manifest(corpus, root)
    return extract_manifest(manifest, **kwargs)
