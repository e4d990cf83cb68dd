"""ShEMO — Sharif Emotional Speech Database (Persian).

Layout: `female/` and `male/`, names like `F03S02.wav`: gender letter F/M, speaker number
(two digits), emotion letter (`label_raw`: A anger, F fear, H happiness, N neutral,
S sadness, W surprise), utterance index. Mostly 44.1 kHz (some 22.05 kHz), mono; speech
from radio plays, so the emotions are semi-natural and very unbalanced (fear is rare).

Speakers: 87 ("F03", "M12": gender letter + number, unique across the two folders).
The release has 3000 utterances; EmoBox lists 2838 of them (162 fewer, in every class),
so a tree built from EmoBox's list loads 2838.
Utterance id = "shemo-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora import register
from featstore.corpora.base import Corpus, ParsedFile

_NAME = re.compile(r"([FM])(\d\d)([A-Z])(\d\d)")


class ShemoCorpus(Corpus):
    name = "shemo"
    title = "ShEMO (Sharif Emotional Speech Database)"
    language = "fa"
    expected_count = 3000
    n_speakers = 87
    labels = {
        "A": L.ANGRY, "F": L.FEAR, "H": L.HAPPY, "N": L.NEUTRAL, "S": L.SAD, "W": L.SURPRISE,
    }
    layout_hint = "female/F03S02.wav, male/M12A29.wav"
    source = "https://github.com/mansourehk/ShEMO"
    licence = "free for research use (see the repository)"

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise ValueError(f"{path.name} is not GSSEII.wav (e.g. F03S02.wav)")
        gender, number, emotion, _index = m.groups()
        return ParsedFile(
            id=f"shemo-{path.stem}", speaker=f"{gender}{number}", label_raw=emotion,
            gender="female" if gender == "F" else "male",
        )


register(ShemoCorpus())
