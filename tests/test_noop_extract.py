"""A no-op `ser extract` answers from the model's files and the store, without torch (issue 24 start-up),
and never says "up to date" when the full run would do anything."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from featstore.corpora import Manifest
from featstore.extract import extract_manifest, store_config
from featstore.plan import quick_config, quick_up_to_date
from tests.test_device_check import tiny_corpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def done(tmp_path, tiny_models):
    model = shutil.copytree(tiny_models["group"], tmp_path / "tiny")
    manifest = tiny_corpus(tmp_path / "audio", lengths=(3000, 5000, 4000, 6000))
    res = extract_manifest(manifest, model=str(model), cache=tmp_path / "cache", device="cpu", frames="2",
                           progress=False)
    return model, manifest, res.store


def quick(model, manifest, store, **kw):
    options = dict(dtype="float32", frames="2", max_seconds=30.0) | kw
    return quick_up_to_date(manifest, store, quick_config(str(model), **options))


def test_quick_config_is_the_fingerprint_extract_records(done):
    from featstore.backbones.runtime import model_info
    from featstore.store import FINGERPRINT_KEYS

    model, _, _ = done
    full = store_config(model_info(str(model)), "float32", [2], 30.0)
    assert quick_config(str(model), dtype="float32", frames="2", max_seconds=30.0) == {k: full[k] for k in FINGERPRINT_KEYS}


def test_up_to_date_only_when_the_full_run_would_do_nothing(done, monkeypatch):
    model, manifest, store = done
    assert quick(model, manifest, store) == 4
    assert quick(model, manifest, store, frames="1,2") is None          # frames to add
    assert quick(model, manifest, store, frames="none") is None         # frames are only ever added: full path refuses
    assert quick(model, manifest, store, max_seconds=10.0) is None      # another configuration
    assert quick(model, manifest, store, dtype="bfloat16") is None
    grown = tiny_corpus(Path(manifest.root).parent / "more", lengths=(2000,))
    bigger = Manifest("toy", manifest.root, [*manifest.utterances, *[dataclasses.replace(u, id="toy-new") for u in grown]], [])
    assert quick(model, bigger, store) is None                          # a new utterance
    relabelled = dataclasses.replace(manifest, utterances=[dataclasses.replace(u, label="sad") for u in manifest])
    assert quick(model, relabelled, store) is None                      # labels to bring up to date
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")                   # other weights
    assert quick(model, manifest, store) is None
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert quick_config("facebook/wav2vec2-base", dtype="float32", frames="none", max_seconds=30.0) is None


def test_ser_extract_no_op_imports_no_torch(done, tmp_path):
    model, manifest, store = done
    code = ("import sys, cli\n"
            "try:\n    cli.app(sys.argv[1:], prog_name='ser')\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")
    listing = tmp_path / "toy.csv"
    listing.write_text("path,label,speaker\n" + "".join(f"{u.path},happy,{u.speaker}\n" for u in manifest),
                       encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), SER_CONFIG=str(tmp_path / "none.toml"), COLUMNS="200")
    args = ["extract", "--corpus", "csv", "--root", str(listing), "--model", str(model), "--cache",
            str(tmp_path / "cache"), "--device", "cpu", "--frames", "2"]
    first = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert "extracted 4 utterances" in first.stdout, first.stdout + first.stderr
    again = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert "up to date (4 utterances), nothing to extract" in again.stdout, again.stdout + again.stderr
    assert "TORCH False" in again.stderr and "TORCH True" in first.stderr
