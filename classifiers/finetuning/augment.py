"""Seeded waveform augmentations for fine-tuning (numpy in, numpy out).

Every transform is called as `transform(wave, rng)` with `wave` a 1-D float32 array
`(samples,)` and `rng` a `numpy.random.Generator`; the same generator state gives the same
output. Each is applied with probability `p` (default 0.5, so the model still hears natural
clips). `Compose` chains them; `parse_augment("chunk-permute,noise")` builds one from a spec.

==========================  ====================================================================
``chunk-permute[:N]``       cut the clip into N near-equal chunks (default 4) and shuffle their
                            order; every sample is kept (the diary's chunk permutation)
``noise[:SNR]``             add white Gaussian noise at SNR dB, or uniformly drawn from LO-HI dB
                            (default 10-30); the noise is scaled to hit the SNR exactly
``speed[:F1/F2/...]``       speed perturbation: resample by a factor drawn from the list (default
                            0.9/1.0/1.1); tempo and pitch change together, as Kaldi/sox `speed`;
                            the clip becomes len/F samples long
``word-swap[:P]``           word k replaced by word k of another training clip of the same
                            emotion and sentence (CTC word boundaries; classifiers.finetuning.wordswap)
==========================  ====================================================================

Append ``@P`` to any item to set its probability, e.g. ``chunk-permute:3@1,noise:5-20@0.3``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from classifiers.finetuning.augment_base import AugmentError, Compose, _check_p  # noqa: F401 - re-exported

AUGMENTATIONS: tuple[str, ...] = ("chunk-permute", "noise", "speed", "word-swap")


@dataclass(frozen=True)
class ChunkPermute:
    """Shuffle `chunks` near-equal consecutive pieces of the clip (all samples kept)."""

    chunks: int = 4
    p: float = 0.5

    def __post_init__(self):
        if self.chunks < 2:
            raise AugmentError(f"chunk-permute needs at least 2 chunks, got {self.chunks}")
        _check_p(self.p)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return wave
        pieces = np.array_split(wave, self.chunks)
        order = rng.permutation(self.chunks)
        if self.chunks > 1 and np.array_equal(order, np.arange(self.chunks)):
            order = np.roll(order, 1)  # a permuted clip always differs from the original order
        return np.concatenate([pieces[i] for i in order]).astype(wave.dtype, copy=False)


@dataclass(frozen=True)
class AddNoise:
    """White Gaussian noise at `snr_db` (a number, or a (low, high) range drawn uniformly)."""

    snr_db: float | tuple[float, float] = (10.0, 30.0)
    p: float = 0.5

    def __post_init__(self):
        _check_p(self.p)
        if isinstance(self.snr_db, tuple) and self.snr_db[0] > self.snr_db[1]:
            raise AugmentError(f"noise SNR range {self.snr_db[0]}-{self.snr_db[1]} dB is reversed")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return wave
        snr = (rng.uniform(*self.snr_db) if isinstance(self.snr_db, tuple) else float(self.snr_db))
        signal_power = float(np.mean(np.square(wave, dtype=np.float64)))
        noise = rng.standard_normal(len(wave))
        if signal_power == 0.0:
            return wave
        noise *= np.sqrt(signal_power / (10.0 ** (snr / 10.0)) / np.mean(noise ** 2))
        return (wave + noise).astype(wave.dtype, copy=False)


@dataclass(frozen=True)
class SpeedPerturb:
    """Resample by a factor F drawn from `factors`: F > 1 is faster and higher (len / F samples)."""

    factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    p: float = 0.5

    def __post_init__(self):
        _check_p(self.p)
        if not self.factors or any(f <= 0 for f in self.factors):
            raise AugmentError(f"speed factors must be positive, got {self.factors}")

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return wave
        factor = float(self.factors[rng.integers(len(self.factors))])
        if factor == 1.0:
            return wave
        # read the clip as if recorded at F x the rate, then resample to the rate: len / F samples
        return soxr.resample(wave, factor, 1.0, quality="HQ").astype(wave.dtype, copy=False)


def augment_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one (seed, epoch, item, ...) combination: same keys, same augmentation."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AugmentError(f"bad {what} {text!r} in augmentation spec: expected a number") from None


def _parse_item(item: str):
    item = item.strip().lower()
    p = 0.5
    if "@" in item:
        item, p_text = item.rsplit("@", 1)
        p = _number(p_text, "probability")
    name, _, arg = item.partition(":")
    name, arg = name.strip(), arg.strip()
    if name in ("chunk-permute", "chunk-permutation", "chunks"):
        if arg and not re.fullmatch(r"\d+", arg):
            raise AugmentError(f"chunk-permute:{arg}: the argument is the number of chunks, e.g. chunk-permute:4")
        return ChunkPermute(int(arg) if arg else 4, p)
    if name == "noise":
        if not arg:
            return AddNoise(p=p)
        m = re.fullmatch(r"(-?[\d.]+)-(-?[\d.]+)", arg)
        snr = (_number(m.group(1), "SNR"), _number(m.group(2), "SNR")) if m else _number(arg, "SNR")
        return AddNoise(snr, p)
    if name == "speed":
        if not arg:
            return SpeedPerturb(p=p)
        return SpeedPerturb(tuple(_number(f, "speed factor") for f in arg.split("/")), p)
    if name == "word-swap":
        from classifiers.finetuning.wordswap import WordSwap  # lazy: alignment loads only when asked for

        return WordSwap(_number(arg, "probability") if arg else p)
    raise AugmentError(f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)} "
                       f"(e.g. --augment chunk-permute,noise:10-30,speed:0.9/1.0/1.1@0.5)")


def parse_augment(spec: str | Sequence | Compose | None) -> Compose:
    """`"chunk-permute,noise"` (see the module docstring) -> `Compose`; None / "" / "none" -> empty.

    A list of transforms (or of spec strings) and a ready `Compose` are accepted as well.
    """
    if spec is None or isinstance(spec, Compose):
        return spec or Compose()
    if isinstance(spec, str):
        items = [s for s in spec.split(",") if s.strip()]
        if len(items) == 1 and items[0].strip().lower() == "none":
            return Compose()
        return Compose(tuple(_parse_item(s) for s in items))
    return Compose(tuple(_parse_item(t) if isinstance(t, str) else t for t in spec))


def describe_augment(augment: Compose) -> str:
    """A canonical spec string for results files ("none" when empty)."""
    parts = []
    for t in augment.transforms:
        if isinstance(t, ChunkPermute):
            parts.append(f"chunk-permute:{t.chunks}@{t.p:g}")
        elif isinstance(t, AddNoise):
            snr = f"{t.snr_db[0]:g}-{t.snr_db[1]:g}" if isinstance(t.snr_db, tuple) else f"{t.snr_db:g}"
            parts.append(f"noise:{snr}@{t.p:g}")
        elif isinstance(t, SpeedPerturb):
            parts.append(f"speed:{'/'.join(f'{f:g}' for f in t.factors)}@{t.p:g}")
        elif hasattr(t, "spec"):
            parts.append(t.spec())
        else:
            parts.append(type(t).__name__)
    return ",".join(parts) or "none"
