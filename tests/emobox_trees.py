"""Trees at EmoBox's real relative paths for the 16 later corpora, built from the packaged table.

Audio files are tiny (a few hundred frames; containers 20 ms of audio, written once per suffix
and rate with PyAV and copied); the metadata the loaders read (MELD's, MER2023's,
EMNS's and Emozionalmente's tables, PAVOQUE's segment annotations) is written in its format.
"""

from __future__ import annotations

import io
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

from featstore.reference import reference
from featstore.synth import write_container

CONTAINER_SUFFIXES = (".mp4", ".avi", ".webm")
# PAVOQUE's recordings are hours long: the test writes them at a low rate (the segments are in seconds).
PAVOQUE_TEST_RATE = 200


def frames_for(index: int) -> int:
    """A few distinct lengths, so a wrong duration would show."""
    return 420 + 20 * (index % 5)


@cache
def wav_bytes(sample_rate: int, frames: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@cache
def container_bytes(suffix: str, sample_rate: int) -> bytes:
    import tempfile

    rate = 48000 if suffix == ".webm" else sample_rate  # Opus runs at 48 kHz
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"clip{suffix}"
        write_container(path, np.zeros(rate // 50, dtype=np.float32), rate)  # 20 ms
        return path.read_bytes()


def build_tree(root: Path, corpus: str) -> dict[str, int]:
    """Write every file EmoBox lists for `corpus` under `root`; returns key -> frames written (wavs)."""
    ref = reference(corpus)
    frames = {}
    if corpus == "pavoque":
        write_pavoque(root, ref.files)
        return frames
    for i, f in enumerate(ref.files):
        path = root / f.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix in CONTAINER_SUFFIXES:
            path.write_bytes(container_bytes(suffix, f.sample_rate))
        else:
            path.write_bytes(wav_bytes(f.sample_rate, frames_for(i)))
            frames[f.key] = frames_for(i)
    write_metadata(root, corpus, ref.files)
    return frames


def write_pavoque(root: Path, files) -> None:
    from featstore.corpora.pavoque import format_segments

    by_file = defaultdict(list)
    for f in files:
        by_file[f.relpath].append((f.key.split("-")[1], f.start, f.end, f.label_raw))
    root.mkdir(parents=True, exist_ok=True)
    for relpath, entries in by_file.items():
        seconds = max(e[2] for e in entries) + 0.5
        sf.write(root / relpath, np.zeros(int(seconds * PAVOQUE_TEST_RATE), dtype=np.int16), PAVOQUE_TEST_RATE,
                 format="FLAC", subtype="PCM_16")
        (root / relpath).with_suffix(".yaml").write_text(format_segments(entries), encoding="utf-8")


def write_metadata(root: Path, corpus: str, files) -> None:
    """The tables MELD, MER2023, EMNS and Emozionalmente keep their labels (and speakers) in."""
    if corpus == "meld":
        from featstore.corpora.meld import format_table

        tables = defaultdict(list)
        for f in files:
            stem, split = f.key[len("meld-"):].rsplit("-", 1)
            d, u = stem[3:].split("_utt")
            tables[split].append((int(d), int(u), ("Monica", "Ross", "Chandler")[int(d) % 3], f.label_raw))
        for split, entries in tables.items():
            (root / f"{split}_sent_emo.csv").write_text(format_table(entries), encoding="utf-8")
    elif corpus == "mer2023":
        from featstore.corpora.mer2023 import format_labels

        (root / "mer2023train" / "train-label.csv").write_text(
            format_labels([(Path(f.relpath).stem, f.label_raw) for f in files]), encoding="utf-8")
    elif corpus == "emns":
        from featstore.corpora.emns import format_metadata

        (root / "metadata.csv").write_text(
            format_metadata([(f.relpath, f.label_raw, "female") for f in files]), encoding="utf-8")
    elif corpus == "emozionalmente":
        from featstore.corpora.emozionalmente import format_samples, format_users

        (root / "metadata").mkdir(exist_ok=True)
        actors = {f.key: f"user{int(Path(f.relpath).stem) % 40:02d}" for f in files}
        (root / "metadata" / "samples.csv").write_text(
            format_samples([(Path(f.relpath).name, actors[f.key], f.label_raw) for f in files]), encoding="utf-8")
        (root / "metadata" / "users.csv").write_text(
            format_users([(a, "female" if int(a[4:]) % 2 else "male") for a in sorted(set(actors.values()))]),
            encoding="utf-8")
