"""Utterance records, manifests and the `Corpus` base class every corpus module fills in.

A corpus module describes one corpus in one place: its layout, label codes, speakers,
language, where it comes from (`Source`: page, licence, archives and checksums or the manual
steps) and its standard speaker-independent fold protocol with the reason (`Protocol`). It
implements `parse(path, root)` (one audio file -> record fields) and, where the labels live
outside the file names (IEMOCAP), `find_files`/`parse` over its annotation files.
`Corpus.load(root)` does the rest: walks the tree, reads audio headers, and collects every
problem (unknown label code, name outside the corpus' grammar, unreadable or empty file,
directory or broken link where a file should be, ...) instead of stopping at the first.

Dimensional labels (arousal, valence, dominance): a corpus that has them declares their scale
(`Corpus.dimension_scale`, e.g. IEMOCAP (1, 5), MSP-Podcast (1, 7)) and its `parse` fills
`ParsedFile.arousal/valence/dominance` on the corpus' own scale. Each `Utterance` keeps the raw
values and the scale they are on (`dimension_scale`), so records of several corpora stay
comparable: `dimension_array` maps each corpus' scale linearly onto [-1, 1] (NaN where a value
is missing). A corpus without dimensions leaves all four None.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from featstore.audio import SEGMENT_SLACK_S, audio_info
from featstore.errors import CorpusError, LabelError, LayoutError, UnreadableAudio

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance of one corpus."""

    id: str              # unique across corpora; equals EmoBox's key for the 13 EmoBox corpora
    path: str            # absolute path of the audio file
    corpus: str          # registry name, e.g. "ravdess"
    language: str        # ISO 639-1, e.g. "en"
    speaker: str         # unique across corpora: "<corpus>-<local id>", e.g. "ravdess-01"
    gender: str | None   # "male", "female", "child" or None when unknown
    label: str           # canonical emotion (featstore.labels.CANONICAL)
    label_raw: str       # the corpus' own code, e.g. "05" for RAVDESS angry
    text: str | None = None        # sentence / text / word id where the corpus has one
    intensity: str | None = None   # e.g. RAVDESS "normal"/"strong", CaFE "weak"/"strong"
    session: str | None = None     # recording session (IEMOCAP "Ses01")
    duration: float = 0.0          # seconds, from the audio header (a segment: end - start)
    sample_rate: int = 0           # Hz, from the audio header
    start: float | None = None     # a segment of a longer file (PAVOQUE): its start, seconds
    end: float | None = None       # ... and its end; None: the whole file
    arousal: float | None = None   # dimensional labels on the corpus' own scale (IEMOCAP's
    valence: float | None = None   # activation is arousal); None where the corpus has none
    dominance: float | None = None
    #: (low, high) of the scale the three values are on, e.g. (1.0, 5.0); None without dimensions
    dimension_scale: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


#: The dimensional labels, in the order `dimension_array` returns them by default.
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")

UTTERANCE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Utterance))


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why (one short phrase)."""

    path: str
    reason: str


@dataclass
class Manifest:
    """The utterances of one corpus root, plus every problem met while reading it."""

    corpus: str
    root: str
    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def label_counts(self) -> Counter:
        return Counter(u.label for u in self.utterances)

    def speaker_counts(self) -> Counter:
        return Counter(u.speaker for u in self.utterances)

    def write(self, path: str | Path) -> Path:
        """Write the utterance table as .csv or .jsonl (chosen by the suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            with path.open("w", encoding="utf-8") as f:
                for u in self.utterances:
                    f.write(json.dumps(u.to_dict(), ensure_ascii=False) + "\n")
        elif path.suffix == ".csv":
            with path.open("w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=UTTERANCE_FIELDS)
                writer.writeheader()
                for u in self.utterances:
                    writer.writerow({k: _cell(v) for k, v in u.to_dict().items()})
        else:
            raise CorpusError(f"cannot write a manifest to {path}: use a .csv or .jsonl file name")
        return path


def _cell(value) -> str | float | int:
    """One manifest CSV cell: "" for None, a scale as "low..high"."""
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return "..".join(f"{v:g}" for v in value)
    return value


@dataclass(frozen=True)
class ParsedFile:
    """What a corpus module reads from one file's name/annotation, before headers are read."""

    id: str
    speaker: str               # local speaker id; `Corpus.load` prefixes the corpus name
    label_raw: str
    gender: str | None = None
    text: str | None = None
    intensity: str | None = None
    session: str | None = None
    language: str | None = None  # per-file language where it varies (CSV corpora); else the corpus'
    start: float | None = None   # segment corpora: the utterance is seconds start..end of the file
    end: float | None = None
    arousal: float | None = None    # dimensional labels on the corpus' `dimension_scale`
    valence: float | None = None
    dominance: float | None = None


@dataclass(frozen=True)
class Archive:
    """One file to fetch: where from, its name on disk, and what it must hash to (if known)."""

    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


def zenodo(record: int, filename: str, **kw) -> Archive:
    """`filename` of Zenodo record `record`, at the address Zenodo serves downloads from."""
    return Archive(f"https://zenodo.org/records/{record}/files/{filename}?download=1", filename, **kw)


#: How a corpus is obtained: fetched over HTTP, cloned with Git LFS, by hand, or it is your own.
METHODS = ("http", "git-lfs", "manual", "own")


@dataclass(frozen=True)
class Source:
    """Where one corpus comes from and under which licence (`ser download --list` prints these)."""

    method: str                         # one of METHODS
    page: str                           # the official page, for people
    licence: str
    archives: tuple[Archive, ...] = ()  # http
    repo: str = ""                      # git-lfs: repository to clone
    lfs_include: str = ""               # git-lfs: the LFS paths to pull
    steps: tuple[str, ...] = ()         # manual: how to obtain it
    approx_size: str = ""               # when no exact size is known
    verified: str = ""                  # how the URL / size / checksum were checked; "(U)" = unverified

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Source method {self.method!r} is not one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class Protocol:
    """A corpus' standard speaker-independent fold protocol (`featstore.folds`) and why."""

    name: str
    why: str


#: For corpora without a published speaker-independent split (e.g. your own CSV corpus).
DEFAULT_PROTOCOL = Protocol("speaker-kfold:5", "no published speaker-independent split: 5 folds by speaker")


class Corpus:
    """Describes one corpus. Subclasses set the class attributes and implement `parse`."""

    name: str = ""
    title: str = ""
    language: str = ""            # ISO 639-1
    expected_count: int = 0       # utterances in the complete official release
    n_speakers: int = 0
    labels: dict[str, str] = {}   # corpus code -> canonical label
    layout_hint: str = ""         # one line: where the audio files sit under the root
    source: Source = Source("own", "", "")
    protocol: Protocol = DEFAULT_PROTOCOL
    audio_suffixes: tuple[str, ...] = (".wav",)
    # What the corpus' speaker ids mean for fold independence, where they are not people
    # (`featstore.folds.make_folds` warns with it, so `ser folds` and probes say it).
    speaker_note: str = ""
    #: (low, high) of the corpus' arousal/valence/dominance ratings; None: no dimensional labels
    dimension_scale: tuple[float, float] | None = None

    # -- to implement -------------------------------------------------------------------
    def parse(self, path: Path, root: Path) -> ParsedFile | list[ParsedFile] | None:
        """Read one audio file's record fields from its path.

        Returns None for a file that belongs to another part of the release (e.g. RAVDESS song
        files), raises LayoutError for a name outside the corpus' grammar and LabelError for a
        file whose label code the corpus does not define. A segment corpus (PAVOQUE) returns
        one ParsedFile per segment of the file. Any other exception is a bug.
        """
        raise NotImplementedError

    def find_files(self, root: Path) -> list[Path]:
        """Every path under `root` with an audio suffix, sorted: directories and broken links too,
        so that `load` reports them."""
        return sorted(p for p in root.rglob("*") if p.suffix.lower() in self.audio_suffixes)

    # -- shared -------------------------------------------------------------------------
    def canonical(self, label_raw: str, path: Path | str = "") -> str:
        try:
            return self.labels[label_raw]
        except KeyError as e:
            known = ", ".join(sorted(self.labels))
            raise LabelError(f"unknown label code {label_raw!r} (known: {known})") from e

    def how_to_get(self, target: str | Path) -> list[str]:
        """Lines telling a user how to put this corpus at `target` (used in not-found errors)."""
        s = self.source
        if s.method == "own":
            return [f"{self.name} is your own data: pass the CSV file that lists it with --root"]
        if s.method == "http":
            return [f"ser download {self.name}    # from {s.page}, unpacks into {target}"]
        if s.method == "git-lfs":
            return [f"ser download {self.name}    # git clone + git lfs pull {s.lfs_include} into {target} "
                    f"(needs git-lfs)"]
        return [*s.steps, f"Then unpack it so that {self.layout_hint} sit under {target}",
                f"(`ser download {self.name} --url /path/to/archive.zip` unpacks a downloaded archive there "
                f"and checks it)"]

    def check_root(self, root: str | Path) -> Path:
        root = Path(root).expanduser()
        if not root.exists():
            raise CorpusError(
                f"{self.name}: corpus root {root} does not exist; pass --root DIR pointing at "
                f"the unpacked corpus ({self.layout_hint})"
            )
        if not root.is_dir():
            raise CorpusError(f"{self.name}: corpus root {root} is not a directory ({self.layout_hint})")
        return root.resolve()

    def load(self, root: str | Path, *, progress: bool = False) -> Manifest:
        """Walk `root`, parse every file, read its audio header; collect problems."""
        root = self.check_root(root)
        candidates = self.find_files(root)
        if not candidates:
            raise CorpusError(
                f"{self.name}: no {'/'.join(self.audio_suffixes)} files under {root}; "
                f"expected layout: {self.layout_hint}"
            )
        manifest = Manifest(self.name, str(root))
        seen: dict[str, str] = {}
        files, parsed_any = 0, False
        for path in _iter_progress(candidates, progress, f"reading {self.name}"):
            not_a_file = _not_a_file(path)
            if not_a_file:
                manifest.problems.append(Problem(str(path), not_a_file))
                continue
            files += 1
            try:
                parsed = self.parse(path, root)
            except LabelError as e:
                parsed_any = True
                manifest.problems.append(Problem(str(path), str(e)))
                continue
            except LayoutError as e:
                manifest.problems.append(Problem(str(path), f"file name not in {self.name} layout: {e}"))
                continue
            if parsed is None:
                continue
            parsed_any = True
            self._add(manifest, path, [parsed] if isinstance(parsed, ParsedFile) else parsed, seen)
        if files and not parsed_any:
            raise CorpusError(
                f"{self.name}: none of the {files} audio files under {root} follows the "
                f"{self.name} layout ({self.layout_hint}); is --corpus right?"
            )
        return manifest


    def _add(self, manifest: Manifest, path: Path, parsed: list[ParsedFile], seen: dict[str, str]) -> None:
        """Check one file's header and add its utterance(s), or record why not."""
        fresh = []
        for p in parsed:
            if p.id in seen:
                manifest.problems.append(Problem(str(path), f"duplicate utterance id {p.id} (also {seen[p.id]})"))
            else:
                fresh.append(p)
        if not fresh:
            return
        if path.stat().st_size == 0:
            manifest.problems.append(Problem(str(path), "empty file (0 bytes)"))
            return
        try:
            frames, rate, _ = audio_info(path)
        except UnreadableAudio as e:
            manifest.problems.append(Problem(str(path), f"unreadable audio: {e.reason}"))
            return
        if frames <= 0:
            manifest.problems.append(Problem(str(path), "empty audio (0 samples)"))
            return
        for p in fresh:
            where = str(path) if p.start is None else f"{path} [{p.start:.2f}-{p.end:.2f} s]"
            seen[p.id] = where
            if p.start is not None and p.end > frames / rate + SEGMENT_SLACK_S:
                manifest.problems.append(Problem(where, f"segment {p.id} ends at {p.end:.2f} s, past the end of "
                                                        f"the file ({frames / rate:.2f} s)"))
                continue
            try:
                label = self.canonical(p.label_raw, path)
            except LabelError as e:
                manifest.problems.append(Problem(where, str(e)))
                continue
            dims = [p.arousal, p.valence, p.dominance]
            scale = self.dimension_scale if any(v is not None for v in dims) else None
            manifest.utterances.append(Utterance(
                id=p.id, path=str(path), corpus=self.name, language=p.language or self.language,
                speaker=f"{self.name}-{p.speaker}", gender=p.gender, label=label,
                label_raw=p.label_raw, text=p.text, intensity=p.intensity,
                session=p.session, duration=(p.end - p.start) if p.start is not None else frames / rate,
                sample_rate=int(rate), start=p.start, end=p.end,
                arousal=_float(p.arousal), valence=_float(p.valence), dominance=_float(p.dominance),
                dimension_scale=None if scale is None else (float(scale[0]), float(scale[1])),
            ))


def _float(value) -> float | None:
    return None if value is None else float(value)


def scale_of(corpus: str) -> tuple[float, float] | None:
    """The dimension scale the registered corpus `corpus` declares (None: not registered, or none)."""
    from featstore.corpora import CORPORA

    registered = CORPORA.get(corpus)
    scale = getattr(registered, "dimension_scale", None)
    return None if scale is None else (float(scale[0]), float(scale[1]))


def dimension_array(utterances: Iterable[Utterance], names: Iterable[str] = DIMENSIONS,
                    scales: dict[str, tuple[float, float]] | None = None, normalised: bool = True) -> np.ndarray:
    """The dimensional labels of `utterances` as a float64 `(n, len(names))` array, NaN where missing.

    normalised=True maps each corpus' scale linearly onto [-1, 1] (low -> -1, high -> +1), so
    corpora rated on 1-5 and 1-7 can be pooled or compared; the scale is looked up by
    `utterance.corpus` in `scales` (e.g. `FeatureStore.dimension_scales`), else the one the
    utterance carries, else the registered corpus' `dimension_scale`. normalised=False returns
    the raw values on each corpus' own scale. A value whose scale cannot be found is a
    CorpusError naming the corpus (a silent guess would mix scales).
    """
    import numpy as np

    names = tuple(names)
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise CorpusError(f"unknown dimension(s) {', '.join(map(repr, unknown))}; use {', '.join(DIMENSIONS)}")
    utterances = list(utterances)
    out = np.full((len(utterances), len(names)), np.nan, dtype=np.float64)
    registered: dict[str, tuple[float, float] | None] = {}
    for i, u in enumerate(utterances):
        values = [getattr(u, n) for n in names]
        if all(v is None for v in values):
            continue
        raw = np.array([np.nan if v is None else float(v) for v in values])
        if not normalised:
            out[i] = raw
            continue
        scale = (scales or {}).get(u.corpus) or u.dimension_scale
        if scale is None:
            if u.corpus not in registered:
                registered[u.corpus] = scale_of(u.corpus)
            scale = registered[u.corpus]
        if scale is None:
            raise CorpusError(f"{u.corpus}: utterance {u.id} has dimensional labels but no scale is known for "
                              f"them; pass scales={{{u.corpus!r}: (low, high)}} (a store gives its "
                              f"dimension_scales)")
        low, high = float(scale[0]), float(scale[1])
        if not high > low:
            raise CorpusError(f"{u.corpus}: dimension scale {scale} is empty; write it as (low, high) with low < high")
        out[i] = 2.0 * (raw - low) / (high - low) - 1.0
    return out


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be an audio file (a directory, a broken link), or None for a regular file."""
    if path.is_dir():
        return "a directory, not an audio file"
    if not path.exists():
        if path.is_symlink():
            return f"broken symbolic link (to {os.readlink(path)})"
        return "vanished while being read"
    if not path.is_file():
        return "not a regular file (device, FIFO or socket)"
    return None


def _iter_progress(items: list, enabled: bool, description: str) -> Iterable:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)
