"""Word boundaries by CTC forced alignment: Viterbi over a wav2vec2 CTC model's emissions.

`viterbi(log_probs, targets, blank)` is the exact best CTC path through the `(frames, vocab)`
log-probabilities that spells `targets` (blank/repeat rules: a path may stay on a token, move to
the next, or skip a blank between two different tokens; a repeated letter needs a blank between).
`CTCAligner` (from `load_ctc_model`, a `Wav2Vec2ForCTC`-style hub id or local directory,
HF_HUB_OFFLINE honoured) spells a transcript with the model's vocabulary and returns `Word`s with
start/end times in seconds and a confidence (the mean probability of the aligned frames).
Clips longer than `max_seconds` are cut with `featstore.audio.windows`, as in extraction.

`align_corpus` aligns every utterance with a transcript (featstore.transcripts) and appends the
results to `<cache>/<ctc-model-slug>/<corpus>.align.jsonl`, next to that model's stores: one JSON
header line (model, weights hash), then one line per utterance, `{"id", "text", "words":
[{"word", "start", "end", "score"}]}` or `{"id", "error"}`. A killed run loses at most a partly
written last line; the same command resumes with the utterances not yet written.

`word_features(store, layer, alignments)` pools a store's frame-level features per word.
"""

from __future__ import annotations

import json
import os
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featstore.audio import load_audio, windows
from featstore.corpora.base import Utterance
from featstore.errors import AudioError, SerError, SerWarning
from featstore.transcripts import transcript

#: a CTC model per language for `ser align` without --ctc-model ($SER_CTC_MODEL overrides)
DEFAULT_CTC_MODELS: dict[str, str] = {
    "en": "facebook/wav2vec2-base-960h",
    "de": "jonatasgrosman/wav2vec2-large-xlsr-53-german",
}
FORMAT = "ser-alignments/1"
#: below this mean word confidence a corpus' alignments get a warning (the CTC model hardly hears the words)
LOW_CONFIDENCE = 0.5


class AlignError(SerError):
    """An utterance, transcript or alignment file that cannot be aligned or read; the message says why."""


class UnspellableTranscript(AlignError):
    """A transcript holding characters the CTC model's vocabulary lacks."""


class AlignmentImpossible(AlignError):
    """A clip with fewer frames than its transcript needs (no valid CTC path)."""


class NoTranscript(AlignError):
    """An utterance (or a whole corpus) without a known transcript."""


class AlignWarning(SerWarning):
    """Alignments that ran but are probably poor (low mean confidence)."""


@dataclass(frozen=True)
class Word:
    """One aligned word: times in seconds from the clip's start, `score` in [0, 1]."""

    word: str
    start: float
    end: float
    score: float


@dataclass
class Alignment:
    """The words of one utterance, or why it has none."""

    id: str
    text: str | None = None
    words: list[Word] = field(default_factory=list)
    error: str | None = None

    def table(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of strings, one row per word: the word, its start and end (s) and score."""
        return (["word", "start (s)", "end (s)", "score"],
                [[w.word, f"{w.start:.3f}", f"{w.end:.3f}", f"{w.score:.3f}"] for w in self.words])

    def to_json(self) -> dict:
        if self.error is not None:
            return {"id": self.id, "error": self.error}
        return {"id": self.id, "text": self.text,
                "words": [{**asdict(w), "start": round(w.start, 4), "end": round(w.end, 4),
                           "score": round(w.score, 4)} for w in self.words]}

    @classmethod
    def from_json(cls, row: dict) -> Alignment:
        words = [Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w["score"]))
                 for w in row.get("words", [])]
        return cls(id=str(row["id"]), text=row.get("text"), words=words, error=row.get("error"))


# -- the Viterbi ---------------------------------------------------------------------------------

def min_frames(targets: Sequence[int]) -> int:
    """Frames a CTC path spelling `targets` needs: one per token, plus a blank between repeats."""
    t = list(targets)
    return len(t) + sum(a == b for a, b in zip(t[:-1], t[1:]))


def viterbi(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> tuple[np.ndarray, float]:
    """The best CTC path through `log_probs` `(frames, vocab)` that collapses to `targets` `(L,)`.

    Returns `(positions, score)`: positions `(frames,)` int, the index into `targets` each frame
    emits, or -1 for a blank frame; score the path's summed log-probability. Raises
    AlignmentImpossible when there are fewer frames than `min_frames(targets)`.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n_frames, n_tokens = lp.shape[0], len(targets)
    if n_frames < max(1, min_frames(targets)):
        raise AlignmentImpossible(f"{n_frames} frames cannot hold {n_tokens} tokens "
                                  f"(a CTC path needs at least {max(1, min_frames(targets))})")
    states = np.full(2 * n_tokens + 1, blank, dtype=np.int64)  # blank, t0, blank, t1, ..., blank
    states[1::2] = targets
    n_states = len(states)
    skip = np.zeros(n_states, dtype=bool)  # a token state may be entered from two states back
    skip[3::2] = targets[1:] != targets[:-1]
    alpha = np.full(n_states, -np.inf)
    alpha[0] = lp[0, blank]
    if n_tokens:
        alpha[1] = lp[0, states[1]]
    back = np.zeros((n_frames, n_states), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, n_frames):
        prev1 = np.concatenate(([-np.inf], alpha[:-1]))
        prev2 = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha[:-2])), -np.inf)
        cand = np.stack([alpha, prev1, prev2])
        back[t] = cand.argmax(axis=0)
        alpha = cand[back[t], np.arange(n_states)] + lp[t, states]
    ends = [n_states - 1] + ([n_states - 2] if n_tokens else [])
    last = max(ends, key=lambda s: alpha[s])
    if not np.isfinite(alpha[last]):
        raise AlignmentImpossible("no CTC path spells the transcript (every path has zero probability)")
    path = np.empty(n_frames, dtype=np.int64)
    s = last
    for t in range(n_frames - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    positions = np.where(path % 2 == 1, (path - 1) // 2, -1)
    return positions, float(alpha[last])


def word_spans(positions: np.ndarray, owners: Sequence[int], n_words: int) -> list[tuple[int, int]]:
    """Per word, the frames `[start, end)` of its tokens: `owners[j]` is token j's word (-1: none)."""
    owners = np.asarray(owners)
    frame_word = np.where(positions >= 0, owners[np.maximum(positions, 0)], -1)
    spans = []
    for w in range(n_words):
        frames = np.flatnonzero(frame_word == w)
        spans.append((int(frames[0]), int(frames[-1]) + 1))
    return spans


# -- spelling ------------------------------------------------------------------------------------

def _spell_char(c: str, vocab: dict[str, int]) -> list[int] | None:
    for form in (c, c.upper(), c.lower()):
        if form and all(ch in vocab for ch in form):
            return [vocab[ch] for ch in form]
    return None


def spell(text: str, vocab: dict[str, int], delimiter: int | None) -> tuple[list[str], list[int], list[int]]:
    """`text` -> (words, token ids `(L,)`, owner word per token `(L,)`, -1 for word delimiters).

    Letters take the case the vocabulary has; punctuation is dropped, and an apostrophe too when
    the vocabulary has none. Raises UnspellableTranscript naming the characters it lacks.
    """
    words, tokens, owners, missing = [], [], [], []
    for raw in unicodedata.normalize("NFC", text).split():
        chars = [c for c in raw if c.isalnum() or c == "'"]
        ids: list[int] = []
        for c in chars:
            spelled = _spell_char(c, vocab)
            if spelled is None and c != "'":
                missing.append(c)
            ids.extend(spelled or [])
        if not ids:
            continue
        if words and delimiter is not None:
            tokens.append(delimiter)
            owners.append(-1)
        tokens.extend(ids)
        owners.extend([len(words)] * len(ids))
        words.append("".join(chars))
    if missing:
        raise UnspellableTranscript(f"transcript {text!r}: the model's vocabulary cannot spell "
                                    f"{''.join(sorted(set(missing)))!r}; use a CTC model for this language")
    if not words:
        raise UnspellableTranscript(f"transcript {text!r} has no word to align")
    return words, tokens, owners


# -- the model -----------------------------------------------------------------------------------

class CTCAligner:
    """A CTC model and its tokenizer: `align(wave, text)` -> words with times and confidences."""

    def __init__(self, model, tokenizer, *, model_id: str, weights_sha256: str, sample_rate: int,
                 do_normalize: bool, receptive_field: int, device, max_seconds: float = 30.0):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.sample_rate = sample_rate
        self.do_normalize = do_normalize
        self.receptive_field = receptive_field
        self.device = device
        self.max_seconds = max_seconds
        self.hop = int(np.prod(model.config.conv_stride))
        self.vocab = dict(tokenizer.get_vocab())
        self.blank = int(tokenizer.pad_token_id)
        delimiter = getattr(tokenizer, "word_delimiter_token", None)
        self.delimiter = self.vocab.get(delimiter) if delimiter else None

    def emissions(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities `(frames, vocab)` float32 and each frame's start time `(frames,)` in seconds."""
        import torch

        from featstore.backbones.runtime import normalize_waveform

        max_samples = max(int(self.max_seconds * self.sample_rate), 2 * self.receptive_field)
        lps, times, start = [], [], 0
        for piece in windows(wave, max_samples, self.receptive_field):
            x = normalize_waveform(piece) if self.do_normalize else piece
            with torch.inference_mode():
                logits = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
                                    .to(self.device)).logits[0]
            lps.append(torch.log_softmax(logits.float(), dim=-1).cpu().numpy())
            times.append((start + np.arange(len(lps[-1])) * self.hop) / self.sample_rate)
            start += len(piece)
        return np.concatenate(lps), np.concatenate(times)

    def align(self, wave: np.ndarray, text: str) -> list[Word]:
        """Word boundaries of `text` in `wave` `(samples,)` at `sample_rate` Hz."""
        words, tokens, owners = spell(text, self.vocab, self.delimiter)
        lp, times = self.emissions(wave)
        return align_emissions(lp, times, words, tokens, owners, self.blank, self.hop / self.sample_rate)


def align_emissions(log_probs: np.ndarray, times: np.ndarray, words: Sequence[str], tokens: Sequence[int],
                    owners: Sequence[int], blank: int, frame_seconds: float) -> list[Word]:
    """Words from log-probabilities `(frames, vocab)` with frame start times `(frames,)`."""
    if len(log_probs) < min_frames(tokens):
        raise AlignmentImpossible(
            f"clip too short for its transcript: {len(log_probs)} frames ({len(log_probs) * frame_seconds:.2f} s) "
            f"but {' '.join(words)!r} needs at least {min_frames(tokens)}")
    positions, _ = viterbi(log_probs, tokens, blank)
    tokens = np.asarray(tokens)
    frame_prob = np.exp(log_probs[np.arange(len(positions)), tokens[np.maximum(positions, 0)]])
    out = []
    for w, (a, b) in zip(words, word_spans(positions, owners, len(words))):
        inside = positions[a:b] >= 0  # the word's token frames; blanks inside it carry no evidence
        out.append(Word(w, float(times[a]), float(times[b - 1] + frame_seconds),
                        float(frame_prob[a:b][inside].mean())))
    return out


def default_ctc_model(language: str) -> str:
    """$SER_CTC_MODEL, else the table's model for `language`; raises AlignError when there is none."""
    if os.environ.get("SER_CTC_MODEL"):
        return os.environ["SER_CTC_MODEL"]
    if language in DEFAULT_CTC_MODELS:
        return DEFAULT_CTC_MODELS[language]
    raise AlignError(f"no default CTC model for language {language or 'unknown'!r}; pass --ctc-model with a "
                     f"Wav2Vec2ForCTC hub id or directory (or set $SER_CTC_MODEL)")


def load_ctc_model(model: str, *, device="cpu", max_seconds: float = 30.0) -> CTCAligner:
    """Load a CTC model (hub id or local directory saved with save_pretrained) and its tokenizer."""
    from transformers import AutoModelForCTC, Wav2Vec2CTCTokenizer

    from featstore.backbones.runtime import ModelLoadError, model_info
    from featstore.device import resolve_device

    info = model_info(model)
    config = json.loads((info.directory / "config.json").read_text(encoding="utf-8"))
    if not any(a.endswith("ForCTC") for a in config.get("architectures") or []):
        raise ModelLoadError(f"{model}: not a CTC model (architectures {config.get('architectures')}); "
                             f"use a *ForCTC checkpoint such as {DEFAULT_CTC_MODELS['en']}")
    if not (info.directory / "vocab.json").is_file():
        raise ModelLoadError(f"{model}: no vocab.json beside the weights; save the tokenizer with "
                             f"tokenizer.save_pretrained into the same directory")
    dev = resolve_device(device)
    try:
        net = AutoModelForCTC.from_pretrained(info.directory).to(dev).eval()
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(info.directory)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{model}: cannot load the CTC model or its tokenizer ({e})") from e
    return CTCAligner(net, tokenizer, model_id=model, weights_sha256=info.weights_sha256,
                      sample_rate=info.sample_rate, do_normalize=info.do_normalize,
                      receptive_field=info.receptive_field, device=dev, max_seconds=max_seconds)


# -- the cache -----------------------------------------------------------------------------------

def alignment_path(cache: str | Path, model: str, corpus: str) -> Path:
    """`<cache>/<model-slug>/<corpus>.align.jsonl`, beside that model's feature stores."""
    from featstore.backbones.runtime import model_slug

    return Path(cache).expanduser() / model_slug(model) / f"{corpus}.align.jsonl"


def read_alignments(path: str | Path) -> tuple[dict, dict[str, Alignment]]:
    """(header, id -> Alignment) of an alignment file; a partly written last line is ignored.

    A malformed line anywhere else (not JSON, not an alignment row, wrong value types) is an
    AlignError naming the file, the line and the fix, never a traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise AlignError(f"no alignments at {path}; run `ser align --corpus CORPUS --ctc-model MODEL` first")
    header, rows = {}, {}
    try:
        with path.open("rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError as e:
        raise AlignError(f"{path}: cannot read the alignment file ({e.strerror or e}); check its permissions") from e
    torn = lines.pop()  # after the last newline: empty, or the torn last line of an interrupted run
    for k, raw in enumerate(lines):
        try:
            row = json.loads(raw.decode("utf-8"))
            if k == 0:
                if not isinstance(row, dict):
                    raise ValueError("the first line is not a JSON object")
                header = row
                continue
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not an object with an id")
            if not isinstance(row["id"], str) or not isinstance(row.get("words", []), list) or \
                    not isinstance(row.get("text"), str | None) or not isinstance(row.get("error"), str | None):
                raise ValueError("id, text or error is not a string, or words is not a list")
            rows[row["id"]] = Alignment.from_json(row)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            if k == 0 and not header:
                break  # reported below as not an alignment file
            raise AlignError(f"{path}: line {k + 1} is not a valid alignment row ({_why(e)}); delete the file "
                             f"(or that line) and re-run `ser align` to rebuild it") from e
    if not lines and torn:
        header = {}
    if header.get("format") != FORMAT:
        first = (lines[0] if lines else torn)[:80].decode("utf-8", "replace")
        raise AlignError(f"{path} is not an alignment file written by ser align (first line {first!r}); delete it "
                         f"or pass another --cache")
    return header, rows


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing {error}"
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


def _open_cache(path: Path, header: dict) -> set[str]:
    """Ids already in `path` (rewritten without a torn last line); a new file gets `header`."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(header) + "\n", encoding="utf-8")
        tmp.replace(path)
        return set()
    old, rows = read_alignments(path)
    if old.get("weights_sha256") != header["weights_sha256"]:
        raise AlignError(f"{path} holds alignments by another model ({old.get('model')}); "
                         f"delete it or pass another --cache")
    lines = path.read_bytes().split(b"\n")
    if lines[-1]:  # torn tail: keep the complete lines only
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(lines[:-1]) + b"\n")
        tmp.replace(path)
    return set(rows)


def corpus_of(utterance_id: str) -> str | None:
    """The registered corpus an utterance id belongs to (ids are `<corpus>-...`, as EmoBox's
    keys), or None when its prefix names none."""
    from featstore.corpora import REGISTRY

    prefix = utterance_id.split("-", 1)[0].lower()
    return prefix if prefix in {c.name for c in REGISTRY} else None


def _header(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            header = json.loads(fh.readline().decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return header if isinstance(header, dict) and header.get("format") == FORMAT else {}


def cached_alignments(cache: str | Path, corpus: str) -> list[tuple[str, Path]]:
    """(CTC model, file) of each alignment file of `corpus` under `cache`, one per model that aligned it."""
    found = []
    for path in sorted(Path(cache).expanduser().glob(f"*/{corpus}.align.jsonl")):
        model = _header(path).get("model")
        if isinstance(model, str) and model:
            found.append((model, path))
    return found


def infer_ctc_model(cache: str | Path, corpus: str, *, utterance_id: str | None = None, language: str = "") -> str:
    """The CTC model for `ser align --show/--example` without --ctc-model: the one whose alignments of
    `corpus` are in `cache` (of several, the one holding `utterance_id`); with none there, the
    default for `language` (`default_ctc_model`). Several that fit: AlignError naming them."""
    found = cached_alignments(cache, corpus)
    if len(found) > 1 and utterance_id:
        found = [(m, p) for m, p in found if utterance_id in read_alignments(p)[1]] or found
    if not found:
        return default_ctc_model(language)
    if len(found) > 1:
        raise AlignError(f"{corpus} is aligned by {len(found)} CTC models in {cache} ({', '.join(m for m, _ in found)}); "
                         f"pass --ctc-model with one of them")
    return found[0][0]


def ctc_model_for(cache: str | Path, corpus: str, utterances: Sequence[Utterance], *, model: str | None = None,
                  utterance_id: str | None = None) -> str:
    """The CTC model `ser align` uses for a corpus' `utterances`: `model` when given; for one
    utterance (`--example ID`) the model whose alignments of `corpus` are cached
    (`infer_ctc_model`); else the default for the corpus' language (`default_ctc_model`).

    `utterance_id` must be one of `utterances` (`find_utterance`): a wrong id is refused here, in
    one line, before any alignment runs or any model loads."""
    if utterance_id:
        find_utterance(utterances, utterance_id, corpus)
    if model:
        return model
    language = utterances[0].language if utterances else ""
    if utterance_id:
        return infer_ctc_model(cache, corpus, utterance_id=utterance_id, language=language)
    return default_ctc_model(language)


def show_alignment(cache: str | Path, utterance_id: str, *, corpus: str | None = None,
                   model: str | None = None) -> Alignment:
    """`ser align --show ID` as a function: the cached alignment of one utterance (its `words`, or
    its `error` when it could not be aligned). The corpus is read from the id unless `corpus` is
    given, the CTC model is the one whose alignments of that corpus are cached unless `model` is
    given; an id not in the file, or naming no corpus, is a one-line AlignError."""
    from featstore.corpora import get_corpus

    name = (corpus or corpus_of(utterance_id) or "").lower()
    if not name:
        raise AlignError(f"{utterance_id} does not start with a corpus name (see `ser corpora`); pass --corpus")
    model = model or infer_ctc_model(cache, name, utterance_id=utterance_id, language=get_corpus(name).language)
    path = alignment_path(cache, model, name)
    found = read_alignments(path)[1].get(utterance_id)
    if found is None:
        raise AlignError(f"{utterance_id} is not in {path}; check the id (ser manifest) or run "
                         f"ser align --corpus {name}")
    return found


def find_utterance(utterances: Sequence[Utterance], utterance_id: str, corpus: str) -> Utterance:
    """The utterance `utterance_id` of a corpus' manifest (`ser align --example ID`); one-line
    AlignError naming `ser manifest` when it is not there."""
    for u in utterances:
        if u.id == utterance_id:
            return u
    raise AlignError(f"{utterance_id} is not an utterance of {corpus}; see `ser manifest --corpus {corpus}`")


def mean_confidence(alignments: dict[str, Alignment]) -> float | None:
    """The mean `score` of every aligned word (None when no word is aligned)."""
    scores = [w.score for a in alignments.values() for w in a.words]
    return float(np.mean(scores)) if scores else None


@dataclass
class AlignRun:
    """What `align_corpus` did: the file, how many utterances it aligned or could not, and the
    mean word confidence of every alignment in the file (None: no word aligned)."""

    path: Path
    n_total: int
    n_cached: int
    n_aligned: int
    failures: list[Alignment]
    mean_score: float | None = None

    def summary(self) -> str:
        """One line: how many utterances were aligned, already there and not aligned, and the file."""
        return (f"aligned {self.n_aligned} utterances ({self.n_cached} already there, {len(self.failures)} not "
                f"aligned) -> {self.path}")

    def failure_lines(self, limit: int = 10) -> list[str]:
        """Why each utterance was not aligned, the first `limit` of them, then "N more" for the rest."""
        more = len(self.failures) - limit
        return [a.error or "" for a in self.failures[:limit]] + ([f"{more} more"] if more > 0 else [])


def align_utterance(aligner: CTCAligner, u: Utterance) -> Alignment:
    """One utterance's alignment; a user-fixable problem becomes `Alignment.error` (one line)."""
    text = transcript(u)
    if not text:
        return Alignment(u.id, error=f"no transcript for {u.id} (corpus {u.corpus} has no fixed sentences)")
    try:
        wave = load_audio(u.path, aligner.sample_rate, min_samples=aligner.receptive_field, start=u.start, end=u.end)
        words = aligner.align(wave, text)
    except (AlignError, AudioError) as e:
        return Alignment(u.id, text=text, error=f"{u.id}: {e}")
    return Alignment(u.id, text=text, words=words)


def align_corpus(utterances: Sequence[Utterance], model: str | CTCAligner, *, cache: str | Path,
                 device="cpu", max_seconds: float = 30.0, progress: bool = False) -> AlignRun:
    """Align every utterance (one corpus) once into its cache file; see the module docstring.

    Raises NoTranscript when none of the utterances has a transcript.
    """
    utterances = list(utterances)
    if not utterances:
        raise AlignError("no utterances to align")
    corpus = utterances[0].corpus
    if not any(transcript(u) for u in utterances):
        raise NoTranscript(f"corpus {corpus} has no transcripts (featstore.transcripts lists the corpora "
                           f"with fixed sentences; a CSV corpus may add a text column)")
    aligner = model if isinstance(model, CTCAligner) else load_ctc_model(model, device=device,
                                                                          max_seconds=max_seconds)
    path = alignment_path(cache, aligner.model_id, corpus)
    done = _open_cache(path, {"format": FORMAT, "model": aligner.model_id, "weights_sha256": aligner.weights_sha256,
                              "corpus": corpus, "sample_rate": aligner.sample_rate})
    todo = [u for u in utterances if u.id not in done]
    failures = []
    with path.open("a", encoding="utf-8") as fh:
        for k, u in enumerate(_track(todo, progress, corpus)):
            a = align_utterance(aligner, u)
            if a.error:
                failures.append(a)
            fh.write(json.dumps(a.to_json(), ensure_ascii=False) + "\n")
            fh.flush()
            if k % 50 == 49:
                os.fsync(fh.fileno())
        os.fsync(fh.fileno())
    mean = mean_confidence(read_alignments(path)[1])
    if mean is not None and mean < LOW_CONFIDENCE:
        warnings.warn(AlignWarning(
            f"{corpus}: aligned words average confidence {mean:.2f} (below {LOW_CONFIDENCE}) in {path}: the CTC model "
            f"{aligner.model_id} hardly recognises these words, so their boundaries are likely wrong; look at a "
            f"few with `ser align --show ID`, or align with a CTC model for this language (--ctc-model)"), stacklevel=2)
    return AlignRun(path, len(utterances), len(utterances) - len(todo), len(todo) - len(failures), failures, mean)


@dataclass
class WordFeatures:
    """Per-word pooled features: row i is word `words[i]` of utterance `ids[i]`."""

    ids: list[str]
    word_index: list[int]
    words: list[str]
    features: np.ndarray            # (n_words, D) float32: mean of the layer's frames inside each word


def word_features(store, layer: int, alignments: dict[str, Alignment]) -> WordFeatures:
    """Mean of `layer`'s stored frames whose centres fall inside each aligned word.

    store: a `featstore.store.FeatureStore` extracted with `--frames` including `layer`.
    Utterances without an alignment are left out; a word shorter than one frame takes the frame
    nearest its centre. Frame times follow the store's samples-per-frame for each utterance.
    """
    ids, index, words, rows = [], [], [], []
    sr = float(store.config["sample_rate"])
    for i, (u, frames) in enumerate(store.iter_frames(layer)):
        a = alignments.get(u.id)
        if a is None or a.error or not len(frames):
            continue
        seconds_per_frame = float(store.n_samples[i]) / sr / len(frames)
        centres = (np.arange(len(frames)) + 0.5) * seconds_per_frame
        for k, w in enumerate(a.words):
            inside = (centres >= w.start) & (centres < w.end)
            if not inside.any():
                inside = np.zeros(len(frames), dtype=bool)
                inside[min(int((w.start + w.end) / 2 / seconds_per_frame), len(frames) - 1)] = True
            ids.append(u.id)
            index.append(k)
            words.append(w.word)
            rows.append(frames[inside].astype(np.float32).mean(axis=0))
    features = np.stack(rows) if rows else np.zeros((0, store.hidden_size), dtype=np.float32)
    return WordFeatures(ids, index, words, features)


def _track(items: list, progress: bool, corpus: str) -> Iterable:
    if not progress:
        return items
    from rich.progress import track

    return track(items, description=f"aligning {corpus}", transient=True)
