"""Polish emotional speech (Powroźnik 2017; acted single words and short commands).

Layout: one flat folder of `<speaker>.<emotion>_<word>_<take>.wav`, e.g. `m3.s_trzymaj_5.wav`
(450 wavs at 44.1 kHz): speakers m1-m5 in EmoBox's list (the letter is the gender: all male
there), emotions a anger,
n neutral, s strach (fear) (`label_raw`; EmoBox maps s to fear), the word, the take.
Utterance id = "polish-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"(([fm])\d+)\.([a-z])_(\w+?)_(\d+)")
_GENDERS = {"f": "female", "m": "male"}


class PolishCorpus(Corpus):
    name = "polish"
    title = "Polish emotional speech (single words)"
    language = "pl"
    expected_count = 450
    n_speakers = 5
    labels = {"a": L.ANGRY, "n": L.NEUTRAL, "s": L.FEAR}
    layout_hint = "m3.s_trzymaj_5.wav (flat)"
    source = Source(
        "manual", "https://mostwiedzy.pl/en/open-research-data/emotions-in-polish-speech-recordings,11190523461146169-0",
        "CC BY-NC-SA 4.0 (U)",
        steps=("Download the recordings from the Most Wiedzy open data page (U) and unpack them into one folder.",),
        verified="(U) page not opened",
    )
    protocol = Protocol("emobox", "EmoBox's 5 folds each hold out one of the 5 speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not <speaker>.<emotion>_<word>_<take>.wav (e.g. m3.s_trzymaj_5.wav)")
        speaker, gender, emotion, word, _take = m.groups()
        return ParsedFile(id=f"polish-{path.stem}", speaker=speaker, label_raw=emotion, gender=_GENDERS[gender],
                          text=word)
