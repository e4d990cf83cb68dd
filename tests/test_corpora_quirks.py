"""Corpus loaders on the layouts and flaws real downloads have, and on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from featstore.corpora import get_corpus
from featstore.errors import CorpusError
from tests.helpers import read_emobox, write_wav


def emobox_rows(corpus: str) -> list[tuple[str, str, str]]:
    """(key, path relative to the corpus root, emo) for every EmoBox row."""
    rows, _ = read_emobox(corpus)
    prefix = f"downloads/{corpus}/"
    return [(r["key"], r["wav"][len(prefix):], r["emo"]) for r in rows]


# -- real-world layouts -------------------------------------------------------------------

def test_savee_official_audiodata_layout_gives_emobox_ids(tmp_path):
    rows = emobox_rows("savee")
    for _, rel, _ in rows:
        speaker, code = Path(rel).stem.split("_")  # EmoBox's flat JE_n23.wav -> AudioData/JE/n23.wav
        write_wav(tmp_path / "AudioData" / speaker / f"{code}.wav", 44100)
    manifest = get_corpus("savee").load(tmp_path)
    assert manifest.problems == []
    assert {u.id for u in manifest} == {key for key, _, _ in rows}
    by_id = {u.id: u for u in manifest}
    assert by_id["savee-JE-n23"].speaker == "savee-JE" and by_id["savee-JE-n23"].label == "neutral"
    assert by_id["savee-KL-sa15"].label == "sad" and by_id["savee-DC-su01"].label == "surprise"


def test_savee_official_folder_with_unknown_speaker_is_a_problem(tmp_path):
    write_wav(tmp_path / "AudioData" / "DC" / "a01.wav")
    write_wav(tmp_path / "AudioData" / "XY" / "a01.wav")
    manifest = get_corpus("savee").load(tmp_path)
    assert [u.id for u in manifest] == ["savee-DC-a01"]
    assert len(manifest.problems) == 1 and "'XY'" in manifest.problems[0].reason


def test_tess_kaggle_nested_layout_and_misnamed_file(tmp_path):
    rows = emobox_rows("tess")
    # Kaggle folder names disagree with the file names; the loader must ignore them.
    folders = {"ps": "Pleasant_surprise", "fear": "Fear", "sad": "Sad", "angry": "angry",
               "disgust": "disgust", "happy": "happy", "neutral": "neutral"}
    for _, rel, emo in rows:
        name = Path(rel).name
        if name == "OAF_bite_neutral.wav":
            name = "OA_bite_neutral.wav"
        speaker = name.split("_")[0][:2] + "F"
        write_wav(tmp_path / "TESS Toronto emotional speech set data" / f"{speaker}_{folders[emo]}" / name, 24414)
    manifest = get_corpus("tess").load(tmp_path)
    assert manifest.problems == []
    assert {u.id for u in manifest} == {key for key, _, _ in rows}
    misnamed = next(u for u in manifest if u.path.endswith("OA_bite_neutral.wav"))
    assert (misnamed.id, misnamed.speaker, misnamed.label) == ("tess-OAF-bite-neutral", "tess-OAF", "neutral")
    assert {u.label for u in manifest if u.label_raw == "ps"} == {"surprise"}


def test_tess_duplicate_copy_is_reported_not_loaded_twice(tmp_path):
    write_wav(tmp_path / "a" / "OAF_back_angry.wav")
    write_wav(tmp_path / "b" / "OAF_back_angry.wav")
    manifest = get_corpus("tess").load(tmp_path)
    assert len(manifest) == 1
    assert len(manifest.problems) == 1 and "duplicate utterance id tess-OAF-back-angry" in manifest.problems[0].reason


def test_cremad_single_x_file_and_demographics(tmp_path):
    write_wav(tmp_path / "AudioWAV" / "1040_ITH_SAD_X.wav")
    write_wav(tmp_path / "AudioWAV" / "1001_IEO_ANG_HI.wav")
    write_wav(tmp_path / "AudioWAV" / "1002_DFA_NEU_XX.wav")
    (tmp_path / "AudioMP3").mkdir()
    (tmp_path / "AudioMP3" / "1001_IEO_ANG_HI.mp3").write_bytes(b"ID3 not read")  # only .wav files count
    without = {u.id: u for u in get_corpus("cremad").load(tmp_path / "AudioWAV")}
    assert set(without) == {"cremad-1040-ITH-SAD-XX", "cremad-1001-IEO-ANG-HI", "cremad-1002-DFA-NEU-XX"}
    assert all(u.gender is None for u in without.values())

    (tmp_path / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1040,29,Female,Asian,Not Hispanic\n",
        encoding="utf-8")
    manifest = get_corpus("cremad").load(tmp_path)
    assert len(manifest) == 3 and manifest.problems == []
    by_id = {u.id: u for u in manifest}
    one_x = by_id["cremad-1040-ITH-SAD-XX"]
    assert (one_x.gender, one_x.label, one_x.intensity) == ("female", "sad", None)
    assert by_id["cremad-1001-IEO-ANG-HI"].gender == "male"
    assert by_id["cremad-1001-IEO-ANG-HI"].intensity == "high"
    assert by_id["cremad-1002-DFA-NEU-XX"].gender is None  # not in the CSV


def test_cafe_with_properly_accented_folder_names(tmp_path):
    rows = emobox_rows("cafe")
    for _, rel, _ in rows:
        write_wav(tmp_path / rel.replace("ColŠre", "Colère").replace("D‚go–t", "Dégoût"), 48000)
    assert (tmp_path / "CaFE_48k" / "Colère" / "Fort").is_dir()
    manifest = get_corpus("cafe").load(tmp_path)
    assert manifest.problems == []
    assert {u.id for u in manifest} == {key for key, _, _ in rows}
    emo_of = {key: emo for key, _, emo in rows}
    assert all(u.label_raw.lower() == emo_of[u.id] for u in manifest)
    assert {u.intensity for u in manifest if "Faible" in u.path} == {"weak"}
    assert {u.intensity for u in manifest if "Fort" in u.path} == {"strong"}


def test_cafe_label_comes_from_the_file_name_not_the_folder(tmp_path):
    write_wav(tmp_path / "CaFE_48k" / "Joie" / "Fort" / "03-T-2-4.wav")
    (u,) = get_corpus("cafe").load(tmp_path)
    assert (u.label, u.intensity, u.speaker, u.gender) == ("sad", "strong", "cafe-03", "male")


def test_ravdess_song_and_video_files_are_ignored(tmp_path):
    actor = tmp_path / "Actor_01"
    write_wav(actor / "03-01-01-01-01-01-01.wav")
    write_wav(actor / "03-02-03-01-01-01-01.wav")  # song
    write_wav(actor / "01-01-03-01-01-01-01.wav")  # audio-video
    write_wav(actor / "02-01-03-01-01-01-01.wav")  # video-only
    manifest = get_corpus("ravdess").load(tmp_path)
    assert [u.id for u in manifest] == ["ravdess-03-01-01-01-01-01-01"]
    assert manifest.problems == []


def test_aesdd_speaker_variants(tmp_path):
    for name in ("a06 (5)b.wav", "s01 (5)a.wav", "f10 (01).wav", "h08 (5).wav"):
        write_wav(tmp_path / "misc" / name)
    by_id = {u.id: u for u in get_corpus("aesdd").load(tmp_path)}
    assert {k: v.speaker for k, v in by_id.items()} == {
        "aesdd-a06-5b": "aesdd-5", "aesdd-s01-5a": "aesdd-5", "aesdd-f10-01": "aesdd-1", "aesdd-h08-5": "aesdd-5"}
    assert by_id["aesdd-h08-5"].label == "happy"


# -- bad input ---------------------------------------------------------------------------

# corpus -> (a good file, a file with an unknown label code, that code, another good file)
SAMPLES = {
    "ravdess": ("Actor_01/03-01-01-01-01-01-01.wav", "Actor_01/03-01-09-01-01-01-01.wav", "'09'",
                "Actor_02/03-01-05-02-01-02-02.wav"),
    "cremad": ("AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1001_DFA_BOR_XX.wav", "'BOR'", "AudioWAV/1091_IEO_SAD_LO.wav"),
    "emodb": ("wav/03a01Wa.wav", "wav/03a01Xa.wav", "'X'", "wav/16b10Tb.wav"),
    "emovo": ("f1/dis-f1-b1.wav", "f1/col-f1-b1.wav", "'col'", "m3/tri-m3-n5.wav"),
    "tess": ("OAF_back_angry.wav", "OAF_back_bored.wav", "'bored'", "YAF_youth_sad.wav"),
    "savee": ("DC_a01.wav", "DC_x01.wav", "'x'", "KL_su15.wav"),
    "aesdd": ("anger/a01 (1).wav", "anger/x01 (1).wav", "'x'", "sadness/s20 (6).wav"),
    "cafe": ("CaFE_48k/Joie/Fort/01-J-2-1.wav", "CaFE_48k/Joie/Fort/01-Z-2-1.wav", "'Z'",
             "CaFE_48k/Neutre/12-N-1-6.wav"),
    "mesd": ("Anger_F_A_tarde.wav", "Boredom_F_A_tarde.wav", "'Boredom'", "Sadness_C_B_basta_ya.wav"),
    "shemo": ("female/F01A01.wav", "female/F01X01.wav", "'X'", "male/M56N12.wav"),
    "subesco": ("F_01_OISHI_S_1_ANGRY_1.wav", "F_01_OISHI_S_1_BORED_1.wav", "'BORED'", "M_10_EVAN_S_10_SAD_5.wav"),
    "urdu": ("Angry/SM1_F1_A01.wav", "Angry/SM1_F1_X01.wav", "'X'", "Sad/SF11_F3_S099.wav"),
}


@pytest.mark.parametrize("corpus", sorted(SAMPLES))
def test_unknown_label_code_is_a_problem_and_the_rest_loads(corpus, tmp_path):
    good, bad, code, _ = SAMPLES[corpus]
    write_wav(tmp_path / good)
    write_wav(tmp_path / bad)
    manifest = get_corpus(corpus).load(tmp_path)
    assert [Path(u.path).name for u in manifest] == [Path(good).name]
    assert len(manifest.problems) == 1
    problem = manifest.problems[0]
    assert Path(problem.path).name == Path(bad).name
    assert problem.reason.startswith("unknown label code") and code in problem.reason


@pytest.mark.parametrize("corpus", sorted(SAMPLES))
def test_corrupt_wav_is_a_problem(corpus, tmp_path):
    good, _, _, other = SAMPLES[corpus]
    write_wav(tmp_path / good)
    broken = tmp_path / other
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"RIFF\x00garbage, not audio at all" * 10)
    manifest = get_corpus(corpus).load(tmp_path)
    assert [Path(u.path).name for u in manifest] == [Path(good).name]
    assert [p.path for p in manifest.problems] == [str(broken)]
    assert manifest.problems[0].reason.startswith("unreadable audio: ")


@pytest.mark.parametrize("corpus", sorted(SAMPLES))
def test_every_sample_name_loads(corpus, tmp_path):
    good, _, _, other = SAMPLES[corpus]
    write_wav(tmp_path / good)
    write_wav(tmp_path / other, 44100, 441)
    manifest = get_corpus(corpus).load(tmp_path)
    assert manifest.problems == [] and len(manifest) == 2
    assert {u.sample_rate for u in manifest} == {16000, 44100}
    assert sorted(u.duration for u in manifest) == [0.01, 0.01]


def test_empty_audio_and_off_pattern_names_are_problems(tmp_path):
    write_wav(tmp_path / "wav" / "03a01Wa.wav")
    write_wav(tmp_path / "wav" / "03a02Wa.wav", frames=0)
    write_wav(tmp_path / "wav" / "notes.wav")
    write_wav(tmp_path / "wav" / "99a01Wa.wav")  # no such speaker
    manifest = get_corpus("emodb").load(tmp_path)
    assert [u.id for u in manifest] == ["emodb-03a01Wa"]
    reasons = {Path(p.path).name: p.reason for p in manifest.problems}
    assert reasons["03a02Wa.wav"] == "empty audio (0 samples)"
    assert reasons["notes.wav"].startswith("file name not in emodb layout")
    assert "speaker 99" in reasons["99a01Wa.wav"]


@pytest.mark.parametrize("corpus", sorted(SAMPLES) + ["iemocap"])
def test_missing_root_and_empty_dir_are_corpus_errors(corpus, tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        get_corpus(corpus).load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .wav files") as err:
        get_corpus(corpus).load(tmp_path / "empty")
    assert "\n" not in str(err.value)


def test_wrong_corpus_for_the_tree_is_a_corpus_error(tmp_path):
    write_wav(tmp_path / "wav" / "03a01Wa.wav")
    write_wav(tmp_path / "wav" / "08a02Fb.wav")
    with pytest.raises(CorpusError, match="none of the 2 audio files .* follows the ravdess layout"):
        get_corpus("ravdess").load(tmp_path)
