"""TurEV-DB — Turkish Emotional Voice Database (acted single words).

Layout: `Sound Source/<Emotion>/<speaker>_<code>_<word>.wav`, e.g. `Sound Source/Calm/1984_sk_eger.wav`
(1735 wavs at 44.1 kHz): emotion folders Angry, Calm, Happy, Sad (`label_raw`; the code repeats
it in Turkish: kz kızgın, sk sakin, mt mutlu, hl hüzünlü); 6 speakers with numeric ids
(1157, 1234, 1358, 1984, 6783, 7895), genders not read (U).
Utterance id = "turevdb-" + file name *with* its .wav suffix, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

_NAME = re.compile(r"(\d+)_([a-z]{2})_(\w+)")
_CODES = {"kz": "Angry", "sk": "Calm", "mt": "Happy", "hl": "Sad"}


class TurevdbCorpus(Corpus):
    name = "turevdb"
    title = "TurEV-DB (Turkish)"
    language = "tr"
    expected_count = 1735
    n_speakers = 6
    labels = {"Angry": L.ANGRY, "Calm": L.CALM, "Happy": L.HAPPY, "Sad": L.SAD}
    layout_hint = "Sound Source/<Emotion>/1984_sk_eger.wav"
    source = Source(
        "manual", "https://github.com/Xeonen/TurEV-DB", "research use (see the repository) (U)",
        steps=("Download TurEV-DB from https://github.com/Xeonen/TurEV-DB (U).",),
        verified="(U) repository from the paper, not opened",
    )
    protocol = Protocol("loso", "6 speakers; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not <speaker>_<code>_<word>.wav (e.g. 1984_sk_eger.wav)")
        speaker, code, word = m.groups()
        emotion = path.parent.name
        if _CODES.get(code) != emotion:
            raise LabelError(f"{path.name}: code {code!r} disagrees with its folder {emotion!r} "
                             f"(codes: {', '.join(f'{k} {v}' for k, v in _CODES.items())})")
        return ParsedFile(id=f"turevdb-{path.name}", speaker=speaker, label_raw=emotion, text=word)
