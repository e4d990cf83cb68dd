"""MELD — Multimodal EmotionLines Dataset (English TV dialogue, "Friends").

Layout (MELD.Raw): the clips `train/train_splits/diaD_uttU.mp4`, `dev_splits_complete/diaD_uttU.mp4`
and `output_repeated_splits_test/diaD_uttU.mp4` (H.264 video with AAC audio, 48 kHz; 13706
clips in EmoBox's list), and the label tables `train_sent_emo.csv`, `dev_sent_emo.csv`,
`test_sent_emo.csv` anywhere under the root (columns `Sr No.`, `Utterance`, `Speaker`,
`Emotion`, `Sentiment`, `Dialogue_ID`, `Utterance_ID`, `Season`, `Episode`, `StartTime`,
`EndTime`). The split comes from the clip's folder, the label (anger, disgust, fear, joy ->
happy, neutral, sadness, surprise: `label_raw`), speaker name and text from the split's table.
Clips without a table row (a few in the release) are reported; the test folder's
`final_videos_test*` duplicates are another part of the release and not read. The audio track
of each .mp4 is decoded (PyAV).

Speakers: the `Speaker` column (Monica, Ross, ..., and hundreds of one-off names), so folds by
speaker are possible, but the main six speak most lines. Genders are not given.
Utterance id = "meld-diaD_uttU-<split>", as in EmoBox.
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora import metadata
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

SPLITS = {"train_splits": "train", "dev_splits_complete": "dev", "output_repeated_splits_test": "test"}
TABLES = "*_sent_emo.csv"
_NAME = re.compile(r"dia(\d+)_utt(\d+)")


class MeldCorpus(Corpus):
    name = "meld"
    title = "MELD (Multimodal EmotionLines Dataset, audio of the clips)"
    language = "en"
    expected_count = 13706
    labels = {"anger": L.ANGRY, "disgust": L.DISGUST, "fear": L.FEAR, "joy": L.HAPPY, "neutral": L.NEUTRAL,
              "sadness": L.SAD, "surprise": L.SURPRISE}
    layout_hint = "{train/train_splits,dev_splits_complete,output_repeated_splits_test}/diaD_uttU.mp4 + *_sent_emo.csv"
    audio_suffixes = (".mp4",)
    source = Source(
        "manual", "https://affective-meld.github.io/", "GPL-3.0 (U)",
        steps=("Download MELD.Raw.tar.gz from http://web.eecs.umich.edu/~mihalcea/downloads/MELD.Raw.tar.gz "
               "(U; ~10 GB), unpack it and the train/dev/test archives inside it.",),
        verified="(U) address from the MELD repository's README, not opened; no checksum published",
    )
    protocol = Protocol("emobox", "MELD's own split: train+dev vs test (EmoBox's single fold); speakers recur "
                                  "across the split")

    def find_files(self, root: Path) -> list[Path]:
        metadata.clear_cache()
        metadata.find_tables(root, TABLES, self.name, "train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv")
        return super().find_files(root)

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        if path.stem.startswith("final_videos_test"):
            return None  # duplicates of the test clips, another part of the release
        m = _NAME.fullmatch(path.stem)
        split = SPLITS.get(path.parent.name)
        if not m or split is None:
            raise LayoutError(f"{path.parent.name}/{path.name} is not <split folder>/diaD_uttU.mp4 "
                              f"(split folders: {', '.join(SPLITS)})")
        rows = metadata.index(root, TABLES, self.name, "*_sent_emo.csv", _row_key)
        row = rows.get(f"{split}-{int(m.group(1))}-{int(m.group(2))}")
        if row is None:
            raise LabelError(f"no row for dialogue {m.group(1)} utterance {m.group(2)} in {split}_sent_emo.csv")
        return ParsedFile(id=f"meld-{path.stem}-{split}", speaker=row.get("Speaker") or "unknown",
                          label_raw=row.get("Emotion", ""), text=row.get("Utterance") or None, session=split)


def _row_key(table: Path, row: dict) -> str | None:
    split = table.name.split("_", 1)[0]
    try:
        return f"{split}-{int(row['Dialogue_ID'])}-{int(row['Utterance_ID'])}"
    except (KeyError, ValueError):
        return None


HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"


def format_table(entries) -> str:
    """`<split>_sent_emo.csv` text for `(dialogue, utterance, speaker, emotion)` entries."""
    lines = [HEADER]
    lines += [f'{i},"",{speaker},{emotion},neutral,{d},{u},1,1,"00:00:00,000","00:00:01,000"'
              for i, (d, u, speaker, emotion) in enumerate(entries, 1)]
    return "\n".join(lines) + "\n"
