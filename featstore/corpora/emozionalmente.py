"""Emozionalmente — crowd-sourced Italian emotional speech (Catania et al. 2023).

Layout: `audio/<timestamp>.wav` (numeric names: nothing but the id is in them; 6902 files in
EmoBox's list, mostly 16 kHz) and the metadata tables `metadata/samples.csv` (one row per
recording: `file_name`, `actor` (the speaker's user name), `sentence`, `emotion_expressed`) and
`metadata/users.csv` (`username`, `gender`, `age`, `mother_tongue`) (U: column names from the
release's description, not checked against it). Emotions: anger, disgust, fear, joy (-> happy),
neutrality (-> neutral), sadness, surprise (`label_raw`).

Speakers and genders come from the metadata (431 contributors (U)); a recording whose row is
missing is reported, not guessed. Utterance id = "emozionalmente-" + file stem, as in EmoBox.
"""

from __future__ import annotations

from pathlib import Path

from featstore import labels as L
from featstore.corpora import metadata
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

SAMPLES, USERS = "samples.csv", "users.csv"
_GENDERS = {"female": "female", "male": "male", "f": "female", "m": "male"}


class EmozionalmenteCorpus(Corpus):
    name = "emozionalmente"
    title = "Emozionalmente (Italian, crowd-sourced)"
    language = "it"
    expected_count = 6902
    labels = {"anger": L.ANGRY, "disgust": L.DISGUST, "fear": L.FEAR, "joy": L.HAPPY, "neutrality": L.NEUTRAL,
              "sadness": L.SAD, "surprise": L.SURPRISE}
    layout_hint = "audio/<id>.wav with metadata/samples.csv and metadata/users.csv"
    source = Source(
        "manual", "https://zenodo.org/records/6569824", "CC BY 4.0 (U)",
        steps=("Download Emozionalmente from Zenodo record 6569824 (U) and unpack it (audio/ and metadata/).",),
        verified="(U) record number from public scripts, not opened",
    )
    protocol = Protocol("speaker-kfold:5", "hundreds of speakers (from metadata/samples.csv); EmoBox's single "
                                           "split mixes speakers")

    def find_files(self, root: Path) -> list[Path]:
        metadata.clear_cache()
        metadata.find_tables(root, SAMPLES, self.name, "metadata/samples.csv")
        return super().find_files(root)

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        if not path.stem.isdigit():
            raise LayoutError(f"{path.name} is not <numeric id>.wav")
        row = metadata.index(root, SAMPLES, self.name, "metadata/samples.csv", _sample_file).get(path.name)
        if row is None:
            raise LabelError(f"no row for {path.name} in metadata/{SAMPLES}")
        actor = row.get("actor", "")
        if not actor:
            raise LabelError(f"{path.name}: its row in metadata/{SAMPLES} names no actor")
        user = _users(root).get(actor, {})
        return ParsedFile(id=f"emozionalmente-{path.stem}", speaker=actor, label_raw=row.get("emotion_expressed", ""),
                          gender=_GENDERS.get(user.get("gender", "").lower()), text=row.get("sentence") or None)


def _users(root: Path) -> dict[str, dict]:
    if not any(root.rglob(USERS)):
        return {}
    return metadata.index(root, USERS, "emozionalmente", "metadata/users.csv", _username)


def _sample_file(table: Path, row: dict) -> str | None:
    return Path(row.get("file_name", "")).name or None


def _username(table: Path, row: dict) -> str | None:
    return row.get("username") or None


def format_samples(entries) -> str:
    """`metadata/samples.csv` text for `(file name, actor, emotion)` entries."""
    lines = ["file_name,actor,sentence,emotion_expressed"]
    lines += [f"{name},{actor},,{emotion}" for name, actor, emotion in entries]
    return "\n".join(lines) + "\n"


def format_users(entries) -> str:
    """`metadata/users.csv` text for `(username, gender)` entries."""
    return "\n".join(["username,gender,age,mother_tongue", *(f"{u},{g},,italian" for u, g in entries)]) + "\n"
