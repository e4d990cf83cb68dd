"""Your own corpus, listed in a CSV file (registered as "csv").

The CSV has a header row and the columns `path,label,speaker`, optionally `text` (what is said),
`language` (ISO 639-1)
and `gender` (male/female/child, or m/f/c); column names are case-insensitive, extra columns are
ignored. Paths are relative to the CSV's folder (absolute paths work too); any format soundfile
reads is accepted. The root passed to `load` is the CSV file itself.

Labels are free text, read through the alias table `featstore.labels.ALIASES` (case-insensitive;
`ser corpora --labels` lists it under "csv"): canonical names, IEMOCAP's and CREMA-D's codes (hap,
ang, neu, sad, fea, dis, sur, exc -> happy, fru, oth), EmoBox's names ("Angry", "Fearful",
"Surprised", ...) and common spellings ("anger", "happiness", "disgusted", ...) become the canonical
label. Anything else is kept, lowercased, as a class of its own, and loading says so in one
warning line naming each such label with its count, before anything is extracted or trained.
Rows labelled xxx (IEMOCAP's "no majority") are left out as problems. `label_raw` keeps the text
as written.

Dimensional labels: optional columns `arousal`, `valence` and `dominance` (numbers, any of them,
a cell may be empty) on the scale the columns `scale_min` and `scale_max` declare (e.g. 1 and 5;
one scale per CSV, so every row that has a value repeats the same two numbers), or the scale
given as `CsvCorpus(name, dimension_scale=(1, 5))`. Dimensions without a declared scale are a
CorpusError (a guessed scale would mix corpora wrongly); a value that is not a number or lies
outside the scale leaves its row out as a problem naming the line. The utterances carry the raw
values and the scale (`featstore.corpora.base.dimension_array` normalises them).

The corpus name is the CSV file's stem, lowercased, unless one is given (`CsvCorpus("mine")`);
utterance ids are "<name>-<audio file stem>", speakers "<name>-<speaker>". A row with a missing
value, a missing audio file, a bad gender or a repeated path is listed as a problem naming its
line; a CSV without the required columns is a CorpusError.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, Manifest, ParsedFile, Problem, Source
from featstore.errors import CorpusError

REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("language", "gender")
DIMENSION_COLUMNS = ("arousal", "valence", "dominance")
SCALE_COLUMNS = ("scale_min", "scale_max")
LABEL_ALIASES = L.ALIASES  # spelling (lowercased) -> canonical label
_GENDERS = {"male": "male", "m": "male", "female": "female", "f": "female", "child": "child", "c": "child"}


def canonical_label(text: str) -> str:
    """The canonical emotion `text` names, else `text` lowercased."""
    return L.canonical_name(text) or text.strip().lower()


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and abs(value) != float("inf")


def _check_scale(low: float, high: float, *, where: str) -> tuple[float, float]:
    """(low, high) as floats; CorpusError unless low < high."""
    low, high = float(low), float(high)
    if not low < high:
        raise CorpusError(f"{where}: dimension scale {low:g}-{high:g} is empty; scale_min must be below scale_max")
    return low, high


def _corpus_name(csv_path: Path) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", csv_path.stem.lower()).strip("-") or "csv"


class CsvCorpus(Corpus):
    name = "csv"
    title = "Your own corpus, listed in a CSV file"
    language = ""  # unknown unless the CSV has a language column
    labels = LABEL_ALIASES
    layout_hint = ("a CSV file with columns path,label,speaker[,language,gender,text,arousal,valence,dominance,"
                   "scale_min,scale_max]; paths relative to its folder")
    source = Source("own", "", "yours", verified="your own data: pass the CSV with --root")

    def __init__(self, name: str | None = None, dimension_scale: tuple[float, float] | None = None):
        self._named = name is not None
        if name is not None:
            self.name = name
        self._declared = None if dimension_scale is None else _check_scale(*dimension_scale, where=self.name)
        self.dimension_scale = self._declared
        self._rows: dict[Path, tuple[int, dict[str, str]]] = {}
        self._row_problems: list[Problem] = []

    def check_root(self, root: str | Path) -> Path:
        path = Path(root).expanduser()
        if not path.exists():
            raise CorpusError(f"{self.name}: {path} does not exist; pass the CSV file that lists your corpus "
                              f"({self.layout_hint})")
        if not path.is_file():
            raise CorpusError(f"{self.name}: {path} is a directory; pass the CSV file that lists your corpus "
                              f"({self.layout_hint})")
        return path.resolve()

    def load(self, root: str | Path, *, progress: bool = False) -> Manifest:
        if not self._named:  # the registered "csv" entry: name the corpus after the file
            return CsvCorpus(_corpus_name(Path(root)), self._declared).load(root, progress=progress)
        manifest = super().load(root, progress=progress)
        manifest.problems[:0] = self._row_problems
        unknown = L.unknown_labels(u.label for u in manifest.utterances)
        if unknown:
            import warnings

            listed = ", ".join(f"{label} ({n})" for label, n in unknown.items())
            warnings.warn(L.LabelWarning(
                f"{self.name}: {len(unknown)} label(s) in {manifest.root} are no canonical emotion and stay classes "
                f"of their own: {listed}; where one names an emotion, write its canonical name in the label column "
                f"(`ser corpora --labels` lists the spellings read)"), stacklevel=2)
        return manifest

    def find_files(self, root: Path) -> list[Path]:
        """Read the CSV: the audio file of every usable row, in file order; bad rows become problems."""
        self._rows, self._row_problems = {}, []
        self._scales: dict[tuple[float, float], int] = {}   # declared scale -> first line declaring it
        self.dimension_scale = self._declared
        try:
            text = root.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{self.name}: {root} is not UTF-8 text (byte {e.start} is not); pass the CSV file "
                              f"that lists your corpus, saved as UTF-8") from e
        except OSError as e:
            raise CorpusError(f"{self.name}: cannot read {root} ({e.strerror}); check its permissions") from e
        if "\x00" in text:
            raise CorpusError(f"{self.name}: {root} is a binary file (it holds NUL bytes), not a CSV; pass the "
                              f"CSV file that lists your corpus ({self.layout_hint})")
        try:
            self._read_rows(root, csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise CorpusError(f"{self.name}: {root} is not a readable CSV file ({e}); pass the CSV file that "
                              f"lists your corpus ({self.layout_hint})") from e
        if not self._rows:
            first = self._row_problems[0].reason if self._row_problems else "it has no data rows"
            raise CorpusError(f"{self.name}: no usable row in {root} ({first})")
        self._settle_scale(root)
        return list(self._rows)

    def _settle_scale(self, root: Path) -> None:
        """The one dimension scale of the CSV (declared in it or to the constructor), checked against
        every row with a dimension value."""
        if len(self._scales) > 1:
            (a, la), (b, lb) = list(self._scales.items())[:2]
            raise CorpusError(f"{self.name}: {root} declares two dimension scales, {a[0]:g}-{a[1]:g} (line {la}) and "
                              f"{b[0]:g}-{b[1]:g} (line {lb}); a corpus has one scale: make scale_min,scale_max agree")
        declared = next(iter(self._scales), None)
        if declared is not None and self._declared is not None and declared != self._declared:
            raise CorpusError(f"{self.name}: {root} declares the dimension scale {declared[0]:g}-{declared[1]:g}, "
                              f"but {self._declared[0]:g}-{self._declared[1]:g} was given; drop one of the two")
        scale = declared or self._declared
        rated = [(line, row) for line, row in self._rows.values() if any(row.get(c) for c in DIMENSION_COLUMNS)]
        if rated and scale is None:
            raise CorpusError(f"{self.name}: {root} has {', '.join(c for c in DIMENSION_COLUMNS if any(r.get(c) for _, r in rated))} "
                              f"values but no scale; add the columns scale_min,scale_max (e.g. 1 and 5) so they can be "
                              f"normalised and compared with other corpora")
        self.dimension_scale = scale if rated else None
        for path, (line, row) in list(self._rows.items()):
            for c in DIMENSION_COLUMNS:
                value = row.get(c)
                if value and not scale[0] <= float(value) <= scale[1]:
                    del self._rows[path]
                    self._row_problems.append(Problem(str(path), f"line {line}: {c} {value} lies outside the scale "
                                                                 f"{scale[0]:g}-{scale[1]:g}"))
                    break

    def _read_rows(self, root: Path, reader: csv.DictReader) -> None:
        columns = [(c or "").strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise CorpusError(
                f"{self.name}: {root} lacks the column(s) {', '.join(missing)}; the header must name "
                f"path,label,speaker[,language,gender] (found: {', '.join(columns) or 'no header'})"
            )
        reader.fieldnames = columns
        for row in reader:
            self._add_row(root, reader.line_num, {k: (v or "").strip() for k, v in row.items() if k})

    def _add_row(self, csv_path: Path, line: int, row: dict[str, str]) -> None:
        where = f"{csv_path}:{line}"
        empty = [c for c in REQUIRED if not row.get(c)]
        if empty:
            self._row_problems.append(Problem(where, f"line {line}: no {', '.join(empty)}"))
            return
        no_label = L.NO_LABEL.get(L.alias_key(row["label"]))
        if no_label:
            self._row_problems.append(Problem(where, f"label {row['label']} is no emotion ({no_label}), line {line}: "
                                                     f"left out; write a class in its label column to keep it"))
            return
        gender = row.get("gender", "").lower()
        if gender and gender not in _GENDERS:
            reason = f"line {line}: gender {row['gender']!r} is not male, female or child"
            self._row_problems.append(Problem(where, reason))
            return
        bad = [c for c in (*DIMENSION_COLUMNS, *SCALE_COLUMNS) if row.get(c) and not _is_number(row[c])]
        if bad:
            self._row_problems.append(Problem(where, f"line {line}: {bad[0]} {row[bad[0]]!r} is not a number"))
            return
        if any(row.get(c) for c in SCALE_COLUMNS):
            if not all(row.get(c) for c in SCALE_COLUMNS):
                self._row_problems.append(Problem(where, f"line {line}: give both scale_min and scale_max, or neither"))
                return
            try:
                scale = _check_scale(float(row["scale_min"]), float(row["scale_max"]), where=f"{where}")
            except CorpusError as e:
                self._row_problems.append(Problem(where, f"line {line}: {e}"))
                return
            self._scales.setdefault(scale, line)
        path = Path(row["path"]).expanduser()
        path = (path if path.is_absolute() else csv_path.parent / path).resolve()
        if not path.is_file():
            self._row_problems.append(Problem(str(path), f"line {line}: audio file {row['path']} not found"))
            return
        if path in self._rows:
            self._row_problems.append(Problem(str(path), f"line {line}: {row['path']} is listed again "
                                                         f"(first on line {self._rows[path][0]})"))
            return
        self._rows[path] = (line, row)

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        _line, row = self._rows[path]
        gender = row.get("gender", "").lower()
        return ParsedFile(
            id=f"{self.name}-{path.stem}", speaker=row["speaker"], label_raw=row["label"],
            gender=_GENDERS[gender] if gender else None, language=row.get("language", "").lower() or None,
            text=(row.get("text") or "").strip() or None,
            **{c: float(row[c]) if row.get(c) else None for c in DIMENSION_COLUMNS},
        )

    def canonical(self, label_raw: str, path: Path | str = "") -> str:
        return canonical_label(label_raw)

