"""Loading backbones and running them exactly over batches.

The families ser extracts from, how each numbers its layers and which hub ids are known, are
in `featstore.backbones` (`ser models` prints them). Three kinds of input:
  - waveform (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), wav2vec2-conformer):
    the raw 16 kHz signal, normalised per waveform when the feature extractor says so;
  - log-mel (Whisper encoders, w2v-BERT 2.0): features from the model's own feature extractor,
    computed per window and padded afterwards (`featstore.backbones.logmel`);
  - functionals (openSMILE eGeMAPS / ComParE): one vector per utterance, stored as one layer
    (`featstore.backbones.opensmile`).

Layer convention (used everywhere in ser): layer k is `hidden_states[k]` of the transformers
model called with `output_hidden_states=True`, k = 0..L:
  - k = 0 is the input to the first transformer block (feature projection + positional
    convolution; for "base"-style models also after the encoder's LayerNorm);
  - k = L is the output of the last block. For stable-layer-norm models (large / XLS-R /
    data2vec-audio style, `config.do_stable_layer_norm=True`) transformers 5 takes
    `hidden_states[L]` *before* the encoder's final LayerNorm, so it differs from
    `last_hidden_state`; we keep transformers' convention and store `hidden_states` as is.

Exact batching. Padding changes the output of GroupNorm feature encoders (wav2vec2-base,
HuBERT-base, WavLM-base): their first convolution is followed by a GroupNorm with one group per
channel, whose statistics run over time, padded samples included. `MaskedGroupNorm` replaces it
with the same normalisation computed over each item's valid frames only; together with the
attention mask (and per-waveform normalisation before padding) a batch then gives the same
hidden states as running every utterance alone. LayerNorm feature encoders only need the mask.
data2vec-audio's stacked positional convolution also needs its padded frames zeroed between
its layers (`masked_pos_conv`), and wav2vec2-conformer's convolution modules their padded frames
zeroed before the depthwise convolution (`masked_conformer_conv`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featstore.backbones import DEFAULT_MODEL, SUPPORTED_MODEL_TYPES, family_of, supported_families
from featstore.backbones.logmel import PREPROCESSOR, LogMelFrontEnd
from featstore.device import full_float32
from featstore.errors import SerError
from featstore.modelfiles import (  # noqa: F401  (model_slug, is_local_id, hash_memo_path: part of this module's API)
    hash_memo_path,
    is_local_id,
    known_locations,
    model_slug,
    remember_location,
    weights_hash,
)

#: the layer convention of waveform models, recorded in their stores
WAVEFORM_CONVENTION = ("layer k = transformers hidden_states[k], k=0..L; 0 = input to the first transformer "
                       "block; for stable-layer-norm models hidden_states[L] is before the final LayerNorm")


class ModelLoadError(SerError):
    """A backbone that cannot be loaded; the message says how to make it available."""


@dataclass
class Backbone:
    """A loaded backbone and what the store records about it."""

    model: nn.Module
    model_id: str               # hub id, or a local directory's resolved absolute path
    revision: str | None        # hub commit hash when known
    weights_sha256: str         # hash of the weight files (identifies the exact weights)
    model_type: str
    num_layers: int             # L + 1 stored layers (hidden_states entries)
    hidden_size: int
    sample_rate: int | None     # Hz the model is fed; None: each file's own rate (openSMILE's default)
    do_normalize: bool          # zero-mean unit-variance per waveform before the model
    group_norm: bool            # feature encoder uses GroupNorm (padding-sensitive)
    receptive_field: int        # samples needed for one output frame
    frame_rate: float           # output frames per second
    input_kind: str = "waveform"              # "waveform" | "log-mel" | "functionals"
    max_input_seconds: float | None = None    # longest window the model takes (Whisper: 30 s)
    layer_convention: str = WAVEFORM_CONVENTION
    front_end: object | None = None           # LogMelFrontEnd (log-mel models) or opensmile.Smile

    @property
    def slug(self) -> str:
        return model_slug(self.model_id)

    def output_lengths(self, n_samples: torch.Tensor | np.ndarray | int):
        """Number of output frames for inputs of `n_samples` samples."""
        lengths = torch.as_tensor(n_samples)
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths


class ModelMovedError(ModelLoadError):
    """A recorded local model directory that is gone, and no known location holds its weights."""


def _holds(directory: Path, weights_sha256: str) -> bool:
    """Whether `directory` holds the weights with this hash (either hash kind: weights, or weights + front-end)."""
    try:
        return weights_sha256 in (weights_hash(directory), weights_hash(directory, front_end=True))
    except OSError:
        return False


def locate_model(model_id: str, weights_sha256: str | None = None, *, backbone: str | Path | None = None,
                 recorded_in: str | Path | None = None) -> str:
    """The model to load for a recorded identity (a store's or a saved probe's `model_id` and weights hash).

    backbone: a directory named by the user (`--backbone DIR`), used as given. A hub id (or
    `opensmile:<set>`) is returned unchanged. A local directory is used where it is; when it is gone,
    the newest known location (`known_locations`) that holds the same weights is used. Otherwise
    `ModelMovedError`, one line naming the recorded path and `--backbone DIR`, never a hub download.
    """
    if backbone is not None:
        directory = Path(backbone).expanduser()
        if not directory.is_dir():
            raise ModelLoadError(f"--backbone {backbone}: no such directory; pass the directory that holds the "
                                 f"model's config.json and weights")
        return str(directory.resolve())
    if not is_local_id(model_id):
        return model_id
    here = Path(model_id).expanduser()
    if here.is_dir():
        return str(here.resolve())
    if weights_sha256:
        for place in reversed(known_locations(weights_sha256)):
            if Path(place).is_dir() and _holds(Path(place), weights_sha256):
                return place
    relative = "" if here.is_absolute() else f" (a relative path, looked up from {Path.cwd()})"
    sha = f" (weights sha256 {weights_sha256[:12]}…)" if weights_sha256 else ""
    source = f" in {recorded_in}" if recorded_in else ""
    raise ModelMovedError(f"model directory {model_id}{relative} recorded{source} is gone and no known location "
                          f"holds its weights{sha}; pass --backbone DIR naming where the model is now")


def _resolve_directory(model_id: str, revision: str | None) -> tuple[Path, str | None]:
    """The local directory holding the model's files (downloading from the hub if allowed)."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local.resolve(), None
    if local.exists():
        raise ModelLoadError(f"{model_id} is a file, not a model directory; pass --model with a hub id "
                             f"(e.g. {DEFAULT_MODEL}) or a directory saved with save_pretrained")
    if local.suffix or is_local_id(model_id):
        raise ModelLoadError(f"model directory {model_id} does not exist; pass --model with a hub id "
                             f"(e.g. {DEFAULT_MODEL}) or a directory saved with save_pretrained")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        path = snapshot_download(
            model_id, revision=revision, local_files_only=offline,
            allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"],
        )
    except Exception as e:
        how = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
               if offline else f"it could not be downloaded ({type(e).__name__})")
        raise ModelLoadError(
            f"cannot load model {model_id!r}: {how}. Fix: on a machine with network run "
            f"`huggingface-cli download {model_id}` (or python -c \"from transformers import AutoModel; "
            f"AutoModel.from_pretrained('{model_id}')\") and copy the cache (~/.cache/huggingface), "
            f"or save the model with save_pretrained and pass --model /path/to/dir"
        ) from e
    path = Path(path)
    return path, path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else revision


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a backbone, read without building the model."""

    model_id: str
    directory: Path
    revision: str | None
    weights_sha256: str
    model_type: str
    num_layers: int             # L + 1 stored layers
    hidden_size: int
    sample_rate: int | None     # None: each file's own rate (openSMILE's default)
    do_normalize: bool
    group_norm: bool
    receptive_field: int
    frame_rate: float
    input_kind: str = "waveform"              # "waveform" | "log-mel" | "functionals"
    max_input_seconds: float | None = None    # longest window the model takes (Whisper: 30 s)
    layer_convention: str = WAVEFORM_CONVENTION


def model_info(model_id: str = DEFAULT_MODEL, *, revision: str | None = None) -> ModelInfo:
    """Resolve a hub id, local directory (honouring HF_HUB_OFFLINE) or `opensmile:<set>` and describe the model."""
    from transformers import AutoConfig

    from featstore.backbones import opensmile

    if model_id.startswith(opensmile.PREFIX):
        return _opensmile_info(model_id)
    directory, resolved_revision = _resolve_directory(model_id, revision)
    local = Path(model_id).expanduser().is_dir()
    if local:   # recorded as its resolved absolute path: the same from any working directory
        model_id = str(directory)
    try:
        config = AutoConfig.from_pretrained(directory)
    except Exception as e:
        raise ModelLoadError(f"{directory}: not a transformers model directory ({e})") from e
    family = family_of(config.model_type)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"{model_id}: model type {config.model_type!r} is not supported; ser supports "
                             f"{supported_families()} (`ser models` lists them)")
    if family.input_kind == "log-mel":
        return _located(_logmel_info(model_id, directory, resolved_revision, config, family.layers), local)
    do_normalize, sample_rate = True, 16000
    pre = directory / "preprocessor_config.json"
    if pre.exists():
        cfg = json.loads(pre.read_text())
        do_normalize = bool(cfg.get("do_normalize", True))
        sample_rate = int(cfg.get("sampling_rate", 16000))
    receptive = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        receptive = (receptive - 1) * stride + kernel
    return _located(ModelInfo(
        model_id=model_id, directory=directory, revision=resolved_revision,
        weights_sha256=weights_hash(directory), model_type=config.model_type,
        num_layers=config.num_hidden_layers + 1, hidden_size=config.hidden_size,
        sample_rate=sample_rate, do_normalize=do_normalize,
        group_norm=uses_group_norm(config), receptive_field=receptive,
        frame_rate=sample_rate / int(np.prod(config.conv_stride)),
    ), local)


def _located(info: ModelInfo, local: bool) -> ModelInfo:
    """`info`, its directory remembered under its weights hash when it is a local model (`known_locations`)."""
    if local:
        remember_location(info.directory, info.weights_sha256)
    return info


def _front_end(model_id: str, directory: Path, model_type: str) -> LogMelFrontEnd:
    """The log-mel front-end saved beside the weights; a missing preprocessor config is named with its fix."""
    from featstore.backbones.logmel import front_end

    if not (directory / PREPROCESSOR).is_file():
        raise ModelLoadError(f"{model_id}: no {PREPROCESSOR} in {directory}; a {model_type} model needs its "
                             f"feature extractor: save it beside the weights with "
                             f"AutoFeatureExtractor.from_pretrained(<hub id>).save_pretrained('{directory}')")
    try:
        return front_end(model_type, directory)
    except (OSError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{directory / PREPROCESSOR}: not a feature extractor for {model_type} ({e})") from e


def _logmel_info(model_id: str, directory: Path, revision: str | None, config, layers: str) -> ModelInfo:
    """Whisper (encoder only) and w2v-BERT 2.0: input from the model's own feature extractor."""
    fe = _front_end(model_id, directory, config.model_type)
    return ModelInfo(
        model_id=model_id, directory=directory, revision=revision,
        weights_sha256=weights_hash(directory, front_end=True), model_type=config.model_type,
        num_layers=config.num_hidden_layers + 1, hidden_size=config.hidden_size,  # Whisper: encoder_layers, d_model
        sample_rate=fe.sample_rate, do_normalize=False, group_norm=False, receptive_field=fe.receptive_field,
        frame_rate=fe.frame_rate, input_kind="log-mel", max_input_seconds=fe.max_seconds, layer_convention=layers,
    )


def _opensmile_info(model_id: str) -> ModelInfo:
    from featstore.backbones import opensmile

    revision, sha, features = opensmile.identity(model_id)
    return ModelInfo(
        model_id=model_id, directory=Path(opensmile.smile(model_id).config_path).parent, revision=revision,
        weights_sha256=sha, model_type="opensmile", num_layers=1, hidden_size=features,
        sample_rate=opensmile.sample_rate(model_id), do_normalize=False, group_norm=False,
        receptive_field=round(opensmile.MIN_SECONDS * (opensmile.sample_rate(model_id) or 16000)), frame_rate=0.0, input_kind="functionals",
        layer_convention=family_of("opensmile").layers,
    )


def load_backbone(model: str | ModelInfo = DEFAULT_MODEL, *, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, revision: str | None = None) -> Backbone:
    """Load a backbone: a transformers encoder with `from_pretrained` (hub id or local directory), or openSMILE.

    Honours HF_HUB_OFFLINE. A CTC / classification checkpoint loads its base encoder; Whisper
    loads its encoder only. GroupNorm feature encoders get `MaskedGroupNorm`, so batches are exact.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    info = model if isinstance(model, ModelInfo) else model_info(model, revision=revision)
    front = None
    if info.input_kind == "functionals":
        from featstore.backbones.opensmile import smile

        net = front = smile(info.model_id)
    else:
        hf_logging.disable_progress_bar()
        net = AutoModel.from_pretrained(info.directory, dtype=dtype)
        if info.model_type == "whisper":
            net = net.get_encoder()  # the decoder is never used: do not keep it in memory
        net.eval().to(device)
        install_masked_group_norm(net)
        if info.input_kind == "log-mel":
            front = _front_end(info.model_id, info.directory, info.model_type)
    return Backbone(
        model=net, model_id=info.model_id, revision=info.revision,
        weights_sha256=info.weights_sha256, model_type=info.model_type,
        num_layers=info.num_layers, hidden_size=info.hidden_size, sample_rate=info.sample_rate,
        do_normalize=info.do_normalize, group_norm=info.group_norm,
        receptive_field=info.receptive_field, frame_rate=info.frame_rate, input_kind=info.input_kind,
        max_input_seconds=info.max_input_seconds, layer_convention=info.layer_convention, front_end=front,
    )


def build_demo_model(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a small randomly initialised wav2vec2 (base-style, 6 layers x 256) for offline demos.

    Random weights still turn prosody into separable features; the demo says so plainly.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
                            conv_dim=(256,) * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8)
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel whose statistics skip each item's padded frames.

    `valid` is set (by `masked_group_norm`) to the valid frame counts `(batch,)` for one
    forward; None means "no padding" and gives exactly `nn.GroupNorm`. With `float32=True` it
    computes in float32 under autocast, as autocast runs nn.GroupNorm (float16 sums overflow).
    """

    def __init__(self, norm: nn.Module, *, float32: bool = False):
        super().__init__()
        channels = norm.weight.shape[0]
        if getattr(norm, "num_groups", channels) != channels:
            raise ValueError("MaskedGroupNorm supports one group per channel (wav2vec2's feature encoder)")
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias
        self.float32 = float32
        self.valid: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, channels, frames)
        if self.float32:
            with torch.autocast(x.device.type, enabled=False):
                return self._normalise(x.float())
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid is None:
            return nn.functional.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        # float32 statistics, as nn.GroupNorm's CUDA kernel: in a float16 model, sums over 10^5 frames overflow
        xf = x.float()
        frames = torch.arange(x.shape[-1], device=x.device)
        mask = (frames[None, :] < self.valid.to(x.device)[:, None]).float()[:, None, :]
        count = mask.sum(-1, keepdim=True).clamp_min(1)
        mean = (xf * mask).sum(-1, keepdim=True) / count
        var = (((xf - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        return (y * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]).to(x.dtype)


def uses_group_norm(config) -> bool:
    """Whether a transformers config has a base-style (GroupNorm) feature encoder."""
    return getattr(config, "feat_extract_norm", "layer") == "group"


def install_masked_group_norm(model: nn.Module, *, float32: bool = False) -> MaskedGroupNorm | None:
    """Make a GroupNorm feature encoder exact under padding (idempotent); None for other models."""
    if not uses_group_norm(model.config):
        return None
    first = model.feature_extractor.conv_layers[0]
    norm = first.layer_norm
    if not isinstance(norm, MaskedGroupNorm) or norm.float32 != float32:
        first.layer_norm = MaskedGroupNorm(norm, float32=float32)
    return first.layer_norm


def masked_norm(model: nn.Module) -> MaskedGroupNorm | None:
    """The installed `MaskedGroupNorm` of `model`, if any."""
    extractor = getattr(model, "feature_extractor", None)
    norm = getattr(getattr(extractor, "conv_layers", [None])[0], "layer_norm", None)
    return norm if isinstance(norm, MaskedGroupNorm) else None


@contextmanager
def masked_group_norm(model: nn.Module, n_samples: torch.Tensor, padded: bool):
    """Within the block, the model's masked GroupNorm normalises over each item's valid frames.

    n_samples `(batch,)`: valid input samples per item. A no-op for models without one, or
    when nothing is padded. Shared by extraction and fine-tuning.
    """
    norm = masked_norm(model)
    if norm is not None and padded:
        # the first conv layer's output length is what its GroupNorm normalises over
        k0, s0 = model.config.conv_kernel[0], model.config.conv_stride[0]
        norm.valid = torch.div(n_samples - k0, s0, rounding_mode="floor") + 1
    try:
        yield
    finally:
        if norm is not None:
            norm.valid = None


def _stacked_pos_conv(model: nn.Module) -> list[nn.Module]:
    """The layers of a multi-layer positional convolution (data2vec-audio has 5); [] otherwise."""
    layers = getattr(getattr(getattr(model, "encoder", None), "pos_conv_embed", None), "layers", None)
    return list(layers) if layers is not None and len(layers) > 1 else []


@contextmanager
def masked_pos_conv(model: nn.Module, n_frames: torch.Tensor, padded: bool):
    """Within the block, padded frames are zeroed between the layers of a stacked positional conv.

    The encoder zeroes padded frames before its positional convolution, which makes one conv
    layer exact; a stack of them (data2vec-audio) would carry values into the padding and back
    into valid frames, so each layer's output but the last is masked too. n_frames `(batch,)`:
    valid frames per item. A no-op for single-layer models or when nothing is padded.
    """
    layers = _stacked_pos_conv(model) if padded else []

    def zero_padding(module, inputs, output):  # output: (batch, hidden, frames)
        frames = torch.arange(output.shape[-1], device=output.device)
        valid = frames[None, :] < n_frames.to(output.device)[:, None]
        return output.masked_fill(~valid[:, None, :], 0.0)

    hooks = [layer.register_forward_hook(zero_padding) for layer in layers[:-1]]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _symmetric_depthwise_convs(model: nn.Module) -> list[nn.Module]:
    """The depthwise convolutions of conformer blocks that look ahead in time (wav2vec2-conformer); [] otherwise.

    w2v-BERT's are causal and masked by transformers itself, so they are left alone.
    """
    layers = getattr(getattr(model, "encoder", None), "layers", None) or []
    convs = [getattr(getattr(layer, "conv_module", None), "depthwise_conv", None) for layer in layers]
    return [c for c in convs if c is not None and c.padding[0] > 0]


@contextmanager
def masked_conformer_conv(model: nn.Module, n_frames: torch.Tensor, padded: bool):
    """Within the block, padded frames are zeroed at the input of each conformer depthwise convolution.

    Its kernel spans both directions, so the last valid frames would otherwise read the padded
    frames (non-zero after the block's feed-forward). n_frames `(batch,)`: valid frames per item.
    A no-op for models without such convolutions, or when nothing is padded.
    """
    convs = _symmetric_depthwise_convs(model) if padded else []

    def zero_padding(module, inputs):  # inputs[0]: (batch, channels, frames)
        x = inputs[0]
        valid = torch.arange(x.shape[-1], device=x.device)[None, :] < n_frames.to(x.device)[:, None]
        return (x.masked_fill(~valid[:, None, :], 0.0),)

    hooks = [conv.register_forward_pre_hook(zero_padding) for conv in convs]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def normalize_waveform(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (as Wav2Vec2FeatureExtractor's do_normalize), float32."""
    wave = wave.astype(np.float32, copy=False)
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


def normalize_rows(batch: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """`normalize_waveform` of each row's first n[i] samples of a zero-padded (B, S) batch; padding stays 0."""
    valid = (torch.arange(batch.shape[1], device=batch.device)[None, :] < n[:, None]).to(batch.dtype)
    count = n.to(batch.dtype)[:, None]
    mean = batch.sum(dim=1, keepdim=True) / count
    centred = (batch - mean) * valid
    var = (centred ** 2).sum(dim=1, keepdim=True) / count
    return centred / torch.sqrt(var + 1e-7)


@torch.inference_mode()
def hidden_states(backbone: Backbone, waves: Sequence[np.ndarray], *, device=None,
                  autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a batch of waveforms through the backbone, padded but exact.

    waves: 1-D float32 arrays at `backbone.sample_rate` (not yet normalised); where that is None
    (openSMILE at the files' own rates), `featstore.audio.RatedWave`s carrying their rates.
    Returns `(states, lengths)`: states `(L+1, batch, frames, hidden)` (padded frames are
    garbage; use lengths), lengths `(batch,)` valid output frames per item.
    """
    if backbone.input_kind == "functionals":
        from featstore.backbones.opensmile import functionals

        return functionals(backbone.front_end, waves, backbone.sample_rate)
    device = device or next(backbone.model.parameters()).device
    exact = autocast_dtype is None and next(backbone.model.parameters()).dtype == torch.float32
    with full_float32(device, exact):
        if backbone.input_kind == "log-mel":
            from featstore.backbones.logmel import logmel_states

            return logmel_states(backbone, waves, device, autocast_dtype)
        return _waveform_states(backbone, waves, device, autocast_dtype)


def _waveform_states(backbone: Backbone, waves: Sequence[np.ndarray], device,
                     autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`hidden_states` for waveform models (wav2vec2 and its family)."""
    model = backbone.model
    on_gpu = torch.device(device).type == "cuda"
    if backbone.do_normalize and not on_gpu:
        waves = [normalize_waveform(w) for w in waves]
    n = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(n.max()), dtype=torch.float32, pin_memory=on_gpu)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    lengths = backbone.output_lengths(n)
    padded = bool((n != n.max()).any())
    mask = (torch.arange(batch.shape[1])[None, :] < n[:, None]).long() if padded else None
    batch = batch.to(device, non_blocking=on_gpu)
    if backbone.do_normalize and on_gpu:  # on the GPU: per-clip numpy passes held the GPU up between batches
        batch = normalize_rows(batch, n.to(device))
    mask = mask.to(device) if mask is not None else None
    if next(model.parameters()).dtype != torch.float32:
        batch = batch.to(next(model.parameters()).dtype)
    with masked_group_norm(model, n, padded), masked_pos_conv(model, lengths, padded), \
            masked_conformer_conv(model, lengths, padded), torch.autocast(
            device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(batch, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states), lengths
