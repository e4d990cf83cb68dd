"""Shared fixtures: the EmoBox reference folder (ground truth nobody here wrote)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMOBOX_REFERENCE = Path(os.environ.get("SER_EMOBOX_REFERENCE", REPO.parent / "shared" / "reference" / "emobox"))


@pytest.fixture(scope="session")
def emobox_dir() -> Path:
    """`../shared/reference/emobox` beside the checkout (CI has it there)."""
    if not (EMOBOX_REFERENCE / "ravdess.jsonl").exists():
        pytest.skip(f"EmoBox reference data not found at {EMOBOX_REFERENCE}")
    return EMOBOX_REFERENCE


def read_emobox(emobox_dir: Path, corpus: str) -> tuple[list[dict], dict]:
    """(rows of <corpus>.jsonl, <corpus>.folds.json) exactly as EmoBox publishes them."""
    rows = [json.loads(line) for line in (emobox_dir / f"{corpus}.jsonl").read_text(encoding="utf-8").splitlines() if line]
    folds = json.loads((emobox_dir / f"{corpus}.folds.json").read_text(encoding="utf-8"))
    return rows, folds


TINY = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=20,
            conv_dim=(32, 32, 32), conv_stride=(4, 4, 4), conv_kernel=(8, 8, 8),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"group": dir, "layer": dir} of tiny wav2vec2 models saved with save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    return {kind: build_tiny_model(root / f"tiny-{kind}", kind) for kind in ("group", "layer")}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and two threads on busy shared cores spin-wait (4x slower)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_wav(path: Path, sample_rate: int = 16000, frames: int = 160) -> Path:
    """A silent 16-bit WAV of `frames` samples."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), sample_rate, format="WAV", subtype="PCM_16")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
