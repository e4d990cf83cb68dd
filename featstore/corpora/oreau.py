"""Oréau — French emotional speech (acted, 32 non-professional speakers).

Layout: `OréauFR_02/<f|m>/sess<e>/<SS><v><TT><E><r>.wav`, e.g. `OréauFR_02/f/sessj/10a02Ja.wav`
(434 wavs at 44.1 kHz in EmoBox's list; the "é" may be stored decomposed, so no folder name
but f/m is read): speaker SS, a list letter v (a; z in two files), sentence TT, emotion E (C
colère -> angry, D dégoût -> disgust, J joie -> happy, N neutre, P peur -> fear, S surprise,
T tristesse -> sad: `label_raw`), take r. Gender from the f/m folder.
Utterance id = "oreau-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d\d)([a-z])(\d\d)([A-Z])([a-z])")
_GENDERS = {"f": "female", "m": "male"}


class OreauCorpus(Corpus):
    name = "oreau"
    title = "Oréau (French)"
    language = "fr"
    expected_count = 434
    n_speakers = 32
    labels = {"C": L.ANGRY, "D": L.DISGUST, "J": L.HAPPY, "N": L.NEUTRAL, "P": L.FEAR, "S": L.SURPRISE, "T": L.SAD}
    layout_hint = "OréauFR_02/<f|m>/sess<e>/10a02Ja.wav"
    source = Source(
        "manual", "https://zenodo.org/records/4405783", "CC BY 4.0 (U)",
        steps=("Download Oréau (OréauFR_02) from Zenodo record 4405783 (U) and unpack it.",),
        verified="(U) record from public scripts, not opened",
    )
    protocol = Protocol("speaker-kfold:5", "32 speakers; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        gender = _GENDERS.get(path.parent.parent.name)
        if not m or gender is None:
            raise LayoutError(f"{path.name} is not <f|m>/sess<e>/SSvTTEr.wav (e.g. f/sessj/10a02Ja.wav)")
        speaker, _list, sentence, emotion, _take = m.groups()
        return ParsedFile(id=f"oreau-{path.stem}", speaker=speaker, label_raw=emotion, gender=gender, text=sentence)
