"""ASED — Amharic Speech Emotion Dataset (Amharic, acted).

Layout: `01Neutral/ 02Fearful/ 03Happy/ 04Sad/ 05Angry/`, 2474 wavs at 16 kHz.

File name `EC-SS-RR-XX-PP.wav`, e.g. `a5-02-01-01-33.wav`: emotion letter and its folder number
(`label_raw` is the letter: n neutral, f fear, h happy, s sad, a angry; one file of the release,
`04Sad/S4-04-02-01-29.wav`, has a capital S, which EmoBox maps to sad as well); sentence SS 01-07;
repetition RR 01/02; a field XX 01/02 that the release does not document (U: it changes within
some speakers, so it is not read as gender); speaker PP 01-65.
Utterance id = "ased-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"([A-Za-z])([1-5])-(\d\d)-(\d\d)-(\d\d)-(\d\d)")


class AsedCorpus(Corpus):
    name = "ased"
    title = "ASED (Amharic Speech Emotion Dataset)"
    language = "am"
    expected_count = 2474
    n_speakers = 65
    labels = {"n": L.NEUTRAL, "f": L.FEAR, "h": L.HAPPY, "s": L.SAD, "S": L.SAD, "a": L.ANGRY}
    layout_hint = "01Neutral/ … 05Angry/ holding a5-02-01-01-33.wav"
    source = Source(
        "manual", "https://github.com/Ethio2021/ASED_V1", "research use (see the repository)",
        steps=("Download ASED_V1 from https://github.com/Ethio2021/ASED_V1 (U: the repository named in "
               "the ASED paper, Retta et al. 2023).",),
        verified="(U) repository address from the paper, not opened",
    )
    protocol = Protocol("speaker-kfold:5", "65 speakers; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not EC-SS-RR-XX-PP.wav (e.g. a5-02-01-01-33.wav)")
        letter, _folder, sentence, _repetition, _unknown, speaker = m.groups()
        return ParsedFile(id=f"ased-{path.stem}", speaker=speaker, label_raw=letter, text=sentence)
