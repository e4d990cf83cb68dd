"""Shared fixtures: the EmoBox reference folder (ground truth nobody here wrote)."""

from __future__ import annotations

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
