"""EMNS — Emotive Narrative Storytelling corpus (English, one voice actor, web recordings).

Layout: `cleaned_webm/recorded_audio_<id>.webm` (Opus audio in WebM, 48 kHz; 1181 files in
EmoBox's list) and the metadata table `metadata.csv` (U: pipe-separated, one row per recording
with `audio_recording` naming the file, `emotion`, `utterance` (text), `gender`, `age`; format
from the public release, not checked against it). Emotions: Angry, Disgust, Excited, Happy,
Neutral, Sad, Sarcastic, Surprise (`label_raw`).

Speakers: the corpus is read by one speaker (U), so there is one speaker and no fold can be
speaker-independent. Utterance id = "emns-" + file stem, as in EmoBox.
"""

from __future__ import annotations

from pathlib import Path

from featstore import labels as L
from featstore.corpora import metadata
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError

TABLE = "metadata.csv"
_GENDERS = {"female": "female", "male": "male", "f": "female", "m": "male"}


class EmnsCorpus(Corpus):
    name = "emns"
    title = "EMNS (Emotive Narrative Storytelling)"
    language = "en"
    expected_count = 1181
    n_speakers = 1
    labels = {"Angry": L.ANGRY, "Disgust": L.DISGUST, "Excited": L.EXCITED, "Happy": L.HAPPY,
              "Neutral": L.NEUTRAL, "Sad": L.SAD, "Sarcastic": L.SARCASTIC, "Surprise": L.SURPRISE}
    layout_hint = "cleaned_webm/recorded_audio_<id>.webm with metadata.csv beside it"
    audio_suffixes = (".webm",)
    source = Source(
        "manual", "https://huggingface.co/datasets/knoriy/EMNS", "Apache-2.0 (U)",
        steps=("Download EMNS from https://huggingface.co/datasets/knoriy/EMNS (U): the cleaned_webm/ "
               "folder and metadata.csv.",),
        verified="(U) address from the EMNS paper, not opened",
    )
    speaker_note = ("EMNS has one speaker: every split has the same voice in train and test")
    protocol = Protocol("emobox", "one speaker: no speaker-independent split exists; EmoBox's single split")

    def find_files(self, root: Path) -> list[Path]:
        metadata.clear_cache()
        metadata.find_tables(root, TABLE, self.name, "metadata.csv")
        return super().find_files(root)

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        row = metadata.index(root, TABLE, self.name, "metadata.csv", _file_of).get(path.name)
        if row is None:
            raise LabelError(f"no row for {path.name} in {TABLE}")
        return ParsedFile(id=f"emns-{path.stem}", speaker="1", label_raw=row.get("emotion", ""),
                          gender=_GENDERS.get(row.get("gender", "").lower()), text=row.get("utterance") or None)


def _file_of(table: Path, row: dict) -> str | None:
    return Path(row.get("audio_recording", "")).name or None


def format_metadata(entries) -> str:
    """`metadata.csv` text for `(relative path, emotion, gender)` entries, pipe-separated as released."""
    lines = ["id|utterance|description|emotion|date_created|status|gender|age|level|audio_recording"]
    lines += [f"{i}|||{emotion}||listed|{gender}|||{relpath}" for i, (relpath, emotion, gender) in enumerate(entries, 1)]
    return "\n".join(lines) + "\n"
