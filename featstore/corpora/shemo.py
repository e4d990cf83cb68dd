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
from featstore.corpora.base import Archive, Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

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
    source = Source(
        "http", "https://github.com/mansourehk/ShEMO", "free for research use (see the repository)",
        archives=(
            Archive("https://media.githubusercontent.com/media/mansourehk/ShEMO/master/female.zip",
                    "shemo-female.zip", size=374_368_830,
                    sha256="663d8d7dceb44adbbf87d84be3a080fb691d169fbd972f6941e6302bc39f71e6"),
            Archive("https://media.githubusercontent.com/media/mansourehk/ShEMO/master/male.zip",
                    "shemo-male.zip", size=496_606_401,
                    sha256="747670d0d918e59d5e5020cf66610242890b093d42968c467c4f02eb5e6a6b1a"),
        ),
        verified="sizes and SHA-256 from the repository's git-lfs pointers for female.zip / male.zip "
                 "(HEAD checked); URL is GitHub's LFS media endpoint",
    )
    protocol = Protocol("speaker-kfold:5", "87 speakers; EmoBox's split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not GSSEII.wav (e.g. F03S02.wav)")
        gender, number, emotion, _index = m.groups()
        return ParsedFile(
            id=f"shemo-{path.stem}", speaker=f"{gender}{number}", label_raw=emotion,
            gender="female" if gender == "F" else "male",
        )

