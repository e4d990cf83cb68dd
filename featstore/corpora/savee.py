"""SAVEE — Surrey Audio-Visual Expressed Emotion (British English, four male speakers).

Layouts, both read to the same ids:
- official: `AudioData/{DC,JE,JK,KL}/{a,d,f,h,n,sa,su}NN.wav` (speaker from the folder);
- flat (Kaggle `ALL/`, EmoBox): `DC_a01.wav`, `JE_n23.wav` (speaker from the name).

Emotion code (`label_raw`): a anger, d disgust, f fear, h happiness, n neutral, sa sadness,
su surprise. Each speaker reads 15 sentences per emotion and 30 neutral ones (NN is the
sentence's index within that emotion's list): 120 files per speaker, 480 in all, 44.1 kHz.

Speakers: DC, JE, JK, KL, all male, postgraduate students and researchers at the University of Surrey.
Utterance id = "savee-{speaker}-{code}{NN}", e.g. "savee-JE-n23", as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_SPEAKERS = ("DC", "JE", "JK", "KL")
_FLAT = re.compile(r"([A-Z]{2})_([a-z]{1,2})(\d\d)")
_OFFICIAL = re.compile(r"([a-z]{1,2})(\d\d)")


class SaveeCorpus(Corpus):
    name = "savee"
    title = "SAVEE (Surrey Audio-Visual Expressed Emotion)"
    language = "en"
    expected_count = 480
    n_speakers = 4
    labels = {
        "a": L.ANGRY, "d": L.DISGUST, "f": L.FEAR, "h": L.HAPPY,
        "n": L.NEUTRAL, "sa": L.SAD, "su": L.SURPRISE,
    }
    layout_hint = "AudioData/{DC,JE,JK,KL}/a01.wav (official) or flat DC_a01.wav"
    source = Source(
        "manual", "http://kahlan.eps.surrey.ac.uk/savee/", "free for research use (registration on the site)",
        steps=("Register at http://kahlan.eps.surrey.ac.uk/savee/ (free for research) and download the audio "
               "data (AudioData).",),
        verified="registration required",
    )
    protocol = Protocol("emobox", "EmoBox's 4 folds are leave-one-speaker-out")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        if m := _FLAT.fullmatch(path.stem):
            speaker, code, number = m.groups()
        elif m := _OFFICIAL.fullmatch(path.stem):
            speaker = path.parent.name  # official layout: the speaker is the folder
            code, number = m.groups()
        else:
            raise LayoutError(f"{path.name} is neither SPK_eNN.wav nor AudioData/SPK/eNN.wav")
        if speaker not in _SPEAKERS:
            raise LayoutError(f"{path}: speaker {speaker!r} is not one of {', '.join(_SPEAKERS)}")
        return ParsedFile(id=f"savee-{speaker}-{code}{number}", speaker=speaker, label_raw=code, gender="male")

