"""CaFE — Canadian French Emotional speech dataset.

Layout: `CaFE_48k/<emotion>/<Faible|Fort>/AA-E-I-S.wav` for the six emotions (Colère,
Dégoût, Joie, Peur, Surprise, Tristesse) and `CaFE_48k/Neutre/AA-E-I-S.wav`; 936 files,
48 kHz (a `CaFE_192k` twin holds .aiff files, not read). Zip tools often extract the
accented folder names in CP437 (`ColŠre`, `D‚go–t`, as in EmoBox's paths), so folders are
never read: every field comes from the file name.

File name `AA-E-I-S.wav`: actor AA (01-12, odd male, even female); emotion letter E
(`label_raw`): C colère (anger), D dégoût (disgust), J joie (happy), N neutre (neutral),
P peur (fear), S surprise, T tristesse (sadness); intensity I: 1 weak (Faible), 2 strong (Fort),
always 1 for neutral, which has no intensity levels (intensity None); sentence S 1-6 (`text`).

Utterance id = "cafe-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source, zenodo
from featstore.errors import LayoutError

_NAME = re.compile(r"(\d\d)-([A-Z])-([12])-([1-6])")
_INTENSITY = {"1": "weak", "2": "strong"}
_SENTENCES = {
    "1": "Un cheval fou dans mon jardin",
    "2": "Deux ânes aigris au pelage brun",
    "3": "Trois cygnes aveugles au bord du lac",
    "4": "Quatre vieilles truies éléphantesques",
    "5": "Cinq pumas fiers et passionnés",
    "6": "Six ours aimants domestiqués",
}


class CafeCorpus(Corpus):
    name = "cafe"
    title = "CaFE (Canadian French Emotional speech dataset)"
    language = "fr"
    expected_count = 936
    n_speakers = 12
    labels = {
        "C": L.ANGRY, "D": L.DISGUST, "J": L.HAPPY, "N": L.NEUTRAL,
        "P": L.FEAR, "S": L.SURPRISE, "T": L.SAD,
    }
    layout_hint = "CaFE_48k/<Émotion>/<Faible|Fort>/AA-E-I-S.wav and CaFE_48k/Neutre/AA-N-1-S.wav"
    source = Source(
        "http", "https://zenodo.org/records/1478765", "CC BY-NC-SA 4.0",
        archives=(zenodo(1478765, "CaFE_48k.zip"),),
        verified="(U) file name CaFE_48k.zip from public scripts (nkululeko's CaFE recipe), not from "
                 "Zenodo's page; no checksum",
    )
    protocol = Protocol("emobox", "EmoBox's 3 folds hold out 4 of the 12 actors each")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not AA-E-I-S.wav (e.g. 01-C-1-1.wav)")
        actor, emotion, intensity, sentence = m.groups()
        if not 1 <= int(actor) <= 12:
            raise LayoutError(f"{path.name}: actor {actor} is not 01-12")
        return ParsedFile(
            id=f"cafe-{path.stem}", speaker=actor, label_raw=emotion,
            gender="male" if int(actor) % 2 else "female", text=_SENTENCES[sentence],
            intensity=None if emotion == "N" else _INTENSITY[intensity],
        )

