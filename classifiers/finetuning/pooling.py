"""Pooling heads over wav2vec2-family frames (torch only): the code ser trains with and exports.

Every head takes `(batch, frames, hidden)` frames (layer-weighted: `(layers, batch, frames, hidden)`)
and a `(batch, frames)` bool mask, True for valid frames, and never looks at padding. Exported
models whose head transformers has no class for carry this file beside `modeling_ser.py`
(`classifiers.finetuning.hf_modeling`), so it imports nothing but torch.
"""

from __future__ import annotations

import torch
from torch import nn


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """`(batch, frames)` bool, True for the first `lengths[i]` frames of item i."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """states `(batch, frames, hidden)`, mask `(batch, frames)` -> `(batch, hidden)`."""
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


class MeanPooling(nn.Module):
    """Mean over valid frames: `(batch, frames, hidden)` -> `(batch, hidden)`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.output_size = hidden_size

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _masked_mean(states, mask)


class AttentionPooling(nn.Module):
    """Attention with one learned query: weights = softmax_t(q . tanh(W x_t)) over valid frames.

    `(batch, frames, hidden)` -> `(batch, hidden)`; the query starts at zero, i.e. at the mean.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.key = nn.Linear(hidden_size, hidden_size)
        self.query = nn.Parameter(torch.zeros(hidden_size))
        self.output_size = hidden_size

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(self.key(states)) @ self.query.to(states.dtype)       # (batch, frames)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).to(states.dtype)
        return (weights[..., None] * states).sum(1)


class LayerWeightedPooling(nn.Module):
    """Softmax-weighted sum over layers, then the masked mean.

    `(layers, batch, frames, hidden)` -> `(batch, hidden)`; weights start equal.
    """

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.output_size = hidden_size

    def layer_weights(self) -> torch.Tensor:
        """`(layers,)` the current softmax weights (what the model learned to listen to)."""
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.layer_weights().to(states.dtype)
        mixed = (w[:, None, None, None] * states).sum(0)
        return _masked_mean(mixed, mask)


class BiLSTMPooling(nn.Module):
    """A one-layer BiLSTM over valid frames, then the mean: `(batch, frames, hidden)` -> `(batch, 2 * lstm)`."""

    def __init__(self, hidden_size: int, lstm_size: int = 128):
        super().__init__()
        self.lstm = nn.LSTM(hidden_size, lstm_size, batch_first=True, bidirectional=True)
        self.output_size = 2 * lstm_size

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(states.float(), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=states.shape[1])
        return _masked_mean(out, mask)


POOLING_CLASSES = {"mean": MeanPooling, "attention": AttentionPooling, "layer-weighted": LayerWeightedPooling,
                   "bilstm": BiLSTMPooling}


def pooling_module(name: str, hidden_size: int, num_layers: int, lstm_size: int = 128) -> nn.Module:
    """The pooling head `name`; num_layers = L + 1 hidden_states entries. ValueError for other names."""
    if name == "layer-weighted":
        return LayerWeightedPooling(hidden_size, num_layers)
    if name == "bilstm":
        return BiLSTMPooling(hidden_size, lstm_size)
    if name not in POOLING_CLASSES:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLING_CLASSES)}")
    return POOLING_CLASSES[name](hidden_size)
