"""Reading audio for the backbone: any file soundfile reads -> float32 mono at the model's rate.

soundfile (libsndfile) reads WAV (8/16/24/32-bit int, float), FLAC, OGG, AIFF; the audio track
of a video or web container (.mp4, .avi, .webm, .mkv, .mov: MELD, eNTERFACE, MER2023, EMNS) is
decoded with PyAV, whose wheels bundle ffmpeg's codecs; soxr resamples. An utterance that is a
segment of a longer file (PAVOQUE) is read with `start=`/`end=` seconds: only that span is read
from disk. Every failure is an `AudioError` subclass naming the file, so a corpus run can list
the bad files instead of stopping with a traceback.

Truncated files are refused (`TruncatedAudio`), never read as shorter clips: a WAV whose `data`
chunk declares more frames than the file holds, a FLAC whose STREAMINFO declares more samples than
decode, a container whose own structure (MP4 boxes, the WebM/Matroska Segment, AVI's RIFF chunks)
runs past the end of the file, and a decode that fails part-way. Container lengths come from the
decoded samples, never from header durations (which can lie: an MP4 claiming 37 h holding 2 s).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from featstore.errors import EmptyAudio, NonFiniteAudio, SerError, TooShortAudio, TruncatedAudio, UnreadableAudio

#: wav2vec2's convolutional feature encoder needs 400 samples (25 ms at 16 kHz) for one frame.
RECEPTIVE_FIELD = 400

#: Suffixes read as containers (audio track decoded with PyAV) rather than with soundfile.
CONTAINER_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")

# A segment may end this far past the file's last sample (annotations round to 10 ms).
SEGMENT_SLACK_S = 0.02

# Declared minus decoded length tolerated before a file counts as truncated, besides one codec frame
# (measured on PyAV-written files: Opus/WebM durations exceed the samples by 14 ms, AVI/PCM by 2 ms).
TRUNCATION_SLACK_S = 0.02


class RatedWave(np.ndarray):
    """A mono waveform read at its file's own rate (`load_audio(path, None)`): an ndarray with `.rate` (Hz)."""

    rate: int

    def __array_finalize__(self, obj) -> None:
        self.rate = getattr(obj, "rate", 0)


def wave_seconds(wave: np.ndarray, sample_rate: int | None) -> float:
    """Seconds of `wave`: at `sample_rate`, or at its own `.rate` when it was read at the file's rate."""
    return len(wave) / (getattr(wave, "rate", 0) or sample_rate)


def is_container(path: str | Path) -> bool:
    return Path(path).suffix.lower() in CONTAINER_SUFFIXES


def load_audio(path: str | Path, target_sr: int | None = 16000, *, min_samples: int = RECEPTIVE_FIELD,
               start: float | None = None, end: float | None = None, min_seconds: float | None = None) -> np.ndarray:
    """Read `path` (or its `start`..`end` seconds) as float32 mono at `target_sr` Hz (None keeps the
    file's rate and returns a `RatedWave`, whose `.rate` is that rate).

    min_seconds: the shortest length in seconds, instead of `min_samples` (for reads at the file's rate).

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
            _raise_if_cut_short(path, e)
            raise UnreadableAudio(path, _why_unreadable(path, e)) from e
        check_wav_length(path, data.shape[0], sr)
    if data.shape[0] == 0:
        raise EmptyAudio(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise NonFiniteAudio(path, f"{bad} samples are NaN or infinite; re-export the file")
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if target_sr is not None and sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ")
    rate = target_sr or sr
    if min_seconds is not None:
        min_samples = math.ceil(min_seconds * rate)
    if mono.shape[0] < min_samples:
        raise TooShortAudio(
            path,
            f"too short: {mono.shape[0]} samples at {rate} Hz, fewer than the model's receptive "
            f"field of {min_samples} samples ({1000 * min_samples / rate:.0f} ms)",
        )
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if target_sr is None:
        mono = mono.view(RatedWave)
        mono.rate = int(sr)
    return mono


def model_audio(path: str | Path, sample_rate: int | None, receptive_field: int, *, start: float | None = None,
                end: float | None = None) -> np.ndarray:
    """`path` read as a model is fed: mono at `sample_rate` with at least `receptive_field` samples;
    sample_rate None (openSMILE at each file's own rate): a `RatedWave`, the receptive field counted at 16 kHz."""
    if sample_rate:
        return load_audio(path, sample_rate, min_samples=receptive_field, start=start, end=end)
    return load_audio(path, None, min_seconds=receptive_field / 16000, start=start, end=end)


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
        _raise_if_cut_short(path, e)
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    return data, sr


def read_container(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio track of a video/web container, decoded: `((frames, channels), rate)`.

    UnreadableAudio for a file PyAV cannot open or decode, and for a container without an
    audio track (a video-only file: nothing to extract); TruncatedAudio for a file cut short.
    """
    chunks, frames, sr, channels = _decode_container(path, keep=True)
    if not chunks:
        return np.zeros((0, channels or 1), dtype=np.float32), sr or 16000
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32), sr


def container_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample_rate, channels) of a container's audio track, frames counted by decoding it.

    Header durations are not trusted (an MP4's can claim 37 h for a 2 s track); decoding only
    counts samples, a few ms per clip. UnreadableAudio, or TruncatedAudio for a file cut short.
    """
    _, frames, sr, channels = _decode_container(path, keep=False)
    return frames, sr, channels


def _decode_container(path: str | Path, *, keep: bool) -> tuple[list[np.ndarray], int, int, int]:
    """Decode the first audio track: (chunks `(n, channels)` if `keep`, frames, rate, channels), length-checked."""
    import av

    chunks, frames, sr, channels, biggest, declared = [], 0, 0, 0, 0, None
    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(path, container)
            sr, channels = int(stream.rate or 0), int(stream.codec_context.channels or 0)
            declared = _declared_seconds(container, stream)
            for frame in container.decode(stream):
                if keep:
                    chunks.append(_frame_samples(frame))
                frames += frame.samples
                biggest = max(biggest, frame.samples)
                sr, channels = frame.sample_rate, len(frame.layout.channels)
    except UnreadableAudio:
        raise
    except Exception as e:  # av.error.InvalidDataError / FFmpegError / OSError
        _raise_if_container_cut(path, frames, sr, declared)
        if frames:  # a decode that fails part-way: never a shorter clip
            raise TruncatedAudio(path, f"truncated or damaged: decoding fails after {frames / sr:.2f} s "
                                       f"({_detail(e)}); re-download or re-export the file") from e
        raise UnreadableAudio(path, _why_unreadable(path, e)) from e
    _raise_if_container_cut(path, frames, sr, declared, slack=biggest)
    return chunks, frames, sr or 16000, channels or 1


def _declared_seconds(container, stream) -> float | None:
    """The track's length as its header states it (seconds), or None; AVI: the stream header's frame count."""
    import av

    try:
        if "avi" in container.format.name and stream.frames and stream.time_base:
            return float(stream.frames * stream.time_base)
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        pass
    return None


def _raise_if_container_cut(path: str | Path, frames: int, sr: int, declared: float | None, slack: int = 0) -> None:
    """TruncatedAudio when the container's own structure runs past the end of the file, or, for a
    container whose structure tells nothing, when fewer samples decode than its header declares."""
    size = container_extent(path)
    if size is not None:
        want, have = size
        if want > have:
            said = f"the header declares {declared:.2f} s, " if declared else ""
            raise TruncatedAudio(path, f"truncated: {said}{frames / sr if sr else 0:.2f} s decode, the file holds "
                                       f"{have} of its {want} bytes; re-download or re-export the file")
        return  # every byte the structure declares is there: the decoded samples are the length
    if declared and sr and frames < declared * sr - max(TRUNCATION_SLACK_S * sr, slack):
        raise TruncatedAudio(path, f"truncated: the header declares {declared:.2f} s but only {frames / sr:.2f} s "
                                   f"decode; re-download or re-export the file")


def container_extent(path: str | Path) -> tuple[int, int] | None:
    """(bytes the file's own structure declares, bytes it has), or None when the format tells nothing.

    Reads headers only: ISO BMFF (.mp4/.mov) top-level boxes, the Matroska/WebM Segment element
    (None for a live stream's unknown size), RIFF (.avi) top-level chunks.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] == b"\x1a\x45\xdf\xa3":
                end = _ebml_segment_end(f)
            elif head[:4] in (b"RIFF", b"RIFX"):
                end = _chunks_end(f, size, header=8, big=head[:4] == b"RIFX")
            elif head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                end = _boxes_end(f, size)
            else:
                return None
    except OSError:
        return None
    return None if end is None else (end, size)


def _boxes_end(f, size: int) -> int | None:
    """End of the last top-level ISO BMFF box (a box running past the file's end ends there)."""
    pos = 0
    for _ in range(4096):
        if pos >= size:
            return pos
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return pos + 8
        n = struct.unpack(">I", head[:4])[0]
        if n == 1:
            if len(head) < 16:
                return pos + 16
            n = struct.unpack(">Q", head[8:16])[0]
        elif n == 0:  # the last box, to the end of the file
            return size
        if n < 8:
            return None  # not a box structure we can follow: leave the verdict to the decoder
        pos += n
    return None


def _chunks_end(f, size: int, *, header: int, big: bool) -> int | None:
    """End of the last top-level RIFF chunk (AVI: RIFF 'AVI ' then any 'AVIX' chunks)."""
    pos = 0
    for _ in range(4096):
        if pos >= size:
            return pos
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return pos + 8
        n = struct.unpack(">I" if big else "<I", head[4:8])[0]
        if n in (0, 0xFFFFFFFF):
            return None  # a streamed file whose writer never filled the size in
        pos += header + n + (n & 1)
    return None


def _ebml_vint(f, *, marker: bool) -> tuple[int, bool] | None:
    """One EBML variable-length integer: (value, all data bits set = unknown size); None at the end."""
    first = f.read(1)
    if not first:
        return None
    b, length, mask = first[0], 1, 0x80
    while length <= 8 and not b & mask:
        length, mask = length + 1, mask >> 1
    if length > 8:
        return None
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = b if marker else b & (mask - 1)
    for c in rest:
        value = value << 8 | c
    return value, not marker and value == (1 << (7 * length)) - 1


def _ebml_segment_end(f) -> int | None:
    """Where the Matroska/WebM Segment element says it ends; None for an unknown (live) size."""
    f.seek(0)
    for _ in range(16):
        ident = _ebml_vint(f, marker=True)
        size = _ebml_vint(f, marker=False)
        if ident is None or size is None:
            return None
        if ident[0] == 0x18538067:  # Segment
            return None if size[1] else f.tell() + size[0]
        if size[1]:
            return None
        f.seek(f.tell() + size[0])
    return None


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
    check_wav_length(path, int(info.frames), int(info.samplerate))  # libsndfile counts only the frames present
    return int(info.frames), int(info.samplerate), int(info.channels)


def wav_declared_frames(path: str | Path) -> int | None:
    """Frames a WAV's `data` chunk declares (its byte size / block align); None when it tells nothing.

    None for anything but RIFF/RIFX WAVE with PCM, float, A-law or mu-law samples, and for streamed
    files whose writer left the size at 0 or 0xFFFFFFFF (RF64 keeps its size elsewhere).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            pos, block_align = 12, None
            for _ in range(256):
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                n = struct.unpack(endian + "I", chunk[4:8])[0]
                if chunk[:4] == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) < 16:
                        return None
                    tag, block_align = struct.unpack(endian + "H", fmt[:2])[0], struct.unpack(endian + "H", fmt[12:14])[0]
                    if tag not in (1, 3, 6, 7, 0xFFFE):  # PCM, float, A-law, mu-law, extensible
                        return None
                elif chunk[:4] == b"data":
                    if not block_align or n in (0, 0xFFFFFFFF):
                        return None
                    return n // block_align
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def check_wav_length(path: str | Path, frames: int, sr: int) -> None:
    """TruncatedAudio when a WAV holds fewer frames than its header declares (more than 20 ms fewer)."""
    declared = wav_declared_frames(path)
    if declared is not None and sr and frames < declared - TRUNCATION_SLACK_S * sr:
        raise TruncatedAudio(path, f"truncated: the header declares {declared / sr:.2f} s but the file holds "
                                   f"{frames / sr:.2f} s; re-download or re-export the file")


def _raise_if_cut_short(path: str | Path, error: Exception) -> None:
    """After libsndfile fails to read: TruncatedAudio when the header declares frames and decoding stops
    part-way (a cut FLAC). Returns quietly when the file is not that."""
    try:
        with sf.SoundFile(str(path)) as f:
            declared, sr, got = int(f.frames), int(f.samplerate), 0
            if declared <= 0:
                return
            try:
                while got < declared:
                    block = f.read(4096, dtype="float32", always_2d=True)  # small: a failing block loses its frames
                    if not len(block):
                        break
                    got += len(block)
            except Exception:
                pass
    except Exception:
        return
    if 0 < got < declared:
        raise TruncatedAudio(path, f"truncated: the header declares {declared / sr:.2f} s but decoding stops at "
                                   f"{got / sr:.2f} s ({_detail(error)}); re-download or re-export the file") from error


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
    return f"not a readable audio file or a broken header ({_detail(error)})"


def _detail(error: Exception) -> str:
    """The first line of an exception's message (its type when empty), at most 160 characters."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


def validate_extract_options(*, frames: str | int | Sequence[int] | None = None, max_seconds: float | None = None,
                             batch_seconds: float | None = None, num_layers: int | None = None,
                             receptive_field: int | None = None, sample_rate: int | None = None) -> None:
    """Refuse nonsense `ser extract` settings with one SerError line naming the value and the fix.

    Cheap (no torch, no model): the CLI calls it at parse time with `frames`/`max_seconds`/
    `batch_seconds` alone; `extract_manifest` calls it again with the model's `num_layers` (L+1),
    `receptive_field` (samples) and `sample_rate` before any store file is touched.
    frames: `none`, `all`, `6,12`, `3-9` or a list of ints: every layer in 0..L (never negative).
    max_seconds: finite, above 0, and with a model at least twice its receptive field (a window
    shorter than that can be cut into pieces that give no frame at all).
    """
    if frames is not None:
        _check_frames(frames, num_layers)
    for option, value in (("--max-seconds", max_seconds), ("--batch-seconds", batch_seconds)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not math.isfinite(value) or value <= 0:
            raise SerError(f"{option} {value!r}: must be a finite number of seconds above 0")
    if max_seconds is not None and receptive_field and sample_rate:
        least = 2 * receptive_field / sample_rate
        if max_seconds < least:
            raise SerError(f"--max-seconds {max_seconds:g}: windows this short give the model no frames; it needs "
                           f"at least {least:.4g} s (twice its receptive field of {receptive_field} samples at "
                           f"{sample_rate} Hz): use --max-seconds {math.ceil(least * 1000) / 1000:g} or more "
                           f"(default 30)")


def _check_frames(frames: str | int | Sequence[int], num_layers: int | None) -> None:
    """`--frames` layers: integers 0..L (`num_layers` = L+1 when known); `none`/`all` pass."""
    import re

    top = f"0..{num_layers - 1}" if num_layers else "0..L (`ser models` shows L)"
    if isinstance(frames, str):
        spec = frames.strip()
        if spec in ("", "none", "all"):
            return
        layers: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                layers.extend((int(m[1]), int(m[2])))
            elif re.fullmatch(r"[+-]?\d+", part):
                layers.append(int(part))
            else:
                raise SerError(f"--frames {frames!r}: use none, all, or layers like 6,12 or 3-9 "
                               f"(layers {top})")
    else:
        items = [frames] if isinstance(frames, int | np.integer) else list(frames)
        if any(isinstance(k, bool) or not isinstance(k, int | np.integer) for k in items):
            raise SerError(f"--frames {frames!r}: layers are whole numbers {top}")
        layers = [int(k) for k in items]
    for k in layers:
        if k < 0:
            raise SerError(f"--frames {frames!r}: layer {k} is negative; layers count from 0 (hidden_states[0]) "
                           f"to L: use layers {top}")
        if num_layers and k >= num_layers:
            raise SerError(f"--frames {frames!r}: layer {k} is out of range; this model has layers {top}")


def windows(wave: np.ndarray, max_samples: int, min_samples: int) -> list[np.ndarray]:
    """Near-equal consecutive windows of at most `max_samples`; pieces under `min_samples` dropped.

    How `ser extract` (and `ser predict`) cut clips longer than `--max-seconds`.
    """
    if len(wave) <= max_samples:
        return [wave]
    n = -(-len(wave) // max_samples)
    bounds = np.linspace(0, len(wave), n + 1).astype(int)
    return [wave[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= min_samples]

