"""openSMILE functionals as a backbone: `--model opensmile:eGeMAPSv02` (or any openSMILE feature set).

The classic hand-crafted baseline (eGeMAPS 88 features, ComParE 2016 6,373 features) goes into
the same store as the transformers' layers: one layer (k = 0), one "frame" per utterance, so the
pooled mean is the functionals vector and the pooled std is zero. openSMILE streams, so clips are
never cut into windows.

The signal is the file's mono mix at the file's own rate, the way eGeMAPS is published and computed
(`opensmile.Smile(feature_set, Functionals).process_file` on a mono file gives the same numbers):
resampling to 16 kHz changes 43 of eGeMAPS' 88 features by more than 10% on 48 kHz files.
`opensmile:eGeMAPSv02@16000` asks for the 16 kHz variant (resampled like every transformers
backbone's input; any rate may follow `@`). The store records the rate (`sample_rate`: `"native"`
or the Hz), and the two variants live in different store directories.

The `opensmile` package (it ships the SMILExtract binary in its wheel) is an optional extra:
`pip install opensmile` (or `pip install 'ser[opensmile]'`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from featstore.errors import SerError

PREFIX = "opensmile:"
#: shortest signal whose functionals are all defined: eGeMAPS' 60 ms pitch window
MIN_SECONDS = 0.06


def parse(model_id: str) -> tuple[str, int | None]:
    """`opensmile:eGeMAPSv02` -> ("eGeMAPSv02", None: the file's own rate); `...@16000` -> (..., 16000)."""
    name, at, rate = model_id[len(PREFIX):].partition("@")
    if not at:
        return name, None
    if not rate.isdigit() or not 8000 <= int(rate) <= 192000:
        raise SerError(f"{model_id}: the rate after @ must be a whole number of Hz from 8000 to 192000, "
                       f"e.g. {PREFIX}{name}@16000 (or no @ for each file's own rate)")
    return name, int(rate)


def sample_rate(model_id: str) -> int | None:
    """The rate openSMILE sees for `model_id`: None for each file's own rate."""
    return parse(model_id)[1]


def installed() -> str | None:
    """The installed opensmile package's version, or None."""
    try:
        import opensmile
    except ImportError:
        return None
    return opensmile.__version__


def _module():
    try:
        import opensmile
    except ImportError as e:
        raise SerError("openSMILE features need the opensmile package: pip install opensmile "
                       "(or pip install 'ser[opensmile]')") from e
    return opensmile


def feature_set_name(model_id: str) -> str:
    """`opensmile:eGeMAPSv02[@rate]` -> `eGeMAPSv02`, checked against the installed openSMILE's feature sets."""
    name = parse(model_id)[0]
    sets = [f.name for f in _module().FeatureSet]
    if name not in sets:
        raise SerError(f"{model_id}: unknown openSMILE feature set {name!r}; use one of "
                       f"{', '.join(PREFIX + s for s in sets)}")
    return name


def smile(model_id: str):
    """The `opensmile.Smile` computing the functionals of `model_id`'s feature set."""
    opensmile = _module()
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set_name(model_id)],
                           feature_level=opensmile.FeatureLevel.Functionals)


def identity(model_id: str) -> tuple[str, str, int]:
    """(revision, sha256, number of features): the package version, and a hash of its configuration files.

    The feature sets' .conf files include shared ones, so the hash covers the package's whole
    config tree: a changed configuration is a different "weights" hash, never mixed into a store.
    """
    extractor = smile(model_id)
    digest = hashlib.sha256(feature_set_name(model_id).encode())
    root = Path(_module().__file__).parent / "core" / "config"
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        digest.update(p.relative_to(root).as_posix().encode())
        digest.update(p.read_bytes())
    return installed() or "", digest.hexdigest(), len(extractor.feature_names)


def functionals(extractor, waves: Sequence[np.ndarray], rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run openSMILE over each waveform: at `rate` Hz, or each at its own `.rate` (`featstore.audio.RatedWave`).

    Returns `(states, lengths)` as `featstore.backbones.runtime.hidden_states` does: states
    `(1, batch, 1, features)` float32 (one layer, one frame per utterance), lengths `(batch,)` ones.
    """
    rows = []
    for w in waves:
        sr = rate or getattr(w, "rate", 0)
        if not sr:
            raise SerError("openSMILE at the files' own rate needs waves read with featstore.audio.load_audio(path, None)")
        rows.append(extractor.process_signal(np.asarray(w, dtype=np.float32), sr).to_numpy(np.float32)[0])
    states = torch.from_numpy(np.stack(rows))[None, :, None, :]
    return states, torch.ones(len(waves), dtype=torch.long)
