"""EmoBox's published metadata, shipped compactly in `featstore/data/emobox.json.gz`.

Built by `scripts/build_emobox_table.py` from EmoBox's `data/` folder (MIT licence). Per corpus:
every file EmoBox lists, with its EmoBox key, path inside the unpacked archive, sample rate,
frame count, the corpus' own label and the EmoBox test fold holding it (0 = in no test fold);
for segment corpora (PAVOQUE) also the segment's start and end in seconds. `track2(corpus)`
gives EmoBox's cross-corpus track: the balanced 240-utterance subset of IEMOCAP, MELD, RAVDESS
or SAVEE, as (key, label, speaker) with the 4 shared labels (neutral, happy, sad, angry).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources


@dataclass(frozen=True)
class ReferenceFile:
    key: str          # EmoBox key, e.g. "ravdess-03-01-05-01-02-01-18"
    relpath: str      # path inside the unpacked official archive
    sample_rate: int
    num_frames: int
    label_raw: str    # the corpus' own label as EmoBox writes it
    test_fold: int    # 1-based EmoBox test fold, 0 if the file is in none
    start: float | None = None  # segment corpora: where the utterance starts in the file, seconds
    end: float | None = None    # ... and ends

    @property
    def segment(self) -> bool:
        return self.start is not None

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


@dataclass(frozen=True)
class ReferenceCorpus:
    name: str
    label_map: dict | None
    fold_names: tuple[str, ...]
    files: tuple[ReferenceFile, ...]


@lru_cache(maxsize=1)
def _table() -> dict:
    raw = resources.files("featstore").joinpath("data/emobox.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw).decode("utf-8"))


def reference_corpora() -> list[str]:
    """Names of the corpora EmoBox publishes metadata for."""
    return sorted(_table()["corpora"])


def track2_corpora() -> list[str]:
    """The corpora of EmoBox's cross-corpus track (iemocap, meld, ravdess, savee)."""
    return sorted(_table()["track2"])


@cache
def track2(corpus: str) -> tuple[tuple[str, str, str], ...]:
    """EmoBox's cross-corpus subset of `corpus`: (key, label, speaker) rows; KeyError if none."""
    return tuple(tuple(row) for row in _table()["track2"][corpus])


@cache
def reference(corpus: str) -> ReferenceCorpus:
    """EmoBox's metadata for `corpus`; KeyError if EmoBox has none."""
    entry = _table()["corpora"][corpus]
    files = tuple(ReferenceFile(*row) for row in entry["files"])
    return ReferenceCorpus(corpus, entry["label_map"], tuple(entry["folds"]), files)
