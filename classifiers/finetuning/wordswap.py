"""Word-swap augmentation: word k of a training clip replaced by word k of another training clip.

`--augment word-swap[:P]` (probability P, default 0.5; `@P` works too) parses to a `WordSwap`
spec. Fine-tuning binds it to one fold with `bind_word_swap(augment, train_utterances, ...)`:
the CTC alignments of the fold's *training* clips are read from the alignment cache (aligned
there first when missing, featstore.align), and donors are indexed by (corpus, emotion, spoken
sentence) among those clips only, so no test or validation speaker's audio is ever heard. The
bound `FoldWordSwap` then, per call, draws a donor and a word index with the item's generator,
matches the donor word's loudness (RMS) to the word it replaces, and splices it in with a short
equal-power crossfade at both boundaries. The label is the clip's own. The swap runs before the
other augmentations, on the clip as recorded.

A clip that cannot be aligned (a transcript the model cannot spell, a clip too short for its
transcript, unreadable audio) or whose corpus has no transcripts is left unaugmented, with one
warning line each; training goes on. The CTC model is `$SER_CTC_MODEL`, else the language's
default (featstore.align.DEFAULT_CTC_MODELS).

`save_example` writes one swap to listen to: original.wav, donor.wav, result.wav and
boundaries.png.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from classifiers.finetuning.augment_base import Compose, _check_p
from featstore.align import Word, align_corpus, alignment_path, default_ctc_model, load_ctc_model, read_alignments
from featstore.audio import load_audio
from featstore.corpora.base import Utterance
from featstore.errors import SerError, SerWarning
from featstore.transcripts import transcript

#: at most this many per-clip warning lines per fold; the rest are counted in one line
MAX_WARNINGS = 10


@dataclass(frozen=True)
class WordSwap:
    """The parsed `word-swap[:P]` spec; `bind` it to a fold's training clips before use."""

    p: float = 0.5
    crossfade_ms: float = 10.0
    model: str | None = None          # CTC model; None: $SER_CTC_MODEL or the language's default
    needs_utterance = True            # Compose passes the clip's Utterance

    def __post_init__(self):
        _check_p(self.p)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, utterance: Utterance | None = None):
        raise SerError("word-swap must be bound to a fold's training clips (bind_word_swap) before use")

    def spec(self) -> str:
        return f"word-swap@{self.p:g}"

    def bind(self, train: Sequence[Utterance], *, sample_rate: int, cache: str | Path | None = None,
             device="cpu") -> FoldWordSwap:
        """Align `train` (cached) and index donors among `train` only."""
        from featstore.config import default_cache

        cache = default_cache() if cache is None else Path(cache)
        alignments: dict[str, list[Word]] = {}
        problems: list[str] = []
        by_corpus: dict[str, list[Utterance]] = {}
        for u in train:
            by_corpus.setdefault(u.corpus, []).append(u)
        for corpus, utts in by_corpus.items():
            if not any(transcript(u) for u in utts):
                warnings.warn(f"word-swap: corpus {corpus} has no transcripts; its {len(utts)} training clips "
                              f"are left unaugmented", SerWarning, stacklevel=2)
                continue
            alignments.update(_fold_alignments(utts, self.model or default_ctc_model(utts[0].language),
                                               cache, device, problems))
        for line in problems[:MAX_WARNINGS]:
            warnings.warn(f"word-swap: {line}; the clip is left unaugmented", SerWarning, stacklevel=2)
        if len(problems) > MAX_WARNINGS:
            warnings.warn(f"word-swap: {len(problems) - MAX_WARNINGS} more clips could not be aligned "
                          f"and are left unaugmented", SerWarning, stacklevel=2)
        donors: dict[tuple, list[Utterance]] = {}
        for u in train:
            if u.id in alignments:
                donors.setdefault(_donor_key(u), []).append(u)
        return FoldWordSwap(p=self.p, crossfade=int(self.crossfade_ms * sample_rate / 1000),
                            sample_rate=sample_rate, alignments=alignments, donors=donors, spec_text=self.spec())


def _donor_key(u: Utterance) -> tuple:
    return (u.corpus, u.label, transcript(u))


def _fold_alignments(utts: list[Utterance], model: str, cache: Path, device, problems: list[str]) -> dict:
    """id -> words for the clips of one corpus, aligning those not yet in the cache."""
    path = alignment_path(cache, model, utts[0].corpus)
    cached = read_alignments(path)[1] if path.is_file() else {}
    todo = [u for u in utts if u.id not in cached and transcript(u)]
    if todo:
        align_corpus(todo, load_ctc_model(model, device=device), cache=cache)
        cached = read_alignments(path)[1]
    out = {}
    for u in utts:
        a = cached.get(u.id)
        if a is None:
            problems.append(f"{u.id}: no transcript")
        elif a.error:
            problems.append(a.error)
        else:
            out[u.id] = a.words
    return out


@dataclass(frozen=True)
class SwapInfo:
    """What one swap did: the donor, the word, and the sample spans replaced / inserted."""

    donor: Utterance
    word_index: int
    word: str
    span: tuple[int, int]             # samples of the replaced word in the original
    donor_span: tuple[int, int]       # samples of the inserted word in the donor
    result_span: tuple[int, int]      # samples of the inserted word in the result
    gain: float                       # applied to the donor word to match the original's RMS


def _samples(w: Word, sr: int, n: int) -> tuple[int, int]:
    a = min(max(int(round(w.start * sr)), 0), n)
    return a, min(max(int(round(w.end * sr)), a), n)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def crossfade(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """`a` then `b`, overlapped by `n` samples with an equal-power fade (uncorrelated signals)."""
    n = min(n, len(a), len(b))
    if n == 0:
        return np.concatenate([a, b])
    ramp = np.linspace(0.0, 1.0, n + 2)[1:-1] * (np.pi / 2)
    mid = a[len(a) - n:] * np.cos(ramp) + b[:n] * np.sin(ramp)
    return np.concatenate([a[:len(a) - n], mid, b[n:]])


@dataclass(frozen=True)
class FoldWordSwap:
    """Word swap among one fold's training clips; called as `t(wave, rng, utterance)`."""

    p: float
    crossfade: int                                 # samples
    sample_rate: int
    alignments: dict = field(repr=False)           # id -> list[Word]
    donors: dict = field(repr=False)               # (corpus, label, sentence) -> list[Utterance]
    spec_text: str = "word-swap"
    needs_utterance = True

    def spec(self) -> str:
        return self.spec_text

    def donor_pool(self, u: Utterance) -> list[Utterance]:
        """Training clips `u` may take a word from (same corpus, emotion and sentence; not `u`)."""
        return [d for d in self.donors.get(_donor_key(u), []) if d.id != u.id]

    def swap(self, wave: np.ndarray, rng: np.random.Generator, u: Utterance,
             word_index: int | None = None) -> tuple[np.ndarray, SwapInfo | None]:
        """`(wave', info)`; info is None when the clip is left as it is (not drawn, or no donor)."""
        if rng.random() >= self.p:
            return wave, None
        words, pool = self.alignments.get(u.id), self.donor_pool(u)
        if not words or not pool:
            return wave, None
        donor = pool[int(rng.integers(len(pool)))]
        k = int(rng.integers(len(words))) if word_index is None else int(word_index)
        other = load_audio(donor.path, self.sample_rate, start=donor.start, end=donor.end)
        a0, b0 = _samples(words[k], self.sample_rate, len(wave))
        a1, b1 = _samples(self.alignments[donor.id][k], self.sample_rate, len(other))
        piece = other[a1:b1].astype(np.float64)
        mine, theirs = _rms(wave[a0:b0]), _rms(piece)
        gain = mine / theirs if mine > 0 and theirs > 0 else 1.0
        head = crossfade(wave[:a0].astype(np.float64), piece * gain, self.crossfade)
        tail = wave[b0:].astype(np.float64)
        out = crossfade(head, tail, self.crossfade)
        # the inserted word runs from its fade-in to the start of the fade back to the original
        span = (a0 - min(self.crossfade, a0, len(piece)), len(out) - len(tail))
        info = SwapInfo(donor, k, words[k].word, (a0, b0), (a1, b1), span, gain)
        return out.astype(wave.dtype, copy=False), info

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, utterance: Utterance | None = None) -> np.ndarray:
        if utterance is None:
            return wave
        return self.swap(wave, rng, utterance)[0]


def bind_word_swap(augment, train: Sequence[Utterance], *, sample_rate: int, cache: str | Path | None = None,
                   device="cpu", model: str | None = None):
    """`augment` (a Compose from `classifiers.finetuning.augment.parse_augment`) with its word swap bound to `train`
    and moved first.

    model: the CTC model for swaps that name none (None: $SER_CTC_MODEL or the language's default).
    """
    swaps = [t for t in augment.transforms if isinstance(t, WordSwap)]
    if not swaps:
        return augment
    swaps = [replace(s, model=s.model or model) for s in swaps]
    bound = [s.bind(train, sample_rate=sample_rate, cache=cache, device=device) for s in swaps]
    return Compose(tuple(bound) + tuple(t for t in augment.transforms if not isinstance(t, WordSwap)))


def save_example(swapper: FoldWordSwap, u: Utterance, out: str | Path, *, seed: int = 0,
                 word_index: int | None = None) -> dict[str, Path]:
    """Write original.wav, donor.wav, result.wav and boundaries.png of one swap of `u` into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from classifiers.results.plots import literal_text, save_figure

    return literal_text(_save_example)(plt, save_figure, swapper, u, out, seed=seed, word_index=word_index)


def _save_example(plt, save_figure, swapper: FoldWordSwap, u: Utterance, out: str | Path, *, seed: int,
                  word_index: int | None) -> dict[str, Path]:

    from featstore.synth import write_wav

    if u.id not in swapper.alignments:
        raise SerError(f"{u.id} has no alignment (see `ser align --show {u.id}`); pick another utterance")
    if not swapper.donor_pool(u):
        raise SerError(f"{u.id}: no other aligned clip of the same emotion and sentence to take a word from")
    sr = swapper.sample_rate
    wave = load_audio(u.path, sr, start=u.start, end=u.end)
    result, info = FoldWordSwap(1.0, swapper.crossfade, sr, swapper.alignments, swapper.donors).swap(
        wave, np.random.default_rng(seed), u, word_index)
    donor = load_audio(info.donor.path, sr, start=info.donor.start, end=info.donor.end)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, x in (("original", wave), ("donor", donor), ("result", result)):
        files[name] = out / f"{name}.wav"
        write_wav(files[name], x, sr)
    shift = info.result_span[1] - info.span[1]  # samples the words after the swapped one moved by
    panels = [("original " + u.id, wave, swapper.alignments[u.id], info.span, 0),
              ("donor " + info.donor.id, donor, swapper.alignments[info.donor.id], info.donor_span, 0),
              ("result", result, swapper.alignments[u.id], info.result_span, shift)]
    fig, axes = plt.subplots(3, 1, figsize=(11, 7), sharex=True)
    for ax, (title, x, words, (a, b), moved) in zip(axes, panels):
        ax.plot(np.arange(len(x)) / sr, x, linewidth=0.4, color="0.3")
        ax.axvspan(a / sr, b / sr, color="C1", alpha=0.25)
        for k, w in enumerate(words):
            extra = moved / sr if k > info.word_index else 0.0
            start, end = (a / sr, b / sr) if k == info.word_index else (w.start + extra, w.end + extra)
            ax.axvline(start, color="C0", linewidth=0.8)
            ax.axvline(end, color="C0", linewidth=0.8, linestyle="--")
            ax.text((start + end) / 2, 0.9, w.word, transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[-1].set_xlabel(f"seconds (word {info.word_index} '{info.word}' swapped, gain {info.gain:.2f})")
    files["plot"] = save_figure(plt, fig, out / "boundaries.png", dpi=110)
    return files
