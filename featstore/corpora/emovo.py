"""EMOVO — Italian emotional speech corpus.

Layout: one folder per speaker, `f1/ f2/ f3/ m1/ m2/ m3/`, holding `emo-spk-sent.wav`, e.g.
`f1/dis-f1-b1.wav`; 588 files (6 speakers × 7 emotions × 14 sentences), 48 kHz.

Emotion codes (Italian, `label_raw`): dis disgusto (disgust), gio gioia (joy → happy),
neu neutro (neutral), pau paura (fear), rab rabbia (anger), sor sorpresa (surprise),
tri tristezza (sadness). Sentence codes (`text`): b1-b3, d1-d2, l1-l4, n1-n5, the 14
sentences every speaker says in every emotion.

Speakers: f1-f3 female, m1-m3 male actors. EmoBox publishes no label map for EMOVO.
Utterance id = "emovo-" + file stem, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"([a-z]{3})-([fm][1-3])-([a-z]\d)")


class EmovoCorpus(Corpus):
    name = "emovo"
    title = "EMOVO"
    language = "it"
    expected_count = 588
    n_speakers = 6
    labels = {
        "dis": L.DISGUST, "gio": L.HAPPY, "neu": L.NEUTRAL, "pau": L.FEAR,
        "rab": L.ANGRY, "sor": L.SURPRISE, "tri": L.SAD,
    }
    layout_hint = "f1/ … m3/ holding emo-spk-sent.wav, e.g. f1/dis-f1-b1.wav"
    source = Source(
        "manual", "http://voice.fub.it/activities/corpora/emovo/index.html",
        "free for research use (request from Fondazione Ugo Bordoni)",
        steps=("Request EMOVO from Fondazione Ugo Bordoni: http://voice.fub.it/activities/corpora/emovo/index.html "
               "(free for research).",),
        verified="no direct URL known",
    )
    protocol = Protocol("emobox", "EmoBox's 6 folds are leave-one-speaker-out")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not emo-spk-sent.wav (e.g. dis-f1-b1.wav)")
        emotion, speaker, sentence = m.groups()
        return ParsedFile(
            id=f"emovo-{path.stem}", speaker=speaker, label_raw=emotion,
            gender="female" if speaker[0] == "f" else "male", text=sentence,
        )

