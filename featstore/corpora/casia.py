"""CASIA — Chinese emotional speech corpus of the Institute of Automation (Mandarin, acted).

Layout: `<speaker>/<emotion>/<n>.wav`, e.g. `wangzhe/neutral/239.wav`: 4 speakers x 6 emotions
x 50 sentences = 1200 wavs at 16 kHz (the freely circulating part; the full corpus has 9600).
Speakers liuchanhg (sic, as the folder is spelt; female), zhaoquanyin (female), wangzhe
(male), zhaozuoxiang (male) (U: genders from public descriptions). Emotions angry, fear,
happy, neutral, sad, surprise (the folder name is `label_raw`).
Utterance id = "casia-<n>-<speaker>-<emotion>", as in EmoBox.
"""

from __future__ import annotations

from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

GENDERS = {"liuchanhg": "female", "zhaoquanyin": "female", "wangzhe": "male", "zhaozuoxiang": "male"}


class CasiaCorpus(Corpus):
    name = "casia"
    title = "CASIA (Mandarin, 4 speakers)"
    language = "zh"
    expected_count = 1200
    n_speakers = 4
    labels = {"angry": L.ANGRY, "fear": L.FEAR, "happy": L.HAPPY, "neutral": L.NEUTRAL, "sad": L.SAD,
              "surprise": L.SURPRISE}
    layout_hint = "<speaker>/<emotion>/<n>.wav (e.g. wangzhe/neutral/239.wav)"
    source = Source(
        "manual", "http://www.chineseldc.org/resource_info.php?rid=76", "Chinese LDC licence (U)",
        steps=("CASIA is distributed by the Chinese LDC (licence); the 1200-file part circulates in "
               "research groups (U).",),
        verified="licensed",
    )
    protocol = Protocol("emobox", "EmoBox's 4 folds each hold out one of the 4 speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        speaker, emotion = path.parent.parent.name, path.parent.name
        if not path.stem.isdigit() or speaker not in GENDERS:
            raise LayoutError(f"{speaker}/{emotion}/{path.name} is not <speaker>/<emotion>/<n>.wav "
                              f"with a speaker among {', '.join(GENDERS)}")
        return ParsedFile(id=f"casia-{path.stem}-{speaker}-{emotion}", speaker=speaker, label_raw=emotion,
                          gender=GENDERS[speaker], text=path.stem)
