"""Helpers shared by the tests (importable as `tests.helpers` under plain `pytest` and `python -m pytest`).

The EmoBox reference is ground truth nobody here wrote. When `../shared/reference/emobox` sits
beside the checkout it is read as published; in a clone without it, the same rows and folds are
rebuilt from the packaged copy (`featstore/data/emobox.json.gz`), so no test skips for its absence.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMOBOX_REFERENCE = Path(os.environ.get("SER_EMOBOX_REFERENCE", REPO.parent / "shared" / "reference" / "emobox"))


def shared_reference_present() -> bool:
    return (EMOBOX_REFERENCE / "ravdess.jsonl").exists()


def read_emobox(corpus: str) -> tuple[list[dict], dict]:
    """(rows of <corpus>.jsonl, <corpus>.folds.json) as EmoBox publishes them.

    Rows carry `key`, `wav`, `sample_rate`, `num_frame`, `length` and `emo`; folds carry
    `label_map` and `test_keys_by_fold`.
    """
    if shared_reference_present():
        text = (EMOBOX_REFERENCE / f"{corpus}.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line]
        folds = json.loads((EMOBOX_REFERENCE / f"{corpus}.folds.json").read_text(encoding="utf-8"))
        return rows, folds
    return packaged_emobox(corpus)


def packaged_emobox(corpus: str) -> tuple[list[dict], dict]:
    """The same (rows, folds) rebuilt from the table shipped in the package."""
    from featstore.reference import reference

    ref = reference(corpus)
    rows = [dict(key=f.key, wav=f"downloads/{corpus}/{f.relpath}", sample_rate=f.sample_rate,
                 num_frame=float(f.num_frames), length=f.duration, emo=f.label_raw) for f in ref.files]
    by_fold: dict[str, list[str]] = {name: [] for name in ref.fold_names}
    for f in ref.files:
        if f.test_fold:
            by_fold[ref.fold_names[f.test_fold - 1]].append(f.key)
    return rows, dict(label_map=ref.label_map, test_keys_by_fold=by_fold)


# attention_dropout 0: with dropout, torch's CPU attention takes its slow path (8x: 14 ms against 1.9 ms per call
# at 8 x 250 frames), which was a third of the fine-tuning tests' time; the other dropouts stay at their defaults.
TINY = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=20,
            conv_dim=(32, 32, 32), conv_stride=(4, 4, 4), conv_kernel=(8, 8, 8),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, attention_dropout=0.0)


def build_tiny_model(directory: Path, kind: str = "group", seed: int = 0) -> Path:
    """Save a tiny random wav2vec2 with save_pretrained: "group" (base-style) or "layer" (large-style)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    kw = dict(TINY)
    if kind == "layer":
        kw.update(feat_extract_norm="layer", do_stable_layer_norm=True)
    model = Wav2Vec2Model(Wav2Vec2Config(**kw)).eval()
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=kind == "layer").save_pretrained(directory)
    return directory


def build_tiny_data2vec(directory: Path, seed: int = 0) -> Path:
    """A tiny data2vec-audio (LayerNorm feature encoder, a stack of 3 positional conv layers)."""
    import torch
    from transformers import Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    kw = {k: v for k, v in TINY.items() if k != "num_conv_pos_embeddings"}
    config = Data2VecAudioConfig(**kw, num_conv_pos_embeddings=3, conv_pos_kernel_size=5)
    Data2VecAudioModel(config).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(directory)
    return directory


def write_wav(path: Path, sample_rate: int = 16000, frames: int = 160) -> Path:
    """A silent 16-bit WAV of `frames` samples."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), sample_rate, format="WAV", subtype="PCM_16")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
