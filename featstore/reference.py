"""EmoBox's published metadata, shipped compactly in `featstore/data/emobox.json.gz`.

Built by `scripts/build_emobox_table.py` from EmoBox's `data/` folder (MIT licence). Per corpus:
every file EmoBox lists, with its EmoBox key, path inside the unpacked archive, sample rate,
frame count, the corpus' own label and the EmoBox test fold holding it (0 = in no test fold).
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
    return sorted(_table())


@cache
def reference(corpus: str) -> ReferenceCorpus:
    """EmoBox's metadata for `corpus`; KeyError if EmoBox has none."""
    entry = _table()[corpus]
    files = tuple(ReferenceFile(*row) for row in entry["files"])
    return ReferenceCorpus(corpus, entry["label_map"], tuple(entry["folds"]), files)
