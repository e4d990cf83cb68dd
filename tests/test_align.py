"""CTC forced alignment: the Viterbi against brute force, oracle boundaries, spelling, the cache."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from featstore.align import (
    AlignError,
    AlignmentImpossible,
    NoTranscript,
    UnspellableTranscript,
    align_corpus,
    align_emissions,
    alignment_path,
    load_ctc_model,
    min_frames,
    read_alignments,
    spell,
    viterbi,
)
from featstore.corpora.base import Utterance
from featstore.transcripts import EMODB_TEXTS, transcript
from tests.helpers import TINY

LETTERS = list("ABCDEFGHIKLNORSTWY'")


def build_tiny_ctc(directory, seed: int = 0, letters=LETTERS):
    """A tiny random Wav2Vec2ForCTC + its tokenizer (upper-case `letters`, '|' delimiter, <pad> blank)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(letters)}}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY, vocab_size=len(vocab), pad_token_id=0)).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    return build_tiny_ctc(tmp_path_factory.mktemp("ctc") / "tiny-ctc")


def collapse(labels, blank):
    out, prev = [], None
    for x in labels:
        if x != prev and x != blank:
            out.append(int(x))
        prev = x
    return out


def brute_force(lp, targets, blank):
    """Best summed log-probability over every label sequence that collapses to `targets`."""
    best = -np.inf
    for seq in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        if collapse(seq, blank) == list(targets):
            best = max(best, float(lp[np.arange(len(seq)), seq].sum()))
    return best


def test_viterbi_equals_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    checked = 0
    for case in range(150):
        n_frames, vocab = int(rng.integers(1, 7)), int(rng.integers(2, 4))
        n_tokens = int(rng.integers(1, 4))
        targets = [int(x) for x in rng.integers(1, vocab, n_tokens)]  # 0 is the blank
        if case % 3 == 0:
            targets = [targets[0]] * n_tokens  # repeats: a blank must separate them
        lp = np.log(rng.dirichlet(np.ones(vocab), n_frames))
        truth = brute_force(lp, targets, 0)
        if not np.isfinite(truth):
            with pytest.raises(AlignmentImpossible):
                viterbi(lp, targets, 0)
            assert n_frames < min_frames(targets)
            continue
        positions, score = viterbi(lp, targets, 0)
        assert score == pytest.approx(truth, abs=1e-9)
        labels = np.where(positions >= 0, np.asarray(targets)[np.maximum(positions, 0)], 0)
        assert collapse(labels, 0) == targets
        assert float(lp[np.arange(n_frames), labels].sum()) == pytest.approx(score, abs=1e-9)
        checked += 1
    assert checked > 80


def test_repeated_letter_needs_a_blank_between():
    lp = np.log(np.full((3, 2), 0.5))
    positions, _ = viterbi(lp, [1, 1], 0)
    assert list(positions) == [0, -1, 1]
    with pytest.raises(AlignmentImpossible):
        viterbi(lp[:2], [1, 1], 0)
    assert min_frames([1, 1, 2, 2, 2]) == 8


def oracle_emissions(spans, tokens_per_word, n_frames, vocab, rng, *, delimiter=None):
    """Log-probs where each word's tokens fill its known frame span evenly; blanks elsewhere."""
    logits = rng.normal(0.0, 0.5, (n_frames, vocab))
    logits[:, 0] += 4.0
    for (a, b), toks in zip(spans, tokens_per_word):
        edges = np.linspace(a, b, len(toks) + 1).round().astype(int)
        for tok, lo, hi in zip(toks, edges[:-1], edges[1:]):
            logits[lo:hi, tok] += 8.0
            logits[lo:hi, 0] -= 4.0
    if delimiter is not None:
        for (_, b), (a2, _) in zip(spans[:-1], spans[1:]):
            logits[b:a2, delimiter] += 6.0
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("delimited", [False, True])
def test_oracle_boundaries_are_recovered_within_one_frame(delimited):
    rng = np.random.default_rng(1)
    vocab = {"<pad>": 0, "|": 1, **{c: 2 + i for i, c in enumerate("ABDEGHIKLNORSTY")}}
    text = "Kids are talking by the door"
    words, tokens, owners = spell(text, vocab, vocab["|"] if delimited else None)
    per_word = [[t for t, o in zip(tokens, owners) if o == w] for w in range(len(words))]
    for _trial in range(10):
        lengths = [int(rng.integers(2 * len(t) + 1, 3 * len(t) + 6)) for t in per_word]
        gaps = rng.integers(2, 8, len(words) + 1)
        spans, t = [], int(gaps[0])
        for n, g in zip(lengths, gaps[1:]):
            spans.append((t, t + n))
            t += n + int(g)
        lp = oracle_emissions(spans, per_word, t, len(vocab), rng, delimiter=vocab["|"] if delimited else None)
        times = np.arange(t) * 0.02
        got = align_emissions(lp, times, words, tokens, owners, 0, 0.02)
        assert [w.word for w in got] == ["Kids", "are", "talking", "by", "the", "door"]
        for w, (a, b) in zip(got, spans):
            assert abs(w.start - a * 0.02) <= 0.02 + 1e-9
            assert abs(w.end - b * 0.02) <= 0.02 + 1e-9
            assert 0.5 < w.score <= 1.0


def test_spell_takes_the_vocabulary_case_and_drops_punctuation():
    upper = {"<pad>": 0, "|": 1, "'": 2, **{c: 3 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}}
    words, tokens, owners = spell("It's eleven o'clock.", upper, 1)
    assert words == ["It's", "eleven", "o'clock"]
    assert tokens[:4] == [upper["I"], upper["T"], upper["'"], upper["S"]] and tokens[4] == 1
    assert owners.count(-1) == 2 and owners[0] == 0 and owners[-1] == 2
    lower = {"<pad>": 0, **{c: 1 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    words, tokens, _ = spell("It's", lower, None)
    assert tokens == [lower["i"], lower["t"], lower["s"]]  # no apostrophe in this vocabulary: dropped
    with pytest.raises(UnspellableTranscript, match="ü"):
        spell(EMODB_TEXTS["b01"], lower, None)


def test_transcripts_per_corpus():
    def utt(corpus, text):
        return Utterance(id=f"{corpus}-x", path="/x.wav", corpus=corpus, language="en", speaker=f"{corpus}-1",
                         gender=None, label="angry", label_raw="x", text=text)

    assert transcript(utt("ravdess", "Kids are talking by the door")) == "Kids are talking by the door"
    assert transcript(utt("emodb", "a01")) == "Der Lappen liegt auf dem Eisschrank."
    assert transcript(utt("tess", "back")) == "Say the word back"
    assert transcript(utt("cremad", "Don't forget a jacket")) == "Don't forget a jacket"
    assert transcript(utt("savee", None)) is None
    assert transcript(utt("emovo", "b1")) is None  # a sentence code, not the words
    assert transcript(utt("mydata", "hello there")) == "hello there"
    assert len(EMODB_TEXTS) == 10


def test_tiny_ctc_model_aligns_and_refuses_bad_input(tiny_ctc, tmp_path, one_torch_thread):
    aligner = load_ctc_model(str(tiny_ctc))
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    lp, times = aligner.emissions(wave)
    assert lp.shape == (len(times), len(aligner.vocab)) and np.allclose(np.exp(lp).sum(1), 1, atol=1e-4)
    words = aligner.align(wave, "Kids are talking by the door")
    assert [w.word for w in words] == ["Kids", "are", "talking", "by", "the", "door"]
    assert all(0 <= a.end <= b.start + 1e-9 for a, b in zip(words[:-1], words[1:])) and words[-1].end <= 1.0 + 1e-9
    aligner.max_seconds = 0.3  # windowed as in extraction: the frame times still span the clip
    lp_w, times_w = aligner.emissions(wave)
    assert abs(len(lp_w) - len(lp)) <= 4 and times_w[-1] > 0.9 and np.all(np.diff(times_w) > 0)
    with pytest.raises(AlignmentImpossible, match="too short"):
        aligner.align(wave[:1200], "Kids are talking by the door")
    with pytest.raises(UnspellableTranscript, match="ü"):
        aligner.align(wave, "für")


def test_align_corpus_caches_and_resumes(tiny_ctc, tmp_path, one_torch_thread):
    import soundfile as sf

    rng = np.random.default_rng(0)
    utts = []
    for k in range(3):
        path = tmp_path / f"03-01-05-01-01-01-0{k + 1}.wav"
        sf.write(path, rng.normal(0, 0.1, 8000 if k else 300).astype(np.float32), 16000)
        utts.append(Utterance(id=f"ravdess-{k}", path=str(path), corpus="ravdess", language="en",
                              speaker=f"ravdess-0{k + 1}", gender=None, label="angry", label_raw="05",
                              text="Kids are talking by the door"))
    run = align_corpus(utts[:2], str(tiny_ctc), cache=tmp_path / "cache")
    assert run.path == alignment_path(tmp_path / "cache", str(tiny_ctc), "ravdess")
    assert (run.n_cached, run.n_aligned, len(run.failures)) == (0, 1, 1)
    assert "ravdess-0" in run.failures[0].error and "\n" not in run.failures[0].error
    with run.path.open("a") as fh:
        fh.write('{"id": "ravdess-2", "te')  # a run killed mid-line
    again = align_corpus(utts, str(tiny_ctc), cache=tmp_path / "cache")
    assert (again.n_cached, again.n_aligned) == (2, 1)
    header, rows = read_alignments(run.path)
    assert header["model"] == str(tiny_ctc) and set(rows) == {"ravdess-0", "ravdess-1", "ravdess-2"}
    assert len(rows["ravdess-2"].words) == 6
    with pytest.raises(NoTranscript, match="savee"):
        align_corpus([Utterance(id="savee-x", path="/x.wav", corpus="savee", language="en", speaker="savee-DC",
                                gender="male", label="angry", label_raw="a")], str(tiny_ctc), cache=tmp_path)
    with pytest.raises(AlignError, match="no alignments"):
        read_alignments(tmp_path / "nothing.jsonl")


def test_cli_align_caches_shows_and_saves_an_example(tiny_ctc, tmp_path, monkeypatch, one_torch_thread):
    from typer.testing import CliRunner

    from cli import app
    from featstore.synth import synthesize

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=48, max_duration=1.0, sample_rate=16000)
    args = ["--ctc-model", str(tiny_ctc), "--cache", str(tmp_path / "cache")]
    runner = CliRunner()
    first = runner.invoke(app, ["align", "--corpus", "ravdess", "--root", str(root), *args])
    assert first.exit_code == 0, first.output
    assert "aligned 48 utterances (0 already there, 0 not aligned)" in first.output
    utt = json.loads(alignment_path(tmp_path / "cache", str(tiny_ctc), "ravdess").read_text().splitlines()[1])["id"]
    again = runner.invoke(app, ["align", "--corpus", "ravdess", "--root", str(root), *args,
                                "--example", utt, "--out", str(tmp_path / "ex")])
    assert again.exit_code == 0, again.output
    assert "aligned 0 utterances (48 already there" in again.output
    assert sorted(p.name for p in (tmp_path / "ex").iterdir()) == ["boundaries.png", "donor.wav", "original.wav",
                                                                   "result.wav"]
    shown = runner.invoke(app, ["align", "--show", utt, *args])
    assert shown.exit_code == 0 and "door" in shown.output and "start (s)" in shown.output
    missing = runner.invoke(app, ["align", "--show", "ravdess-nope", *args])
    assert missing.exit_code == 2 and "ravdess-nope is not in" in missing.output
    savee = runner.invoke(app, ["align", "--show", "savee-DC-a01", "--cache", str(tmp_path / "cache")])
    assert savee.exit_code == 2 and "no default CTC model" not in savee.output and "no alignments" in savee.output


def test_word_features_pool_the_frames_inside_each_word(tiny_models, tmp_path, one_torch_thread):
    from featstore.align import Alignment, Word, word_features
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.store import open_store
    from featstore.synth import synthesize

    synthesize("ravdess", tmp_path / "rav", n=4, max_duration=1.0, sample_rate=16000)
    res = extract_manifest(load_manifest("ravdess", tmp_path / "rav"), model=str(tiny_models["group"]),
                           cache=tmp_path / "cache", device="cpu", frames="2", progress=False)
    fs = open_store(res.store)
    first, second = fs.utterances[0].id, fs.utterances[1].id
    alignments = {first: Alignment(first, "a b", [Word("a", 0.1, 0.3, 1.0), Word("b", 0.5, 0.5001, 1.0)]),
                  second: Alignment(second, error="no transcript")}
    got = word_features(fs, 2, alignments)
    assert got.ids == [first, first] and got.words == ["a", "b"] and got.features.shape == (2, fs.hidden_size)
    frames = fs.frames(2, 0).astype(np.float32)
    centres = (np.arange(len(frames)) + 0.5) * fs.n_samples[0] / 16000 / len(frames)
    np.testing.assert_allclose(got.features[0], frames[(centres >= 0.1) & (centres < 0.3)].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got.features[1], frames[int(0.50005 * len(frames) * 16000 / fs.n_samples[0])],
                               rtol=1e-6)


@pytest.mark.parametrize("row", [
    '{"id": "u2", "text": "a b", "words": [{"word": "a", "start": 0.1}]}',          # a word without its end
    '{"id": "u2", "text": "a b", "words": [{"word": "a", "start": "soon", "end": 1, "score": 1}]}',
    '{"id": "u2", "text": "a b", "words": "a b"}',                                      # words not a list
    '{"id": 7, "text": "a b", "words": []}',                                            # id not a string
    '["u2", "a b"]',                                                                    # not an object
    '{"id": "u2", "te',                                                                 # torn, but not the last line
])
def test_malformed_cache_rows_are_one_line_naming_the_file_and_the_fix(tmp_path, row):
    path = tmp_path / "emodb.align.jsonl"
    header = json.dumps({"format": "ser-alignments/1", "model": "m", "weights_sha256": "x", "corpus": "emodb"})
    good = json.dumps({"id": "u1", "text": "a", "words": [{"word": "a", "start": 0, "end": 0.2, "score": 0.9}]})
    path.write_text("\n".join([header, good, row, good.replace("u1", "u3")]) + "\n")
    with pytest.raises(AlignError) as info:
        read_alignments(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "line 3" in message and "re-run `ser align`" in message
    # the same rows without the bad one read fine: the error is about that line only
    path.write_text("\n".join([header, good, good.replace("u1", "u3")]) + "\n" + row)  # torn last line: ignored
    assert set(read_alignments(path)[1]) == {"u1", "u3"}


def test_a_cache_whose_header_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "emodb.align.jsonl"
    path.write_text('[1, 2]\n{"id": "u1"}\n')
    with pytest.raises(AlignError, match="not an alignment file written by ser align") as info:
        read_alignments(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
