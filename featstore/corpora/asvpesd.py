"""ASVP-ESD — Audio, Speech and Vision Processing Lab Emotional Sound Database (mixed languages).

Layout: `Audio/actor_NN/*.wav` and `Bonus/actor_NN/*.wav`, 13964 wavs at 16 kHz (EmoBox's list);
speech and non-speech vocalisations (laughs, cries, groans, breaths) from films, TV, YouTube
and recordings, in several languages.

File name: RAVDESS-like dash-separated numbers, 8 to 12 of them, e.g.
`03-01-09-01-06-36-02-02-01-39.wav`: modality (03 audio), vocal channel (01 speech, 02
non-speech), emotion EE (`label_raw`), intensity, then statement, actor, age, source, language
and indices whose meaning differs between the releases (U). Emotion codes (EmoBox's map): 01
boredom, 02 neutral, 03 happy, 04 sad, 05 angry, 06 fear, 07 disgust, 08 surprise, 09 excited,
10 pleasure, 11 pain/groan -> pain, 12 disappointment/disapproval -> disappointment, 13 breath,
17 unknown -> other.

Speakers: the `actor_NN` folder (the number inside the name disagrees with its folder in 968
files, so the folder is read); 176 files sit in a folder named `actor_` without a number, and
for them the name's actor field is used. Five Bonus names have a stray space (`...-14 -01.wav`),
kept in their ids as EmoBox keeps it. Genders are not read (U). Language: mixed ("mul").
Utterance id = "asvpesd-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"03-0[12]-(\d\d)-\d+-\d+-(\d+)(?: ?-\d+){2,6}")
_FOLDER = re.compile(r"actor_(\d*)")


class AsvpesdCorpus(Corpus):
    name = "asvpesd"
    title = "ASVP-ESD (speech and non-speech emotional sounds)"
    language = "mul"
    expected_count = 13964
    n_speakers = 0  # actor folders, not people: one folder may hold many voices
    labels = {
        "01": L.BOREDOM, "02": L.NEUTRAL, "03": L.HAPPY, "04": L.SAD, "05": L.ANGRY, "06": L.FEAR,
        "07": L.DISGUST, "08": L.SURPRISE, "09": L.EXCITED, "10": L.PLEASURE, "11": L.PAIN,
        "12": L.DISAPPOINTMENT, "13": L.BREATH, "17": L.OTHER,
    }
    layout_hint = "Audio/actor_NN/ and Bonus/actor_NN/ holding 03-01-EE-....wav"
    source = Source(
        "manual", "https://www.kaggle.com/datasets/dejolilandry/asvpesdspeech-nonspeech-emotional-utterances",
        "CC BY 4.0 (U)",
        steps=("Download ASVP-ESD (v2) from Kaggle (dejolilandry/asvpesdspeech-nonspeech-emotional-utterances) "
               "or Zenodo record 7132783 (U).",),
        verified="(U) addresses from public scripts, not opened",
    )
    speaker_note = ("ASVP-ESD's actor folders are sources (films, channels), not people: one voice may sit in several folders, so folds by folder are not proven speaker-independent")
    protocol = Protocol("emobox", "actor folders are sources, not people: no speaker-independent split")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        folder = _FOLDER.fullmatch(path.parent.name)
        if not m or not folder:
            raise LayoutError(f"{path.parent.name}/{path.name} is not actor_NN/03-0C-EE-....wav")
        return ParsedFile(id=f"asvpesd-{path.stem}", speaker=folder.group(1) or m.group(2), label_raw=m.group(1))
