"""URDU — Urdu-language speech emotion dataset (spontaneous speech from Urdu talk shows).

Layout: `Angry/ Happy/ Neutral/ Sad/`, 100 wavs each, 44.1 kHz. Folder names are ignored:
the label is in the file name.

File name `S{G}{n}_F{k}_{E}{idx}.wav`, e.g. `SM20_F8_N012.wav`: speaker S + gender letter
(M/F) + number; F{k} the source file number; emotion letter E (`label_raw`: A angry,
H happy, N neutral, S sad) and a running index.

Speakers: "SM20", "SF2", …; 29 of them occur in the 400 files EmoBox lists (the paper
reports 38, 27 male and 11 female, matching the highest numbers SM27 and SF11). Speakers
contribute very unequal numbers of clips, so speaker-independent folds are unbalanced.
Utterance id = "urdu-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Archive, Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_COMMIT = "4b546d4e0fa36d1c86c53a281631b2ab7ce2fdec"  # the checked URDU-Dataset commit
_NAME = re.compile(r"(S([MF])\d+)_F\d+_([A-Z])\d+")


class UrduCorpus(Corpus):
    name = "urdu"
    title = "URDU (Urdu speech emotion dataset)"
    language = "ur"
    expected_count = 400
    n_speakers = 29
    labels = {"A": L.ANGRY, "H": L.HAPPY, "N": L.NEUTRAL, "S": L.SAD}
    layout_hint = "Angry/ Happy/ Neutral/ Sad/ holding SM20_F8_N012.wav"
    source = Source(
        "http", "https://github.com/siddiquelatif/URDU-Dataset", "free for research use (see the repository)",
        archives=(Archive(f"https://github.com/siddiquelatif/URDU-Dataset/archive/{_COMMIT}.zip",
                          "URDU-Dataset.zip"),),
        approx_size="~88 MB (the wavs; the zip is compressed on the fly)",
        verified=f"commit {_COMMIT[:7]} checked: Angry/ Happy/ Neutral/ Sad/ hold 400 wavs in plain "
                 f"git; GitHub builds archives on the fly, so no checksum",
    )
    protocol = Protocol("speaker-kfold:5", "29 speakers with very unequal clip counts; EmoBox's split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not S{{M|F}}n_Fk_Eidx.wav (e.g. SM20_F8_N012.wav)")
        speaker, gender, emotion = m.groups()
        return ParsedFile(
            id=f"urdu-{path.stem}", speaker=speaker, label_raw=emotion,
            gender="male" if gender == "M" else "female",
        )

