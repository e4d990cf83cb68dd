"""openSMILE functionals as a backbone: `--model opensmile:eGeMAPSv02` (or any openSMILE feature set).

The classic hand-crafted baseline (eGeMAPS 88 features, ComParE 2016 6,373 features) goes into
the same store as the transformers' layers: one layer (k = 0), one "frame" per utterance, so the
pooled mean is the functionals vector and the pooled std is zero. The signal is the 16 kHz mono
waveform every backbone sees (read and resampled by `featstore.audio.load_audio`), so features
equal `opensmile.Smile(feature_set, Functionals).process_file` on a 16 kHz mono copy of the file.
openSMILE streams, so clips are never cut into windows.

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
SAMPLE_RATE = 16000
#: shortest signal (samples at 16 kHz) whose functionals are all defined: eGeMAPS' 60 ms pitch window
MIN_SAMPLES = 960


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
    """`opensmile:eGeMAPSv02` -> `eGeMAPSv02`, checked against the installed openSMILE's feature sets."""
    name = model_id[len(PREFIX):]
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


def functionals(extractor, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run openSMILE over each 16 kHz waveform.

    Returns `(states, lengths)` as `featstore.backbone.hidden_states` does: states
    `(1, batch, 1, features)` float32 (one layer, one frame per utterance), lengths `(batch,)` ones.
    """
    rows = [extractor.process_signal(np.asarray(w, dtype=np.float32), SAMPLE_RATE).to_numpy(np.float32)[0]
            for w in waves]
    states = torch.from_numpy(np.stack(rows))[None, :, None, :]
    return states, torch.ones(len(waves), dtype=torch.long)
