"""IEMOCAP — Interactive Emotional Dyadic Motion Capture database (English, 10 actors).

Layout (the root is `IEMOCAP_full_release/`):
- audio: `Session{1..5}/sentences/wav/<dialog>/<utterance>.wav`, 16 kHz mono;
- labels: `Session{1..5}/dialog/EmoEvaluation/<dialog>.txt` (only the top-level files; the
  `Categorical/`, `Attribute/`, `Self-evaluation/` subfolders hold per-rater details);
- text: `Session{1..5}/dialog/transcriptions/<dialog>.txt`, read when present.
Dialog names may carry suffixes (`Ses03M_impro05a`, `Ses05M_script01_1b`).

An EmoEvaluation file starts with the header `% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]`
and a blank line; then one block per utterance, blocks separated by a blank line. A block is a
turn line with tab-separated fields (here → is a tab):
    [6.2901 - 8.2357]→Ses01F_impro01_F000→neu→[2.5000, 2.5000, 2.5000]
followed by rater lines, categorical (`C-E2:→Neutral;→()`) and dimensional
(`A-E3:→val 3; act 2; dom  2;→()`). The turn line's code is the majority label: ang, hap,
exc (excited), sad, neu, fru (frustrated), sur, fea, dis, oth, or xxx (no majority).

Dimensions: the turn line's bracketed triple is the evaluators' mean valence, activation
(arousal) and dominance, in that order (`[V, A, D]`, as the file's header says), each on 1-5
(`dimension_scale`). `Utterance.arousal` is the triple's SECOND value, `valence` its first.
Checked: the header line of every EmoEvaluation file (`% [START_TIME - END_TIME] TURN_NAME EMOTION
[V, A, D]`, /work/shared/reference/CORPORA.md and the release as other projects quote it, found
with the `search` tool); and the values agree with that order where the emotion fixes them: an
`ang` turn quoted with `[1.5000, 4.0000, 4.5000]` and rater lines `val 2; act 4; dom 4`, `val 1;
act 4; dom 5`, `val 1; act 5; dom 5` (low valence, high activation), which the order A, V, D
would contradict. The 1-5 scale is that of the rater lines (self-assessment manikins, 1-5).
Utterances outside the class set are skipped with their dimensions (the 4-class store has the
dimensions of its 5531 utterances only).

Class sets (`IemocapCorpus(classes=...)`):
- "4" (default, the standard benchmark): neu, ang, sad, and hap + exc merged into happy
  (`label_raw` keeps "exc"); 5531 utterances, per session 1085, 1023, 1151, 1031, 1241.
- "all": also fru → frustrated, sur → surprise, fea → fear, dis → disgust, oth → other; only
  xxx is dropped (7532 utterances in the full release (U)).
Utterances outside the class set are skipped silently. An utterance labelled in an
EmoEvaluation file without its wav, or a wav without a label line, is listed as a problem.

Speakers: each session has one female and one male actor; the letter after the utterance
name's last `_` says who speaks (`Ses01F_impro01_M003` is the male actor of session 1, whoever
leads the dialog), so the speaker is "Ses01M", the session "Ses01".
Utterance id = "iemocap-" + utterance name, as in EmoBox.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, Manifest, ParsedFile, Problem, Protocol, Source
from featstore.errors import CorpusError, LabelError, LayoutError

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
_TURN = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\]\s+(Ses\S+)\s+(\w+)\s+\[([^\]]*)\]?")
#: IEMOCAP's ratings (valence, activation, dominance) run 1-5
SCALE = (1.0, 5.0)
_UTTERANCE = re.compile(r"(Ses0[1-5])[FM]_\w+_([FM])\d+")
_TRANSCRIPT = re.compile(r"(Ses\S+) \[[\d.]+-[\d.]+\]:\s?(.*)")

FOUR_CLASS = {"neu": L.NEUTRAL, "hap": L.HAPPY, "exc": L.HAPPY, "ang": L.ANGRY, "sad": L.SAD}
ALL_CLASSES = {
    **FOUR_CLASS, "fru": L.FRUSTRATED, "sur": L.SURPRISE, "fea": L.FEAR, "dis": L.DISGUST, "oth": L.OTHER,
}
CLASS_SETS = {"4": FOUR_CLASS, "all": ALL_CLASSES}
_EXPECTED = {"4": 5531, "all": 7532}
_KNOWN_CODES = set(ALL_CLASSES) | {"xxx"}

# What three raters write on the `C-` lines for each majority code (xxx: they disagree).
_RATER_WORDS = {
    "neu": ("Neutral",) * 3, "hap": ("Happiness",) * 3, "exc": ("Excited",) * 3,
    "ang": ("Anger",) * 3, "sad": ("Sadness",) * 3, "fru": ("Frustration",) * 3,
    "sur": ("Surprise",) * 3, "fea": ("Fear",) * 3, "dis": ("Disgust",) * 3, "oth": ("Other",) * 3,
    "xxx": ("Neutral", "Frustration", "Anger"),
}


@dataclass(frozen=True)
class Turn:
    """One utterance line of an EmoEvaluation file."""

    utterance: str
    start: float
    end: float
    label: str
    valence: float | None = None     # the [V, A, D] triple, in the file's order
    arousal: float | None = None     # (IEMOCAP calls it activation)
    dominance: float | None = None


def _triple(text: str) -> tuple[float, float, float] | tuple[None, None, None]:
    """`2.5000, 3.0000, 2.0000` -> (V, A, D); (None, None, None) where it is not three numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None, None, None
    return values if len(values) == 3 else (None, None, None)


def parse_emo_evaluation(text: str) -> list[Turn]:
    """The turn lines of an EmoEvaluation file's text (header and rater lines are skipped)."""
    turns = []
    for line in text.splitlines():
        if m := _TURN.match(line):
            v, a, d = _triple(m.group(5) or "")
            turns.append(Turn(m.group(3), float(m.group(1)), float(m.group(2)), m.group(4), v, a, d))
    return turns


def format_emo_evaluation(entries: Iterable[tuple]) -> str:
    """EmoEvaluation file text for `(utterance, start, end, label)` entries, in the real format.

    An entry may carry a fifth item, its `(valence, arousal, dominance)` on 1-5, written as the
    file's `[V, A, D]` triple (default 2.5 each, IEMOCAP's middle), with rater lines near it.
    """
    blocks = [HEADER]
    for utterance, start, end, label, *rest in entries:
        v, a, d = rest[0] if rest and rest[0] is not None else (2.5, 2.5, 2.5)
        lines = [f"[{start:.4f} - {end:.4f}]\t{utterance}\t{label}\t[{v:.4f}, {a:.4f}, {d:.4f}]"]
        words = _RATER_WORDS.get(label, ("Other",) * 3)
        lines += [f"C-E{rater}:\t{word};\t()" for rater, word in zip((2, 3, 4), words)]
        lines += [f"A-E{rater}:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()" for rater in (3, 4)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@lru_cache(maxsize=512)
def _turns(path: str, stamp: tuple[int, int]) -> dict[str, Turn]:
    """utterance -> its turn line in one EmoEvaluation file (`stamp`, mtime and size: re-read on change)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return {turn.utterance: turn for turn in parse_emo_evaluation(text)}


def _labels(path: str, stamp: tuple[int, int]) -> dict[str, str]:
    """utterance -> majority code of one EmoEvaluation file."""
    return {u: turn.label for u, turn in _turns(path, stamp).items()}


@lru_cache(maxsize=512)
def _transcripts(path: str, stamp: tuple[int, int]) -> dict[str, str]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return {m.group(1): m.group(2).strip() for line in text.splitlines() if (m := _TRANSCRIPT.match(line))}


def _table(path: Path, reader) -> dict[str, str]:
    if not path.is_file():
        return {}
    stat = path.stat()
    return reader(str(path), (stat.st_mtime_ns, stat.st_size))


def _evaluation_files(root: Path) -> list[Path]:
    return sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))


def _utterance_wavs(root: Path) -> list[Path]:
    """Every `*.wav` path of the layout, directories and broken links too (`load` reports them)."""
    return sorted(root.glob("Session*/sentences/wav/*/*.wav"))


class IemocapCorpus(Corpus):
    name = "iemocap"
    title = "IEMOCAP"
    language = "en"
    n_speakers = 10
    layout_hint = ("Session1..5/sentences/wav/<dialog>/<utterance>.wav with labels in "
                   "Session1..5/dialog/EmoEvaluation/<dialog>.txt")
    source = Source(
        "manual", "https://sail.usc.edu/iemocap/", "USC IEMOCAP release agreement (research only, no redistribution)",
        steps=("IEMOCAP is released under the USC release agreement (research only, no redistribution): "
               "request it at https://sail.usc.edu/iemocap/ (release form; the download link comes by "
               "e-mail).",),
        verified="licensed",
    )
    protocol = Protocol("loso-session", "the field's convention; 5 sessions x 2 speakers")
    dimension_scale = SCALE

    def __init__(self, classes: str = "4"):
        classes = str(classes)  # IemocapCorpus(classes=4) reads as "4"
        if classes not in CLASS_SETS:
            raise ValueError(f"IEMOCAP classes must be one of {', '.join(CLASS_SETS)}, not {classes!r}")
        self.classes = classes
        self.labels = CLASS_SETS[classes]
        self.expected_count = _EXPECTED[classes]

    def find_files(self, root: Path) -> list[Path]:
        _turns.cache_clear()  # every load reads the annotation files afresh
        _transcripts.cache_clear()
        wavs = _utterance_wavs(root)
        if wavs and not _evaluation_files(root):
            raise CorpusError(
                f"iemocap: {len(wavs)} wavs but no label files under {root}; IEMOCAP's labels live in "
                f"Session1..5/dialog/EmoEvaluation/<dialog>.txt, unpack the full release"
            )
        return wavs

    def parse(self, path: Path, root: Path) -> ParsedFile | None:
        m = _UTTERANCE.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not an IEMOCAP utterance name (e.g. Ses01F_impro01_F000.wav)")
        session, speaker_letter = m.groups()
        session_dir = path.parents[3]  # SessionN/sentences/wav/<dialog>/<utterance>.wav
        evaluation = session_dir / "dialog" / "EmoEvaluation" / f"{path.parent.name}.txt"
        turn = _table(evaluation, _turns).get(path.stem)
        if turn is None:
            raise LabelError(f"no label line for {path.stem} in {evaluation}")
        code = turn.label
        if code not in _KNOWN_CODES:
            raise LabelError(f"unknown label code {code!r} for {path.stem} in {evaluation.name} "
                             f"(known: {', '.join(sorted(_KNOWN_CODES))})")
        if code not in self.labels:
            return None  # outside the chosen class set (e.g. fru, xxx for "4"): skipped, not a problem
        transcript = session_dir / "dialog" / "transcriptions" / f"{path.parent.name}.txt"
        return ParsedFile(
            id=f"iemocap-{path.stem}", speaker=f"{session}{speaker_letter}", label_raw=code,
            gender="female" if speaker_letter == "F" else "male",
            text=_table(transcript, _transcripts).get(path.stem), session=session,
            arousal=turn.arousal, valence=turn.valence, dominance=turn.dominance,
        )

    def load(self, root: str | Path, *, progress: bool = False) -> Manifest:
        manifest = super().load(root, progress=progress)
        root = Path(manifest.root)
        have = {p.stem for p in _utterance_wavs(root)}
        for evaluation in _evaluation_files(root):
            wav_dir = evaluation.parents[2] / "sentences" / "wav" / evaluation.stem
            for utterance, code in _table(evaluation, _labels).items():
                if code in self.labels and utterance not in have:
                    manifest.problems.append(Problem(
                        str(wav_dir / f"{utterance}.wav"),
                        f"labelled {code!r} in {evaluation.name} but the wav is missing",
                    ))
        return manifest

