"""CREMA-D — Crowd-sourced Emotional Multimodal Actors Dataset (English).

Layout (the Git-LFS repository): `AudioWAV/*.wav` (16 kHz mono), `AudioMP3/` (ignored),
`VideoDemographics.csv` (ActorID, Age, Sex, Race, Ethnicity) and `processedResults/`.
7,442 clips by 91 actors (48 male, 43 female). The root is the repository folder (or any
folder above `AudioWAV/`); gender comes from `<root>/VideoDemographics.csv` when present,
else it is left unknown.

File name `AAAA_SSS_EEE_LL.wav`: actor 1001-1091; sentence code (IEO, TIE, IOM, IWW, TAI, MTI,
IWL, ITH, DFA, ITS, TSI, WSI); emotion ANG, DIS, FEA, HAP, NEU, SAD (`label_raw`); level LO,
MD, HI or XX (unspecified; only IEO was recorded at three levels).

Quirks: the wav `1040_ITH_SAD_X.wav` carries a one-letter level; it is read as XX so its id
matches EmoBox (`cremad-1040-ITH-SAD-XX`). `1076_MTI_SAD_XX` is silent but kept (EmoBox keeps
it). Labels are the intended emotion from the file name, not the crowd's perceived votes.
Utterance id = "cremad-" + stem with underscores turned into dashes, as in EmoBox.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_(LO|MD|HI|XX|X)")
_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": None}
DEMOGRAPHICS = "VideoDemographics.csv"


@lru_cache(maxsize=8)
def _genders(csv_path: str, stamp: tuple[int, int]) -> dict[str, str]:
    """ActorID -> "male"/"female" from VideoDemographics.csv (`stamp`, mtime and size: re-read on change)."""
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        rows = [(row.get("ActorID") or "", (row.get("Sex") or "").strip().lower()) for row in csv.DictReader(f)]
    return {actor.strip(): sex for actor, sex in rows if sex in ("male", "female")}


def actor_genders(root: Path) -> dict[str, str]:
    """The actor -> gender table of the corpus at `root`; empty when the CSV is absent."""
    path = root / DEMOGRAPHICS
    if not path.is_file():
        return {}
    stat = path.stat()
    return _genders(str(path), (stat.st_mtime_ns, stat.st_size))


class CremadCorpus(Corpus):
    name = "cremad"
    title = "CREMA-D"
    language = "en"
    expected_count = 7442
    n_speakers = 91
    labels = {
        "ANG": L.ANGRY, "DIS": L.DISGUST, "FEA": L.FEAR,
        "HAP": L.HAPPY, "NEU": L.NEUTRAL, "SAD": L.SAD,
    }
    layout_hint = "AudioWAV/AAAA_SSS_EEE_LL.wav, VideoDemographics.csv beside AudioWAV/"
    source = Source(
        "git-lfs", "https://github.com/CheyneyComputerScience/CREMA-D", "ODbL 1.0 (database) + DbCL 1.0 (contents)",
        repo="https://github.com/CheyneyComputerScience/CREMA-D", lfs_include="AudioWAV/*",
        approx_size="606 MB (7442 wavs)",
        verified="repository tree checked: AudioWAV/ holds 7442 git-lfs files, VideoDemographics.csv is "
                 "plain git; GitHub's LFS bandwidth for the repository can run out",
    )
    protocol = Protocol("speaker-kfold:5", "91 actors; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not AAAA_SSS_EEE_LL.wav")
        actor, sentence, emotion, level = m.groups()
        if sentence not in _SENTENCES:
            raise LayoutError(f"{path.name}: unknown sentence code {sentence}")
        level = "XX" if level == "X" else level  # the one-X file 1040_ITH_SAD_X.wav
        return ParsedFile(
            id=f"cremad-{actor}-{sentence}-{emotion}-{level}", speaker=actor, label_raw=emotion,
            gender=actor_genders(root).get(actor), text=_SENTENCES[sentence], intensity=_LEVELS[level],
        )

