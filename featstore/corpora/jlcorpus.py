"""JL-Corpus — New Zealand English emotional speech, primary and secondary emotions.

Layout: `Raw JL corpus (unchecked and unannotated)/JL(wav+txt)/<gender><n>_<emotion>_<sent><a|b>_<take>.wav`,
e.g. `male2_concerned_6b_1.wav` (2400 wavs at 44.1 kHz; the .txt transcripts beside them are not
read): speakers female1, female2, male1, male2; 5 primary emotions (angry, excited, happy,
neutral, sad) and 5 secondary (anxious, apologetic, assertive, concerned, encouraging),
each its own class (`featstore.labels`).
Utterance id = "jlcorpus-" + file stem with "_" -> "-", as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"((female|male)\d)_([a-z]+)_(\d+[ab])_(\d)")


class JlcorpusCorpus(Corpus):
    name = "jlcorpus"
    title = "JL-Corpus (New Zealand English)"
    language = "en"
    expected_count = 2400
    n_speakers = 4
    labels = {"angry": L.ANGRY, "excited": L.EXCITED, "happy": L.HAPPY, "neutral": L.NEUTRAL, "sad": L.SAD,
              "anxious": L.ANXIOUS, "apologetic": L.APOLOGETIC, "assertive": L.ASSERTIVE,
              "concerned": L.CONCERNED, "encouraging": L.ENCOURAGING}
    layout_hint = "JL(wav+txt)/male2_concerned_6b_1.wav"
    source = Source(
        "manual", "https://www.kaggle.com/datasets/tli725/jl-corpus", "CC0 (U)",
        steps=("Download JL-Corpus from Kaggle (tli725/jl-corpus; U) and unpack it.",),
        verified="(U) address from public scripts, not opened",
    )
    protocol = Protocol("emobox", "EmoBox's 4 folds each hold out one of the 4 speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not <gender><n>_<emotion>_<sentence>_<take>.wav")
        speaker, gender, emotion, sentence, _take = m.groups()
        return ParsedFile(id=f"jlcorpus-{path.stem.replace('_', '-')}", speaker=speaker, label_raw=emotion,
                          gender=gender, text=sentence)
