"""SUBESCO — SUST Bangla Emotional Speech Corpus (Bangla/Bengali).

Layout: one flat folder of 7000 wavs (20 speakers × 10 sentences × 7 emotions × 5 takes),
44.1 or 48 kHz.

File name `G_NN_NAME_S_K_EMOTION_R.wav`, e.g. `F_10_FAHMEE_S_6_FEAR_5.wav`: gender G (F/M),
speaker number NN within that gender, speaker's first name, sentence S_K (K 1-10, kept as
`text` "S_K"), emotion (`label_raw`: ANGRY, DISGUST, FEAR, HAPPY, NEUTRAL, SAD, SURPRISE),
take R (1-5).

Speakers: "F_01".."F_10" and "M_01".."M_10" (10 female, 10 male actors).
Quirk: one file of the release is named `F_02_MONIKA_S_2_SURPRISE_3].wav` (stray "]"); it is
read normally and keeps the bracket in its id, as EmoBox's key does.
Utterance id = "subesco-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source, zenodo
from featstore.errors import LayoutError

_NAME = re.compile(r"([FM])_(\d\d)_([A-Z]+)_S_(\d+)_([A-Z]+)_(\d)\]?")  # "]": the stray-bracket file


class SubescoCorpus(Corpus):
    name = "subesco"
    title = "SUBESCO (SUST Bangla Emotional Speech Corpus)"
    language = "bn"
    expected_count = 7000
    n_speakers = 20
    labels = {
        "ANGRY": L.ANGRY, "DISGUST": L.DISGUST, "FEAR": L.FEAR, "HAPPY": L.HAPPY,
        "NEUTRAL": L.NEUTRAL, "SAD": L.SAD, "SURPRISE": L.SURPRISE,
    }
    layout_hint = "flat folder of G_NN_NAME_S_K_EMOTION_R.wav, e.g. F_10_FAHMEE_S_6_FEAR_5.wav"
    source = Source(
        "http", "https://zenodo.org/records/4526477", "CC BY 4.0",
        archives=(zenodo(4526477, "SUBESCO.zip"),),
        approx_size="~1.7 GB (U)",
        verified="(U) file name SUBESCO.zip from two public scripts, not from Zenodo's page; no checksum",
    )
    protocol = Protocol("emobox", "EmoBox's 5 folds hold out 4 of the 20 speakers each")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not G_NN_NAME_S_K_EMOTION_R.wav")
        gender, number, _name, sentence, emotion, _take = m.groups()
        return ParsedFile(
            id=f"subesco-{path.stem}", speaker=f"{gender}_{number}", label_raw=emotion,
            gender="female" if gender == "F" else "male", text=f"S_{sentence}",
        )

