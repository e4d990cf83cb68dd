"""MESD — Mexican Emotional Speech Database (Mexican Spanish, single words).

Layout: one flat folder, `Mexican Emotional Speech Database (MESD)/*.wav`; 862 files in the
release EmoBox lists (864 in some descriptions), 48 kHz.

File name `Emotion_Voice_Corpus_word.wav`, e.g. `Anger_F_A_tarde.wav`: emotion in English
(`label_raw`: Anger, Disgust, Fear, Happiness, Neutral, Sadness); voice type F adult female,
M adult male, C child; word list A (nouns and adjectives repeated across emotions and voices)
or B (words controlled for age of acquisition, frequency, familiarity, ...); the word itself,
which may contain underscores (`Happiness_F_A_de_nada`; kept as `text` with spaces).

Speakers: MESD gives no per-speaker id (3 female, 2 male and 6 child voices are pooled per
voice type), so the voice type F/M/C is used as the speaker, with gender female/male/child.
Folds by this "speaker" are NOT speaker-independent.
Utterance id = "mesd-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"([A-Za-z]+)_([FMC])_([AB])_(\w+)")
_GENDER = {"F": "female", "M": "male", "C": "child"}


class MesdCorpus(Corpus):
    name = "mesd"
    title = "MESD (Mexican Emotional Speech Database)"
    language = "es"
    expected_count = 862
    n_speakers = 3
    labels = {
        "Anger": L.ANGRY, "Disgust": L.DISGUST, "Fear": L.FEAR,
        "Happiness": L.HAPPY, "Neutral": L.NEUTRAL, "Sadness": L.SAD,
    }
    layout_hint = "Mexican Emotional Speech Database (MESD)/Emotion_Voice_Corpus_word.wav"
    source = Source(
        "manual", "https://data.mendeley.com/datasets/cy34mh68j9", "CC BY 4.0",
        steps=("Open https://data.mendeley.com/datasets/cy34mh68j9 (Mendeley Data, CC BY 4.0) and use "
               "'Download All'.",),
        verified="Mendeley's download links are not stable",
    )
    speaker_note = ("MESD gives voice types (female, male, child), not speakers: no split by them is speaker-independent")
    protocol = Protocol("loso", "no speaker ids, only 3 voice types (female, male, child): NOT speaker-independent")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not Emotion_Voice_Corpus_word.wav (e.g. Anger_F_A_tarde.wav)")
        emotion, voice, _word_list, word = m.groups()
        return ParsedFile(
            id=f"mesd-{path.stem}", speaker=voice, label_raw=emotion,
            gender=_GENDER[voice], text=word.replace("_", " "),
        )

