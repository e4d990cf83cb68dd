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
linear classifier. A model fine-tuned on emotion dimensions (`ClassifierConfig.dimensions`, `ser
finetune --target`) has T more outputs in that linear layer, after the C class logits (C = 0 for
dimensions only): the arousal / valence / dominance values on [-1, 1], trained with the CCC loss
(`masked_ccc_loss`), or with (1 - w) x cross-entropy + w x CCC loss (`multitask` = w). `save_pretrained(dir)` writes `config.json` (everything needed to rebuild it,
the backbone's transformers config included, so the directory stands alone), `model.safetensors`
and `preprocessor_config.json`, laid out so that transformers' `AutoModelForAudioClassification`
loads it too (`export_layout`: mean and layer-weighted heads as the family's own
`*ForSequenceClassification`, the others with `modeling_ser.py` beside the weights, through
`trust_remote_code`); `EmotionClassifier.from_pretrained(dir)` loads it back, and the format-1
directories of older ser and of Trainer checkpoints (ser's module names). A model with LoRA
adapters (`classifiers.finetuning.lora`, `ser finetune --adapter`) exports the adapters and the head only, on a
base named by its weights sha256 (`save_adapter_export`, `load_adapter_export`: this module owns
both export formats; `classifiers.finetuning.lora`, below it, the adapter spec, peft's wrapping and the
adapter files' names). No pickle. The pooling
heads themselves live in `classifiers.finetuning.pooling` (torch only), the exported code in
`classifiers.finetuning.hf_modeling`.

Freezing (`freeze=`): ``none``; ``feature-encoder`` (the CNN); ``layers:N`` (the CNN, the
feature projection, the positional convolution and the first N transformer blocks);
``backbone`` (everything but the head). Whisper's front-end is its two convolutions and its fixed
positions, w2v-BERT 2.0's its feature projection over the fbank frames.

Every backbone family fine-tunes (`input_kind`): waveform models (wav2vec2, HuBERT, WavLM,
data2vec-audio, UniSpeech, wav2vec2-conformer) take `input_values` (samples) and an attention mask
over samples; log-mel models (Whisper encoders, w2v-BERT 2.0) take `input_features` computed per
clip by the model's own feature extractor (`featstore.backbones.logmel`, as extraction computes
them; its settings travel in `ClassifierConfig.front_end`) and `frame_lengths`, the real output
frames of each clip (Whisper: 50 per second of audio, never its 30 s padding), or an attention
mask over input frames from which the model derives them. Pooling and the loss see real frames only.
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

from classifiers.finetuning.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_WEIGHTS,
    INSTALL,
    AdapterError,
    check_adapter_field,
    head_state,
    is_export,
    peft_available,
    quiet_peft,
)
from classifiers.finetuning.pooling import (  # noqa: F401  (the heads, importable from here as before)
    AttentionPooling,
    BiLSTMPooling,
    LayerWeightedPooling,
    MeanPooling,
    frame_mask,
    pooling_module,
)
from featstore import serialize
from featstore.backbones.runtime import (
    install_masked_group_norm,
    masked_conformer_conv,
    masked_group_norm,
    masked_pos_conv,
)
from featstore.errors import SerError

POOLINGS: tuple[str, ...] = ("mean", "attention", "layer-weighted", "bilstm")
#: dimensions a model may regress (featstore.corpora.base.DIMENSIONS, spelled out: heads stays torch-only)
DIMENSIONS: tuple[str, ...] = ("arousal", "valence", "dominance")
FREEZE_HELP = "none, feature-encoder, layers:N (CNN + first N transformer layers) or backbone"

#: `config.json` marker that tells a fine-tuned classifier directory from others
MODEL_KIND = "ser-emotion-classifier"
#: config.json formats: 1 = ser's own module names (Trainer checkpoints, and exports of older ser);
#: 2 = loadable by transformers' Auto classes as well (`save_pretrained`, see `export_layout`)
FORMAT_VERSION = 2
NATIVE_FORMAT = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESSOR_NAME = "preprocessor_config.json"
#: the model code saved beside heads transformers has no class for (trust_remote_code)
MODELING_NAME = "modeling_ser.py"
POOLING_NAME = "pooling.py"
#: heads a family's own *ForSequenceClassification computes exactly (no code saved)
NATIVE_HEADS: tuple[str, ...] = ("mean", "layer-weighted")


class HeadError(SerError, ValueError):
    """A pooling / freezing choice or a model directory that cannot be used."""


def make_pooling(name: str, hidden_size: int, num_layers: int, lstm_size: int = 128) -> nn.Module:
    """The pooling head `name` (one of POOLINGS); num_layers = L + 1 hidden_states entries."""
    if name not in POOLINGS:
        raise HeadError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    return pooling_module(name, hidden_size, num_layers, lstm_size)


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
    """Set requires_grad=False on the frozen part of a backbone of any family; returns frozen module names."""
    if backbone.config.model_type == "whisper":
        # its positions are fixed sinusoids (transformers builds them frozen): part of the front-end
        return _freeze_parts(backbone, spec, front=["conv1", "conv2", "embed_positions"], before=[],
                             layers="layers", after=["layer_norm"])
    if backbone.config.model_type == "wav2vec2-bert":
        return _freeze_parts(backbone, spec, front=["feature_projection"], before=["masked_spec_embed"],
                             layers="encoder.layers", after=["adapter", "intermediate_ffn"])
    layers = backbone.encoder.layers
    n = parse_freeze(spec, len(layers))
    if n is None:
        return []
    frozen: list[tuple[str, nn.Module | nn.Parameter]] = [("feature_extractor", backbone.feature_extractor)]
    if n >= 0:
        for name in ("feature_projection", "masked_spec_embed"):
            if getattr(backbone, name, None) is not None:
                frozen.append((name, getattr(backbone, name)))
        if getattr(backbone.encoder, "pos_conv_embed", None) is not None:
            frozen.append(("encoder.pos_conv_embed", backbone.encoder.pos_conv_embed))
        if not getattr(backbone.config, "do_stable_layer_norm", False) or n == len(layers):
            # base-style encoders apply this LayerNorm before the first block, large-style after the last
            frozen.append(("encoder.layer_norm", backbone.encoder.layer_norm))
        frozen += [(f"encoder.layers.{i}", layers[i]) for i in range(n)]
        if n == len(layers) and getattr(backbone, "adapter", None) is not None:
            frozen.append(("adapter", backbone.adapter))
    return _set_frozen(frozen)


def _set_frozen(frozen: list[tuple[str, nn.Module | nn.Parameter]]) -> list[str]:
    for _, part in frozen:
        params = [part] if isinstance(part, nn.Parameter) else part.parameters()
        for p in params:
            p.requires_grad_(False)
    return [name for name, _ in frozen]


def _freeze_parts(backbone: nn.Module, spec: str | None, *, front: list[str], before: list[str], layers: str,
                  after: list[str]) -> list[str]:
    """`apply_freeze` for log-mel families: `front` = the front-end (``feature-encoder``), `before` = what
    else precedes the first block (``layers:N``), `layers` = the blocks' ModuleList, `after` = what follows
    the last block (frozen with every block: ``backbone``). Parts a checkpoint lacks are skipped."""
    blocks = backbone.get_submodule(layers)
    n = parse_freeze(spec, len(blocks))
    if n is None:
        return []
    parts = front + (before if n >= 0 else []) + [f"{layers}.{i}" for i in range(max(n, 0))]
    parts += after if n == len(blocks) else []
    frozen = []
    for name in parts:
        try:
            part = backbone.get_submodule(name)
        except AttributeError:
            part = getattr(backbone, name, None)       # an nn.Parameter (masked_spec_embed) or absent
        if part is not None:
            frozen.append((name, part))
    return _set_frozen(frozen)


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
    # a LoRA export's adapter (classifiers.finetuning.lora: spec, target pattern, base model and its weights
    # sha256); None: the weights are the whole model. Left out of config.json when None.
    adapter: dict | None = None
    # log-mel families (Whisper, w2v-BERT 2.0): the model's feature extractor (its to_dict()), from
    # which `front_end_of` rebuilds the input features; None for waveform models (left out of config.json)
    front_end: dict | None = None
    # emotion dimensions the model regresses (`ser finetune --target`, classifiers.runs.dimensional.TARGETS):
    # T outputs after the C class logits, on [-1, 1] (featstore.corpora.base.dimension_array's scale);
    # `labels` is [] for a dimensions-only model. None: a classifier only (left out of config.json)
    dimensions: list[str] | None = None
    # the CCC loss' weight when the model has classes and dimensions (`--multitask W`: loss =
    # (1 - W) x cross-entropy + W x CCC loss); None otherwise (left out of config.json)
    multitask: float | None = None

    @property
    def dims(self) -> list[str]:
        """The regressed dimensions ([] for a classifier only)."""
        return list(self.dimensions or [])

    @property
    def scale(self) -> tuple[float, float] | None:
        """The scale of the dimension outputs: (-1, 1) (each corpus' scale mapped linearly), None without."""
        return (-1.0, 1.0) if self.dimensions else None

    def to_json(self, version: int = FORMAT_VERSION) -> dict:
        data = asdict(self)
        if self.dimensions:
            data["dimension_scale"] = [-1.0, 1.0]     # informative: outputs are on [-1, 1]
        for name in ("adapter", "front_end", "dimensions", "multitask"):
            if data[name] is None:
                del data[name]
        return {"ser_kind": MODEL_KIND, "format_version": version, **data}

    @property
    def input_kind(self) -> str:
        """"waveform" or "log-mel": what the backbone takes (`featstore.backbones`' family table)."""
        return input_kind(self.backbone_config.get("model_type"))

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
        data = {k: v for k, v in data.items() if k not in ("ser_kind", "format_version", "dimension_scale")}
        known = {f.name for f in fields(cls)}
        if version >= 2:              # an export: the other keys are transformers' (export_layout)
            data = {k: v for k, v in data.items() if k in known}
        if set(data) - known:
            raise bad(f"unknown field(s) {', '.join(sorted(set(data) - known))}")
        for name in ("labels", "backbone_config"):
            if name not in data:
                raise bad(f"field {name!r} is missing")
        config = cls(**data)
        labels, dims = config.labels, config.dimensions
        if dims is not None and (not isinstance(dims, list) or not dims or len(set(dims)) != len(dims)
                                 or not all(d in DIMENSIONS for d in dims)):
            raise bad(f"field 'dimensions' must list distinct names among {', '.join(DIMENSIONS)}, got {dims!r}")
        if (not isinstance(labels, list) or not (len(labels) >= 2 or (dims and not labels))
                or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
            raise bad(f"field 'labels' must list at least 2 distinct class names, got {labels!r}")
        if config.multitask is not None and not (labels and dims and _number(config.multitask)
                                                 and 0 < config.multitask < 1):
            raise bad(f"field 'multitask' is {config.multitask!r}: a weight in (0, 1) for a model with classes and "
                      f"dimensions")
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
        if config.adapter is not None:
            check_adapter_field(config.adapter, where)
        if config.input_kind == "log-mel":
            fe = config.front_end
            if not isinstance(fe, dict) or not isinstance(fe.get("feature_extractor_type"), str):
                raise bad(f"field 'front_end' must hold the {config.backbone_config['model_type']} model's feature "
                          f"extractor (its to_dict(), with feature_extractor_type), got {fe!r}")
        elif config.front_end is not None:
            raise bad("field 'front_end' is for log-mel models (Whisper, w2v-BERT 2.0) only")
        return config


def masked_ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`classifiers.estimators.attention.ccc_loss` (1 - CCC per output over the batch, averaged over outputs) with
    the rows whose target is NaN left out of that output's term; an output with fewer than 2 rated
    rows in the batch adds nothing (a zero that keeps the graph). pred, target `(batch, T)`."""
    from classifiers.estimators.attention import ccc_loss

    known = torch.isfinite(target)
    if bool(known.all()):
        return ccc_loss(pred, target)
    terms = [ccc_loss(pred[known[:, t], t:t + 1], target[known[:, t], t:t + 1])
             for t in range(target.shape[1]) if int(known[:, t].sum()) >= 2]
    return torch.stack(terms).mean() if terms else pred.sum() * 0.0


def input_kind(model_type) -> str:
    """"log-mel" for Whisper and w2v-BERT 2.0, else "waveform" (the family table of `featstore.backbones`)."""
    from featstore.backbones import family_of

    family = family_of(str(model_type))
    return family.input_kind if family is not None else "waveform"


def backbone_depth(backbone_config: dict) -> int:
    """Transformer blocks of a backbone config dict (Whisper's to_dict() names them encoder_layers)."""
    return int(backbone_config.get("num_hidden_layers", backbone_config.get("encoder_layers", 0)))


def front_end_of(config: ClassifierConfig):
    """The log-mel front-end (`featstore.backbones.logmel.LogMelFrontEnd`) of a log-mel model's
    config, rebuilt from the feature extractor it records; None for waveform models."""
    if config.input_kind != "log-mel":
        return None
    import transformers

    from featstore.backbones.logmel import FRONT_ENDS

    fe = dict(config.front_end)
    try:
        extractor = getattr(transformers, fe["feature_extractor_type"]).from_dict(fe)
        return FRONT_ENDS[config.backbone_config["model_type"]](extractor)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise HeadError(f"the recorded feature extractor {fe.get('feature_extractor_type')!r} cannot be rebuilt "
                        f"({_one_line(e)}); re-export the model with `ser finetune`") from e


def new_backbone(backbone_config: dict) -> nn.Module:
    """A randomly initialised backbone from its transformers config dict (weights loaded afterwards);
    Whisper: its encoder only (the decoder is never used)."""
    from transformers import AutoConfig, AutoModel

    bc = dict(backbone_config)
    config = AutoConfig.for_model(bc.pop("model_type"), **bc)
    if config.model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    return AutoModel.from_config(config)


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
        self.config = config
        if backbone is None:
            backbone = new_backbone(config.backbone_config)
        self.backbone = backbone
        self._front_end = None
        # exact batches: GroupNorm statistics over each item's valid samples only
        install_masked_group_norm(backbone, float32=True)
        if config.pooling == "layer-weighted" and getattr(backbone.config, "layerdrop", 0.0):
            backbone.config.layerdrop = 0.0  # a dropped layer would leave hidden_states one short
        hidden = backbone.config.hidden_size
        self.pooling = make_pooling(config.pooling, hidden, backbone.config.num_hidden_layers + 1, config.lstm_size)
        self.dropout = nn.Dropout(config.dropout)
        # one linear layer for the C class logits and the T dimension outputs (columns C..C+T-1): two
        # heads on the same pooled embedding, exported as one `classifier` transformers loads as is
        self.classifier = nn.Linear(self.pooling.output_size, len(config.labels) + len(config.dims))
        apply_freeze(self.backbone, config.freeze)

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def dimensions(self) -> list[str]:
        """The regressed dimensions, outputs on [-1, 1] ([] for a classifier only)."""
        return self.config.dims

    def split_outputs(self, logits):
        """(class logits `(batch, C)` or None, dimension values `(batch, T)` or None) of the model's
        outputs `(batch, C + T)` (torch or numpy)."""
        c = len(self.config.labels)
        return (logits[:, :c] if c else None), (logits[:, c:] if self.config.dims else None)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor | None, dimensions: torch.Tensor | None):
        """The training loss of outputs `logits`: cross-entropy on the class logits (labels), the CCC
        loss on the dimension outputs (`dimensions`, (batch, T) on [-1, 1], NaN where a clip has no
        rating: left out of that dimension's loss), or (1 - multitask) x the first + multitask x the
        second; None when the targets the model needs are not given."""
        classes, dims = self.split_outputs(logits.float())
        ce = (nn.functional.cross_entropy(classes, labels.long())
              if classes is not None and labels is not None else None)
        ccc = masked_ccc_loss(dims, dimensions.float()) if dims is not None and dimensions is not None else None
        if classes is not None and dims is not None:
            if ce is None or ccc is None:
                return None
            w = float(self.config.multitask or 0.5)
            return (1 - w) * ce + w * ccc
        return ce if classes is not None else ccc

    @property
    def front_end(self):
        """The log-mel front-end that computes this model's `input_features` (`front_end_of`); None for
        waveform models."""
        if self._front_end is None:
            self._front_end = front_end_of(self.config)
        return self._front_end

    def forward(self, input_values: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, input_features: torch.Tensor | None = None,
                frame_lengths: torch.Tensor | None = None, dimensions: torch.Tensor | None = None):
        """Waveform models: input_values `(batch, samples)`, attention_mask `(batch, samples)`. Log-mel
        models: input_features (Whisper `(batch, mels, 3000)`, w2v-BERT `(batch, frames, features)`),
        frame_lengths `(batch,)` real output frames, or else attention_mask `(batch, input frames)`
        (the feature extractor's) from which they are derived. Targets: labels `(batch,)` class ids,
        dimensions `(batch, T)` ratings on [-1, 1] (NaN: none). Returns SequenceClassifierOutput, its
        logits `(batch, C + T)`: the class logits, then the dimension values (`split_outputs`)."""
        labels = (labels, dimensions) if self.config.dims else labels
        if input_features is not None or input_values is None:
            return self._logmel_forward(input_features, attention_mask, labels, frame_lengths)
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
        return self._head(out, lengths, labels)

    def _head(self, out, lengths: torch.Tensor, labels: torch.Tensor | None):
        """Pool the backbone's output over each clip's `lengths` real frames, classify, and the loss."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        if self.config.pooling == "layer-weighted":
            states = torch.stack(out.hidden_states)                   # (L+1, batch, frames, hidden)
        else:
            states = out.last_hidden_state                            # (batch, frames, hidden)
        pooled = self.pooling(states, frame_mask(lengths, states.shape[-2]))
        logits = self.classifier(self.dropout(pooled))
        if self.config.dims:
            loss = self.loss(logits, *labels)
        else:
            loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _logmel_forward(self, x: torch.Tensor | None, attention_mask: torch.Tensor | None,
                        labels: torch.Tensor | None, frame_lengths: torch.Tensor | None):
        """`forward` of Whisper encoders and w2v-BERT 2.0 (module docstring)."""
        if x is None or self.config.input_kind != "log-mel":
            raise HeadError(f"a {self.config.backbone_config.get('model_type')} model takes "
                            f"{'input_features' if self.config.input_kind == 'log-mel' else 'input_values'}")
        whisper = self.config.backbone_config.get("model_type") == "whisper"
        frames_in = x.shape[-1] if whisper else x.shape[1]
        n_in = (attention_mask.sum(-1) if attention_mask is not None
                else torch.full((x.shape[0],), frames_in, device=x.device)).long()
        if frame_lengths is None:
            frame_lengths = self.backbone._get_feat_extract_output_lengths(n_in)
        # Whisper's clips are each padded to 30 s by the feature extractor, as the model was trained:
        # nothing in the batch is padded further, so its items are independent. w2v-BERT takes the mask.
        mask = None if whisper or not bool((n_in != frames_in).any()) else attention_mask.long()
        out = self.backbone(x, **({} if mask is None else {"attention_mask": mask}),
                            output_hidden_states=self.config.pooling == "layer-weighted")
        return self._head(out, frame_lengths.long().to(x.device), labels)

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None, *,
                        transformers: bool = True) -> Path:
        """Write the model into `directory` (created), each file whole or not at all.

        transformers=True (the export, format 2): a directory transformers' Auto classes load as
        well as ser (`export_layout`): config.json, model.safetensors, preprocessor_config.json and,
        for heads transformers has no class for, modeling_ser.py + pooling.py. transformers=False
        (Trainer checkpoints, format 1): config.json + model.safetensors with ser's module names,
        which the Trainer's own reload of the best checkpoint expects. A model with LoRA adapters
        (`config.adapter`) exports the adapters and the head only (`save_adapter_export`).
        """
        from safetensors.torch import save_file

        from featstore.outputs import atomic_output, write_text

        if transformers and self.config.adapter is not None:
            return save_adapter_export(self, directory)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        if transformers:
            hf_config, state = export_layout(self.config, state)
            config = {**hf_config, **self.config.to_json(FORMAT_VERSION)}
        else:
            config = self.config.to_json(NATIVE_FORMAT)
        with atomic_output(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "ser_kind": MODEL_KIND})
        if transformers:
            _write_preprocessor(directory, self.config)
            if not exports_natively(self.config):
                for name, source in ((MODELING_NAME, "hf_modeling.py"), (POOLING_NAME, "pooling.py")):
                    write_text(directory / name, (Path(__file__).parent / source).read_text(encoding="utf-8"))
        write_text(directory / CONFIG_NAME, serialize.dumps(config, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu",
                        backbone: str | Path | None = None) -> EmotionClassifier:
        """Load a directory written by `save_pretrained` (eval mode); every field of config.json and
        every tensor (names, shapes, finite values) is checked first (HeadError naming the file).

        An adapter export loads its base model (recorded, found by its weights hash, or `backbone`:
        `--backbone DIR`) and refuses one whose weights differ (`load_adapter_export`);
        `backbone` is for adapter exports only."""
        directory = Path(directory)
        if not is_classifier_dir(directory):
            raise HeadError(f"{directory} is not a fine-tuned ser model directory (no {CONFIG_NAME} with "
                            f"ser_kind={MODEL_KIND!r}); pass the `model` directory `ser finetune` exported")
        from huggingface_hub.errors import StrictDataclassError  # transformers' typed configs raise it

        path = directory / CONFIG_NAME
        data = json.loads(path.read_text(encoding="utf-8"))
        config = ClassifierConfig.from_json(data, path)
        if config.adapter is not None:
            return load_adapter_export(directory, config, backbone=backbone).to(device).eval()
        if backbone is not None:
            raise HeadError(f"--backbone is for saved probes and adapter exports; the fine-tuned model in {directory} "
                            f"carries its own backbone weights: leave --backbone out")
        try:
            parse_freeze(config.freeze, backbone_depth(config.backbone_config))
            model = cls(config)
        except (ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as e:
            raise HeadError(f"{path}: its backbone_config / freeze cannot build a model ({_one_line(e)}); re-export the "
                            f"model with `ser finetune`") from e
        state, _ = load_safetensors(directory / WEIGHTS_NAME)
        if data["format_version"] >= 2:
            state = import_layout(config, state, directory / WEIGHTS_NAME)
        _check_state(state, model.state_dict(), directory / WEIGHTS_NAME)
        model.load_state_dict(state)
        return model.to(device).eval()


# -- transformers-loadable exports ----------------------------------------------------------------

def export_layout(config: ClassifierConfig, state: dict) -> tuple[dict, dict]:
    """(transformers' part of config.json, the weights under transformers' names) of a model.

    ``mean`` and ``layer-weighted`` heads become the family's own `*ForSequenceClassification`
    (Wav2Vec2ForSequenceClassification, HubertFor..., WavLMFor..., ...), which computes
    classifier(projector(h) averaged over valid frames), h = the last hidden state, or with
    `use_weighted_layer_sum` the softmax(layer_weights)-weighted sum of every hidden_states[k]
    (exactly ser's layer-weighted head: its `layer_logits` are written as `layer_weights`). ser's
    head is classifier(mean of h) with dropout before the classifier: the mean commutes with a
    linear map, so `classifier_proj_size` = hidden size with the projector written as the identity
    (weight I, bias 0) and ser's classifier as the classifier gives the same function at
    inference (dropout is off in eval; transformers' class has no dropout there). The backbone's
    weights move from `backbone.` to the family's prefix (`wav2vec2.`, `hubert.`, ...).

    Other heads (attention, bilstm), and every Whisper head (transformers' WhisperForAudioClassification
    averages all 1,500 frames, the 30 s padding included), keep ser's names and get `model_type`
    "ser-emotion-classifier" with an `auto_map` to modeling_ser.py (`classifiers.finetuning.hf_modeling`,
    saved beside the weights): `trust_remote_code=True` loads them.
    """
    import torch

    labels = list(config.labels) + config.dims      # a dimensional model's outputs: the values, named
    head = {"id2label": {str(i): c for i, c in enumerate(labels)}, "label2id": {c: i for i, c in enumerate(labels)}}
    if config.dims and not config.labels:
        head["problem_type"] = "regression"
    if not exports_natively(config):
        from classifiers.finetuning.hf_modeling import REMOTE_MODEL_TYPE

        return ({"model_type": REMOTE_MODEL_TYPE, "architectures": ["SerForAudioClassification"],
                 "auto_map": {"AutoConfig": "modeling_ser.SerEmotionConfig",
                              "AutoModelForAudioClassification": "modeling_ser.SerForAudioClassification"},
                 **head}, dict(state))
    backbone = dict(config.backbone_config)
    arch, prefix = _sequence_class(backbone.get("model_type"))
    hidden = int(backbone["hidden_size"])
    hf = {k: v for k, v in backbone.items() if k not in ("architectures", "auto_map", "id2label", "label2id")}
    hf.update(head, architectures=[arch], classifier_proj_size=hidden,
              use_weighted_layer_sum=config.pooling == "layer-weighted")
    if config.pooling == "layer-weighted":
        hf["layerdrop"] = 0.0         # as ser runs it: a dropped layer would leave hidden_states one short
    clash = set(hf) & ({f.name for f in fields(ClassifierConfig)} | {"ser_kind", "format_version"})
    if clash:
        raise HeadError(f"the backbone config has field(s) {', '.join(sorted(clash))} that ser's own config.json "
                        f"fields would overwrite; save with transformers=False")
    out = {}
    for name, tensor in state.items():
        if name.startswith("backbone."):
            out[f"{prefix}.{name[len('backbone.'):]}"] = tensor
        elif name == "pooling.layer_logits":
            out["layer_weights"] = tensor
        elif name.startswith("classifier."):
            out[name] = tensor
        else:
            raise HeadError(f"cannot export tensor {name} as {arch}; save with transformers=False")
    weight = state["classifier.weight"]
    out["projector.weight"] = torch.eye(hidden, dtype=weight.dtype)
    out["projector.bias"] = torch.zeros(hidden, dtype=weight.dtype)
    return hf, out


def import_layout(config: ClassifierConfig, state: dict, where: Path) -> dict:
    """The weights of an export (`export_layout`) under ser's module names; a projector other
    than the identity (a model trained further in transformers) is folded into the classifier."""
    import torch

    if not exports_natively(config):
        return state
    arch, prefix = _sequence_class(config.backbone_config.get("model_type"))
    head = ("projector.weight", "projector.bias", "classifier.weight", "classifier.bias")
    missing = [k for k in head if k not in state]
    if missing:
        raise HeadError(f"{where}: tensor(s) {', '.join(missing)} missing for {arch}; re-export the model with "
                        f"`ser finetune`")
    out = {}
    for name, tensor in state.items():
        if name.startswith(prefix + "."):
            out["backbone." + name[len(prefix) + 1:]] = tensor
        elif name == "layer_weights":
            out["pooling.layer_logits"] = tensor
        elif name not in head:
            out[name] = tensor        # unexpected: _check_state names it
    wp, bp, wc, bc = (state[k] for k in head)
    if wp.ndim != 2 or wc.ndim != 2 or wc.shape[1] != wp.shape[0] or bp.shape != wp.shape[:1]:
        raise HeadError(f"{where}: projector {tuple(wp.shape)} and classifier {tuple(wc.shape)} do not compose; "
                        f"re-export the model with `ser finetune`")
    if wp.shape[0] == wp.shape[1] and torch.equal(wp, torch.eye(wp.shape[0], dtype=wp.dtype)) and not bp.any():
        out["classifier.weight"], out["classifier.bias"] = wc, bc          # ser's own export: exact
    else:
        w64, b64 = wc.double(), bc.double()
        out["classifier.weight"] = (w64 @ wp.double()).to(wc.dtype)
        out["classifier.bias"] = (w64 @ bp.double() + b64).to(bc.dtype)
    return out


def exports_natively(config: ClassifierConfig) -> bool:
    """Whether the export is the family's own *ForSequenceClassification (`export_layout`): mean and
    layer-weighted heads of every family but Whisper; else modeling_ser.py (trust_remote_code)."""
    return config.pooling in NATIVE_HEADS and config.backbone_config.get("model_type") != "whisper"


def _sequence_class(model_type) -> tuple[str, str]:
    """(transformers' *ForSequenceClassification class name, its backbone prefix) for a model_type."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    name = MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.get(str(model_type))
    if name is None or not name.endswith("ForSequenceClassification"):
        raise HeadError(f"transformers has no sequence classification class for model_type {model_type!r}; "
                        f"export the model with another pooling than mean / layer-weighted")
    return name, getattr(transformers, name).base_model_prefix


def _write_preprocessor(directory: Path, config: ClassifierConfig) -> Path:
    """preprocessor_config.json: a Wav2Vec2FeatureExtractor at the model's rate that normalises as ser
    does (zero mean, unit variance per clip, eps 1e-7); attention masks for layer-norm encoders only,
    as transformers' own base-style checkpoints. Log-mel models: their own feature extractor
    (`config.front_end`), Whisper's returning its mel-frame attention mask, from which the exported
    model counts the real frames."""
    from transformers import Wav2Vec2FeatureExtractor

    from featstore.outputs import write_text

    front = front_end_of(config)
    if front is not None:
        extractor = front.extractor
        if config.backbone_config.get("model_type") == "whisper":
            extractor.return_attention_mask = True
        return write_text(directory / PREPROCESSOR_NAME, extractor.to_json_string())

    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=config.sample_rate, padding_value=0.0,
                                  do_normalize=config.do_normalize,
                                  return_attention_mask=config.backbone_config.get("feat_extract_norm") != "group")
    return write_text(directory / PREPROCESSOR_NAME, fe.to_json_string())


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


# -- adapter exports (LoRA adapters + head on a named base, classifiers.finetuning.lora) ---------------------

def save_adapter_export(clf: EmotionClassifier, directory: str | Path) -> Path:
    """Write an adapter export (`classifiers.finetuning.lora`'s docstring lists the files): the adapters by
    peft's save_pretrained (safetensors), the head, config.json and preprocessor_config.json, each
    file whole. `EmotionClassifier.save_pretrained` calls it for a model with `config.adapter`."""
    from safetensors.torch import save_file

    from featstore.outputs import atomic_output, write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clf.backbone.save_pretrained(str(directory), safe_serialization=True)
    with atomic_output(directory / HEAD_WEIGHTS) as tmp:
        save_file(head_state(clf), str(tmp), metadata={"format": "pt", "ser_kind": MODEL_KIND})
    _write_preprocessor(directory, clf.config)
    write_text(directory / CONFIG_NAME, serialize.dumps(clf.config.to_json(), indent=1))
    return directory


def load_adapter_export(directory: str | Path, config: ClassifierConfig, *, backbone: str | Path | None = None,
                        merge: bool = True) -> EmotionClassifier:
    """The classifier of an adapter export on its base model (eval mode, on the CPU);
    `EmotionClassifier.from_pretrained` calls it for a config with `adapter`.

    The base is the recorded one (hub id, or a local directory; one that moved is found by its
    weights hash, `featstore.backbones.runtime.locate_model`) or `backbone` (`--backbone DIR`). A base whose
    weights sha256 differs from the recorded one is refused in one line naming both. merge: fold
    the adapters into the base weights (peft's merge_and_unload: a plain backbone, as fast as the
    base); False keeps peft's modules (the tests compare parameters by name)."""
    from peft import PeftModel

    from featstore.backbones.runtime import load_backbone, locate_model

    directory = Path(directory)
    adapter = config.adapter
    check_adapter_field(adapter, directory / "config.json")
    if not is_export(directory):
        missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_WEIGHTS) if not (directory / n).is_file()]
        raise AdapterError(f"{directory}: an adapter export without {', '.join(missing)}; re-export the model with "
                           f"`ser finetune`")
    if not peft_available():
        raise AdapterError(f"{directory} holds a LoRA adapter, which needs the peft package: {INSTALL}")
    recorded = adapter.get("base_weights_sha256")
    where = locate_model(adapter["base_model"], recorded, backbone=backbone, recorded_in=directory / "config.json")
    bb = load_backbone(where)
    if recorded and bb.weights_sha256 != recorded:
        raise AdapterError(f"{directory}: the adapter was trained on {adapter['base_model']} with weights sha256 "
                           f"{recorded}, but {where} has weights sha256 {bb.weights_sha256}; pass the base it was "
                           f"trained on with --backbone DIR")
    model = EmotionClassifier(config, backbone=bb.model)
    try:
        with quiet_peft():
            model.backbone = PeftModel.from_pretrained(model.backbone, str(directory), is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise AdapterError(f"{directory / ADAPTER_WEIGHTS}: cannot be applied to {where} "
                           f"({' '.join(str(e).split())[:300]}); re-export the model with `ser finetune`") from e
    head, _ = load_safetensors(directory / HEAD_WEIGHTS)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    _check_state(head, expected, directory / HEAD_WEIGHTS)
    model.load_state_dict(head, strict=False)
    lora = [(n, p) for n, p in model.backbone.named_parameters() if "lora_" in n]
    if not lora:
        raise HeadError(f"{directory / ADAPTER_WEIGHTS}: no LoRA weights matched the base's modules; re-export "
                        f"the model with `ser finetune`")
    for n, p in lora:
        if not torch.isfinite(p).all():
            raise HeadError(f"{directory / ADAPTER_WEIGHTS}: tensor {n} holds NaN or infinite values; the model is "
                            f"unusable (retrain it, e.g. with a lower --lr)")
    if merge:
        model.backbone = model.backbone.merge_and_unload()
    return model.eval()


def is_classifier_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an `EmotionClassifier` saved with `save_pretrained`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file() or not ((Path(directory) / WEIGHTS_NAME).is_file() or is_export(directory)):
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("ser_kind") == MODEL_KIND
    except (ValueError, OSError):
        return False


def is_adapter_dir(directory: str | Path) -> bool:
    """Whether `directory` holds an adapter export (`classifiers.finetuning.lora`: adapters + head on a named base)."""
    return is_classifier_dir(directory) and is_export(directory)


# -- a new classifier -----------------------------------------------------------------------------

def build_classifier(backbone_id: str, labels: Sequence[str], *, pooling: str = "mean",
                     freeze: str = "feature-encoder", dropout: float = 0.1, lstm_size: int = 128,
                     seed: int = 0, extra: dict | None = None, dimensions: Sequence[str] = (),
                     multitask: float | None = None) -> EmotionClassifier:
    """A new `EmotionClassifier` on the pretrained backbone `backbone_id` (hub id or directory).

    The head is initialised from `seed`. Honours HF_HUB_OFFLINE (featstore.backbones.runtime.load_backbone).
    dimensions: emotion dimensions to regress beside (or, with no `labels`, instead of) the classes;
    multitask: the CCC loss' weight when both are learnt (ClassifierConfig).
    """
    from featstore.backbones.runtime import load_backbone

    if pooling not in POOLINGS:
        raise HeadError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if len(labels) < 2 and not (dimensions and not labels):
        raise HeadError(f"a classifier needs at least 2 labels, got {list(labels)}")
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise HeadError(f"unknown dimension(s) {', '.join(unknown)}; use {', '.join(DIMENSIONS)}")
    bb = load_backbone(backbone_id)
    if bb.input_kind not in ("waveform", "log-mel"):
        raise HeadError(f"{backbone_id}: {bb.input_kind} ({bb.model_type}) have no weights to fine-tune; fine-tune a "
                        f"transformers backbone (`ser models` lists them) or probe these features with `ser probe`")
    parse_freeze(freeze, bb.model.config.num_hidden_layers)
    config = ClassifierConfig(
        labels=list(labels), backbone_config=bb.model.config.to_dict(), backbone_id=str(backbone_id),
        pooling=pooling, freeze=freeze, dropout=dropout, lstm_size=lstm_size, sample_rate=bb.sample_rate,
        do_normalize=bb.do_normalize,
        extra={"backbone_weights_sha256": bb.weights_sha256, **(extra or {})},
        front_end=bb.front_end.extractor.to_dict() if bb.input_kind == "log-mel" else None,
        dimensions=list(dimensions) or None,
        multitask=float(multitask) if labels and dimensions and multitask else None,
    )
    torch.manual_seed(seed)
    return EmotionClassifier(config, backbone=bb.model.train())
