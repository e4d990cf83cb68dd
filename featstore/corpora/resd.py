"""RESD — Russian Emotional Speech Dialogues (Aniemore; acted dialogues, 7 emotions).

Layout: `train/` and `test/` holding one folder per dialogue, e.g.
`train/happiness_enthusiasm_32/32_happiness_enthusiasm_h_120.wav` (folder names put the number
first or last): `<dialogue>_<emotion1>_<emotion2>_<e>_<n>.wav` where the two emotions are the
dialogue's, `e` the first letter of the one this utterance expresses (a anger, d disgust, e
enthusiasm, f fear, h happiness, n neutral, s sadness) and `n` its index; one folder uses a
space before `e` (`02_anger_sadness a_053.wav`). 1396 wavs at 16 or 44.1 kHz in EmoBox's list.
`label_raw` is the expressed emotion's name; enthusiasm is its own class.

Speakers: the release gives no speaker ids; each dialogue has its own pair of actors, so the
dialogue number is used as the speaker group (U: whether actors recur across dialogues).
Utterance id = "resd-" + file name *with* its .wav suffix, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

_NAME = re.compile(r"(\d+)_([a-z]+)_([a-z]+)[_ ]([a-z])_(\d+)")
_LETTERS = {"a": "anger", "d": "disgust", "e": "enthusiasm", "f": "fear", "h": "happiness", "n": "neutral",
            "s": "sadness"}


class ResdCorpus(Corpus):
    name = "resd"
    title = "RESD (Russian Emotional Speech Dialogues)"
    language = "ru"
    expected_count = 1396
    labels = {"anger": L.ANGRY, "disgust": L.DISGUST, "enthusiasm": L.ENTHUSIASTIC, "fear": L.FEAR,
              "happiness": L.HAPPY, "neutral": L.NEUTRAL, "sadness": L.SAD}
    layout_hint = "train|test/<dialogue folder>/32_happiness_enthusiasm_h_120.wav"
    source = Source(
        "manual", "https://huggingface.co/datasets/Aniemore/resd", "MIT (U)",
        steps=("Download RESD from https://huggingface.co/datasets/Aniemore/resd (U) and unpack train/ and test/.",),
        verified="(U) address from public scripts, not opened",
    )
    speaker_note = ("RESD gives dialogue numbers, not speakers: actors who recur across dialogues may be on both sides of a split")
    protocol = Protocol("emobox", "no speaker ids, only dialogues; EmoBox's single split (train vs test folders)")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not <dialogue>_<emotion>_<emotion>_<e>_<n>.wav")
        dialogue, _first, _second, letter, _index = m.groups()
        if letter not in _LETTERS:
            raise LabelError(f"unknown emotion letter {letter!r} in {path.name} (known: {', '.join(_LETTERS)})")
        return ParsedFile(id=f"resd-{path.name}", speaker=str(int(dialogue)), label_raw=_LETTERS[letter],
                          session=path.parent.parent.name)
