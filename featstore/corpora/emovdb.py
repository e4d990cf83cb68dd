"""EmoV-DB — Emotional Voices Database (English, 4 speakers, read CMU Arctic sentences).

Layout: `<speaker>_<Emotion>/<emotion>_<a>-<b>_<nnnn>.wav`, e.g. `jenie_Amused/amused_57-84_0057.wav`:
speakers bea and jenie (female), josh and sam (male); emotion folders Amused, Angry,
Disgusted, Neutral, Sleepy (`label_raw` is EmoBox's name: Disgusted -> "Disgust"); `a-b` the
recording batch's sentence range (some files write `a_b`); `nnnn` the CMU Arctic sentence number. 6887 files in
EmoBox's list, 16 or 44.1 kHz. The file-name prefix (amused, anger, disgust, neutral,
sleepiness; sometimes capitalised) is not read: the folder says the emotion.
Utterance id = "emovdb-<speaker>-<Emotion>-<nnnn>", as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

GENDERS = {"bea": "female", "jenie": "female", "josh": "male", "sam": "male"}
_FOLDER = re.compile(r"([a-z]+)_([A-Za-z]+)")
_NAME = re.compile(r"[A-Za-z]+_\d+[-_]\d+_(\d{4})")
_FOLDER_LABEL = {"Amused": "Amused", "Angry": "Angry", "Disgusted": "Disgust", "Neutral": "Neutral",
                 "Sleepy": "Sleepy"}


class EmovdbCorpus(Corpus):
    name = "emovdb"
    title = "EmoV-DB (Emotional Voices Database)"
    language = "en"
    expected_count = 6887
    n_speakers = 4
    labels = {"Amused": L.AMUSED, "Angry": L.ANGRY, "Disgust": L.DISGUST, "Neutral": L.NEUTRAL, "Sleepy": L.SLEEPY}
    layout_hint = "<speaker>_<Emotion>/<emotion>_<a>-<b>_<nnnn>.wav (e.g. jenie_Amused/amused_57-84_0057.wav)"
    source = Source(
        "manual", "https://github.com/numediart/EmoV-DB", "research use (see the repository)",
        steps=("Download the sorted per-speaker archives linked from https://github.com/numediart/EmoV-DB "
               "(U) and unpack them side by side.",),
        verified="(U) archive links not opened",
    )
    protocol = Protocol("loso", "4 speakers; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        folder, m = _FOLDER.fullmatch(path.parent.name), _NAME.fullmatch(path.stem)
        if not folder or not m or folder.group(1) not in GENDERS:
            raise LayoutError(f"{path.parent.name}/{path.name} is not <speaker>_<Emotion>/<emotion>_<a>-<b>_<nnnn>.wav")
        speaker, emotion = folder.groups()
        if emotion not in _FOLDER_LABEL:
            raise LabelError(f"unknown emotion folder {emotion!r} (known: {', '.join(_FOLDER_LABEL)})")
        label = _FOLDER_LABEL[emotion]
        return ParsedFile(id=f"emovdb-{speaker}-{label}-{m.group(1)}", speaker=speaker, label_raw=label,
                          gender=GENDERS[speaker], text=m.group(1))
