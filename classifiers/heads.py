"""Pooling heads over wav2vec2-family frames, and the end-to-end model `EmotionClassifier`.

Pooling heads map padded frame sequences to one vector per utterance; every one takes a frame
mask, so padded frames never count:

==================  =============================================================================
``mean``            mean of the last hidden state over valid frames
``attention``       softmax attention with one learned query over the last hidden state's frames
``layer-weighted``  softmax-weighted sum of every `hidden_states[k]` (k = 0..L, learned weights,
                    as SUPERB's weighted-sum upstream), then the masked mean
``bilstm``          a bidirectional LSTM over the last hidden state's valid frames, then the mean
==================  =============================================================================

`EmotionClassifier` = backbone (`AutoModel`, hub id or local directory) + pooling head +
linear classifier. `save_pretrained(dir)` writes `config.json` (everything needed to rebuild it,
the backbone's transformers config included, so the directory stands alone) and
`model.safetensors`; `EmotionClassifier.from_pretrained(dir)` loads it back. No pickle.

Freezing (`freeze=`): ``none``; ``feature-encoder`` (the CNN); ``layers:N`` (the CNN, the
feature projection, the positional convolution and the first N transformer blocks);
``backbone`` (everything but the head).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from featstore import serialize
from featstore.backbone import (
    install_masked_group_norm,
    masked_conformer_conv,
    masked_group_norm,
    masked_pos_conv,
)
from featstore.errors import SerError

POOLINGS: tuple[str, ...] = ("mean", "attention", "layer-weighted", "bilstm")
FREEZE_HELP = "none, feature-encoder, layers:N (CNN + first N transformer layers) or backbone"

#: `config.json` marker that tells a fine-tuned classifier directory from others
MODEL_KIND = "ser-emotion-classifier"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class HeadError(SerError, ValueError):
    """A pooling / freezing choice or a model directory that cannot be used."""


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


def make_pooling(name: str, hidden_size: int, num_layers: int, lstm_size: int = 128) -> nn.Module:
    """The pooling head `name` (one of POOLINGS); num_layers = L + 1 hidden_states entries."""
    if name == "mean":
        return MeanPooling(hidden_size)
    if name == "attention":
        return AttentionPooling(hidden_size)
    if name == "layer-weighted":
        return LayerWeightedPooling(hidden_size, num_layers)
    if name == "bilstm":
        return BiLSTMPooling(hidden_size, lstm_size)
    raise HeadError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")


def parse_freeze(spec: str | None, num_transformer_layers: int) -> int | None:
    """How many transformer layers to freeze: -1 = only the CNN, N >= 0 = CNN + N layers,
    None = nothing; `backbone` gives num_transformer_layers (everything below the head)."""
    spec = (spec or "none").strip().lower()
    if spec == "none":
        return None
    if spec in ("feature-encoder", "cnn"):
        return -1
    if spec == "backbone":
        return num_transformer_layers
    m = re.fullmatch(r"layers:(\d+)", spec)
    if not m:
        raise HeadError(f"bad freeze spec {spec!r}; use {FREEZE_HELP}")
    n = int(m.group(1))
    if n > num_transformer_layers:
        raise HeadError(f"freeze {spec!r}: the model has only {num_transformer_layers} transformer layers")
    return n


def apply_freeze(backbone: nn.Module, spec: str | None) -> list[str]:
    """Set requires_grad=False on the frozen part of a wav2vec2-family model; returns frozen module names."""
    layers = backbone.encoder.layers
    n = parse_freeze(spec, len(layers))
    if n is None:
        return []
    frozen: list[tuple[str, nn.Module | nn.Parameter]] = [("feature_extractor", backbone.feature_extractor)]
    if n >= 0:
        for name in ("feature_projection", "masked_spec_embed"):
            if getattr(backbone, name, None) is not None:
                frozen.append((name, getattr(backbone, name)))
        frozen.append(("encoder.pos_conv_embed", backbone.encoder.pos_conv_embed))
        if not getattr(backbone.config, "do_stable_layer_norm", False) or n == len(layers):
            # base-style encoders apply this LayerNorm before the first block, large-style after the last
            frozen.append(("encoder.layer_norm", backbone.encoder.layer_norm))
        frozen += [(f"encoder.layers.{i}", layers[i]) for i in range(n)]
        if n == len(layers) and getattr(backbone, "adapter", None) is not None:
            frozen.append(("adapter", backbone.adapter))
    for _, part in frozen:
        params = [part] if isinstance(part, nn.Parameter) else part.parameters()
        for p in params:
            p.requires_grad_(False)
    return [name for name, _ in frozen]


@dataclass
class ClassifierConfig:
    """Everything `EmotionClassifier` needs to be rebuilt (written as config.json)."""

    labels: list[str]
    backbone_config: dict                 # the backbone's transformers config (to_dict())
    backbone_id: str = ""                 # hub id or directory the backbone was first loaded from
    pooling: str = "mean"
    freeze: str = "feature-encoder"
    dropout: float = 0.1
    lstm_size: int = 128
    sample_rate: int = 16000
    do_normalize: bool = True             # zero-mean unit-variance per waveform before the model
    extra: dict = field(default_factory=dict)  # provenance (fold, seed, training settings)

    def to_json(self) -> dict:
        return {"ser_kind": MODEL_KIND, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict, where: str | Path = CONFIG_NAME) -> ClassifierConfig:
        """The config in `data` (a parsed config.json), every field checked; HeadError names `where` and the field."""
        def bad(what: str) -> HeadError:
            return HeadError(f"{where}: {what}; re-export the model with `ser finetune` (or restore the file)")

        if not isinstance(data, dict) or data.get("ser_kind") != MODEL_KIND:
            raise bad(f"not a fine-tuned ser model config (ser_kind must be {MODEL_KIND!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise bad(f"format_version {version!r} is not an integer")
        if version > FORMAT_VERSION:
            raise HeadError(f"{where}: format {version} is newer than this ser understands ({FORMAT_VERSION}); "
                            f"upgrade ser")
        data = {k: v for k, v in data.items() if k not in ("ser_kind", "format_version")}
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise bad(f"unknown field(s) {', '.join(sorted(set(data) - known))}")
        for name in ("labels", "backbone_config"):
            if name not in data:
                raise bad(f"field {name!r} is missing")
        config = cls(**data)
        labels = config.labels
        if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels)
                or len(set(labels)) != len(labels)):
            raise bad(f"field 'labels' must list at least 2 distinct class names, got {labels!r}")
        if not isinstance(config.backbone_config, dict) or not isinstance(config.backbone_config.get("model_type"), str):
            raise bad("field 'backbone_config' must be the backbone's transformers config (with model_type)")
        if config.pooling not in POOLINGS:
            raise bad(f"field 'pooling' is {config.pooling!r}, not one of {', '.join(POOLINGS)}")
        if not isinstance(config.freeze, str):
            raise bad(f"field 'freeze' is {config.freeze!r}, not a freeze spec")
        checks = {"dropout": _number(config.dropout) and 0 <= config.dropout < 1,
                  "lstm_size": _integer(config.lstm_size) and config.lstm_size >= 1,
                  "sample_rate": _integer(config.sample_rate) and config.sample_rate > 0,
                  "do_normalize": isinstance(config.do_normalize, bool),
                  "backbone_id": isinstance(config.backbone_id, str), "extra": isinstance(config.extra, dict)}
        for name, ok in checks.items():
            if not ok:
                raise bad(f"field {name!r} has the unusable value {getattr(config, name)!r}")
        return config


def _one_line(e: Exception) -> str:
    """A foreign exception's message on one line (the CLI prints one line per error)."""
    return " ".join(str(e).split())


def _integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_safetensors(path: str | Path, *, framework: str = "pt") -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file; a truncated, garbled or non-safetensors file is a
    HeadError naming it. framework: "pt" (torch tensors) or "np" (numpy arrays)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework=framework) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise HeadError(f"{path}: not a readable safetensors file ({_one_line(e)}); it may be truncated or not "
                        f"written by ser: restore or re-export it") from e


class EmotionClassifier(nn.Module):
    """wav2vec2-family backbone + pooling head + linear classifier.

    forward(input_values `(batch, samples)` float32 (already normalised if `do_normalize`),
    attention_mask `(batch, samples)` 1 = real sample (None = no padding), labels `(batch,)`)
    -> SequenceClassifierOutput(loss, logits `(batch, num_labels)`).
    """

    def __init__(self, config: ClassifierConfig, backbone: nn.Module | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.config = config
        if backbone is None:
            bc = dict(config.backbone_config)
            backbone = AutoModel.from_config(AutoConfig.for_model(bc.pop("model_type"), **bc))
        self.backbone = backbone
        # exact batches: GroupNorm statistics over each item's valid samples only
        install_masked_group_norm(backbone, float32=True)
        if config.pooling == "layer-weighted" and getattr(backbone.config, "layerdrop", 0.0):
            backbone.config.layerdrop = 0.0  # a dropped layer would leave hidden_states one short
        hidden = backbone.config.hidden_size
        self.pooling = make_pooling(config.pooling, hidden, backbone.config.num_hidden_layers + 1, config.lstm_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.pooling.output_size, len(config.labels))
        apply_freeze(self.backbone, config.freeze)

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        batch, samples = input_values.shape
        n = (attention_mask.sum(-1) if attention_mask is not None
             else torch.full((batch,), samples, device=input_values.device)).long()
        padded = bool((n != samples).any())
        mask = attention_mask.long() if padded else None
        lengths = self.backbone._get_feat_extract_output_lengths(n)
        with (masked_group_norm(self.backbone, n, padded), masked_pos_conv(self.backbone, lengths, padded),
              masked_conformer_conv(self.backbone, lengths, padded)):
            out = self.backbone(input_values, attention_mask=mask,
                                output_hidden_states=self.config.pooling == "layer-weighted")
        if self.config.pooling == "layer-weighted":
            states = torch.stack(out.hidden_states)                   # (L+1, batch, frames, hidden)
        else:
            states = out.last_hidden_state                            # (batch, frames, hidden)
        pooled = self.pooling(states, frame_mask(lengths, states.shape[-2]))
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> Path:
        """Write config.json + model.safetensors into `directory` (created)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "ser_kind": MODEL_KIND})
        serialize.write_json(directory / CONFIG_NAME, self.config.to_json())
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> EmotionClassifier:
        """Load a directory written by `save_pretrained` (eval mode); every field of config.json and
        every tensor (names, shapes, finite values) is checked first (HeadError naming the file)."""
        directory = Path(directory)
        if not is_classifier_dir(directory):
            raise HeadError(f"{directory} is not a fine-tuned ser model directory (no {CONFIG_NAME} with "
                            f"ser_kind={MODEL_KIND!r}); pass the `model` directory `ser finetune` exported")
        from huggingface_hub.errors import StrictDataclassError  # transformers' typed configs raise it

        path = directory / CONFIG_NAME
        config = ClassifierConfig.from_json(json.loads(path.read_text(encoding="utf-8")), path)
        try:
            parse_freeze(config.freeze, int(config.backbone_config.get("num_hidden_layers", 0)))
            model = cls(config)
        except (ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as e:
            raise HeadError(f"{path}: its backbone_config / freeze cannot build a model ({_one_line(e)}); re-export the "
                            f"model with `ser finetune`") from e
        state, _ = load_safetensors(directory / WEIGHTS_NAME)
        _check_state(state, model.state_dict(), directory / WEIGHTS_NAME)
        model.load_state_dict(state)
        return model.to(device).eval()


def _check_state(state: dict, expected: dict, where: Path) -> None:
    """The loaded weights have exactly the model's tensors, shapes, and finite values (else HeadError)."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise HeadError(f"{where}: weights do not match config.json (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); re-export the model with `ser finetune`")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise HeadError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, config.json implies "
                            f"{tuple(expected[name].shape)}; re-export the model with `ser finetune`")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise HeadError(f"{where}: tensor {name} holds NaN or infinite values; the model is unusable "
                            f"(retrain it, e.g. with a lower --lr)")


def is_classifier_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an `EmotionClassifier` saved with `save_pretrained`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file() or not (Path(directory) / WEIGHTS_NAME).is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("ser_kind") == MODEL_KIND
    except (ValueError, OSError):
        return False


def build_classifier(backbone_id: str, labels: Sequence[str], *, pooling: str = "mean",
                     freeze: str = "feature-encoder", dropout: float = 0.1, lstm_size: int = 128,
                     seed: int = 0, extra: dict | None = None) -> EmotionClassifier:
    """A new `EmotionClassifier` on the pretrained backbone `backbone_id` (hub id or directory).

    The head is initialised from `seed`. Honours HF_HUB_OFFLINE (featstore.backbone.load_backbone).
    """
    from featstore.backbone import load_backbone

    if pooling not in POOLINGS:
        raise HeadError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if len(labels) < 2:
        raise HeadError(f"a classifier needs at least 2 labels, got {list(labels)}")
    bb = load_backbone(backbone_id)
    if bb.input_kind != "waveform":
        raise HeadError(f"{backbone_id}: fine-tuning takes waveform models (wav2vec2, HuBERT, WavLM, data2vec-audio, "
                        f"UniSpeech, wav2vec2-conformer); its {bb.input_kind} input is for `ser extract` and probes")
    parse_freeze(freeze, bb.model.config.num_hidden_layers)
    config = ClassifierConfig(
        labels=list(labels), backbone_config=bb.model.config.to_dict(), backbone_id=str(backbone_id),
        pooling=pooling, freeze=freeze, dropout=dropout, lstm_size=lstm_size, sample_rate=bb.sample_rate,
        do_normalize=bb.do_normalize, extra=dict(extra or {}),
    )
    torch.manual_seed(seed)
    return EmotionClassifier(config, backbone=bb.model.train())
