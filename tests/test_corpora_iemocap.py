"""IEMOCAP: labels from EmoEvaluation files, their format, and the problems a partial tree has."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featstore.corpora import get_corpus
from featstore.corpora.iemocap import HEADER, IemocapCorpus, format_emo_evaluation, parse_emo_evaluation
from featstore.errors import CorpusError

# The start of Ses01F_impro01.txt as the release has it (two blocks).
REAL_EXCERPT = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"
    "\n"
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    "C-E2:\tNeutral;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-E4:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n"
    "A-F1:\tval 2; act 1; dom  3;\t()\n"
    "\n"
    "[10.0100 - 11.3925]\tSes01F_impro01_F001\tfru\t[2.0000, 2.5000, 2.5000]\n"
    "C-E2:\tFrustration;\t()\n"
    "C-E3:\tNeutral; Frustration;\t()\n"
    "C-E4:\tFrustration;\t()\n"
    "A-E3:\tval 2; act 2; dom  2;\t()\n"
    "\n"
)


def write_wav(path: Path, frames: int = 160) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def make_tree(root: Path, dialogs: dict[str, list[tuple[str, str]]], wavs: bool = True) -> Path:
    """dialog -> [(utterance suffix, code)]: EmoEvaluation files and (optionally) the wavs."""
    for dialog, utterances in dialogs.items():
        session = root / f"Session{int(dialog[3:5])}"
        entries = [(f"{dialog}_{suffix}", 1.0 + 3 * i, 3.0 + 3 * i, code)
                   for i, (suffix, code) in enumerate(utterances)]
        evaluation = session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text(format_emo_evaluation(entries), encoding="utf-8")
        if wavs:
            for utterance, *_ in entries:
                write_wav(session / "sentences" / "wav" / dialog / f"{utterance}.wav")
    return root


def test_real_excerpt_is_parsed():
    turns = parse_emo_evaluation(REAL_EXCERPT)
    assert [(t.utterance, t.start, t.end, t.label) for t in turns] == [
        ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu"), ("Ses01F_impro01_F001", 10.01, 11.3925, "fru")]


def test_format_matches_the_real_line_format_and_reads_back():
    entries = [("Ses01F_impro01_F000", 6.2901, 8.2357, "neu"), ("Ses01F_impro01_M001", 9.5, 11.25, "xxx"),
               ("Ses01F_impro01_F002", 12.0, 13.0, "exc")]
    text = format_emo_evaluation(entries)
    lines = text.splitlines()
    assert lines[0] == HEADER == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
    assert lines[1] == ""
    assert lines[2] == "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
    assert lines[3] == "C-E2:\tNeutral;\t()"
    assert any(line.startswith("A-E3:\tval ") and line.endswith(";\t()") for line in lines)
    blocks = text.strip("\n").split("\n\n")
    assert len(blocks) == 1 + len(entries)  # header, then one block per utterance
    assert all(block.startswith("[") for block in blocks[1:])
    assert [(t.utterance, t.start, t.end, t.label) for t in parse_emo_evaluation(text)] == entries


def test_labels_speakers_and_transcripts(tmp_path):
    root = make_tree(tmp_path, {
        "Ses01F_impro01": [("F000", "neu"), ("M001", "ang"), ("F002", "fru"), ("M003", "xxx")],
        "Ses05M_script01_1b": [("F000", "exc"), ("M001", "hap"), ("M002", "sad")],
    })
    transcripts = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    transcripts.parent.mkdir(parents=True)
    transcripts.write_text("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
                           "Ses01F_impro01_M001 [007.5712-010.4750]: Do you have your forms?\n", encoding="utf-8")
    manifest = get_corpus("iemocap").load(root)
    assert manifest.problems == []
    by_id = {u.id: u for u in manifest}
    assert sorted(by_id) == ["iemocap-Ses01F_impro01_F000", "iemocap-Ses01F_impro01_M001",
                             "iemocap-Ses05M_script01_1b_F000", "iemocap-Ses05M_script01_1b_M001",
                             "iemocap-Ses05M_script01_1b_M002"]
    first = by_id["iemocap-Ses01F_impro01_F000"]
    assert (first.speaker, first.gender, first.session, first.text) == (
        "iemocap-Ses01F", "female", "Ses01", "Excuse me.")
    female_in_male_led = by_id["iemocap-Ses05M_script01_1b_F000"]
    assert (female_in_male_led.speaker, female_in_male_led.session, female_in_male_led.label,
            female_in_male_led.label_raw, female_in_male_led.text) == (
        "iemocap-Ses05F", "Ses05", "happy", "exc", None)
    assert by_id["iemocap-Ses01F_impro01_M001"].label == "angry"


def test_missing_wav_and_missing_label_line_are_problems(tmp_path):
    root = make_tree(tmp_path, {"Ses02M_impro05a": [("F000", "neu"), ("M001", "sad"), ("F002", "fru")]})
    wav_dir = root / "Session2" / "sentences" / "wav" / "Ses02M_impro05a"
    (wav_dir / "Ses02M_impro05a_M001.wav").unlink()  # labelled, in the class set, but no audio
    (wav_dir / "Ses02M_impro05a_F002.wav").unlink()  # labelled fru: outside the 4 classes, no problem
    write_wav(wav_dir / "Ses02M_impro05a_M009.wav")  # audio without a label line
    manifest = get_corpus("iemocap").load(root)
    assert [u.id for u in manifest] == ["iemocap-Ses02M_impro05a_F000"]
    reasons = {Path(p.path).name: p.reason for p in manifest.problems}
    assert set(reasons) == {"Ses02M_impro05a_M001.wav", "Ses02M_impro05a_M009.wav"}
    assert "labelled 'sad' in Ses02M_impro05a.txt but the wav is missing" == reasons["Ses02M_impro05a_M001.wav"]
    assert reasons["Ses02M_impro05a_M009.wav"].startswith("no label line for Ses02M_impro05a_M009")
    assert not (wav_dir / "Ses02M_impro05a_M001.wav").exists()

    every = IemocapCorpus(classes="all").load(root)  # now fru's missing wav counts too
    assert {Path(p.path).name for p in every.problems} == {
        "Ses02M_impro05a_M001.wav", "Ses02M_impro05a_F002.wav", "Ses02M_impro05a_M009.wav"}


def test_directory_named_like_a_wav_and_empty_file_are_problems(tmp_path):
    root = make_tree(tmp_path, {"Ses01F_impro01": [("F000", "neu"), ("M001", "sad"), ("F002", "ang")]})
    wav_dir = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    (wav_dir / "Ses01F_impro01_M001.wav").unlink()
    (wav_dir / "Ses01F_impro01_M001.wav").mkdir()
    (wav_dir / "Ses01F_impro01_F002.wav").write_bytes(b"")
    manifest = get_corpus("iemocap").load(root)
    assert [u.id for u in manifest] == ["iemocap-Ses01F_impro01_F000"]
    assert {Path(p.path).name: p.reason for p in manifest.problems} == {
        "Ses01F_impro01_M001.wav": "a directory, not an audio file",
        "Ses01F_impro01_F002.wav": "empty file (0 bytes)",
    }


def test_unknown_code_is_a_problem(tmp_path):
    root = make_tree(tmp_path, {"Ses03F_script02_2": [("F000", "neu"), ("M001", "zzz")]})
    manifest = get_corpus("iemocap").load(root)
    assert len(manifest) == 1
    (problem,) = manifest.problems
    assert problem.path.endswith("Ses03F_script02_2_M001.wav")
    assert problem.reason.startswith("unknown label code 'zzz'")


def test_other_release_folders_are_not_read(tmp_path):
    root = make_tree(tmp_path, {"Ses04F_impro02": [("F000", "ang")]})
    session = root / "Session4"
    write_wav(session / "dialog" / "wav" / "Ses04F_impro02.wav")  # whole-dialog audio
    categorical = session / "dialog" / "EmoEvaluation" / "Categorical" / "Ses04F_impro02_e1_cat.txt"
    categorical.parent.mkdir()
    categorical.write_text("Ses04F_impro02_F000 :Anger; ()\n", encoding="utf-8")
    manifest = get_corpus("iemocap").load(root)
    assert [u.id for u in manifest] == ["iemocap-Ses04F_impro02_F000"] and manifest.problems == []


def test_wavs_without_any_evaluation_file_is_a_corpus_error(tmp_path):
    write_wav(tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav")
    with pytest.raises(CorpusError, match="EmoEvaluation"):
        get_corpus("iemocap").load(tmp_path)


def test_labels_only_tree_is_a_corpus_error(tmp_path):
    make_tree(tmp_path, {"Ses01F_impro01": [("F000", "neu")]}, wavs=False)
    with pytest.raises(CorpusError, match="no .wav files"):
        get_corpus("iemocap").load(tmp_path)


def test_relabelled_file_is_read_again(tmp_path):
    root = make_tree(tmp_path, {"Ses01F_impro03": [("F000", "neu")]})
    assert [u.label for u in get_corpus("iemocap").load(root)] == ["neutral"]
    evaluation = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro03.txt"
    evaluation.write_text(format_emo_evaluation([("Ses01F_impro03_F000", 1.0, 2.5, "sad")]), encoding="utf-8")
    assert [u.label for u in get_corpus("iemocap").load(root)] == ["sad"]
    evaluation.write_text(format_emo_evaluation([("Ses01F_impro03_F000", 11.0, 12.5, "ang")]), encoding="utf-8")
    assert get_corpus("iemocap").parse(next(root.rglob("*_F000.wav")), root).label_raw == "ang"
