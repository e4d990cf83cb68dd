"""RAVDESS — Ryerson Audio-Visual Database of Emotional Speech and Song (English, speech part).

Layout: `Actor_01/ … Actor_24/` (inside `Audio_Speech_Actors_01-24/`), 60 wavs per actor,
1440 files, 16-bit 48 kHz mono. The root may be any folder above the actor folders.

File name `MM-VV-EE-II-SS-RR-AA.wav`:
- MM modality: 01 audio-video, 02 video-only, 03 audio-only (only 03 is read);
- VV vocal channel: 01 speech, 02 song (song files are skipped: another part of the release);
- EE emotion: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
  08 surprised (`label_raw` keeps the two digits);
- II intensity: 01 normal, 02 strong (neutral has no strong take);
- SS statement: 01 "Kids are talking by the door", 02 "Dogs are sitting by the door";
- RR repetition 01/02; AA actor 01-24, odd numbers male, even female.

Speakers: the actor number ("01".."24"), 12 male and 12 female. Language: English (North
American). Utterance id = "ravdess-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source, zenodo
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
_INTENSITY = {"01": "normal", "02": "strong"}
_STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


class RavdessCorpus(Corpus):
    name = "ravdess"
    title = "RAVDESS (speech, audio-only)"
    language = "en"
    expected_count = 1440
    n_speakers = 24
    labels = {
        "01": L.NEUTRAL, "02": L.CALM, "03": L.HAPPY, "04": L.SAD,
        "05": L.ANGRY, "06": L.FEAR, "07": L.DISGUST, "08": L.SURPRISE,
    }
    layout_hint = "Actor_01/ … Actor_24/ holding 03-01-EE-II-SS-RR-AA.wav"
    source = Source(
        "http", "https://zenodo.org/records/1188976", "CC BY-NC-SA 4.0",
        archives=(zenodo(1188976, "Audio_Speech_Actors_01-24.zip", size=208_468_073,
                         md5="bc696df654c87fed845eb13823edef8a"),),
        verified="record and file name: CORPORA.md and many public scripts; size and MD5: CORPORA.md, "
                 "marked (U) there, not checked against Zenodo (one independent public script checks "
                 "the same MD5)",
    )
    protocol = Protocol("luna5", "the published 5-fold actor split of Luna-Jiménez et al. 2022 (24 actors)")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not MM-VV-EE-II-SS-RR-AA.wav")
        modality, channel, emotion, intensity, statement, _repetition, actor = m.groups()
        if modality not in ("01", "02", "03") or channel not in ("01", "02"):
            raise LayoutError(f"{path.name}: modality {modality} / vocal channel {channel} not defined")
        if modality != "03" or channel != "01":
            return None  # video or song files: other parts of the release
        if intensity not in _INTENSITY or statement not in _STATEMENT or not 1 <= int(actor) <= 24:
            raise LayoutError(f"{path.name}: intensity {intensity}, statement {statement} or actor {actor} out of range")
        return ParsedFile(
            id=f"ravdess-{path.stem}", speaker=actor, label_raw=emotion,
            gender="male" if int(actor) % 2 else "female",
            text=_STATEMENT[statement], intensity=_INTENSITY[intensity],
        )

