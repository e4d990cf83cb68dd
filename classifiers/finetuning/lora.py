"""LoRA adapters (through `peft`) for `ser finetune --adapter lora[:r=8,alpha=16,targets=q,v]`.

Parameter-efficient fine-tuning: the backbone's weights stay as they are and every encoder layer's
attention projections named by `targets` get a low-rank update (Hu et al. 2021, LoRA); the
pooling head and the classifier train in full. Only the adapters and the head leave the run, so an
export is a small fraction of the model (a few percent at most), and names the base model and the
sha256 of its weights, which loading checks: an adapter only means something on the weights it was
trained on.

Spec (`--adapter`, one string, checked without importing torch or peft):

    lora                                    the defaults: r=8, alpha=16, dropout=0, targets=q,v
    lora:r=4,alpha=8,targets=q,k,v,o        keys r (rank, >= 1), alpha (scale, > 0), dropout
                                            ([0, 1)), targets (q, k, v, o: the attention's query,
                                            key, value and output projections)

Short target names map to each family's module names (`PROJECTIONS`): q_proj / k_proj / v_proj /
out_proj in wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech and Whisper encoders, linear_q /
linear_k / linear_v / linear_out in wav2vec2-conformer and w2v-BERT 2.0; only
`encoder.layers.<i>.<attention>.<projection>` (Whisper: `layers.<i>.self_attn.<projection>`) is adapted.

An adapter export (`<fold>/model/` of a LoRA run; written and read by `classifiers.finetuning.heads`,
`EmotionClassifier.save_pretrained` / `from_pretrained`, from the pieces here):

    config.json                 ser's classifier config (labels, pooling, the backbone's config) with
                                `adapter`: the spec, peft's target pattern, the base model (hub id or
                                a local directory's absolute path) and its weights sha256
    adapter_config.json         peft's LoraConfig
    adapter_model.safetensors   the lora_A / lora_B weights (peft's save_pretrained)
    head.safetensors            the pooling head and the classifier
    preprocessor_config.json    how to feed it (ser's per-clip normalisation)
    README.md                   the model card (it says the directory is an adapter)

`classifiers.finetuning.heads.load_adapter_export` rebuilds the classifier on the base (found as saved probes
find theirs: `featstore.backbones.runtime.locate_model`, or `--backbone DIR`), refusing a base whose weights
hash differs.

Layering: this module is below `classifiers.finetuning.heads` and imports nothing of it (no import cycle);
the functions that take a classifier (`apply_lora`, `head_state`, `trained_state`) take an
`EmotionClassifier` by its parts (`backbone`, `pooling`, `classifier`, `config`). Light on import:
torch and peft are imported inside the functions that need them (the spec is checked at parse time).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from featstore.errors import SerError

if TYPE_CHECKING:
    from torch import nn

#: short target names -> the module names families give that projection
PROJECTIONS: dict[str, tuple[str, ...]] = {"q": ("q_proj", "linear_q"), "k": ("k_proj", "linear_k"),
                                           "v": ("v_proj", "linear_v"), "o": ("out_proj", "linear_out")}
KEYS = ("r", "alpha", "dropout", "targets")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
INSTALL = "pip install 'ser[lora]'"


class AdapterError(SerError):
    """An --adapter spec, a backbone or an adapter export that cannot be used; the message says why."""


@dataclass(frozen=True)
class LoraSpec:
    """A parsed `--adapter lora:...` spec."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")

    def describe(self) -> str:
        """The canonical spelling: `lora:r=8,alpha=16,dropout=0,targets=q,v` (plan.json and the run hash)."""
        return (f"lora:r={self.r},alpha={_number(self.alpha)},dropout={_number(self.dropout)},"
                f"targets={','.join(self.targets)}")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def parse_adapter(spec: str | None) -> LoraSpec | None:
    """The spec as a `LoraSpec` (None for none); AdapterError naming --adapter and the fix otherwise."""
    if spec is None or not str(spec).strip() or str(spec).strip().lower() == "none":
        return None
    text = str(spec).strip()
    method, _, rest = text.partition(":")

    def bad(what: str) -> AdapterError:
        return AdapterError(f"--adapter {text!r}: {what}; e.g. lora or lora:r=8,alpha=16,targets=q,v")

    if method.strip().lower() != "lora":
        raise bad(f"unknown method {method!r} (only lora)")
    values: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in rest.split(",")) if rest.strip() else ():
        if "=" in token:
            key, _, value = (s.strip() for s in token.partition("="))
            key = key.lower()
            if key not in KEYS:
                raise bad(f"unknown key {key!r} (keys: {', '.join(KEYS)})")
            if key in values:
                raise bad(f"{key} given twice")
            values[key] = [value]
        elif key == "targets" and token:
            values[key].append(token)
        else:
            raise bad(f"{token!r} is not key=value")
    kw = {}
    if "r" in values:
        try:
            kw["r"] = int(values["r"][0])
        except ValueError:
            kw["r"] = 0
        if kw["r"] < 1:
            raise bad(f"r={values['r'][0]} must be a positive integer (the adapters' rank)")
    if "alpha" in values:
        try:
            kw["alpha"] = float(values["alpha"][0])
        except ValueError:
            kw["alpha"] = float("nan")
        if not kw["alpha"] > 0 or kw["alpha"] == float("inf"):
            raise bad(f"alpha={values['alpha'][0]} must be a positive number (the update's scale is alpha/r)")
    if "dropout" in values:
        try:
            kw["dropout"] = float(values["dropout"][0])
        except ValueError:
            kw["dropout"] = -1.0
        if not 0 <= kw["dropout"] < 1:
            raise bad(f"dropout={values['dropout'][0]} must lie in [0, 1)")
    if "targets" in values:
        names = [t.lower() for t in values["targets"] if t]
        unknown = [t for t in names if t not in PROJECTIONS]
        if unknown or not names:
            raise bad(f"targets {','.join(unknown) or '(none)'} are not attention projections: use any of "
                      f"{', '.join(PROJECTIONS)} (query, key, value, output)")
        kw["targets"] = tuple(t for t in PROJECTIONS if t in names)
    return LoraSpec(**kw)


def peft_available() -> bool:
    """Whether `peft` can be imported (found without importing it: this runs at parse time)."""
    if "peft" in sys.modules:
        return sys.modules["peft"] is not None
    try:
        return importlib.util.find_spec("peft") is not None
    except (ImportError, ValueError):
        return False


def require_peft(spec: str | None) -> None:
    """AdapterError naming the install line when an adapter is asked for and peft is missing."""
    if spec is not None and parse_adapter(spec) is not None and not peft_available():
        raise AdapterError(f"--adapter {spec}: LoRA needs the peft package, which is not installed here: {INSTALL}")


def target_pattern(backbone, spec: LoraSpec) -> str:
    """peft's `target_modules` regex for `backbone`: its encoder layers' attention projections named
    by `spec.targets`, under this family's module names (AdapterError when it has none of them).

    The blocks are `encoder.layers.<i>` in wav2vec2-style models and w2v-BERT 2.0, `layers.<i>` in a
    Whisper encoder (the backbone is the encoder itself), e.g. `layers.0.self_attn.q_proj`."""
    names = [n for n, _ in backbone.named_modules()]
    blocks = next((b for b in (r"encoder\.layers", "layers")
                   if any(re.fullmatch(rf"{b}\.\d+\.\w+\.\w+", n) for n in names)), r"encoder\.layers")
    chosen = []
    for t in spec.targets:
        found = [p for p in PROJECTIONS[t] if any(re.fullmatch(rf"{blocks}\.\d+\.\w+\.{p}", n) for n in names)]
        if not found:
            kind = getattr(getattr(backbone, "config", None), "model_type", type(backbone).__name__)
            raise AdapterError(f"--adapter targets={t}: the {kind} backbone has no encoder attention projection "
                               f"named {' or '.join(PROJECTIONS[t])}; LoRA needs a transformer encoder of a family "
                               f"`ser models` lists")
        chosen.append(found[0])
    return rf"{blocks}\.\d+\.\w+\.({'|'.join(chosen)})"


@contextmanager
def quiet_peft():
    """peft asks transformers 5 for `is_gradient_checkpointing`, which warns (FutureWarning) on every
    wrap: not the user's concern, so not printed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def parameter_counts(model) -> dict:
    """{"trainable_params", "total_params"} of a torch module (parameters shared once)."""
    params = list(model.parameters())
    return {"trainable_params": int(sum(p.numel() for p in params if p.requires_grad)),
            "total_params": int(sum(p.numel() for p in params))}


def apply_lora(clf: nn.Module, spec: str | LoraSpec, *, seed: int = 0) -> nn.Module:
    """Wrap `clf.backbone` (`clf`: a `classifiers.finetuning.heads.EmotionClassifier`) with LoRA adapters (peft's get_peft_model): every backbone weight frozen
    but the adapters, the pooling head and classifier trainable. The adapters' initialisation
    follows `seed` (lora_B starts at zero, so the model's function is unchanged at first).
    Records the adapter (spec, target pattern, base model and its weights sha256) in
    `clf.config.adapter`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from featstore.backbones.runtime import is_local_id

    parsed = parse_adapter(spec) if isinstance(spec, str) else spec
    if parsed is None:
        return clf
    pattern = target_pattern(clf.backbone, parsed)
    for p in clf.backbone.parameters():
        p.requires_grad_(False)
    base = clf.config.backbone_id
    if is_local_id(base) and Path(base).expanduser().is_dir():
        base = str(Path(base).expanduser().resolve())
    torch.manual_seed(seed)
    with quiet_peft():
        clf.backbone = get_peft_model(clf.backbone, LoraConfig(
            r=parsed.r, lora_alpha=parsed.alpha, lora_dropout=parsed.dropout, target_modules=pattern, bias="none",
            base_model_name_or_path=base))
    for module in (clf.pooling, clf.classifier):
        for p in module.parameters():
            p.requires_grad_(True)
    clf.config.adapter = {"method": "lora", "spec": parsed.describe(), "target_modules": pattern,
                          "base_model": base, "base_weights_sha256": clf.config.extra.get("backbone_weights_sha256")}
    return clf


def head_state(clf: nn.Module) -> dict:
    """The pooling head's and the classifier's tensors (ser's names), on the CPU."""
    return {k: v.detach().to("cpu").contiguous() for k, v in clf.state_dict().items()
            if not k.startswith("backbone.")}


def trained_state(clf: nn.Module, state: dict | None = None) -> dict:
    """The entries of `state` (default: `clf.state_dict()`) a LoRA run trains: the parameters that require
    grad (the adapters) and everything outside the backbone (pooling head, classifier). What the run's
    Trainer checkpoints hold: resuming loads them over the same frozen base (`finetune`'s SerTrainer)."""
    state = clf.state_dict() if state is None else state
    trained = {n for n, p in clf.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trained or not k.startswith("backbone.")}


def is_export(directory: str | Path) -> bool:
    """Whether `directory` holds the adapter and head files of an adapter export."""
    directory = Path(directory)
    return all((directory / n).is_file() for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_WEIGHTS))


def check_adapter_field(adapter, where) -> None:
    """AdapterError unless config.json's `adapter` is a recorded LoRA adapter (or None)."""
    if adapter is None:
        return
    ok = (isinstance(adapter, dict) and adapter.get("method") == "lora"
          and all(isinstance(adapter.get(k), str) and adapter.get(k) for k in ("spec", "target_modules", "base_model"))
          and isinstance(adapter.get("base_weights_sha256"), (str, type(None))))
    if not ok:
        raise AdapterError(f"{where}: field 'adapter' {adapter!r} is not a recorded LoRA adapter (method, spec, "
                           f"target_modules, base_model, base_weights_sha256); re-export the model with `ser finetune`")
    parse_adapter(adapter["spec"])
