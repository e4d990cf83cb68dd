"""Synthetic corpora in the real layout of any EmoBox corpus: the demo, test and benchmark data.

`synthesize("ravdess", out)` writes every file EmoBox lists for RAVDESS (or a balanced subset)
at its real relative path, sample rate and duration, so loaders, folds, padding and timings
behave as on the real corpus. The audio is a voice-like source-filter signal (glottal pulse
train + aspiration and consonant noise through per-syllable formant filters) whose emotions
differ in prosody and voice quality and whose speakers differ in timbre:

- emotion (`PROSODY`): pitch level and range, declination, tempo, loudness, spectral tilt,
  breathiness, jitter, pauses, tremor (fear), final rise (surprise);
- speaker (`Voice`): base pitch (gender sets the register), vocal-tract scaling and
  per-formant offsets, bandwidths, personal tempo, loudness and expressiveness;
- utterance: random variation seeded by (seed, utterance id), so classes overlap but stay
  learnable.

Speaker, gender and label of each file come from the corpus module's own `parse`, i.e. the
tree is labelled exactly as `ser` will read it. numpy only; same seed -> identical bytes.

Dimensional labels are planted from each clip's own prosody (`planted_dimensions`), so a probe
can find them in the audio: arousal from loudness and pitch level, valence from intonation range
against spectral brightness and breathiness, dominance from loudness against breathiness; each
varies from clip to clip with the clip's prosody, not only with its emotion. IEMOCAP trees carry
them as the `[V, A, D]` triple of their EmoEvaluation lines (1-5). MSP-Podcast, which EmoBox does
not list, gets a release of its own making (`synthesize("msppodcast", ...)`): `Audios/` and
`Labels/labels_consensus.csv` with partitions Train / Development / Test1 / Test2 (speakers
disjoint between them), Test3 with its labels hidden, unknown speakers, the O and X codes and
EmoAct/EmoVal/EmoDom on 1-7; so does MSP-IMPROV (`Audio/session<k>/...` and `Evaluation.txt`,
6 sessions x 2 actors, A:/V:/D: on 1-5).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import wave
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore import labels as L
from featstore.corpora import Corpus, get_corpus
from featstore.errors import CorpusError, SerError
from featstore.labels import (
    ANGRY,
    BOREDOM,
    CALM,
    DISGUST,
    FEAR,
    FRUSTRATED,
    HAPPY,
    NEUTRAL,
    OTHER,
    SAD,
    SURPRISE,
    canonical_order,
)
from featstore.outputs import write_text
from featstore.reference import reference, reference_corpora

MARKER = ".ser-synth.json"  # written into `out`; lets a rerun (--overwrite) replace its own files safely


class SynthError(SerError):
    """A synthetic-corpus target that cannot be written as asked (the message names it and the fix)."""


# -- emotions and speakers ------------------------------------------------------------------
@dataclass(frozen=True)
class Prosody:
    """How one emotion is spoken (the class means; utterances vary around them)."""

    f0_scale: float        # pitch level, times the speaker's base f0
    f0_range: float        # intonation excursion, semitones (std of the contour)
    declination: float     # pitch drift over the utterance, semitones per second
    tempo: float           # syllables per second
    level_db: float        # loudness relative to neutral
    tilt_hz: float         # glottal roll-off corner: higher -> flatter, brighter spectrum
    breath: float          # aspiration noise energy relative to the voiced source
    jitter: float          # relative period perturbation (and 2x that amplitude shimmer)
    pause: float           # probability of a pause after a syllable
    tremor: float = 0.0    # semitones of ~5.5 Hz pitch tremor
    final_rise: float = 0.0  # semitones of pitch rise over the last third


# Directions follow the vocal-affect literature (Banse & Scherer 1996; Juslin & Laukka 2003):
# high arousal -> higher, wider pitch, faster, louder, flatter tilt; sadness/boredom the reverse.
PROSODY: dict[str, Prosody] = {
    NEUTRAL: Prosody(1.00, 1.5, -1.0, 4.0, 0.0, 320, 0.06, 0.006, 0.10),
    CALM: Prosody(0.93, 1.0, -0.7, 3.2, -4.0, 210, 0.15, 0.005, 0.16),
    HAPPY: Prosody(1.24, 4.5, -1.2, 4.8, 4.0, 470, 0.05, 0.008, 0.07),
    SAD: Prosody(0.90, 0.8, -1.8, 2.8, -6.5, 160, 0.22, 0.014, 0.24),
    ANGRY: Prosody(1.20, 2.4, -2.0, 5.3, 9.5, 850, 0.03, 0.010, 0.05),
    FEAR: Prosody(1.50, 2.0, 0.0, 5.8, 1.5, 420, 0.17, 0.024, 0.12, tremor=1.0),
    DISGUST: Prosody(0.88, 3.0, -2.5, 3.0, 1.5, 380, 0.09, 0.018, 0.15),
    SURPRISE: Prosody(1.45, 5.0, 0.5, 3.9, 3.0, 560, 0.07, 0.008, 0.08, final_rise=8.0),
    BOREDOM: Prosody(0.86, 0.6, -0.8, 2.6, -4.0, 190, 0.10, 0.006, 0.18),
    FRUSTRATED: Prosody(1.10, 2.4, -1.5, 4.4, 5.0, 580, 0.08, 0.012, 0.10),
    OTHER: Prosody(1.05, 2.0, -1.0, 4.1, 1.0, 350, 0.07, 0.008, 0.10),
    # The later EmoBox corpora's classes, placed by arousal and valence beside the basic ones.
    L.EXCITED: Prosody(1.32, 5.0, -0.8, 5.4, 6.0, 600, 0.04, 0.009, 0.06),
    L.AMUSED: Prosody(1.18, 4.0, -1.0, 4.6, 2.5, 420, 0.12, 0.010, 0.10),
    L.ENTHUSIASTIC: Prosody(1.28, 4.2, -0.6, 5.0, 5.5, 560, 0.04, 0.008, 0.06),
    L.PLEASURE: Prosody(1.05, 2.5, -1.5, 3.0, 0.0, 250, 0.25, 0.008, 0.22),
    L.SARCASTIC: Prosody(0.95, 3.5, -2.2, 3.4, 1.0, 300, 0.08, 0.008, 0.14),
    L.CONTEMPT: Prosody(0.90, 2.2, -2.4, 3.2, 0.5, 330, 0.10, 0.012, 0.16),
    L.SLEEPY: Prosody(0.84, 0.5, -1.2, 2.3, -7.0, 150, 0.28, 0.010, 0.26),
    L.POKER: Prosody(0.97, 0.7, -0.6, 3.8, -1.5, 280, 0.06, 0.005, 0.12),
    L.WORRIED: Prosody(1.22, 1.8, -0.4, 4.4, -1.0, 300, 0.16, 0.018, 0.14, tremor=0.5),
    L.ANXIOUS: Prosody(1.35, 1.8, 0.2, 5.5, 0.5, 380, 0.15, 0.020, 0.10, tremor=0.8),
    L.CONCERNED: Prosody(1.05, 2.0, -1.4, 3.6, -1.5, 260, 0.12, 0.010, 0.16),
    L.APOLOGETIC: Prosody(0.98, 1.6, -1.6, 3.3, -3.0, 220, 0.16, 0.009, 0.18),
    L.ASSERTIVE: Prosody(1.08, 1.8, -2.2, 4.5, 5.0, 620, 0.03, 0.007, 0.08),
    L.ENCOURAGING: Prosody(1.20, 3.6, -0.8, 4.3, 2.5, 430, 0.06, 0.007, 0.10, final_rise=2.0),
    L.PAIN: Prosody(1.15, 3.0, -3.0, 2.5, 3.0, 500, 0.20, 0.030, 0.25),
    L.DISAPPOINTMENT: Prosody(0.92, 1.4, -2.6, 3.0, -3.5, 200, 0.18, 0.010, 0.20),
    L.BREATH: Prosody(1.00, 0.5, -0.5, 2.0, -8.0, 200, 0.90, 0.010, 0.40),
}

# gender -> (base f0 in Hz, vocal-tract scaling of the formants)
REGISTER = {"male": (115.0, 1.0), "female": (205.0, 1.15), "child": (285.0, 1.28)}

# Adult male vowel formants F1-F4 in Hz (Peterson & Barney 1952 style): a i u e o ae schwa ʌ
_VOWELS = np.array([
    [730, 1090, 2440, 3400], [270, 2290, 3010, 3700], [300, 870, 2240, 3300],
    [530, 1840, 2480, 3500], [570, 840, 2410, 3400], [660, 1720, 2410, 3500],
    [500, 1500, 2500, 3500], [640, 1190, 2390, 3400],
], dtype=np.float64)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


@dataclass(frozen=True)
class Voice:
    """One speaker's timbre and habits."""

    f0: float                      # base pitch, Hz
    formant_scale: float           # >1: shorter vocal tract, higher formants
    formant_shift: tuple[float, ...]  # per-formant factors F1-F4
    bandwidth: float               # factor on formant bandwidths
    tempo: float                   # factor on speaking rate
    level_db: float                # personal loudness offset
    breath: float                  # factor on breathiness
    expressiveness: float          # how far emotions move away from neutral


def make_voice(speaker: str, gender: str | None, seed: int = 0) -> Voice:
    """The deterministic voice of `speaker` (any string) for `seed`; gender sets the register."""
    rng = np.random.default_rng([seed, _stable_hash(speaker), 1])
    if gender not in REGISTER:
        gender = "female" if rng.random() < 0.5 else "male"
    f0, scale = REGISTER[gender]
    return Voice(
        f0=f0 * float(np.exp(rng.normal(0, 0.10))),
        formant_scale=scale * float(np.exp(rng.normal(0, 0.04))),
        formant_shift=tuple(float(v) for v in np.exp(rng.normal(0, 0.04, 4))),
        bandwidth=float(np.exp(rng.normal(0, 0.15))),
        tempo=float(np.exp(rng.normal(0, 0.08))),
        level_db=float(rng.normal(0, 1.5)),
        breath=float(np.exp(rng.normal(0, 0.3))),
        expressiveness=float(rng.uniform(0.75, 1.25)),
    )


def utterance_prosody(label: str, voice: Voice, rng: np.random.Generator) -> Prosody:
    """The emotion's prosody, scaled by the speaker's expressiveness, with per-utterance noise."""
    p, neutral, e = PROSODY.get(label, PROSODY[NEUTRAL]), PROSODY[NEUTRAL], voice.expressiveness

    def geo(a: float, b: float, sd: float) -> float:  # multiplicative parameters
        return float(b * (a / b) ** e * np.exp(rng.normal(0, sd)))

    def lin(a: float, b: float, sd: float) -> float:  # additive parameters
        return float(b + e * (a - b) + rng.normal(0, sd))

    return Prosody(
        f0_scale=geo(p.f0_scale, neutral.f0_scale, 0.05),
        f0_range=geo(p.f0_range, neutral.f0_range, 0.20),
        declination=lin(p.declination, neutral.declination, 0.4),
        tempo=geo(p.tempo, neutral.tempo, 0.08) * voice.tempo,
        level_db=lin(p.level_db, neutral.level_db, 1.5) + voice.level_db,
        tilt_hz=geo(p.tilt_hz, neutral.tilt_hz, 0.12),
        breath=geo(p.breath, neutral.breath, 0.25) * voice.breath,
        jitter=geo(p.jitter, neutral.jitter, 0.2),
        pause=float(np.clip(lin(p.pause, neutral.pause, 0.03), 0.0, 0.5)),
        tremor=max(0.0, lin(p.tremor, 0.0, 0.1)),
        final_rise=lin(p.final_rise, 0.0, 0.8),
    )


# -- the signal ------------------------------------------------------------------------------
def render(num_frames: int, sample_rate: int, prosody: Prosody, voice: Voice,
           rng: np.random.Generator) -> np.ndarray:
    """One utterance: float64 `(num_frames,)` in [-1, 1], leading/trailing silence included."""
    n, sr, p = int(num_frames), int(sample_rate), prosody
    dur = n / sr
    if n == 0:
        return np.zeros(0)

    # Timeline: silence, syllables (optional consonant onset + vowel), pauses, silence.
    t0 = dur * rng.uniform(0.06, 0.16)
    t1 = dur * (1.0 - rng.uniform(0.05, 0.14))
    mean_syllable = 1.0 / p.tempo
    syl = []  # (start, vowel_start, end, vowel, stress)
    t = t0
    while t < t1 - 0.03:
        end = min(t + rng.gamma(8.0, mean_syllable / 8.0), t1)
        onset = t + (end - t) * rng.uniform(0.2, 0.35) if rng.random() < 0.7 else t
        syl.append((t, onset, end, int(rng.integers(len(_VOWELS))), float(rng.uniform(0.0, 1.0))))
        t = end + (rng.uniform(0.08, 0.3) if rng.random() < p.pause else 0.0)
    if not syl:  # shorter than one syllable: one vowel over the middle
        syl.append((t0, t0, t1, 0, 0.5))
    starts = np.array([s[0] for s in syl])

    # Pitch contour at 100 Hz: smooth random intonation + syllable accents + declination,
    # tremor and final rise; then per sample.
    rate = 100
    m = int(dur * rate) + 2
    tc = np.arange(m) / rate
    wiggle = np.convolve(rng.standard_normal(m + 24), np.ones(25) / 5.0, mode="valid")[:m]
    semitones = 0.6 * p.f0_range * wiggle + p.declination * (tc - 0.5 * (t0 + t1))
    for start, _, end, _, stress in syl:
        a, b = int(start * rate), max(int(end * rate), int(start * rate) + 1)
        semitones[a:b] += 0.8 * p.f0_range * stress * np.hanning(b - a + 2)[1:-1]
    if p.tremor:
        semitones += p.tremor * np.sin(2 * np.pi * 5.5 * tc + rng.uniform(0, 2 * np.pi))
    if p.final_rise:
        rise_from = t1 - (t1 - t0) / 3
        semitones += p.final_rise * np.clip((tc - rise_from) / max(t1 - rise_from, 1e-3), 0, 1) ** 2
    f0_contour = np.minimum(voice.f0 * p.f0_scale * 2.0 ** (semitones / 12), 0.4 * sr)

    # Envelopes per sample: vowels voiced, consonant onsets noisy (never both at once).
    voiced_env = np.zeros(n)
    noise_env = np.zeros(n)
    for start, onset, end, _, stress in syl:
        a, o, b = int(start * sr), int(onset * sr), min(int(end * sr), n)
        if b > o:
            voiced_env[o:b] = (0.65 + 0.35 * stress) * np.sqrt(np.sin(np.pi * (np.arange(b - o) + 0.5) / (b - o)))
        if o > a:
            noise_env[a:o] = np.sin(np.pi * (np.arange(o - a) + 0.5) / (o - a))

    # Glottal pulses where the integrated pitch crosses whole periods (found on the 100 Hz
    # grid, so the cost is per pulse, not per sample), jittered and shimmered.
    cycles = np.concatenate([[0.0], np.cumsum((f0_contour[1:] + f0_contour[:-1]) / (2 * rate))])
    times = np.interp(np.arange(1, int(cycles[-1])), cycles, tc)
    times += rng.standard_normal(times.size) * p.jitter / np.interp(times, tc, f0_contour)
    pulses = np.clip(np.rint(times * sr).astype(np.int64), 0, n - 1)
    pulses = pulses[voiced_env[pulses] > 0]
    voiced = np.zeros(n)
    np.add.at(voiced, pulses, voiced_env[pulses] * (1 + 2 * p.jitter * rng.standard_normal(pulses.size)))
    noise = rng.standard_normal(n)
    voiced += np.sqrt(p.breath * voice.f0 * p.f0_scale / sr) * voiced_env * noise  # aspiration
    consonant = noise_env * noise

    # Source-filter in blocks (overlap-add): each block takes its syllable's filter, so
    # formants move from vowel to vowel; filters are sampled on the FFT grid.
    nfft = max(256, 1 << int(np.ceil(np.log2(0.06 * sr))))  # block + ~30 ms of filter ringing
    hop = nfft // 2
    nb = -(-n // hop)
    v_blocks = np.zeros(nb * hop)
    v_blocks[:n] = voiced
    c_blocks = np.zeros(nb * hop)
    c_blocks[:n] = consonant
    v_blocks, c_blocks = v_blocks.reshape(nb, hop), c_blocks.reshape(nb, hop)
    active = np.flatnonzero(v_blocks.any(axis=1) | c_blocks.any(axis=1))
    block_syl = np.clip(np.searchsorted(starts, (active + 0.5) * hop / sr) - 1, 0, len(syl) - 1)

    z1 = np.exp(-2j * np.pi * np.arange(nfft // 2 + 1) / nfft)  # z^-1 on the grid
    formants = (_VOWELS[[s[3] for s in syl]] * voice.formant_scale * np.array(voice.formant_shift)
                * np.exp(rng.normal(0, 0.03, (len(syl), 4))))
    bandwidths = _BANDWIDTHS * voice.bandwidth * np.ones((len(syl), 1))
    g = np.exp(-2 * np.pi * p.tilt_hz / sr)
    glottal = ((1 - g) / (1 - g * z1)) ** 2 * (1 - 0.97 * z1)  # roll-off + lip radiation
    h_vowel = glottal * _resonators(formants, bandwidths, z1, sr)
    fric = np.minimum(rng.uniform(2500, 6000, (len(syl), 1)) * voice.formant_scale, 0.42 * sr)
    h_cons = _resonators(fric, 0.5 * fric, z1, sr) * (1 - z1) ** 2
    h_cons /= np.abs(h_cons).max(axis=1, keepdims=True)

    spec_v = np.fft.rfft(v_blocks[active], nfft, axis=1) * h_vowel[block_syl]
    spec_c = np.fft.rfft(c_blocks[active], nfft, axis=1) * h_cons[block_syl]
    # consonants about 14 dB below the vowels (Parseval, per utterance)
    ratio = np.sqrt(np.sum(np.abs(spec_v) ** 2) / max(np.sum(np.abs(spec_c) ** 2), 1e-20))
    spec_v += spec_c * ratio * 10 ** (rng.normal(-14, 2) / 20)
    y = np.fft.irfft(spec_v, nfft, axis=1)
    out = np.zeros((nb + 1, hop))
    out[active] = y[:, :hop]
    out[active + 1] += y[:, hop:]
    x = out.ravel()[:n]

    # Loudness over the speaking part, a quiet noise floor, and no clipping.
    speaking = (voiced_env + noise_env) > 0.05
    rms = np.sqrt(np.mean(x[speaking] ** 2)) if speaking.any() else 0.0
    if rms > 0:
        x *= 10 ** ((-29.0 + p.level_db) / 20) / rms
    x += 10 ** (-68 / 20) * np.roll(noise, n // 2)  # noise floor (reused noise, half a file away)
    peak = np.abs(x).max()
    if peak > 0.99:
        x *= 0.99 / peak
    return x


def _resonators(freqs: np.ndarray, bandwidths: np.ndarray, z1: np.ndarray, sr: int) -> np.ndarray:
    """Cascade of Klatt resonators (unit gain at 0 Hz) -> `(rows, bins)` complex response.

    freqs, bandwidths: `(rows, k)` in Hz; formants at or above 0.45 * sr are left out.
    z1: `(bins,)` the delay z^-1 on the frequency grid.
    """
    keep = freqs < 0.45 * sr
    c = np.where(keep, -np.exp(-2 * np.pi * bandwidths / sr), 0.0)
    b = np.where(keep, 2 * np.exp(-np.pi * bandwidths / sr) * np.cos(2 * np.pi * freqs / sr), 0.0)
    z2 = z1 * z1
    den = np.ones((freqs.shape[0], z1.size), dtype=complex)
    for k in range(freqs.shape[1]):
        den *= 1 - b[:, k:k + 1] * z1 - c[:, k:k + 1] * z2
    return np.prod(1 - b - c, axis=1, keepdims=True) / den


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> None:
    """Write float `(n,)` in [-1, 1] as a 16-bit PCM mono WAV.

    The stdlib writer: no fsync per file (libsndfile's close syncs, which dominates small files).
    """
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


# -- corpus layout ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthFile:
    """One file to write: where, how long, and who says what (as the corpus loader reads it)."""

    relpath: str
    key: str            # EmoBox key (= the loader's utterance id)
    speaker: str        # the corpus' local speaker id
    gender: str | None
    label: str          # canonical emotion
    label_raw: str      # the corpus' own code
    sample_rate: int
    num_frames: int
    start: float | None = None   # segment corpora (PAVOQUE): where the utterance sits in its file
    end: float | None = None

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


@dataclass
class SynthResult:
    """What `synthesize` wrote."""

    corpus: str
    out: Path
    n_files: int
    seconds: float                 # total audio
    relpaths: list[str]            # audio files, relative to `out`, in writing order
    files: list[SynthFile] = field(default_factory=list, repr=False)
    annotations: list[str] = field(default_factory=list)  # e.g. IEMOCAP EmoEvaluation files

    def label_counts(self) -> Counter:
        return Counter(f.label for f in self.files)

    def speakers(self) -> list[str]:
        return sorted({f.speaker for f in self.files})

    def summary(self) -> str:
        """A few lines for the CLI to print."""
        rates = sorted({f.sample_rate for f in self.files})
        counts = self.label_counts()
        labels = ", ".join(f"{label} {counts[label]}" for label in canonical_order(counts))
        return (
            f"wrote {self.n_files} synthetic {self.corpus} files to {self.out}\n"
            f"  {self.seconds / 60:.1f} min of audio at {'/'.join(str(r) for r in rates)} Hz, "
            f"{len(self.speakers())} speakers\n"
            f"  labels: {labels}"
            + (f"\n  beside the audio: {', '.join(self.annotations[:3])}"
               f"{f' and {len(self.annotations) - 3} more' if len(self.annotations) > 3 else ''}"
               if self.annotations else "")
        )


def synth_corpora() -> list[str]:
    """The EmoBox corpora `synthesize` imitates from EmoBox's file lists (it also writes `OWN_RELEASES`)."""
    return reference_corpora()


#: Corpora EmoBox does not list, whose synthetic release `synthesize` makes up in the real layout.
OWN_RELEASES = ("msppodcast", "mspimprov")


def balanced_subset(speakers: list[str], labels: list[str], n: int, seed: int = 0) -> list[int]:
    """Indices of `n` items balanced over speakers first, then labels; sorted.

    Greedy: each pick takes a speaker with the fewest items so far, then that speaker's label
    with the fewest items overall (ties broken by `seed`). For RAVDESS n=240 this gives each
    of the 24 actors 10 files and each of the 8 emotions 30.
    """
    if n >= len(speakers):
        return list(range(len(speakers)))
    rng = np.random.default_rng([seed, 2])
    spk_ids = {s: i for i, s in enumerate(dict.fromkeys(speakers))}
    lab_ids = {s: i for i, s in enumerate(dict.fromkeys(labels))}
    cells: dict[tuple[int, int], list[int]] = {}
    for i in rng.permutation(len(speakers)):
        cells.setdefault((spk_ids[speakers[i]], lab_ids[labels[i]]), []).append(int(i))
    keys = list(cells)
    cell_spk = np.array([k[0] for k in keys])
    cell_lab = np.array([k[1] for k in keys])
    left = np.array([len(cells[k]) for k in keys])
    spk_count = np.zeros(len(spk_ids))
    lab_count = np.zeros(len(lab_ids))
    chosen = []
    for _ in range(n):
        score = spk_count[cell_spk] * 1e6 + lab_count[cell_lab] * 1e3 + rng.random(len(keys))
        score[left == 0] = np.inf
        c = int(np.argmin(score))
        members = cells[keys[c]]
        chosen.append(members[len(members) - left[c]])
        left[c] -= 1
        spk_count[cell_spk[c]] += 1
        lab_count[cell_lab[c]] += 1
    return sorted(chosen)


def synthesize(corpus: str, out: str | Path, *, n: int | None = None, seed: int = 0,
               max_duration: float | None = None, sample_rate: int | None = None,
               keys=None, progress: bool = False, overwrite: bool = False) -> SynthResult:
    """Write a synthetic `corpus` under `out` in its real layout; see the module docstring.

    n: a subset balanced over speakers and labels (`balanced_subset`); None writes every file
    EmoBox lists. keys: only these EmoBox keys (e.g. EmoBox's cross-corpus subset,
    `featstore.reference.track2`), before `n` applies. max_duration caps each file's real duration (seconds) and sample_rate
    overrides every file's real rate (both for quick tests). `out` must be new or empty; an
    earlier output of `synthesize` is replaced only with `overwrite` (its files as its marker lists
    them, never a path outside `out`). Every file is written whole (temp, rename) or not at all.
    """
    name = _corpus_name(corpus)
    if n is not None and n <= 0:
        raise SerError(f"n must be a positive number of files, not {n}")
    if max_duration is not None and max_duration <= 0:
        raise SerError(f"max_duration must be positive seconds, not {max_duration}")
    if sample_rate is not None and sample_rate < 1000:
        raise SerError(f"sample_rate must be at least 1000 Hz, not {sample_rate}")
    out = Path(out).expanduser()
    _prepare_out(out, overwrite)
    from featstore.outputs import OutputDiskFull
    from featstore.units import human_size

    try:
        if name in OWN_RELEASES:
            if keys is not None:
                raise SerError(f"keys select EmoBox files; {name} has no EmoBox list (use n)")
            return _write_own_release(name, out, n=n, seed=seed, max_duration=max_duration, sample_rate=sample_rate,
                                      progress=progress)
        return _write_tree(name, out, n=n, seed=seed, max_duration=max_duration, sample_rate=sample_rate, keys=keys,
                           progress=progress)
    except OutputDiskFull as e:
        raise SynthError(f"disk full writing the synthetic corpus in {out} ({human_size(shutil.disk_usage(out).free)} "
                         f"free): every file written is whole and listed in {MARKER}; free some space and re-run "
                         f"with --overwrite") from e


def _write_tree(name: str, out: Path, *, n: int | None, seed: int, max_duration: float | None,
                sample_rate: int | None, keys, progress: bool) -> SynthResult:
    """`synthesize` after its checks: annotations, the marker listing every file, then the audio."""
    loader = get_corpus(name)

    files = reference(name).files
    if keys is not None:
        wanted = set(keys)
        files = [f for f in files if f.key in wanted]
        if len(files) < len(wanted):
            raise SerError(f"{len(wanted) - len(files)} of the keys asked for are not EmoBox {name} keys")
    sized = []
    for f in files:
        rate = int(sample_rate or f.sample_rate)
        seconds = f.duration if max_duration is None else min(f.duration, max_duration)
        sized.append((f, rate, max(1, int(round(seconds * rate)))))
    # Annotation files first: the loader's parse may read labels (IEMOCAP) or gender (CREMA-D) there.
    annotations = _write_annotations(name, out, sized, seed)
    plan = _describe_all(loader, out, sized)
    if n is not None and n < len(plan):
        keep = balanced_subset([f.speaker for f in plan], [f.label for f in plan], n, seed)
        sized = [sized[i] for i in keep]
        every = annotations
        annotations = _write_annotations(name, out, sized, seed)
        for rel in set(every) - set(annotations):
            (out / rel).unlink()
        plan = _describe_all(loader, out, sized)  # segments are re-timed for the subset
    # The full list goes in before the audio, so an interrupted run is cleaned up by the next.
    relpaths = list(dict.fromkeys(f.relpath for f in plan))
    info = {"corpus": name, "seed": seed, "n": n, "max_duration": max_duration, "sample_rate": sample_rate,
            "files": relpaths + annotations}
    _write_marker(out, {**info, "complete": False})

    voices: dict[str, Voice] = {}

    def audio_of(item: SynthFile) -> np.ndarray:
        prosody, voice, rng = _prosody_of(name, item, seed, voices)
        return render(item.num_frames, item.sample_rate, prosody, voice, rng)

    if name == "iemocap":  # the [V, A, D] triples, planted from each clip's prosody
        dims = {item.key: planted_dimensions(*_prosody_of(name, item, seed, voices)[:2], scale=(1.0, 5.0))
                for item in plan}
        _write_iemocap_evaluations(out, sized, dims)

    whole = [item for item in plan if item.start is None]
    items = whole
    if progress:
        from rich.progress import track

        items = track(whole, description=f"synthesizing {name}", transient=True)
    for item in items:
        x = audio_of(item)
        _write_whole(out / item.relpath, _size_bound(len(x)),
                     lambda tmp, x=x, rate=item.sample_rate: write_audio(tmp, x, rate))
    _write_segment_files(out, [item for item in plan if item.start is not None], audio_of)
    _write_marker(out, {**info, "complete": True})
    return SynthResult(name, out, len(plan), float(sum(f.duration for f in plan)), relpaths, plan, annotations)


def _prosody_of(name: str, item: SynthFile, seed: int, voices: dict[str, Voice]) -> tuple:
    """(prosody, voice, rng) of one clip: the prosody its audio is rendered with, and the generator
    `render` goes on with (so dimensions planted from the prosody are the audio's own)."""
    voice = voices.get(item.speaker)
    if voice is None:
        voice = voices[item.speaker] = make_voice(f"{name}-{item.speaker}", item.gender, seed)
    rng = np.random.default_rng([seed, _stable_hash(item.key), 3])
    return utterance_prosody(item.label, voice, rng), voice, rng


def planted_dimensions(prosody: Prosody, voice: Voice, scale: tuple[float, float]) -> tuple[float, float, float]:
    """(arousal, valence, dominance) on `scale`, read from a clip's prosody (the speaker's habits removed).

    arousal: loudness and pitch level; valence: intonation range against spectral brightness and
    breathiness (happy wide, angry bright, sad and fearful breathy: the class means order as the
    literature's valence does); dominance: loudness against breathiness. Only cues a log spectrum
    shows (jitter, which it hardly does, is left out). Each z-score goes through a logistic onto
    the scale, rounded to 4 decimals as the corpora's means of ratings are written.
    """
    neutral = PROSODY[NEUTRAL]
    level = prosody.level_db - voice.level_db
    pitch = 12 * np.log2(prosody.f0_scale)                       # semitones above the speaker's base
    breath = np.log(prosody.breath / (voice.breath * neutral.breath))
    z_arousal = level / 5.0 + pitch / 4.0
    z_valence = (np.log(prosody.f0_range / neutral.f0_range) / 0.5 - np.log(prosody.tilt_hz / neutral.tilt_hz) / 0.4
                 - breath / 0.8)
    z_dominance = level / 6.0 - breath / 0.8
    low, high = scale
    return tuple(round(float(low + (high - low) / (1.0 + np.exp(-z / 1.5))), 4)
                 for z in (z_arousal, z_valence, z_dominance))


def _describe_all(loader: Corpus, root: Path, sized: list) -> list[SynthFile]:
    """Speaker, gender and label of every file (or segment), exactly as the corpus loader parses them."""
    from featstore.corpora import metadata

    metadata.clear_cache()  # the tables were just (re)written
    segments: dict[str, dict] = {}  # a segment file's parse, once per file
    plan = []
    for f, rate, frames in sized:
        path = root / f.relpath
        if f.segment:
            if f.relpath not in segments:
                segments[f.relpath] = {p.id: p for p in loader.parse(path, root)}
            parsed = segments[f.relpath].get(f.key)
        else:
            parsed = loader.parse(path, root)
        if parsed is None:
            raise CorpusError(f"{loader.name}: the loader skips {f.relpath} ({f.key}), a file EmoBox lists")
        if parsed.start is not None:  # the re-timed segment: its frames follow from its bounds
            frames = int(round(parsed.end * rate)) - int(round(parsed.start * rate))
        plan.append(SynthFile(f.relpath, f.key, parsed.speaker, parsed.gender,
                              loader.canonical(parsed.label_raw, path), parsed.label_raw, rate, frames,
                              parsed.start, parsed.end))
    return plan


def write_audio(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """Write float `(n,)` mono as the file type its suffix names: a container's audio track, FLAC or WAV."""
    from featstore.audio import is_container

    if is_container(path):
        write_container(path, x, sample_rate)
    elif path.suffix.lower() == ".flac":
        import soundfile as sf

        sf.write(str(path), np.clip(x, -1, 1), int(sample_rate), format="FLAC", subtype="PCM_16")
    else:
        write_wav(path, x, sample_rate)


#: suffix -> (container format, audio codec) of the containers `write_container` writes.
CONTAINERS = {".mp4": ("mp4", "aac"), ".avi": ("avi", "pcm_s16le"), ".webm": ("webm", "libopus"),
              ".mkv": ("matroska", "flac"), ".mov": ("mov", "pcm_s16le")}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def write_container(path: str | Path, x: np.ndarray, sample_rate: int, *, codec: str | None = None,
                    audio: bool = True) -> None:
    """Float `(n,)` mono as the only (audio) track of an .mp4/.avi/.webm/.mkv/.mov, with PyAV.

    The codec is the suffix' usual one (`CONTAINERS`: AAC in .mp4 as MELD's clips, PCM in .avi,
    Opus in .webm as EMNS') unless `codec` names another (e.g. "alac" for a lossless .mp4).
    Opus runs at 8/12/16/24/48 kHz: other rates are resampled to 48 kHz. audio=False writes one
    black video frame and no audio track (a video-only file).
    """
    import av

    path = Path(path)
    fmt, default_codec = CONTAINERS[path.suffix.lower()]
    codec = codec or default_codec
    x = np.asarray(x, dtype=np.float32)
    if codec == "libopus" and sample_rate not in _OPUS_RATES:
        import soxr

        x, sample_rate = soxr.resample(x, sample_rate, 48000).astype(np.float32), 48000
    with av.open(str(path), "w", format=fmt) as container:
        if audio:
            stream = container.add_stream(codec, rate=int(sample_rate))
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(np.clip(x, -1, 1)[None, :], format="flt", layout="mono")
            frame.sample_rate = int(sample_rate)
        else:
            stream = container.add_stream("libvpx" if fmt == "webm" else "mpeg4", rate=1)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def _write_segment_files(out: Path, items: list[SynthFile], audio_of) -> None:
    """Each segment file (PAVOQUE) written as one FLAC, segment by segment: memory stays one utterance."""
    import soundfile as sf

    by_file: dict[str, list[SynthFile]] = {}
    for item in items:
        by_file.setdefault(item.relpath, []).append(item)
    for relpath, segments in by_file.items():
        rate = segments[0].sample_rate
        frames = max(int(round(item.start * rate)) + item.num_frames for item in segments) + int(_SEGMENT_GAP_S * rate)

        def write(tmp: Path, segments=segments, rate=rate) -> None:
            with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
                pos = 0
                for item in sorted(segments, key=lambda s: s.start):
                    a = int(round(item.start * rate))
                    f.write(np.zeros(a - pos, dtype=np.float32))
                    audio = np.clip(audio_of(item), -1, 1).astype(np.float32)
                    f.write(audio)
                    pos = a + len(audio)
                f.write(np.zeros(int(_SEGMENT_GAP_S * rate), dtype=np.float32))

        _write_whole(out / relpath, _size_bound(frames), write)


def _size_bound(frames: int) -> int:
    """Bytes a mono 16-bit file of `frames` samples can take at most (PCM plus headers; compressed is less)."""
    return 2 * frames + 64 * 1024


def _write_annotations(name: str, out: Path, sized: list, seed: int) -> list[str]:
    """Files the corpus keeps beside its audio and its loader reads; their relative paths."""
    if name == "iemocap":
        return _write_iemocap_evaluations(out, sized)
    if name == "cremad":
        return _write_cremad_demographics(out, seed)
    if name == "pavoque":
        return _write_pavoque_segments(out, sized)
    if name in ("meld", "mer2023", "emns", "emozionalmente"):
        return _write_label_tables(name, out, sized, seed)
    return []


# Silence between re-timed segments of a synthetic segment file, seconds.
_SEGMENT_GAP_S = 0.2


def _write_pavoque_segments(out: Path, sized: list) -> list[str]:
    """`pavoque-<style>.yaml` beside each recording: the chosen segments, back to back with short gaps."""
    from featstore.corpora.pavoque import format_segments

    by_file: dict[str, list] = {}
    for f, rate, frames in sized:
        by_file.setdefault(f.relpath, []).append((f, rate, frames))
    written = []
    for relpath, segments in sorted(by_file.items()):
        entries, pos = [], None
        for f, rate, frames in sorted(segments, key=lambda s: s[0].start):
            a = int(round(_SEGMENT_GAP_S * rate)) if pos is None else pos + int(round(_SEGMENT_GAP_S * rate))
            entries.append((f.key.split("-")[1], a / rate, (a + frames) / rate, f.label_raw))
            pos = a + frames
        rel = str(Path(relpath).with_suffix(".yaml"))
        write_text(out / rel, format_segments(entries))
        written.append(rel)
    return written


# MELD's main cast: synthetic MELD lines are spread over them (EmoBox's track2 names win where it has them).
_MELD_CAST = ("Monica", "Rachel", "Phoebe", "Ross", "Chandler", "Joey")


def _write_label_tables(name: str, out: Path, sized: list, seed: int) -> list[str]:
    """The tables MELD, MER2023, EMNS and Emozionalmente keep labels and speakers in, for the chosen files.

    Speakers the reference does not give are drawn per dialogue (MELD) or per file
    (Emozionalmente, 60 contributors) from the seed.
    """
    files = [f for f, _rate, _frames in sized]
    tables: dict[str, str] = {}
    if name == "meld":
        from featstore.corpora.meld import format_table
        from featstore.reference import track2

        known = {key: speaker for key, _label, speaker in track2("meld")}
        by_split: dict[str, list] = {}
        for f in files:
            stem, split = f.key[len("meld-"):].rsplit("-", 1)
            dialogue, utterance = (int(v) for v in stem[len("dia"):].split("_utt"))
            speaker = known.get(f.key) or _MELD_CAST[_stable_hash(f"{seed}-{split}-{dialogue}-{utterance % 2}") % 6]
            by_split.setdefault(split, []).append((dialogue, utterance, speaker, f.label_raw))
        tables = {f"{split}_sent_emo.csv": format_table(rows) for split, rows in sorted(by_split.items())}
    elif name == "mer2023":
        from featstore.corpora.mer2023 import format_labels

        tables = {"mer2023train/train-label.csv": format_labels([(Path(f.relpath).stem, f.label_raw) for f in files])}
    elif name == "emns":
        from featstore.corpora.emns import format_metadata

        tables = {"metadata.csv": format_metadata([(f.relpath, f.label_raw, "female") for f in files])}
    elif name == "emozionalmente":
        from featstore.corpora.emozionalmente import format_samples, format_users

        actor = {f.key: f"actor{_stable_hash(f'{seed}-{f.key}') % 60:02d}" for f in files}
        users = sorted(set(actor.values()))
        tables = {
            "metadata/samples.csv": format_samples([(Path(f.relpath).name, actor[f.key], f.label_raw) for f in files]),
            "metadata/users.csv": format_users([(u, "female" if _stable_hash(f"{seed}-{u}") % 2 else "male")
                                                for u in users]),
        }
    for rel, text in tables.items():
        write_text(out / rel, text)
    return sorted(tables)


def _write_iemocap_evaluations(out: Path, sized: list, dims: dict | None = None) -> list[str]:
    """`Session*/dialog/EmoEvaluation/<dialog>.txt`: the chosen turns, back to back in time.

    dims: key -> (arousal, valence, dominance), written in the file's [V, A, D] order (else 2.5 each).
    """
    from featstore.corpora.iemocap import format_emo_evaluation

    dialogs: dict[str, list] = {}
    for f, rate, frames in sized:
        session, _, _, dialog, utt = Path(f.relpath).with_suffix("").parts
        a_v_d = (dims or {}).get(f.key)
        dialogs.setdefault(f"{session}/dialog/EmoEvaluation/{dialog}.txt", []).append(
            (utt, frames / rate, f.label_raw, None if a_v_d is None else (a_v_d[1], a_v_d[0], a_v_d[2])))
    written = []
    for rel, utts in sorted(dialogs.items()):
        utts.sort(key=_turn_order)  # F000, M000, F001, ... as the turns of a dialog
        entries, t = [], 1.0
        for utt, seconds, label, v_a_d in utts:
            entries.append((utt, round(t, 4), round(t + seconds, 4), label, v_a_d))
            t += seconds + 0.5
        write_text(out / rel, format_emo_evaluation(entries))
        written.append(rel)
    return written


def _turn_order(entry: tuple) -> tuple[int, str]:
    tail = entry[0].rsplit("_", 1)[-1]          # e.g. "F012"
    return (int(tail[1:]) if tail[1:].isdigit() else 0, tail)


def _write_cremad_demographics(out: Path, seed: int) -> list[str]:
    """`VideoDemographics.csv` for every actor (the loader's source of gender).

    Synthetic voices have no age, race or ethnicity that means anything: Race and Ethnicity
    say "Unspecified". Sex is drawn per actor from the seed in the real proportion (48 of 91 male).
    """
    actors = sorted({Path(f.relpath).name[:4] for f in reference("cremad").files})
    rows = ["ActorID,Age,Sex,Race,Ethnicity"]
    for actor in actors:
        rng = np.random.default_rng([seed, _stable_hash(f"cremad-{actor}"), 4])
        sex = "Male" if rng.random() < 48 / 91 else "Female"
        rows.append(f"{actor},{int(rng.integers(20, 75))},{sex},Unspecified,Unspecified")
    write_text(out / "VideoDemographics.csv", "\n".join(rows) + "\n")
    return ["VideoDemographics.csv"]


# -- MSP-Podcast and MSP-IMPROV: releases of our own making ---------------------------------------
#: (EmoClass, weight): roughly the release's skew (neutral and happy common, fear rare), O and X included
_MSP_CLASSES = (("N", 0.28), ("H", 0.15), ("A", 0.08), ("S", 0.08), ("U", 0.05), ("F", 0.03), ("D", 0.05),
                ("C", 0.06), ("O", 0.08), ("X", 0.14))
#: partition -> (identified speakers, segments per speaker, unknown-speaker segments); Test3's labels are hidden
_MSP_PARTITIONS = {"Train": (24, 25, 24), "Development": (8, 15, 8), "Test1": (8, 15, 8), "Test2": (6, 12, 6),
                   "Test3": (4, 8, 0)}
#: MSP-IMPROV: (code, weight), 6 sessions x 2 actors, clips per actor, the recording types
_IMPROV_CLASSES = (("N", 0.35), ("H", 0.25), ("A", 0.12), ("S", 0.13), ("O", 0.05), ("X", 0.10))
_IMPROV_CLIPS_PER_ACTOR = 40
_IMPROV_TYPES = ("R", "S", "T", "P")


def msppodcast_release(seed: int = 0) -> list[dict]:
    """The segments of a synthetic MSP-Podcast release: one dict per segment with FileName, EmoClass,
    SpkrID ("Unknown" or a number), Gender, Split_Set, and the relpath, key, speaker, gender, label and
    seconds every own release gives; speakers never cross partitions."""
    from featstore.corpora.msppodcast import ALL_CLASSES

    rng = np.random.default_rng([seed, 5])
    codes, weights = zip(*_MSP_CLASSES)
    weights = np.array(weights) / sum(weights)
    rows, speaker, podcast = [], 100, 1
    for split, (n_speakers, per_speaker, unknown) in _MSP_PARTITIONS.items():
        owners = [(str(speaker + i), "Female" if rng.random() < 0.5 else "Male") for i in range(n_speakers)]
        speaker += n_speakers
        clips = [owner for owner in owners for _ in range(per_speaker)] + [("Unknown", "Unknown")] * unknown
        for i, (spkr, gender) in enumerate(clips):
            if i % 10 == 0:
                podcast += 1
            code = str(rng.choice(codes, p=weights))
            name = f"MSP-PODCAST_{podcast:04d}_{i % 10 + 1:04d}.wav"
            stem = Path(name).stem
            rows.append(dict(FileName=name, EmoClass=code, SpkrID=spkr, Gender=gender, Split_Set=split,
                             relpath=f"Audios/{name}", key=f"msppodcast-{stem}", label=ALL_CLASSES[code],
                             speaker=spkr if spkr != "Unknown" else f"unknown-{stem}",
                             gender=gender.lower() if gender != "Unknown" else None,
                             seconds=float(rng.uniform(2.75, 6.0))))
    return rows


def mspimprov_release(seed: int = 0) -> list[dict]:
    """The clips of a synthetic MSP-IMPROV release (6 sessions x one female and one male actor): one dict
    per clip with its wav stem, code, and the relpath, key, speaker, gender, label and seconds."""
    from featstore.corpora.mspimprov import ALL_CLASSES

    rng = np.random.default_rng([seed, 6])
    codes, weights = zip(*_IMPROV_CLASSES)
    weights = np.array(weights) / sum(weights)
    rows = []
    for session in range(1, 7):
        for letter in "FM":
            speaker = f"{letter}{session:02d}"
            for i in range(_IMPROV_CLIPS_PER_ACTOR):
                kind = _IMPROV_TYPES[i % len(_IMPROV_TYPES)]
                sentence = f"S{i // len(_IMPROV_TYPES) + 1:02d}A"
                stem = f"MSP-IMPROV-{sentence}-{speaker}-{kind}-{'FM' if letter == 'F' else 'MF'}{i + 1:02d}"
                code = str(rng.choice(codes, p=weights))
                rows.append(dict(stem=stem, code=code, relpath=f"Audio/session{session}/{sentence}/{kind}/{stem}.wav",
                                 key=f"mspimprov-{stem}", speaker=speaker, gender="female" if letter == "F" else "male",
                                 label=ALL_CLASSES[code], seconds=float(rng.uniform(1.5, 5.0))))
    return rows


def _msppodcast_labels(out: Path, rows: list[dict], dims: list[tuple]) -> list[str]:
    """`Labels/labels_consensus.csv` (Test3's labels and speakers hidden, as the newest releases do)."""
    from featstore.corpora.msppodcast import LABELS_CSV, format_labels

    table = []
    for r, (act, val, dom) in zip(rows, dims):
        hidden = r["Split_Set"] == "Test3"
        table.append((r["FileName"], "" if hidden else r["EmoClass"], *((None,) * 3 if hidden else (act, val, dom)),
                      "" if hidden else r["SpkrID"], "" if hidden else r["Gender"], r["Split_Set"]))
    write_text(out / LABELS_CSV, format_labels(table))
    return [str(LABELS_CSV)]


def _mspimprov_labels(out: Path, rows: list[dict], dims: list[tuple]) -> list[str]:
    """`Evaluation.txt`: one consensus line (and a rater line) per clip."""
    from featstore.corpora.mspimprov import format_evaluation

    write_text(out / "Evaluation.txt", format_evaluation([(r["stem"], r["code"], *d) for r, d in zip(rows, dims)]))
    return ["Evaluation.txt"]


#: corpus -> (its release's clips, the label files writer, the dimension scale)
_OWN = {"msppodcast": (msppodcast_release, _msppodcast_labels, (1.0, 7.0)),
        "mspimprov": (mspimprov_release, _mspimprov_labels, (1.0, 5.0))}


def _write_own_release(name: str, out: Path, *, n: int | None, seed: int, max_duration: float | None,
                       sample_rate: int | None, progress: bool) -> SynthResult:
    """A synthetic release EmoBox does not list: its label files, then the audio, dimensions planted from prosody."""
    release, write_labels, scale = _OWN[name]
    rows = release(seed)
    if n is not None and n < len(rows):
        keep = balanced_subset([r["speaker"] for r in rows], [r["label"] for r in rows], n, seed)
        rows = [rows[i] for i in keep]
    rate = int(sample_rate or 16000)
    plan = []
    for r in rows:
        seconds = r["seconds"] if max_duration is None else min(r["seconds"], max_duration)
        plan.append(SynthFile(r["relpath"], r["key"], r["speaker"], r["gender"], r["label"],
                              r.get("EmoClass", r.get("code")), rate, max(1, int(round(seconds * rate)))))
    relpaths = [item.relpath for item in plan]
    voices: dict[str, Voice] = {}
    dims = [planted_dimensions(*_prosody_of(name, item, seed, voices)[:2], scale=scale) for item in plan]
    _write_marker(out, {"corpus": name, "seed": seed, "n": n, "max_duration": max_duration,
                        "sample_rate": sample_rate, "files": relpaths, "complete": False})
    annotations = write_labels(out, rows, dims)
    info = {"corpus": name, "seed": seed, "n": n, "max_duration": max_duration, "sample_rate": sample_rate,
            "files": relpaths + annotations}
    _write_marker(out, {**info, "complete": False})
    items = plan
    if progress:
        from rich.progress import track

        items = track(plan, description=f"synthesizing {name}", transient=True)
    for item in items:
        prosody, voice, rng = _prosody_of(name, item, seed, voices)
        x = render(item.num_frames, item.sample_rate, prosody, voice, rng)
        _write_whole(out / item.relpath, _size_bound(len(x)),
                     lambda tmp, x=x, rate=item.sample_rate: write_audio(tmp, x, rate))
    _write_marker(out, {**info, "complete": True})
    return SynthResult(name, out, len(plan), float(sum(f.duration for f in plan)), relpaths, plan, annotations)


# -- helpers ---------------------------------------------------------------------------------
def _corpus_name(corpus: str) -> str:
    name = get_corpus(corpus).name  # a misspelt name fails here, with a suggestion
    if name not in reference_corpora() and name not in OWN_RELEASES:
        raise CorpusError(
            f"cannot synthesize {corpus!r}: no EmoBox file list for it; choose one of "
            f"{', '.join([*reference_corpora(), *OWN_RELEASES])}"
        )
    return name


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Claim `out` for a synthetic corpus: new or empty, or (with `overwrite`) an earlier output.

    An earlier output's files are removed only as its marker lists them, and only regular files
    inside `out` (resolved: no `..`, absolute path or link leads out). Every entry is checked
    before anything is deleted: one that leaves `out` refuses the run with nothing deleted.
    """
    from featstore.outputs import OutputError, check_output

    try:
        check_output(out, option="--out", directory=True)
    except OutputError as e:
        raise SynthError(str(e)) from e
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise SynthError(
                f"--out {out}: not empty and not written by `ser synth`; choose a new or empty "
                f"directory so synthetic files do not mix with what is there"
            )
        if not overwrite:
            raise SynthError(f"--out {out}: holds an earlier synthetic corpus; pass --overwrite to replace it "
                             f"or choose a new or empty directory")
        for path in _marked_files(out, marker):
            path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, {"files": []})  # claims `out` before any file lands


def _marked_files(out: Path, marker: Path) -> list[Path]:
    """The regular files inside `out` that `marker` lists (resolved); SynthError, before any deletion,
    for a damaged marker or an entry that leads outside `out`."""
    from featstore.outputs import OutputError, inside

    try:
        entries = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError) as e:
        raise SynthError(f"{marker}: not a marker `ser synth` wrote ({e}); nothing was deleted: remove the "
                         f"directory's files yourself or choose a new directory") from e
    if not isinstance(entries, list) or not all(isinstance(rel, str) and rel for rel in entries):
        raise SynthError(f"{marker}: 'files' must be a list of relative paths; nothing was deleted: remove the "
                         f"directory's files yourself or choose a new directory")
    base = out.resolve()
    files = []
    for rel in entries:
        try:
            path = inside(base, rel, what="entry")
        except OutputError as e:
            raise SynthError(f"{marker} lists {rel!r}, which leads outside {base}; nothing was deleted: "
                             f"remove that entry (or the marker) and re-run") from e
        try:
            mode = os.lstat(base / rel).st_mode  # the entry itself, not what a link points to
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(mode):  # never a directory, device or link
            files.append(path)
    return files


def synthesized(out: str | Path) -> dict | None:
    """What `synthesize` recorded in `out` (corpus, seed, n, files, ...) when it finished writing
    there; None when nothing was synthesized there or the run was interrupted."""
    try:
        marker = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not marker.get("corpus") or marker.get("complete") is False:
        return None  # the claim written before any file, or a run stopped before its last file
    return marker


def _write_marker(out: Path, content: dict) -> None:
    from featstore.outputs import write_text

    write_text(out / MARKER, json.dumps(content, indent=1))


def _write_whole(path: Path, needed: int, write) -> None:
    """`write(tmp)` to a temporary file beside `path`, renamed to `path` only when whole.

    `needed`: an upper bound of the file's size, checked first. A full disk is one OutputDiskFull
    line, also where the writer (libsndfile, FFmpeg) reports it as its own error.
    """
    from featstore.outputs import OutputDiskFull, atomic_output

    with atomic_output(path, needed=needed) as tmp:
        try:
            write(tmp)
        except OSError:
            raise
        except Exception as e:
            free = shutil.disk_usage(tmp.parent).free
            if free < needed:
                raise OutputDiskFull(path, needed, free) from e
            raise


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))
