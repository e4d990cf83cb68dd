"""MER2023 — Multimodal Emotion Recognition challenge 2023 (Mandarin film and TV clips; licensed).

Layout (EmoBox's list, 5030 clips): `mer2023train/train/sample_XXXXXXXX.avi`,
`mer2023train/test3/*.mp4|*.avi`, `test1/*.avi`, `test2/*.mp4` (audio at 16, 44.1 or 48 kHz,
decoded with PyAV), with label tables `*label*.csv` anywhere under the root (columns `name`, the
clip's name without suffix, and `discrete`: neutral, angry, happy, sad, worried, surprise:
`label_raw`) (U: the label files come with the licence; their names vary by release).

Speakers: none are published (clips from many films), so each clip counts as its own speaker:
no fold can be checked for speaker independence. Utterance id = "mer2023-" + stem for .avi
clips and "mer2023-" + file name (with .mp4) for .mp4 clips, as in EmoBox.
"""

from __future__ import annotations

from pathlib import Path

from featstore import labels as L
from featstore.corpora import metadata
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

TABLES = "*label*.csv"


class Mer2023Corpus(Corpus):
    name = "mer2023"
    title = "MER2023 (Mandarin clips, discrete labels)"
    language = "zh"
    expected_count = 5030
    labels = {"neutral": L.NEUTRAL, "angry": L.ANGRY, "happy": L.HAPPY, "sad": L.SAD, "worried": L.WORRIED,
              "surprise": L.SURPRISE}
    layout_hint = "mer2023train/train/sample_XXXXXXXX.avi, test1/, test2/, mer2023train/test3/ with *label*.csv"
    audio_suffixes = (".avi", ".mp4")
    source = Source(
        "manual", "http://merchallenge.cn/", "MER2023 end-user licence (research only)",
        steps=("MER2023 is licensed: sign the EULA at http://merchallenge.cn/ (U) to receive the data and "
               "label files.",),
        verified="licensed",
    )
    speaker_note = ("MER2023 publishes no speakers: each clip counts as its own speaker, so '0 leaked speakers' proves nothing; the same actors may be on both sides of any split")
    protocol = Protocol("emobox", "no speaker ids (each clip counts as its own speaker); EmoBox's single split")

    def find_files(self, root: Path) -> list[Path]:
        metadata.clear_cache()
        metadata.find_tables(root, TABLES, self.name, "the label tables with columns name, discrete")
        return super().find_files(root)

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        if not path.stem.startswith("sample"):
            raise LayoutError(f"{path.name} is not sample*_XXXXXXXX.avi|.mp4")
        row = metadata.index(root, TABLES, self.name, "*label*.csv", _name).get(path.stem)
        if row is None:
            raise LabelError(f"no row for {path.stem} in the label tables (*label*.csv)")
        key = path.name if path.suffix.lower() == ".mp4" else path.stem
        return ParsedFile(id=f"mer2023-{key}", speaker=path.stem, label_raw=row.get("discrete", ""))


def _name(table: Path, row: dict) -> str | None:
    return Path(row.get("name", "")).stem or None


def format_labels(entries) -> str:
    """A `*label*.csv` text for `(clip name without suffix, discrete label)` entries."""
    return "\n".join(["name,discrete,valence", *(f"{name},{label},0" for name, label in entries)]) + "\n"
