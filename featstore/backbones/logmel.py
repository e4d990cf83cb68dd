"""Log-mel front-ends: Whisper encoders and w2v-BERT 2.0, fed by the model's own feature extractor.

Exactness. Features are computed per window, alone, exactly as the feature extractor computes
them for one clip (its per-utterance normalisation never sees another clip or any padding);
only then are they padded into a batch.
  - Whisper: the extractor pads every clip to 30 s (`n_samples`), as the model was trained; the
    encoder takes nothing else (3,000 mel frames -> 1,500 encoder frames). Items of a batch are
    therefore independent, and only the frames of real audio are kept: ceil(n / hop) mel frames
    (the extractor's own attention-mask convention) -> ceil(mel / 2) encoder frames, 50 per second.
    Short clips pay for the whole 30 s: on RAVDESS-length clips (3.7 s mean) a whisper-small-size
    encoder ran 8.4x slower per audio second than on 30 s clips of the same audio (0.4 vs 3.6
    audio-s/s, 1 CPU thread, `python bench/extract.py --families`), as 30 / 3.7 = 8.2 predicts.
  - w2v-BERT 2.0: 80-bin fbank stacked by 2 (160 features at 50 frames/s); the attention mask
    covers the padding, and its convolution modules zero padded frames themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from featstore.modelfiles import PREPROCESSOR  # noqa: F401  (the preprocessor file the front-end is defined by)


class LogMelFrontEnd:
    """The model's feature extractor, run per window; pads a batch and counts valid output frames.

    receptive_field: samples for one output frame; frame_rate: output frames per second;
    max_seconds: the longest window the model takes (None: any).
    """

    receptive_field: int
    frame_rate: float
    max_seconds: float | None = None

    def __init__(self, extractor):
        self.extractor = extractor
        self.sample_rate = int(extractor.sampling_rate)

    def features(self, wave: np.ndarray) -> tuple[np.ndarray, int]:
        """(features of one window as the model takes them, valid output frames)."""
        raise NotImplementedError

    def batch(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(input_features `(batch, ...)`, attention mask `(batch, frames)` or None, valid frames `(batch,)`)."""
        raise NotImplementedError


class WhisperFrontEnd(LogMelFrontEnd):
    """Whisper's log-mel, padded to 30 s: input_features `(n_mels, 3000)` per window."""

    @property
    def max_seconds(self) -> float:
        return self.extractor.n_samples / self.sample_rate

    @property
    def receptive_field(self) -> int:
        return self.extractor.n_fft

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / (2 * self.extractor.hop_length)

    def features(self, wave):
        if len(wave) > self.extractor.n_samples:  # the extractor would silently cut it
            raise ValueError(f"a Whisper window is at most {self.max_seconds:g} s; cut longer clips with "
                             f"featstore.audio.windows")
        x = self.extractor(wave, sampling_rate=self.sample_rate, return_tensors="np")["input_features"][0]
        mel = min(math.ceil(len(wave) / self.extractor.hop_length), self.extractor.nb_max_frames)
        return x, (mel - 1) // 2 + 1  # the encoder's stride-2 convolution

    def batch(self, waves):
        feats, valid = zip(*(self.features(w) for w in waves))
        return torch.from_numpy(np.stack(feats)), None, torch.tensor(valid)


class W2vBertFrontEnd(LogMelFrontEnd):
    """SeamlessM4T fbank stacked by `stride`: input_features `(frames, 80 * stride)` per window."""

    @property
    def receptive_field(self) -> int:
        """Samples for one output frame: `stride` fbank frames of 25 ms every 10 ms (the variance needs two)."""
        return 400 + 160 * (self.extractor.stride - 1)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / (160 * self.extractor.stride)

    def features(self, wave):
        out = self.extractor(wave, sampling_rate=self.sample_rate, return_tensors="np", return_attention_mask=True)
        return out["input_features"][0], int(out["attention_mask"][0].sum())

    def batch(self, waves):
        feats, valid = zip(*(self.features(w) for w in waves))
        frames = max(len(f) for f in feats)
        x = torch.full((len(feats), frames, feats[0].shape[1]), float(self.extractor.padding_value))
        for i, f in enumerate(feats):
            x[i, : len(f)] = torch.from_numpy(f)
        lengths = torch.tensor(valid)
        mask = (torch.arange(frames)[None, :] < lengths[:, None]).long()
        return x, mask, lengths


FRONT_ENDS = {"whisper": WhisperFrontEnd, "wav2vec2-bert": W2vBertFrontEnd}


def front_end(model_type: str, directory) -> LogMelFrontEnd:
    """The front-end of a log-mel model saved in `directory` (its preprocessor_config.json)."""
    from transformers import AutoFeatureExtractor

    return FRONT_ENDS[model_type](AutoFeatureExtractor.from_pretrained(directory))


def logmel_states(backbone, waves: Sequence[np.ndarray], device, autocast_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`hidden_states` for log-mel models: states `(L+1, batch, frames, hidden)`, valid frames `(batch,)`."""
    model = backbone.model
    x, mask, lengths = backbone.front_end.batch(waves)
    x = x.to(device=device, dtype=next(model.parameters()).dtype)
    kwargs = {} if mask is None else {"attention_mask": mask.to(device)}
    with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(x, output_hidden_states=True, **kwargs)
    return torch.stack(out.hidden_states), lengths
