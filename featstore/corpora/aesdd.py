"""AESDD — Acted Emotional Speech Dynamic Database (Greek).

Layout: one folder per emotion, `anger/ disgust/ fear/ happiness/ sadness/`, 604 wavs at
44.1 kHz. Folder names are ignored: the label is the file name's first letter.

File name `eNN (S).wav`, e.g. `a03 (3).wav`: emotion letter e (`label_raw`: a anger,
d disgust, f fear, h happiness, s sadness), utterance number NN (01-20, the same sentences in
every emotion; kept as `text`), speaker number S in parentheses. Variants in the release:
- `a06 (5)b.wav`, `s01 (5)a.wav`: a letter after the parenthesis marks a second take (a, b)
  of the same utterance by the same speaker (speaker 5 here);
- `f10 (01).wav`: a zero-padded speaker number; it is speaker 1 (there is no `f10 (1).wav`).

Speakers: the numbers 1-6 (the release does not document their genders, so gender is None).
Utterance id = "aesdd-{e}{NN}-{S as written}{take}", e.g. "aesdd-a06-5b", "aesdd-f10-01", as in
EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"([a-z])(\d\d) \((\d+)\)([a-z]?)")


class AesddCorpus(Corpus):
    name = "aesdd"
    title = "AESDD (Acted Emotional Speech Dynamic Database)"
    language = "el"
    expected_count = 604
    n_speakers = 6
    labels = {"a": L.ANGRY, "d": L.DISGUST, "f": L.FEAR, "h": L.HAPPY, "s": L.SAD}
    layout_hint = "anger/ disgust/ fear/ happiness/ sadness/ holding 'a03 (3).wav'"
    source = Source(
        "manual", "http://m3c.web.auth.gr/research/aesdd-speech-emotion-recognition/",
        "free for research use (request from the AUTh M3C lab)",
        steps=("Request AESDD from the AUTh M3C lab: "
               "http://m3c.web.auth.gr/research/aesdd-speech-emotion-recognition/ (free for research).",),
        verified="request required",
    )
    protocol = Protocol("loso", "5-6 actors; EmoBox's split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not 'eNN (S).wav' (e.g. 'a03 (3).wav')")
        emotion, number, speaker, take = m.groups()
        return ParsedFile(
            id=f"aesdd-{emotion}{number}-{speaker}{take}", speaker=str(int(speaker)),
            label_raw=emotion, text=number,
        )

