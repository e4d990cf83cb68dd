"""TESS — Toronto Emotional Speech Set (English, two female speakers).

Layouts: the official Borealis release is flat, `{OAF|YAF}_{word}_{emotion}.wav` (as EmoBox
lists it); the Kaggle copy nests one folder per speaker × emotion,
`TESS Toronto emotional speech set data/OAF_angry/OAF_back_angry.wav`. Files are found
recursively and every field comes from the file name, never from folder names (Kaggle's
folder names are spelled inconsistently, e.g. `OAF_Pleasant_surprise/OAF_back_ps.wav`).

Emotion (`label_raw`): angry, disgust, fear, happy, neutral, ps (pleasant surprise → surprise),
sad. Each speaker says 200 target words ("Say the word _") in each emotion: 2800 files,
~24.4 kHz (OAF_food_fear at 96 kHz).

Speakers: OAF (older adult female, 64) and YAF (younger adult female, 26); speaker-independent
evaluation is train on one, test on the other. Quirk: some copies misname one file
`OA_bite_neutral.wav`; it is read as OAF. Some Kaggle downloads hold the data twice (a nested
duplicate folder); the second copy shows up as "duplicate utterance id" problems.
Utterance id = "tess-{speaker}-{word}-{emotion}", as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"([A-Za-z]{2,3})_(\w+?)_([A-Za-z]+)")
_SPEAKERS = {"OAF": "OAF", "YAF": "YAF", "OA": "OAF"}  # "OA": the misnamed OA_bite_neutral.wav


class TessCorpus(Corpus):
    name = "tess"
    title = "TESS (Toronto Emotional Speech Set)"
    language = "en"
    expected_count = 2800
    n_speakers = 2
    labels = {
        "angry": L.ANGRY, "disgust": L.DISGUST, "fear": L.FEAR, "happy": L.HAPPY,
        "neutral": L.NEUTRAL, "ps": L.SURPRISE, "sad": L.SAD,
    }
    layout_hint = "{OAF|YAF}_word_emotion.wav, flat or in per-emotion folders"
    source = Source(
        "manual", "https://doi.org/10.5683/SP2/E8H2MF", "CC BY-NC-ND 4.0",
        steps=("Open https://doi.org/10.5683/SP2/E8H2MF (University of Toronto Dataverse, Borealis) and use "
               "'Access Dataset' -> 'Download ZIP' (CC BY-NC-ND 4.0).",),
        verified="no stable direct archive URL known",
    )
    protocol = Protocol("loso", "2 speakers: train on one, test on the other")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m or m.group(1).upper() not in _SPEAKERS:
            raise LayoutError(f"{path.name} is not {{OAF|YAF}}_word_emotion.wav")
        speaker = _SPEAKERS[m.group(1).upper()]
        word, emotion = m.group(2), m.group(3).lower()
        return ParsedFile(
            id=f"tess-{speaker}-{word}-{emotion}", speaker=speaker, label_raw=emotion,
            gender="female", text=word,
        )

