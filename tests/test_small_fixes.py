"""Issue 24, item 8: `ser align --show/--example` infer the model and the corpus, outputs get the
umask's mode (saved probes' safetensors 0644 like their JSON), a warning for low-confidence
alignments, `ser predict` JSON and CSV with the same fields."""

from __future__ import annotations

import csv
import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def cli(*args, ok: bool = True):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert "Traceback" not in r.output, r.output
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def umask():
    """Set the umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_umask_mode_whatever_mode_the_writer_gave(tmp_path, umask, mask, expected):
    from featstore.outputs import atomic_output, write_text
    from featstore.outputs import umask as read_umask

    umask(mask)
    assert read_umask() == mask
    with atomic_output(tmp_path / "private.bin") as tmp:          # as mkstemp or safetensors do
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
    assert _mode(tmp_path / "private.bin") == expected
    assert _mode(write_text(tmp_path / "plain.json", "{}")) == expected


def test_saved_probe_files_are_both_group_and_world_readable(tmp_path, umask):
    from classifiers.finetuning.inference import PROBE_CONFIG, PROBE_SUMS, PROBE_WEIGHTS, load_probe, save_probe

    umask(0o022)
    d = save_probe(tmp_path / "probe", "toy/model", 1, "mean", None, None, np.eye(3, 4), np.zeros(3), ["a", "b", "c"])
    assert {name: oct(_mode(d / name)) for name in (PROBE_CONFIG, PROBE_WEIGHTS, PROBE_SUMS)} == \
        {name: oct(0o644) for name in (PROBE_CONFIG, PROBE_WEIGHTS, PROBE_SUMS)}
    assert load_probe(d).classes == ["a", "b", "c"]


def test_predict_json_and_csv_have_the_same_fields(tmp_path, monkeypatch):
    import classifiers.finetuning.inference as predict

    rows = [("a.wav", {"sad": 0.25, "angry": 0.75}), ("b.wav", {"sad": 0.875, "angry": 0.125})]
    monkeypatch.setattr(predict, "predict", lambda *a, **kw: rows)
    (tmp_path / "m").mkdir()
    js = cli("predict", "a.wav", "b.wav", "--trained", tmp_path / "m", "--device", "cpu", "--json",
             "--out", tmp_path / "p.csv")
    records = json.loads(js.output[:js.output.rindex("]") + 1])
    with open(tmp_path / "p.csv", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [list(r) for r in records] == [list(r) for r in table] == [["file", "predicted", "p_sad", "p_angry",
                                                                     "model"]] * 2
    for j, c in zip(records, table):
        assert {k: str(v) for k, v in j.items()} == c
    assert [r["predicted"] for r in records] == ["angry", "sad"] and records[0]["p_angry"] == 0.75


def _alignment_file(cache, model, corpus, ids, score=0.9):
    from featstore.align import FORMAT, alignment_path

    path = alignment_path(cache, model, corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "text": "the door", "words": [{"word": "THE", "start": 0.1, "end": 0.2, "score": score},
                                                     {"word": "DOOR", "start": 0.3, "end": 0.5, "score": score}]}
            for i in ids]
    path.write_text("\n".join(json.dumps(r) for r in [{"format": FORMAT, "model": model, "weights_sha256": "x",
                                                        "corpus": corpus}, *rows]) + "\n")
    return path


def test_align_show_infers_the_corpus_and_the_model_from_the_cache(tmp_path):
    from featstore.align import AlignError, corpus_of, infer_ctc_model

    cache = tmp_path / "cache"
    assert corpus_of("emodb-03a01Wa") == "emodb" and corpus_of("nosuchcorpus-1") is None
    assert infer_ctc_model(cache, "emodb", language="en") == "facebook/wav2vec2-base-960h"   # nothing cached
    _alignment_file(cache, "someone/ctc-a", "emodb", ["emodb-03a01Wa"])
    shown = cli("align", "--show", "emodb-03a01Wa", "--cache", cache)             # no --ctc-model, no --corpus
    assert "DOOR" in shown.output and "0.300" in shown.output
    _alignment_file(cache, "someone/ctc-b", "emodb", ["emodb-08b02Nb"])
    assert infer_ctc_model(cache, "emodb", utterance_id="emodb-08b02Nb") == "someone/ctc-b"
    assert "DOOR" in cli("align", "--show", "emodb-08b02Nb", "--cache", cache).output
    with pytest.raises(AlignError, match="someone/ctc-a, someone/ctc-b.*--ctc-model"):
        infer_ctc_model(cache, "emodb", utterance_id="emodb-unknown")
    both = cli("align", "--show", "emodb-unknown", "--cache", cache, ok=False)
    assert both.exit_code == 2 and len(both.output.strip().splitlines()) == 1 and "--ctc-model" in both.output
    odd = cli("align", "--show", "mystery-1", "--cache", cache, ok=False)
    assert odd.exit_code == 2 and "pass --corpus" in odd.output


def test_align_example_infers_the_corpus_and_model(tmp_path, monkeypatch):
    import featstore.align as align
    from featstore.synth import synthesize

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))            # no configured corpus
    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=8, max_duration=0.2, sample_rate=16000)
    cache = tmp_path / "cache"
    _alignment_file(cache, "someone/english-ctc", "ravdess", ["ravdess-nope"])
    seen = {}

    def fake_align(utterances, model, **kw):
        seen.update(corpus=utterances[0].corpus, model=model)
        return align.AlignRun(alignment_path_of(cache), len(utterances), len(utterances), 0, [], 0.9)

    def alignment_path_of(c):
        return align.alignment_path(c, "someone/english-ctc", "ravdess")

    monkeypatch.setattr(align, "align_corpus", fake_align)
    r = cli("align", "--example", "ravdess-nope", "--root", root, "--cache", cache, ok=False)
    assert seen == {}, "a wrong --example id is refused before any alignment runs"
    assert r.exit_code == 2 and "ravdess-nope is not an utterance of ravdess" in r.output

    import classifiers.finetuning.wordswap as wordswap
    from featstore.corpora import load_manifest

    real = load_manifest("ravdess", root).utterances[0].id
    _alignment_file(cache, "someone/english-ctc", "ravdess", ["ravdess-nope", real])

    class FakeSwap:
        def __init__(self, p, model):
            seen["swap"] = model

        def bind(self, utterances, **kw):
            return self

    monkeypatch.setattr(wordswap, "WordSwap", FakeSwap)
    monkeypatch.setattr(wordswap, "save_example", lambda swap, u, out, seed: {"original": f"{out}/{u.id}.wav"})
    r = cli("align", "--example", real, "--root", root, "--cache", cache, "--out", tmp_path / "ex")
    assert seen == {"corpus": "ravdess", "model": "someone/english-ctc", "swap": "someone/english-ctc"}, r.output
    assert f"{real}.wav" in r.output


class _FixedAligner:
    """Stands in for a CTC model: every word gets the same confidence."""

    def __init__(self, score):
        self.score, self.model_id, self.weights_sha256 = score, "someone/ctc", "x"
        self.sample_rate, self.receptive_field = 16000, 400

    def align(self, wave, text):
        from featstore.align import Word

        return [Word(w, 0.1 * i, 0.1 * i + 0.05, self.score) for i, w in enumerate(text.split())]


@pytest.mark.parametrize("score, warned", [(0.2, True), (0.9, False)])
def test_low_confidence_alignments_are_one_warning(tmp_path, monkeypatch, score, warned):
    import warnings

    import soundfile as sf

    import featstore.align as align
    from featstore.corpora.base import Utterance

    monkeypatch.setattr(align, "CTCAligner", _FixedAligner)                      # accepted as a loaded model
    utts = []
    for k in range(2):
        path = tmp_path / f"{k}.wav"
        sf.write(path, np.zeros(8000, dtype=np.float32), 16000)
        utts.append(Utterance(id=f"ravdess-{k}", path=str(path), corpus="ravdess", language="en", speaker="s",
                              gender=None, label="angry", label_raw="05", text="Kids are talking by the door"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = align.align_corpus(utts, _FixedAligner(score), cache=tmp_path / "cache")
    assert run.mean_score == pytest.approx(score)
    mine = [w for w in caught if issubclass(w.category, align.AlignWarning)]
    assert len(mine) == warned
    if warned:
        text = str(mine[0].message)
        assert "\n" not in text and "ravdess" in text and "0.20" in text and "boundaries are likely wrong" in text
