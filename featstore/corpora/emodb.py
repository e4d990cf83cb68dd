"""EMO-DB — Berlin Database of Emotional Speech (German).

Layout: `download.zip` from the official site unpacks to `wav/` (audio), `silb/`, `lablaut/`,
`erkennung.txt`; the root is that folder (or `wav/` itself). 535 utterances, 16 kHz mono.

File name `SSTTTEV.wav`, e.g. `03a01Wa.wav`: speaker SS; text code TTT (a01 a02 a04 a05 a07
b01 b02 b03 b09 b10, kept as `text`); emotion letter E, German initials: W Wut (anger),
L Langeweile (boredom), E Ekel (disgust), A Angst (fear), F Freude (happiness), T Trauer
(sadness), N neutral (`label_raw`); V a version letter (a, b, c… for repeated takes).

Speakers: 10 actors, male 03 10 11 12 15, female 08 09 13 14 16. EmoBox's own label names
(`anger`, `boredem` (sic), `Neutral`/`neutral`, …) are not used: the letter is the raw label.
Utterance id = "emodb-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Archive, Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d\d)([ab]\d\d)([A-Z])([a-z])")
_MALE = {"03", "10", "11", "12", "15"}
_FEMALE = {"08", "09", "13", "14", "16"}


class EmodbCorpus(Corpus):
    name = "emodb"
    title = "EMO-DB (Berlin Database of Emotional Speech)"
    language = "de"
    expected_count = 535
    n_speakers = 10
    labels = {
        "W": L.ANGRY, "L": L.BOREDOM, "E": L.DISGUST, "A": L.FEAR,
        "F": L.HAPPY, "T": L.SAD, "N": L.NEUTRAL,
    }
    layout_hint = "wav/SSTTTEV.wav, e.g. wav/03a01Wa.wav"
    source = Source(
        "http", "http://emodb.bilderbar.info/", "free for research use (no formal licence on the site)",
        archives=(Archive("http://emodb.bilderbar.info/download/download.zip", "emodb-download.zip"),),
        verified="URL: CORPORA.md and public scripts; no published checksum (only the count check)",
    )
    protocol = Protocol("loso", "10 speakers; EmoBox's 5 folds mix speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not SSTTTEV.wav (e.g. 03a01Wa.wav)")
        speaker, text, emotion, _version = m.groups()
        if speaker not in _MALE | _FEMALE:
            raise LayoutError(f"{path.name}: speaker {speaker} is not one of EMO-DB's ten")
        return ParsedFile(
            id=f"emodb-{path.stem}", speaker=speaker, label_raw=emotion,
            gender="male" if speaker in _MALE else "female", text=text,
        )

