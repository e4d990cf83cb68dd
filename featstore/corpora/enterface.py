"""eNTERFACE'05 — audio-visual emotion database (English spoken by 42-43 non-native subjects).

Layout: `subject N/<emotion>/sentence K/sN_EE_K.avi` (DivX video with a 48 kHz audio track;
1263 files in EmoBox's list): emotions anger, disgust, fear, happiness, sadness, surprise,
codes an di fe ha sa su (`label_raw`), 5 sentences each. Quirks of the release, read as they
are: subject 6 has no sentence folders and one file per emotion (`subject 6/anger/s6_an.avi`);
subject 3's surprise files are named `s_3_su_K.avi`; one file is
`subject 16/surprise/sentence 3/s16_su_3avi.avi`.
The audio track of each .avi is decoded (PyAV); a file without one is reported.

Speakers: the subject number (the folder; U: genders are not published per subject).
Utterance id = "enterface-" + file name *with* its .avi suffix, as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LayoutError

_NAME = re.compile(r"s_?(\d+)_([a-z]{2})(?:_(\d))?(?:avi)?")
_SUBJECT = re.compile(r"subject (\d+)")


class EnterfaceCorpus(Corpus):
    name = "enterface"
    title = "eNTERFACE'05 (audio of the audio-visual database)"
    language = "en"
    expected_count = 1263
    n_speakers = 43
    labels = {"an": L.ANGRY, "di": L.DISGUST, "fe": L.FEAR, "ha": L.HAPPY, "sa": L.SAD, "su": L.SURPRISE}
    layout_hint = "subject N/<emotion>/sentence K/sN_EE_K.avi"
    audio_suffixes = (".avi",)
    source = Source(
        "manual", "http://www.enterface.net/enterface05/", "free for research (U)",
        steps=("Download enterface database.zip from http://www.enterface.net/enterface05/ (U) and unpack it.",),
        verified="(U) page not opened",
    )
    protocol = Protocol("speaker-kfold:5", "43 subjects; EmoBox's single split mixes speakers")

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _NAME.fullmatch(path.stem)
        subject = next((s for p in path.parents if (s := _SUBJECT.fullmatch(p.name))), None)
        if not m or subject is None:
            raise LayoutError(f"{path.name} is not subject N/<emotion>/sentence K/sN_EE_K.avi")
        return ParsedFile(id=f"enterface-{path.name}", speaker=subject.group(1), label_raw=m.group(2),
                          text=m.group(3))
