"""Reading audio for the backbone: any file soundfile reads -> float32 mono at the model's rate.

soundfile (libsndfile) reads WAV (8/16/24/32-bit int, float), FLAC, OGG, AIFF; the audio track
of a video or web container (.mp4, .avi, .webm, .mkv, .mov: MELD, eNTERFACE, MER2023, EMNS) is
decoded with PyAV, whose wheels bundle ffmpeg's codecs; soxr resamples. An utterance that is a
segment of a longer file (PAVOQUE) is read with `start=`/`end=` seconds: only that span is read
from disk. Every failure is an `AudioError` subclass naming the file, so a corpus run can list
the bad files instead of stopping with a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from featstore.errors import EmptyAudio, NonFiniteAudio, TooShortAudio, UnreadableAudio

#: wav2vec2's convolutional feature encoder needs 400 samples (25 ms at 16 kHz) for one frame.
RECEPTIVE_FIELD = 400

#: Suffixes read as containers (audio track decoded with PyAV) rather than with soundfile.
CONTAINER_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")

# A segment may end this far past the file's last sample (annotations round to 10 ms).
SEGMENT_SLACK_S = 0.02


def is_container(path: str | Path) -> bool:
    return Path(path).suffix.lower() in CONTAINER_SUFFIXES


def load_audio(path: str | Path, target_sr: int | None = 16000, *, min_samples: int = RECEPTIVE_FIELD,
               start: float | None = None, end: float | None = None) -> np.ndarray:
    """Read `path` (or its `start`..`end` seconds) as float32 mono at `target_sr` Hz (None keeps the file's rate).

    Returns shape `(samples,)`, values in [-1, 1] for integer formats. Channels are averaged;
    resampling uses soxr "HQ". A segment (`start`/`end`) reads only its frames; one that ends
    past the end of the file is UnreadableAudio. Raises UnreadableAudio, EmptyAudio,
    NonFiniteAudio, or TooShortAudio (fewer than `min_samples` samples after resampling).
    """
    if is_container(path):
        data, sr = read_container(path)
        if start is not None or end is not None:
            data = data[segment_frames(path, data.shape[0], sr, start, end)]
    elif start is not None or end is not None:
        data, sr = read_segment(path, start, end)
    else:
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
        except Exception as e:  # LibsndfileError / RuntimeError / OSError / TypeError on odd inputs
            raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    if data.shape[0] == 0:
        raise EmptyAudio(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise NonFiniteAudio(path, f"{bad} samples are NaN or infinite; re-export the file")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if target_sr is not None and sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    rate = target_sr or sr
    if mono.shape[0] < min_samples:
        raise TooShortAudio(
            path,
            f"too short: {mono.shape[0]} samples at {rate} Hz, fewer than the model's receptive "
            f"field of {min_samples} samples ({1000 * min_samples / rate:.0f} ms)",
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def segment_frames(path: str | Path, n_frames: int, sr: int, start: float | None, end: float | None) -> slice:
    """Frames `[a, b)` of seconds `start`..`end` in a file of `n_frames` at `sr`; UnreadableAudio if outside it."""
    a = int(round((start or 0.0) * sr))
    b = n_frames if end is None else int(round(end * sr))
    if b > n_frames + SEGMENT_SLACK_S * sr or a >= n_frames or b <= a:
        raise UnreadableAudio(path, f"segment {start or 0.0:.2f}-{end if end is not None else n_frames / sr:.2f} s "
                                    f"lies outside the file ({n_frames / sr:.2f} s); check its annotation")
    return slice(a, min(b, n_frames))


def read_segment(path: str | Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    """Only the frames of `start`..`end` seconds of a soundfile-readable file: `((frames, channels), rate)`."""
    n_frames, sr, _ = audio_info(path)
    span = segment_frames(path, n_frames, sr, start, end)
    try:
        data, sr = sf.read(str(path), start=span.start, stop=span.stop, dtype="float32", always_2d=True)
    except Exception as e:
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    return data, sr


def read_container(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio track of a video/web container, decoded: `((frames, channels), rate)`.

    UnreadableAudio for a file PyAV cannot open or decode, and for a container without an
    audio track (a video-only file: nothing to extract).
    """
    import av

    chunks, sr = [], 0
    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(path, container)
            for frame in container.decode(stream):
                chunks.append(_frame_samples(frame))
                sr = frame.sample_rate
    except UnreadableAudio:
        raise
    except Exception as e:  # av.error.InvalidDataError / FFmpegError / OSError
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), sr or 16000
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32), sr


def container_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of a container's audio track from its metadata; UnreadableAudio."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(path, container)
            sr, channels = int(stream.rate), int(stream.codec_context.channels)
            if stream.duration is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = None
    except UnreadableAudio:
        raise
    except Exception as e:
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    if seconds is None:  # no duration in the metadata (some streamed webm): decode to count
        data, sr = read_container(path)
        return int(data.shape[0]), int(sr), int(data.shape[1])
    return int(round(seconds * sr)), sr, channels


def _audio_stream(path, container):
    if not container.streams.audio:
        raise UnreadableAudio(path, "no audio track in this container (video only); nothing to extract")
    return container.streams.audio[0]


def _frame_samples(frame) -> np.ndarray:
    """One decoded PyAV audio frame as float32 `(n, channels)` in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    if data.dtype.kind == "u":  # unsigned PCM (u8) is centred on half its range
        half = (np.iinfo(data.dtype).max + 1) / 2
        data = (data.astype(np.float32) - half) / half
    elif data.dtype.kind == "i":  # s16, s32
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32, copy=False)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) from the header only; raises UnreadableAudio."""
    if is_container(path):
        return container_info(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    return int(info.frames), int(info.samplerate), int(info.channels)


def _why_unreadable(path: str | Path, error: Exception) -> str:
    """One short phrase; only runs after a failure, so the happy path stays one syscall."""
    p = Path(path)
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return "is a directory, not an audio file"
    if not os.access(p, os.R_OK):
        return "permission denied (check the file's permissions)"
    if p.stat().st_size == 0:
        return "empty file (0 bytes), not audio"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"not a readable audio file or a broken header ({detail[:160]})"


def windows(wave: np.ndarray, max_samples: int, min_samples: int) -> list[np.ndarray]:
    """Near-equal consecutive windows of at most `max_samples`; pieces under `min_samples` dropped.

    How `ser extract` (and `ser predict`) cut clips longer than `--max-seconds`.
    """
    if len(wave) <= max_samples:
        return [wave]
    n = -(-len(wave) // max_samples)
    bounds = np.linspace(0, len(wave), n + 1).astype(int)
    return [wave[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= min_samples]

