"""MSP-IMPROV — acted dyadic improvisations with target sentences (English, 12 actors; UT Dallas, licensed).

Layout (the root is the unpacked release):
- audio: `Audio/session<k>/<sentence>/<type>/MSP-IMPROV-<sentence>-<speaker>-<type>-<turn>.wav`
  (e.g. `Audio/session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav`; some copies lack the `Audio/`
  level); every `*.wav` under the root is read, matched to its label line by name;
- labels: one file at the root, `Evaluation.txt` (spelled `Evalution.txt` in some copies of the
  release; both are read), one consensus line per clip followed by the raters' lines:
      UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.000000; V:3.500000; D:3.000000; N:4.000000;
  clip name (`UTD-IMPROV-...` where the wav says `MSP-IMPROV-...`), the consensus category, then
  mean arousal (A:), valence (V:), dominance (D:) and naturalness (N:), each on 1-5
  (`dimension_scale`); the values are read by their prefix, never by position.

Labels: A angry, H happy, S sad, N neutral (the 4-class benchmark, the default class set "4");
`MspImprovCorpus(classes="all")` also keeps O (other) and X (no agreement) as `other`
(`label_raw` keeps them apart), for dimensional work over every clip. Lines of other codes are
listed as problems.

Speakers and sessions: six sessions, each one female and one male actor; the clip name's 4th
dash-field is the speaker (F01..F06, M01..M06), whose number is the session ("1"). The
standard protocol is `loso-session`: six folds, each holding out one session's two actors.
The 5th field is the recording type (R read, S scripted, T improvised target sentence, P natural
interaction (U: the letters' meanings)); no Utterance field holds it.
Utterance id = "mspimprov-" + wav stem.

How each fact was checked (the `search` and `find_string` tools over public code; the release is
licensed): the label line format, the `UTD-`/`MSP-` name pair, the `Audio/session<k>/<sentence>/
<type>/` layout and the `Evalution.txt` spelling from a public loader that quotes them; the
`Evaluation.txt` spelling, the field order (name; category; A:; V:; D:; N:), the speaker as the
4th dash-field and its last digit as the session from nkululeko's MSP-IMPROV script. The 1-5
scale: that script fills missing ratings with 3, the scale's middle, and the corpus paper uses
five-point manikins (U: the paper itself was not read here; a value outside 1-5 is reported as
a problem, so another scale shows at once). Counts: 8438 clips in the paper (U).
"""

from __future__ import annotations

import re
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, Manifest, ParsedFile, Problem, Protocol, Source
from featstore.errors import CorpusError, LabelError, LayoutError

FOUR_CLASS = {"A": L.ANGRY, "H": L.HAPPY, "S": L.SAD, "N": L.NEUTRAL}
ALL_CLASSES = {**FOUR_CLASS, "O": L.OTHER, "X": L.OTHER}
CLASS_SETS = {"4": FOUR_CLASS, "all": ALL_CLASSES}
KNOWN_CODES = frozenset(ALL_CLASSES)
SCALE = (1.0, 5.0)
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
_CLIP = re.compile(r"(?:UTD|MSP)-IMPROV-(S\d\d[A-Z]?)-([FM])(\d\d)-([A-Z])-(\w+)")
_VALUE = re.compile(r"([AVDN])\s*:\s*([-+0-9.eE]+)")


def label_file(root: Path) -> Path | None:
    """`Evaluation.txt` (or `Evalution.txt`) at the root or one folder below, else None."""
    for pattern in (*LABEL_FILES, *(f"*/{name}" for name in LABEL_FILES)):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def parse_evaluation(text: str) -> dict[str, tuple[str, dict[str, float]]]:
    """clip stem (as its wav is named: `MSP-IMPROV-...`) -> (category code, {"A": .., "V": .., "D": .., "N": ..})
    of every consensus line; raters' lines and anything else are skipped."""
    out = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(";")]
        if len(fields) < 2 or not _CLIP.fullmatch(Path(fields[0]).stem):
            continue
        stem = "MSP" + Path(fields[0]).stem[3:]
        out[stem] = (fields[1].upper(), {k: float(v) for f in fields[2:] if (m := _VALUE.fullmatch(f))
                                         for k, v in [m.groups()]})
    return out


def format_evaluation(rows) -> str:
    """Evaluation.txt text for `(wav stem, code, arousal, valence, dominance)` rows: the consensus lines in the
    release's format, a blank line after each (the raters' lines, whose format is not checked, are left out)."""
    return "".join(f"UTD{stem[3:]}.avi; {code}; A:{a:.6f}; V:{v:.6f}; D:{d:.6f}; N:3.000000;\n\n"
                   for stem, code, a, v, d in rows)


class MspImprovCorpus(Corpus):
    name = "mspimprov"
    title = "MSP-IMPROV"
    language = "en"
    expected_count = 0  # the 4-class set's size is not checked here (8438 clips in all (U))
    n_speakers = 12
    layout_hint = ("Audio/session1..6/<sentence>/<type>/MSP-IMPROV-*.wav with labels in Evaluation.txt "
                   "(or Evalution.txt) at the root")
    source = Source(
        "manual", "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Improv.html",
        "MSP-IMPROV academic licence (UT Dallas; research only, no redistribution)",
        steps=("MSP-IMPROV is licensed by UT Dallas' MSP lab for research: request it at "
               "https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Improv.html (licence agreement).",),
        verified="licensed",
    )
    protocol = Protocol("loso-session", "6 sessions x 2 actors: each fold holds out one session's pair")
    dimension_scale = SCALE

    def __init__(self, classes: str = "4"):
        classes = str(classes)
        if classes not in CLASS_SETS:
            raise ValueError(f"MSP-IMPROV classes must be one of {', '.join(CLASS_SETS)}, not {classes!r}")
        self.classes = classes
        self.labels = CLASS_SETS[classes]
        self._rows: dict[str, tuple[str, dict[str, float]]] = {}

    def find_files(self, root: Path) -> list[Path]:
        table = label_file(root)
        wavs = sorted(root.rglob("*.wav"))
        if table is None:
            if wavs:
                raise CorpusError(f"mspimprov: {len(wavs)} wavs but no Evaluation.txt under {root}; MSP-IMPROV's "
                                  f"labels live in Evaluation.txt (Evalution.txt in some copies) at the release's root")
            return []
        self._table = table
        self._rows = parse_evaluation(table.read_text(encoding="utf-8", errors="replace"))
        return wavs

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _CLIP.fullmatch(path.stem)
        if not m or not path.stem.startswith("MSP-"):
            raise LayoutError(f"{path.name} is not an MSP-IMPROV clip name (e.g. MSP-IMPROV-S01A-F01-S-FM01.wav)")
        row = self._rows.get(path.stem)
        if row is None:
            raise LabelError(f"no label line for {path.stem} in {self._table.name}")
        code, values = row
        if code not in KNOWN_CODES:
            raise LabelError(f"unknown category {code!r} for {path.stem} in {self._table.name} "
                             f"(known: {', '.join(sorted(KNOWN_CODES))})")
        if code not in self.labels:
            return None  # O/X outside the chosen class set: skipped, not a problem
        for key in "AVD":
            if key in values and not SCALE[0] <= values[key] <= SCALE[1]:
                raise LabelError(f"{key}:{values[key]:g} of {path.stem} lies outside MSP-IMPROV's scale 1-5")
        _sentence, gender, number, _kind, _turn = m.groups()
        return ParsedFile(
            id=f"mspimprov-{path.stem}", speaker=f"{gender}{number}", label_raw=code,
            gender="female" if gender == "F" else "male", session=str(int(number)),
            arousal=values.get("A"), valence=values.get("V"), dominance=values.get("D"),
        )

    def load(self, root: str | Path, *, progress: bool = False) -> Manifest:
        manifest = super().load(root, progress=progress)
        root = Path(manifest.root)
        have = {p.stem for p in root.rglob("*.wav")}
        for stem, (code, _values) in self._rows.items():
            if code in self.labels and stem not in have:
                manifest.problems.append(Problem(str(root / f"{stem}.wav"),
                                                 f"labelled {code!r} in {self._table.name} but the wav is missing"))
        return manifest
