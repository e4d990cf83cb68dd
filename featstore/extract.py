"""`ser extract`: every layer of a backbone (see `ser models`) over a corpus, into the feature store.

The run is resumable and exact:
  - utterances already in the store (or in finished part files of an interrupted run) are not
    extracted again; a grown corpus extracts only its new utterances;
  - batches give the same features as running each utterance alone (see featstore.backbones.runtime);
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

The pipeline (issue 26): the main thread only feeds the model. Reader threads read and resample
ahead (`_Prefetcher`); part files (stacking, HDF5, checksums, fsync) are written by one writer
thread behind a bounded queue (`_Writer`, at most `WRITER_QUEUE` parts waiting, so a slow disk
holds back the run instead of filling memory; a writer error is raised on the main thread, and the
parts written before it are kept, so the run resumes). On CUDA batch k+1 is launched before batch
k's pooled statistics are taken off the device (`_Pooled`: pinned host buffers, asynchronous
copies, one event per batch), so the host's work between batches overlaps the GPU's. Every run
records where its wall time went (`ExtractResult.stages`).
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
from featstore.backbones.runtime import (
    DEFAULT_MODEL,
    Backbone,
    ModelInfo,
    hidden_states,
    load_backbone,
    model_info,
    model_slug,
)
from featstore.corpora import Manifest, Utterance, load_manifest
from featstore.device import resolve_device
from featstore.errors import AudioError, SerError
from featstore.options import COMPUTE_DTYPES
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

DTYPES = {name: getattr(torch, name) for name in COMPUTE_DTYPES}


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
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (see `Stages`)

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


class Stages:
    """Seconds spent per stage of an extraction, measured where the main thread spends them.

    Main-thread stages partition its wall time: `load` (model), `plan`, `read` (waiting for the
    readers), `window` (cutting and gathering), `forward` (padding, host-to-device, the model; on
    CUDA mostly kernel launches), `pool` (pooling on the device and, on CUDA, waiting for the batch
    to reach the host), `accumulate` (merging windows), `write`
    (handing parts to the writer; the whole write on the synchronous path, else only a wait when
    its queue is full), `finish` (the last part and the writer thread's end), `assemble`.
    `writer_thread` is the writer thread's busy time, overlapped with the others, so not in the sum.
    No synchronisation is added to measure: on CUDA the GPU's time lands in the stage that first waits
    for it, `pool` (the batch's event) or the next `forward` (the blocking copies at its start).
    """

    MAIN = ("load", "plan", "read", "window", "forward", "pool", "accumulate", "write", "finish", "assemble")

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def time(self, name: str):
        """A context manager adding the block's wall seconds to `name`."""
        return _Timed(self, name)


class _Timed:
    __slots__ = ("stages", "name", "t")

    def __init__(self, stages: Stages, name: str):
        self.stages, self.name = stages, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.stages.add(self.name, time.perf_counter() - self.t)
        return False


#: parts a writer thread may have waiting: beyond this the main thread waits (a slow disk bounds memory)
WRITER_QUEUE = 2
#: features per part with a writer thread: small parts are written while the model runs, so little is
#: left to write at the end (one 256 MB part of a short corpus was written after its last batch)
THREADED_PART_BYTES = 32 << 20


class _Writer:
    """Buffers finished utterances and flushes them as atomic part files.

    threaded: each flushed part is built and written on one writer thread, behind a queue of at
    most `queue_parts` parts (each at most `max_bytes` of features, `THREADED_PART_BYTES` by
    default, or `checkpoint_seconds` of work), in the order flushed, so part numbers keep their
    order and a later part still wins on assembly. An error on the writer thread (a full disk, say) is raised on the main thread at its
    next `add`/`skip`/`flush`/`close`; parts written before it stay, so the run resumes from them.
    `close()` writes what is queued and ends the thread; `kill -9` loses the queued parts with the
    unflushed ones (at most `queue_parts` + 1 parts of work). Not threaded: written at once, as before.
    """

    def __init__(self, path: Path, config: dict, shard: int, checkpoint_seconds: float, max_bytes: int | None = None,
                 *, threaded: bool = False, queue_parts: int = WRITER_QUEUE, stages: Stages | None = None):
        self.path = path
        self.config = config
        self.shard = shard
        self.checkpoint_seconds = checkpoint_seconds
        self.max_bytes = max_bytes or (THREADED_PART_BYTES if threaded else 256 << 20)
        self.stages = stages or Stages()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_parts))
            self._thread = threading.Thread(target=self._work, name="ser-part-writer", daemon=True)
            self._thread.start()
        self._reset()

    def _reset(self):
        self.items: list[_Pending] = []
        self.skipped: list[Skipped] = []
        self.bytes = 0
        self.last_flush = time.monotonic()

    def add(self, item: _Pending) -> None:
        self._raise_error()
        self.items.append(item)
        self.bytes += item.mean.nbytes + sum(a.nbytes for v in item.frames.values() for a in v)
        self._maybe_flush()

    def skip(self, s: Skipped) -> None:
        self._raise_error()
        self.skipped.append(s)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= self.checkpoint_seconds or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered utterances and skips over as one part (written now, or by the writer thread)."""
        self._raise_error()
        if not self.items and not self.skipped:
            return
        items, skipped = self.items, self.skipped
        self._reset()
        if self._thread is None:
            self._write(items, skipped)
        else:
            self._queue.put((items, skipped))   # blocks while `queue_parts` parts wait: memory stays bounded
            self._raise_error()

    def close(self, raise_error: bool = True) -> None:
        """Write every queued part and end the writer thread; raise its error, if it had one (`raise_error`)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if raise_error:
            self._raise_error()

    def _raise_error(self) -> None:
        """The writer thread's error, on the calling (main) thread; it stays raised until the run ends."""
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        """The writer thread: write parts in order; after an error, take (and drop) what comes so no put blocks."""
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue
            t = time.perf_counter()
            try:
                self._write(*job)
            except BaseException as e:  # raised on the main thread; what it held is extracted again on resume
                self._error = e
            finally:
                self.stages.add("writer_thread", time.perf_counter() - t)

    def _write(self, items: list[_Pending], skipped: list[Skipped]) -> None:
        """Stack the items' statistics into one Batch and write it as a part file (format unchanged)."""
        layers = self.config["frame_layers"]
        shape = (self.config["num_layers"], self.config["hidden_size"])
        if items:
            mean = np.stack([p.mean for p in items]).astype(np.float32, copy=False)
            # each item in its own precision (float32 for one window, float64 for merged windows), never the
            # part's: a stacked float64 item used to promote its part-mates, so a clip's std depended on
            # which part it was flushed in, i.e. on timing
            std = np.stack([np.sqrt(p.m2 / p.m2.dtype.type(p.count)).astype(np.float32, copy=False) for p in items])
        else:
            mean = std = np.zeros((0, *shape), np.float32)
        batch = Batch(
            utterances=[p.utt for p in items], mean=mean, std=std,
            n_samples=np.array([p.n_samples for p in items], dtype=np.int64),
            n_frames=np.array([p.count for p in items], dtype=np.int64),
            frames={k: [np.concatenate(p.frames[k]) for p in items] for k in layers},
            skipped=skipped,
        )
        write_part(new_part_path(self.path, self.shard), batch, self.config)


class _Pooled:
    """One batch's pooled statistics and frames on their way to the host.

    On CUDA the copies are asynchronous, into pinned host buffers, followed by one event: the main
    thread launches the next batch before it waits here (`items`). On CPU the tensors are the results.
    """

    def __init__(self, pooled: torch.Tensor, frames: torch.Tensor | None, lengths: list[int],
                 frame_layers: list[int], event=None):
        self.pooled, self.frames, self.lengths, self.frame_layers, self.event = \
            pooled, frames, lengths, frame_layers, event

    def items(self) -> list[tuple]:
        """Per item: (n, mean (L+1, D) f32, M2 (L+1, D) f32, frames {layer: (T, D) f16}); waits for the copies."""
        if self.event is not None:
            self.event.synchronize()
        pooled = self.pooled.numpy()                                        # (L+1, B, 2, D)
        frames = self.frames.numpy() if self.frames is not None else None   # (F, B, T, D)
        out = []
        for i, k in enumerate(self.lengths):
            item = {layer: frames[j, i, :k] for j, layer in enumerate(self.frame_layers)}
            out.append((k, pooled[:, i, 0], pooled[:, i, 1], item))
        return out


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """`x` on the host: on CUDA an asynchronous copy into a pinned buffer (complete after the batch's event).

    The per-item views handed on keep the buffer until their part is written; the writer's queue
    bounds how many there are, as it bounded the pageable copies before.
    """
    if x.device.type != "cuda":
        return x.cpu()
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    return host


def _pool_async(states: torch.Tensor, lengths: torch.Tensor, frame_layers: list[int],
                layer_chunk: int = 8) -> _Pooled:
    """`_pool`, with the copies to the host started but not waited for (see `_Pooled`).

    states: (L+1, B, T, D) on the model's device, padded frames past each item's length. The whole
    batch is pooled on the device at once (masked sums, a few layers at a time to bound memory)
    and copied to the host in one transfer per array: per-item pooling was a dozen small kernels
    and two host syncs per utterance. No host synchronisation here: the lengths go to the device
    from pinned memory without blocking.
    """
    dev = states.device
    cuda = dev.type == "cuda"
    n = (lengths.pin_memory() if cuda else lengths).to(dev, non_blocking=cuda)
    valid = (torch.arange(states.shape[2], device=dev)[None, :] < n[:, None]).to(torch.float32)[:, :, None]
    count = n.to(torch.float32)[None, :, None]
    means, m2s = [], []
    for lo in range(0, states.shape[0], layer_chunk):
        x = states[lo:lo + layer_chunk].float()                              # (l, B, T, D)
        mean = (x * valid).sum(dim=2) / count                                # (l, B, D)
        m2 = (((x - mean[:, :, None]) * valid) ** 2).sum(dim=2)
        means.append(mean)
        m2s.append(m2)
    pooled = _to_host(torch.stack([torch.cat(means), torch.cat(m2s)], dim=2))       # (L+1, B, 2, D)
    frames = _to_host(states[frame_layers].to(torch.float16)) if frame_layers else None   # (F, B, T, D)
    event = None
    if cuda:
        event = torch.cuda.Event()
        event.record()
    return _Pooled(pooled, frames, lengths.tolist(), frame_layers, event)


def _pool(states: torch.Tensor, lengths: torch.Tensor, frame_layers: list[int], layer_chunk: int = 8):
    """Per item: (n, mean (L+1, D) f32, M2 (L+1, D) f32, frames {layer: (T, D) f16}), on the host.

    The synchronous form of `_pool_async` (same arithmetic, same results).
    """
    return _pool_async(states, lengths, frame_layers, layer_chunk).items()


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
    on_wait: Callable[[str], None] | None = None, write_thread: bool = True, lookahead: int | None = None,
) -> ExtractResult:
    """Extract every layer of `model` for the utterances of `manifest` into the store.

    Returns what was done; the store is at `result.store` (`<cache>/<model-slug>/<corpus>.h5`, or
    `<corpus>.shard-<i>-of-<n>.h5` with shards > 1). Frame layers asked for that a finished
    store lacks are added to it (`result.frames_added`), its pooled data untouched.

    One writer per store: while another process writes it, this one calls `on_wait` with one
    line and waits (at most `lock_timeout` seconds; None waits for as long as it takes).
    write_thread: part files are written on a writer thread while the model runs (False: on the
    main thread, between batches, as before; the same files). lookahead: batches launched before the
    oldest is collected (default: 1 on CUDA, 0 on CPU; 0 is the old schedule). Neither changes a
    feature. `result.stages` says where the time went.
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
                            prefetch_seconds=prefetch_seconds, progress=progress, on_skip=on_skip,
                            write_thread=write_thread, lookahead=lookahead)
    backbone = _BackboneOnce(info, dev, DTYPES[dtype] if dev.type == "cuda" else torch.float32)
    with store_lock(path, timeout=lock_timeout, on_wait=on_wait):
        clean_dead_temps(path)
        try:
            result = _extract_locked(manifest, path, config, backbone, settings, shard=shard, shards=shards,
                                     checkpoint_seconds=checkpoint_seconds)
        finally:
            clean_dead_temps(path)  # nothing of this run is in flight any more: leave no temp behind
    result.wall_seconds = time.monotonic() - t0
    result.stages = dict(settings.stages.seconds)
    return result


def _extract_locked(manifest: Manifest, path: Path, config: dict, backbone: _BackboneOnce, settings: _RunSettings,
                    *, shard: int, shards: int, checkpoint_seconds: float) -> ExtractResult:
    """The run itself, with the store's lock held: frame layers to add, then what is not done yet."""
    result = ExtractResult(store=path)
    stages = settings.stages
    missing = missing_frame_layers(path, config)
    if missing:
        with stages.time("load"):
            model = backbone()
        _add_frame_layers(path, config, missing, manifest, model, settings)
        result.frames_added = missing
    with stages.time("plan"):
        work = plan(manifest, path, config, shard=shard, shards=shards)
    state, todo, problems = work.state, work.todo, work.problems
    if work.relabel and not state.parts:
        result.relabelled = relabel(path, work.relabel)
    result.already = work.already
    if not todo and not problems:
        if state.parts:
            with stages.time("assemble"):
                assemble(path, config, corpus=manifest.corpus, shard=f"{shard}/{shards}")
        result.up_to_date = not state.parts and not missing and not result.relabelled
        return result

    writer = _Writer(path, config, shard, checkpoint_seconds, threaded=settings.write_thread, stages=stages)
    try:
        for s in problems:
            writer.skip(s)
            result.skipped.append(s)
            if settings.on_skip:
                settings.on_skip(s)
        if todo:
            # GPU: longest first, so an out-of-memory batch shows up at once and batches pad little
            todo.sort(key=lambda u: (-u.duration, u.id) if settings.device.type == "cuda" else (u.id,))
            with stages.time("load"):
                model = backbone()
            _run(model, todo, writer, result, settings)
        with stages.time("finish"):
            writer.flush()
            writer.close()
    except BaseException:
        writer.close(raise_error=False)   # what was queued is written: an interrupted run resumes from it
        raise
    with stages.time("assemble"):
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
    write_thread: bool = True           # part files written on a writer thread (see `_Writer`)
    lookahead: int | None = None        # batches launched before the oldest is collected; None: 1 on CUDA, 0 on CPU
    stages: Stages = field(default_factory=Stages)


def _run(backbone: Backbone, todo: list[Utterance], writer: _Writer | _FrameSink, result: ExtractResult,
         settings: _RunSettings) -> None:
    """Read, window, batch and run `todo` through the model; hand finished utterances to `writer`.

    Batches are launched `lookahead` ahead of their collection (see `_Pooled`): on CUDA the next
    batch is queued on the GPU before this one's results are waited for. Results are collected in
    launch order, so features and the order utterances reach the writer do not depend on it.
    """
    from collections import deque

    dev, sr = settings.device, backbone.sample_rate
    stages = settings.stages
    lookahead = settings.lookahead if settings.lookahead is not None else int(dev.type == "cuda")
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
    inflight: deque = deque()   # (batch, _Pooled) launched, not yet collected

    def skip(u: Utterance, reason: str) -> None:
        s = Skipped(u.id, u.path, reason)
        with stages.time("write"):
            writer.skip(s)
        result.skipped.append(s)
        if settings.on_skip:
            settings.on_skip(s)
        bar.advance(u.duration, 1)

    def collect(batch, pooled: _Pooled) -> None:
        with stages.time("pool"):
            stats = pooled.items()
        for (pending, _), st in zip(batch, stats):
            if pending.windows_left <= 0:   # one of its windows was skipped (out of memory)
                continue
            with stages.time("accumulate"):
                pending.add(*st)
            if pending.windows_left == 0:
                with stages.time("write"):
                    writer.add(pending)
                result.extracted += 1
                result.audio_seconds += pending.seconds
                bar.advance(pending.seconds, 1)

    def run_pieces(pieces):
        pieces.sort(key=lambda p: -len(p[1]))  # batches pad little
        # openSMILE at the files' own rates (sr None) runs clip by clip: batches by 16 kHz-seconds are as good as any
        for batch in _batches(pieces, dev, settings.batch_size, settings.batch_seconds, sr or 16000, min_input):
            for launched in _forward(backbone, batch, dev, settings.autocast, frame_layers, skip, stages):
                inflight.append(launched)
                while len(inflight) > lookahead:
                    collect(*inflight.popleft())

    try:
        with bar:
            items = iter(fetch)
            while True:
                with stages.time("read"):
                    got = next(items, None)
                if got is None:
                    break
                u, wave, reason = got
                if wave is None:
                    skip(u, reason)
                    continue
                with stages.time("window"):
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
            while inflight:
                collect(*inflight.popleft())
    finally:
        fetch.close()


def _forward(backbone, batch, dev, autocast, frame_layers, skip, stages: Stages | None = None):
    """Launch `batch`: yield (batch, _Pooled) per sub-batch run; halves the batch on CUDA out-of-memory.

    A window that does not fit even alone is skipped (its utterance never completes). The results
    are collected later (`_Pooled.items`): on CUDA the copies to the host are still in flight.
    """
    stages = stages or Stages()
    waves = [w for _, w in batch]
    pooled = None
    try:
        with stages.time("forward"):
            states, lengths = hidden_states(backbone, waves, device=dev, autocast_dtype=autocast)
        with stages.time("pool"):
            pooled = _pool_async(states, lengths, frame_layers)
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
            yield from _forward(backbone, batch[:half], dev, autocast, frame_layers, skip, stages)
            yield from _forward(backbone, batch[half:], dev, autocast, frame_layers, skip, stages)
            return
        pending, wave = batch[0]
        pending.windows_left = -1  # never completes
        skip(pending.utt, f"out of memory on {dev} for a {wave_seconds(wave, backbone.sample_rate):.1f} s window; "
                          f"lower --max-seconds")
        return
    yield batch, pooled


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
