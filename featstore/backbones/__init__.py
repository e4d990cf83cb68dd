"""The backbone families ser extracts from: one table, which `ser models` prints.

A family is a set of transformers `model_type`s (or openSMILE's feature sets) sharing an input
kind and a layer convention. Loading and running them is `featstore.backbones.runtime`; the front-ends
that are not a waveform live beside this file, one module per kind: `logmel` (Whisper,
w2v-BERT 2.0) and `opensmile` (eGeMAPS / ComParE functionals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint of a family."""

    model_id: str
    blocks: int                 # transformer blocks L: stored layers are 0..L (openSMILE: 0 blocks, layer 0)
    hidden_size: int


@dataclass(frozen=True)
class Family:
    """Models that ser treats alike: same input kind, same layer numbering."""

    name: str
    model_types: tuple[str, ...]   # transformers config.model_type values (openSMILE: "opensmile")
    input_kind: str                # "waveform" | "log-mel" | "functionals"
    layers: str                    # what layer k is, in one line
    known: tuple[KnownModel, ...]


_WAVEFORM_LAYERS = ("k = hidden_states[k], k = 0..L; 0 = CNN features after projection and positional conv "
                    "(input to block 1); L = last block (large / stable-layer-norm models: before the final "
                    "LayerNorm)")

FAMILIES: tuple[Family, ...] = (
    Family("wav2vec2", ("wav2vec2",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("facebook/wav2vec2-base", 12, 768),
        KnownModel("facebook/wav2vec2-large-xlsr-53", 24, 1024),
        KnownModel("facebook/wav2vec2-large-robust", 24, 1024),
        KnownModel("facebook/wav2vec2-xls-r-300m", 24, 1024))),
    Family("hubert", ("hubert",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("facebook/hubert-base-ls960", 12, 768),
        KnownModel("facebook/hubert-large-ll60k", 24, 1024))),
    Family("wavlm", ("wavlm",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("microsoft/wavlm-base-plus", 12, 768),
        KnownModel("microsoft/wavlm-large", 24, 1024))),
    Family("data2vec-audio", ("data2vec-audio",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("facebook/data2vec-audio-base", 12, 768),
        KnownModel("facebook/data2vec-audio-large", 24, 1024))),
    Family("unispeech", ("unispeech",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("microsoft/unispeech-large-1500h-cv", 24, 1024),)),
    Family("unispeech-sat", ("unispeech-sat",), "waveform", _WAVEFORM_LAYERS, (
        KnownModel("microsoft/unispeech-sat-base-plus", 12, 768),
        KnownModel("microsoft/unispeech-sat-large", 24, 1024))),
    Family("wav2vec2-conformer", ("wav2vec2-conformer",), "waveform",
           "k = hidden_states[k], k = 0..L; 0 = CNN features after projection (input to conformer block 1); "
           "L = last block, before the encoder's final LayerNorm", (
               KnownModel("facebook/wav2vec2-conformer-rel-pos-large", 24, 1024),
               KnownModel("facebook/wav2vec2-conformer-rope-large", 24, 1024))),
    Family("w2v-bert-2.0", ("wav2vec2-bert",), "log-mel",
           "k = hidden_states[k], k = 0..L; 0 = projected log-mel (stacked to 50 frames/s, input to conformer "
           "block 1); L = last block", (
               KnownModel("facebook/w2v-bert-2.0", 24, 1024),)),
    Family("whisper", ("whisper",), "log-mel",
           "k = encoder hidden_states[k], k = 0..L; 0 = conv front-end + positions (input to block 1); L = after "
           "the encoder's final LayerNorm; only the 50 frames/s of real audio, never the 30 s padding", (
               KnownModel("openai/whisper-tiny", 4, 384),
               KnownModel("openai/whisper-base", 6, 512),
               KnownModel("openai/whisper-small", 12, 768),
               KnownModel("openai/whisper-medium", 24, 1024),
               KnownModel("openai/whisper-large-v3", 32, 1280))),
    Family("opensmile", ("opensmile",), "functionals",
           "one layer, k = 0: the feature set's functionals over the whole utterance (one vector, std 0)", (
               KnownModel("opensmile:eGeMAPSv02", 0, 88),
               KnownModel("opensmile:ComParE_2016", 0, 6373))),
)

#: the backbone when neither --model nor config `model` names one
DEFAULT_MODEL = "facebook/wav2vec2-base"

#: transformers model types ser can load
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES if f.input_kind != "functionals"
                                               for t in f.model_types)


def family_of(model_type: str) -> Family | None:
    """The family of a transformers `model_type` (or "opensmile"); None when ser does not support it."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def supported_families() -> str:
    """One line naming every family and its model types, for error messages."""
    return ", ".join(f.name if f.model_types == (f.name,) else f"{f.name} ({', '.join(f.model_types)})"
                     for f in FAMILIES if f.input_kind != "functionals") + ", opensmile:<feature set>"


def local_copy(model_id: str) -> Path | None:
    """Where a model can be loaded from without the network: a directory, or the HF cache; else None."""
    if model_id.startswith("opensmile:"):
        from importlib.util import find_spec

        spec = find_spec("opensmile")  # the wheel carries the binaries: installed means available offline
        return Path(spec.origin).parent if spec and spec.origin else None
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path if (path / "config.json").exists() else None
    if path.exists():  # a file is no model
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # HFValidationError: neither a directory nor a valid hub id
        return None
    return Path(found).parent if isinstance(found, str) else None


def models_table() -> list[dict]:
    """One row per known model: family, model, layers (stored, L+1), hidden_size, local (path or None)."""
    return [dict(family=f.name, model=m.model_id, layers=m.blocks + 1, hidden_size=m.hidden_size,
                 local=local_copy(m.model_id)) for f in FAMILIES for m in f.known]


def describe_model(model_id: str) -> dict:
    """Any model id or directory, as a `models_table` row; family and sizes read from its local copy's
    config.json (no torch, no transformers: `ser models` answers at once).

    Without a local copy they are None; a local copy whose config cannot be read, or whose model type
    ser does not support, gives `error` instead.
    """
    import json

    row = dict(family=None, model=model_id, layers=None, hidden_size=None, local=local_copy(model_id), error=None)
    if row["local"] is None:
        return row
    if model_id.startswith("opensmile:"):
        known = next((m for f in FAMILIES for m in f.known if m.model_id == model_id.partition("@")[0]), None)
        return {**row, "family": "opensmile", "layers": 1, "hidden_size": known.hidden_size if known else None}
    try:
        config = json.loads((Path(row["local"]) / "config.json").read_text())
        model_type = config["model_type"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {**row, "error": f"{row['local']}: not a transformers model directory (config.json: {e})"}
    family = family_of(model_type)
    if family is None or family.input_kind == "functionals":
        return {**row, "error": f"{model_id}: model type {model_type!r} is not supported; ser supports "
                                f"{supported_families()}"}
    whisper = model_type == "whisper"  # its encoder: encoder_layers blocks of d_model
    blocks, hidden = config.get("encoder_layers" if whisper else "num_hidden_layers"), config.get(
        "d_model" if whisper else "hidden_size")
    return {**row, "family": family.name, "layers": blocks + 1 if isinstance(blocks, int) else None,
            "hidden_size": hidden}
