"""Reading audio for the backbone: any file soundfile reads -> float32 mono at the model's rate.

soundfile (libsndfile) reads WAV (8/16/24/32-bit int, float), FLAC, OGG, AIFF; soxr resamples.
Every failure is an `AudioError` subclass naming the file, so a corpus run can list the bad
files instead of stopping with a traceback.
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


def load_audio(path: str | Path, target_sr: int | None = 16000, *, min_samples: int = RECEPTIVE_FIELD) -> np.ndarray:
    """Read `path` as float32 mono at `target_sr` Hz (None keeps the file's rate).

    Returns shape `(samples,)`, values in [-1, 1] for integer formats. Channels are averaged;
    resampling uses soxr "HQ". Raises UnreadableAudio, EmptyAudio, NonFiniteAudio, or
    TooShortAudio (fewer than `min_samples` samples after resampling).
    """
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


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) from the header only; raises UnreadableAudio."""
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

