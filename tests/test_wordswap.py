"""Word-swap augmentation: donors from the fold's training speakers only, labels kept, seeded, bad input skipped."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from classifiers.finetuning.augment import AugmentError, ChunkPermute, Compose, describe_augment, parse_augment
from classifiers.finetuning.finetune import AudioDataset
from classifiers.finetuning.wordswap import FoldWordSwap, WordSwap, bind_word_swap, crossfade, save_example
from featstore.align import Word
from featstore.corpora import get_corpus
from featstore.corpora.base import Utterance
from featstore.errors import SerError
from featstore.folds import make_folds, validation_split
from featstore.synth import synthesize
from tests.test_align import LETTERS, build_tiny_ctc

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic RAVDESS, fold 0 of luna5 split into train / validation / test, and a tiny CTC model."""
    base = tmp_path_factory.mktemp("wordswap")
    synthesize("ravdess", base / "ravdess", n=96, max_duration=1.0, sample_rate=16000)
    utts = get_corpus("ravdess").load(base / "ravdess").utterances
    fold = make_folds(utts, "luna5")[0]
    train_idx, val_idx = validation_split(utts, fold.train, seed=0)
    split = {name: [utts[int(i)] for i in idx] for name, idx in
             (("train", train_idx), ("val", val_idx), ("test", fold.test))}
    return dict(base=base, utts=utts, ctc=build_tiny_ctc(base / "ctc"), **split)


@pytest.fixture(scope="module")
def bound(world):
    swap = WordSwap(1.0, model=str(world["ctc"]))
    return swap.bind(world["train"], sample_rate=16000, cache=world["base"] / "cache")


def test_donors_come_only_from_the_folds_training_speakers(world, bound):
    train_speakers = {u.speaker for u in world["train"]}
    held_out = {u.speaker for u in world["val"] + world["test"]}
    assert train_speakers.isdisjoint(held_out)
    swaps = 0
    for k, u in enumerate(world["train"]):
        wave = np.zeros(16000, dtype=np.float32)
        for seed in range(3):
            _, info = bound.swap(wave, np.random.default_rng([seed, k]), u)
            if info is None:
                assert not bound.donor_pool(u)
                continue
            swaps += 1
            assert info.donor.speaker in train_speakers and info.donor.speaker not in held_out
            assert info.donor.id != u.id and info.donor.label == u.label and info.donor.text == u.text
    assert swaps > 30


def test_dataset_items_keep_their_label_and_repeat_with_a_fixed_seed(world, bound):
    train = [u for u in world["train"] if bound.donor_pool(u)][:6]
    labels = {c: i for i, c in enumerate(sorted({u.label for u in world["utts"]}))}
    augment = Compose((bound,))
    ds = AudioDataset(train, labels, 16000, False, train=True, augment=augment, seed=3)
    plain = AudioDataset(train, labels, 16000, False)
    changed = 0
    for i, u in enumerate(train):
        item, again = ds[i], ds[i]
        assert item["labels"] == labels[u.label]
        np.testing.assert_array_equal(item["input_values"], again["input_values"])
        changed += not np.array_equal(item["input_values"], plain[i]["input_values"])
    assert changed == len(train)  # p = 1 and every clip has a donor
    other = AudioDataset(train, labels, 16000, False, train=True, augment=augment, seed=4)
    assert any(not np.array_equal(ds[i]["input_values"], other[i]["input_values"]) for i in range(len(train)))


def test_splice_matches_loudness_and_crossfades(tmp_path):
    sr, n = 16000, 160
    t = np.arange(sr) / sr
    original = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    donor = (0.5 * np.random.default_rng(0).standard_normal(sr)).astype(np.float32)
    sf.write(tmp_path / "donor.wav", donor, sr, subtype="FLOAT")

    def utt(uid, path):
        return Utterance(id=uid, path=str(path), corpus="ravdess", language="en", speaker=uid, gender=None,
                         label="sad", label_raw="04", text="Dogs are")

    me, them = utt("a", tmp_path / "a.wav"), utt("b", tmp_path / "donor.wav")
    alignments = {"a": [Word("Dogs", 0.2, 0.5, 1.0), Word("are", 0.6, 0.8, 1.0)],
                  "b": [Word("Dogs", 0.3, 0.7, 1.0), Word("are", 0.75, 0.9, 1.0)]}
    swapper = FoldWordSwap(1.0, n, sr, alignments, {("ravdess", "sad", "Dogs are"): [me, them]})
    out, info = swapper.swap(original, np.random.default_rng(0), me, word_index=0)
    assert info.donor.id == "b" and info.span == (3200, 8000) and info.donor_span == (4800, 11200)
    assert len(out) == len(original) - 4800 + 6400 - 2 * n
    np.testing.assert_array_equal(out[:3200 - n], original[:3200 - n])  # untouched before the fade
    np.testing.assert_array_equal(out[-(sr - 8000 - n):], original[8000 + n:])  # and after it
    a, b = info.result_span
    inserted = out[a + n:b - n].astype(np.float64)
    assert np.sqrt(np.mean(inserted ** 2)) == pytest.approx(np.sqrt(np.mean(original[3200:8000] ** 2)), rel=0.05)
    np.testing.assert_allclose(crossfade(np.ones(10), np.ones(10), 4)[6:10], np.cos(np.linspace(0, 1, 6)[1:-1]
                               * np.pi / 2) + np.sin(np.linspace(0, 1, 6)[1:-1] * np.pi / 2))


def test_bad_input_is_one_line_each_and_the_clip_is_left_as_it_is(tmp_path, monkeypatch):
    ctc = build_tiny_ctc(tmp_path / "no-k", letters=[c for c in LETTERS if c != "K"])
    monkeypatch.setenv("SER_CTC_MODEL", str(ctc))  # how --augment word-swap is told its CTC model
    rng = np.random.default_rng(0)

    def clip(uid, corpus, text, seconds):
        path = tmp_path / f"{uid}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        return Utterance(id=uid, path=str(path), corpus=corpus, language="en", speaker=f"{corpus}-{uid[-1]}",
                         gender=None, label="angry", label_raw="05", text=text)

    kids = [clip(f"ravdess-k{i}", "ravdess", "Kids are talking by the door", 1.0) for i in range(2)]
    dogs = [clip(f"ravdess-d{i}", "ravdess", "Dogs are sitting by the door", 1.0) for i in range(2)]
    short = clip("ravdess-s0", "ravdess", "Dogs are sitting by the door", 0.05)
    savee = [clip(f"savee-x{i}", "savee", None, 0.5) for i in range(2)]
    train = kids + dogs + [short] + savee
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bound = bind_word_swap(parse_augment("noise@0,word-swap:1"), train, sample_rate=16000,
                               cache=tmp_path / "cache", device="cpu")
    lines = [str(w.message) for w in caught if "word-swap" in str(w.message)]
    assert all("\n" not in line for line in lines)
    assert sum("cannot spell 'Kk'" in line for line in lines) == 2, lines
    assert sum("ravdess-s0" in line and "too short" in line for line in lines) == 1
    assert sum("corpus savee has no transcripts" in line for line in lines) == 1 and len(lines) == 4
    swapper = bound.transforms[0]
    assert isinstance(swapper, FoldWordSwap) and set(swapper.alignments) == {u.id for u in dogs}
    for u in kids + [short] + savee:  # training goes on: these clips come back as they were
        wave = np.ones(800, dtype=np.float32)
        assert bound(wave, np.random.default_rng(0), u) is wave
    assert swapper.swap(np.zeros(16000, np.float32), np.random.default_rng(0), dogs[0])[1].donor.id == "ravdess-d1"


def test_spec_parsing_and_description():
    assert parse_augment("word-swap").transforms == (WordSwap(0.5),)
    assert parse_augment("word-swap:0.3").transforms == (WordSwap(0.3),)
    combined = parse_augment("chunk-permute,word-swap@1")
    assert describe_augment(combined) == "chunk-permute:4@0.5,word-swap@1"
    with pytest.raises(AugmentError, match="augmentation probability must be in"):
        parse_augment("word-swap:2")
    with pytest.raises(SerError, match="bound"):
        combined(np.zeros(10, np.float32), np.random.default_rng(0))
    first = bind_word_swap(combined, [], sample_rate=16000).transforms  # the swap runs on the clip as recorded
    assert isinstance(first[0], FoldWordSwap) and isinstance(first[1], ChunkPermute) and len(first) == 2
    assert bind_word_swap(parse_augment("noise"), [], sample_rate=16000).transforms == parse_augment("noise").transforms


def test_saved_example_has_three_wavs_and_a_plot(world, bound, tmp_path):
    u = next(u for u in world["train"] if bound.donor_pool(u))
    files = save_example(bound, u, tmp_path / "example", seed=1, word_index=2)
    assert sorted(p.name for p in files.values()) == ["boundaries.png", "donor.wav", "original.wav", "result.wav"]
    result, sr = sf.read(files["result"])
    original, _ = sf.read(files["original"])
    assert sr == 16000 and (len(result) != len(original) or not np.allclose(result, original))
    assert files["plot"].stat().st_size > 10_000


@pytest.mark.slow
def test_cli_finetune_with_word_swap_runs_and_takes_donors_from_training_speakers(world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import classifiers.finetuning.wordswap as ws
    from cli import app
    from tests.helpers import build_tiny_model

    loaded = []
    real_load = ws.load_audio
    monkeypatch.setattr(ws, "load_audio", lambda path, sr, **kw: loaded.append(path) or real_load(path, sr, **kw))
    monkeypatch.delenv("SER_CTC_MODEL", raising=False)
    monkeypatch.setenv("SER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    model = build_tiny_model(tmp_path / "tiny")
    result = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(world["base"] / "ravdess"),
                                      "--model", str(model), "--protocol", "luna5", "--fold", "0", "--epochs", "1",
                                      "--freeze", "none", "--augment", "word-swap:1", "--batch-size", "16",
                                      "--ctc-model", str(world["ctc"]),
                                      "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert "word-swap@1" in json.dumps(summary)
    assert list((tmp_path / "cache").glob("*/ravdess.align.jsonl"))
    fold = json.loads(next((tmp_path / "run").glob("*/fold_result.json")).read_text())["result"]
    held_out = set(fold["val_speakers"]) | {u.speaker for u in world["test"]}
    speaker_of = {u.path: u.speaker for u in world["utts"]}
    assert len(loaded) > 10 and all(speaker_of[p] not in held_out for p in loaded)
