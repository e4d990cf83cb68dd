"""What every waveform augmentation shares: the spec error, the probability check, and `Compose`.

`classifiers.finetuning.augment` (the built-in transforms and the spec parser) and `classifiers.finetuning.wordswap` (the
word swap) both build on this module, which imports neither: augment imports wordswap, never the
reverse. Import these names from `classifiers.finetuning.augment`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featstore.errors import SerError


class AugmentError(SerError, ValueError):
    """An augmentation spec that cannot be parsed."""


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise AugmentError(f"augmentation probability must be in [0, 1], got {p}")
    return float(p)


@dataclass(frozen=True)
class Compose:
    """Apply `transforms` in order with one generator."""

    transforms: tuple = field(default_factory=tuple)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, utterance=None) -> np.ndarray:
        for t in self.transforms:
            wave = t(wave, rng, utterance) if getattr(t, "needs_utterance", False) else t(wave, rng)
        return wave

    def __bool__(self) -> bool:
        return bool(self.transforms)
