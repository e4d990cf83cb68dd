"""ESD — Emotional Speech Dataset (Mandarin and English, 20 speakers, parallel sentences).

Layout: `SSSS/<Emotion>/SSSS_NNNNNN.wav`, e.g. `0005/Neutral/0005_000001.wav`: speakers
0001-0010 Mandarin, 0011-0020 English; emotions Angry, Happy, Neutral, Sad, Surprise (the folder
is `label_raw`), 350 sentences each: 35000 wavs at 16 kHz (the transcripts `SSSS/SSSS.txt` are
not read). Genders per speaker are in the release's README (U: not read).
Utterance id = "esd-SSSS-NNNNNN", as in EmoBox (its list is the union of its 5 test folds).
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d{4})_(\d{6})")


class EsdCorpus(Corpus):
    name = "esd"
    title = "ESD (Emotional Speech Dataset)"
    language = "en"  # speakers 0001-0010 are read as "zh"
    expected_count = 35000
    n_speakers = 20
    labels = {"Angry": L.ANGRY, "Happy": L.HAPPY, "Neutral": L.NEUTRAL, "Sad": L.SAD, "Surprise": L.SURPRISE}
    layout_hint = "SSSS/<Emotion>/SSSS_NNNNNN.wav (e.g. 0005/Neutral/0005_000001.wav)"
    source = Source(
        "manual", "https://hltsingapore.github.io/ESD/", "ESD licence (research, agreement) (U)",
        steps=("Request ESD at https://hltsingapore.github.io/ESD/ (licence agreement; U) and unpack it.",),
        verified="licensed",
    )
    protocol = Protocol("emobox", "EmoBox's 5 folds each hold out 4 of the 20 speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m or m.group(1) != path.parent.parent.name:
            raise LayoutError(f"{path.name} is not SSSS/<Emotion>/SSSS_NNNNNN.wav")
        speaker, sentence = m.groups()
        return ParsedFile(id=f"esd-{speaker}-{sentence}", speaker=speaker, label_raw=path.parent.name,
                          text=sentence, language="zh" if int(speaker) <= 10 else "en")
