"""Label aliases for CSV corpora (issue 23, item 6): IEMOCAP/CREMA-D codes and EmoBox's names become
canonical labels, unknown labels are one warning line with counts, and a CSV labelled with codes
trains cross-corpus on every class it shares (it used to train on calm vs sad only)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from featstore import labels as L
from featstore.corpora import load_manifest
from featstore.corpora.csvcorpus import canonical_label
from tests.helpers import write_wav

runner = CliRunner()
MODEL = "toy/model"
RAVDESS = ["angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
CODES = {"angry": "ang", "calm": "calm", "disgust": "dis", "fear": "fea", "happy": "hap", "neutral": "neu",
         "sad": "sad", "surprise": "sur"}


def flat(text: str) -> str:
    return " ".join(text.split())


def test_iemocap_and_cremad_codes_and_spellings():
    got = {code: canonical_label(code) for code in
           ("hap", "ang", "neu", "sad", "fea", "dis", "sur", "exc", "fru", "oth", "ANG", "HAP", " Neu ")}
    assert got == {"hap": "happy", "ang": "angry", "neu": "neutral", "sad": "sad", "fea": "fear", "dis": "disgust",
                   "sur": "surprise", "exc": "happy", "fru": "frustrated", "oth": "other", "ANG": "angry",
                   "HAP": "happy", " Neu ": "neutral"}
    spellings = ("happiness", "anger", "Angry", "fearful", "disgusted", "Surprised", "sadness", "joy", "neutrality",
                 "boredem", "bored", "pleasant_surprise", "pain, groan", "UnKnown", "Excited")
    assert [canonical_label(s) for s in spellings] == [
        "happy", "angry", "angry", "fear", "disgust", "surprise", "sad", "happy", "neutral", "boredom", "boredom",
        "surprise", "pain", "other", "excited"]
    # one- and two-letter codes mean different classes in different corpora: never aliases
    assert [L.canonical_name(c) for c in ("a", "s", "S", "sa", "su", "gio")] == [None] * 6
    assert canonical_label("Frohsinn") == "frohsinn"                  # unknown: kept, lowercased
    assert set(L.ALIASES.values()) <= set(L.CANONICAL)


def test_aliases_agree_with_emobox_on_every_real_code():
    """Every label code EmoBox's metadata holds (3+ letters) that the table reads maps where EmoBox maps it,
    and every label name EmoBox uses is read."""
    from featstore.reference import reference, reference_corpora

    checked = 0
    for corpus in reference_corpora():
        ref = reference(corpus)
        label_map = ref.label_map or {}
        for name in label_map.values():
            assert L.canonical_name(name) == L.EMOBOX_TO_CANONICAL[name], (corpus, name)
        for raw in {f.label_raw for f in ref.files}:
            got = L.canonical_name(raw)
            emobox = label_map.get(raw) or label_map.get(raw.capitalize())  # EMO-DB: "neutral" vs "Neutral"
            if got is not None and emobox is not None:
                assert got == L.EMOBOX_TO_CANONICAL[emobox], (corpus, raw, got, emobox)
                checked += 1
    assert checked >= 80  # IEMOCAP's codes, CREMA-D's, MELD's, RESD's, RAVDESS', ... all compared


def _csv(tmp_path: Path, rows: list[tuple[str, str]], name: str = "my.csv") -> Path:
    lines = ["path,label,speaker"]
    for i, (label, speaker) in enumerate(rows):
        write_wav(tmp_path / "audio" / f"u{i:03d}.wav", 16000, 1600)
        lines.append(f"audio/u{i:03d}.wav,{label},{speaker}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_codes_load_canonical_without_warning(tmp_path):
    listing = _csv(tmp_path, [(code, f"s{i % 2}") for i, code in enumerate(CODES.values())])
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.LabelWarning)
        m = load_manifest("csv", listing)
    assert sorted(u.label for u in m) == RAVDESS
    assert {u.label_raw for u in m} == set(CODES.values()) and m.problems == []


def test_unknown_labels_are_one_warning_with_counts_and_xxx_rows_are_problems(tmp_path):
    rows = [("hap", "a"), ("Frohsinn", "a"), ("frohsinn", "b"), ("excitement", "b"), ("xxx", "a"), ("neu", "b")]
    listing = _csv(tmp_path, rows)
    with pytest.warns(L.LabelWarning) as caught:
        m = load_manifest("csv", listing)
    (w,) = [str(x.message) for x in caught if issubclass(x.category, L.LabelWarning)]
    assert "\n" not in w and "frohsinn (2), excitement (1)" in w and str(listing) in w
    assert "ser corpora --labels" in w and "hap" not in w
    assert sorted(u.label for u in m) == ["excitement", "frohsinn", "frohsinn", "happy", "neutral"]
    (p,) = m.problems
    assert p.path.endswith("my.csv:6") and "label xxx is no emotion" in p.reason and "line 6" in p.reason


def test_extract_prints_the_warning_before_extracting(tmp_path, tiny_models, one_torch_thread, monkeypatch):
    """`ser extract` of a CSV corpus: the unknown labels are one `warning:` line, the store holds canonical labels."""
    from featstore.store import open_store

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    listing = _csv(tmp_path, [("hap", "a"), ("ANG", "a"), ("huh", "b"), ("sad", "b")])
    r = runner.invoke(app, ["extract", "--corpus", "csv", "--root", str(listing), "--model", str(tiny_models["group"]),
                            "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    warning = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "huh (1)" in warning[0], r.output
    assert r.output.index("warning:") < r.output.index("extracted 4 utterances")
    (store,) = (tmp_path / "cache").glob("*/my.h5")
    fs = open_store(store)
    assert sorted(u.label for u in fs.utterances) == ["angry", "happy", "huh", "sad"]


def _store(cache: Path, utts, corpus: str, seed: int) -> Path:
    """A finished store of `utts` for MODEL with a class signal shared across corpora (layer 1)."""
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(len(RAVDESS), 12)) * 2
    X = np.stack([np.stack([rng.normal(size=12), means[RAVDESS.index(u.label)] + rng.normal(size=12)])
                  for u in utts]).astype(np.float32)
    n = len(utts)
    config = {"model_id": MODEL, "frame_layers": [], "num_layers": 2, "hidden_size": 12, "weights_sha256": "ab" * 32}
    path = store_path(cache, model_slug(MODEL), corpus)
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(list(utts), X, np.abs(X), np.full(n, 16000), np.full(n, 50)),
               config)
    assert assemble(path, config, corpus=corpus)
    return path


def test_probe_trains_a_code_labelled_csv_on_every_shared_class(tmp_path, monkeypatch):
    """The issue's repro: a CSV labelled ang/hap/neu/sad/fea/dis/sur/calm, `ser probe --train my --test ravdess`.
    Before the alias table it trained on calm vs sad only; now on all 8 classes RAVDESS has."""
    from featstore.corpora.base import Utterance

    monkeypatch.chdir(tmp_path)
    rows = [(CODES[label], f"s{s}") for s in range(4) for label in RAVDESS for _ in range(2)]
    mine = load_manifest("csv", _csv(tmp_path, rows)).utterances
    assert {u.label for u in mine} == set(RAVDESS)
    _store(tmp_path / "cache", mine, "my", seed=1)
    rav = [Utterance(id=f"ravdess-{s}-{label}-{r}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{s}",
                     gender=None, label=label, label_raw=label) for s in range(4) for label in RAVDESS for r in range(2)]
    _store(tmp_path / "cache", rav, "ravdess", seed=2)
    r = runner.invoke(app, ["probe", "--train", "my", "--test", "ravdess", "--model", MODEL, "--cache",
                            str(tmp_path / "cache"), "--layer", "1", "--C", "1", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "trained on and predicted among angry, calm, disgust, fear, happy, neutral, sad, surprise" in out, out
    assert "training-only" not in out and "rows left out" not in out and "rows dropped" not in out
    data = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert data["meta"]["classes"]["my"]["shared"] == RAVDESS
    (rec,) = data["records"]
    assert sorted(rec["labels"]) == RAVDESS and rec["n_test"] == len(rav) and rec["n_train"] == len(mine)
    assert rec["uar"] > 0.5  # the planted signal transfers over all 8 classes (chance 0.125)
