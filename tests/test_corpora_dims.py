"""Dimensional labels (issue 25): IEMOCAP's [V, A, D] order, MSP-Podcast's release layout and partitions,
CSV dimension columns, normalisation onto [-1, 1], the store's round trip and relabelling, synthetic trees."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from featstore.corpora import DIMENSIONS, Utterance, dimension_array, get_corpus
from featstore.corpora.csvcorpus import CsvCorpus
from featstore.corpora.iemocap import HEADER
from featstore.corpora.mspimprov import MspImprovCorpus
from featstore.corpora.msppodcast import MspPodcastCorpus
from featstore.errors import CorpusError
from featstore.folds import ProtocolError, make_folds, speaker_overlap
from tests.helpers import write_wav


def utt(i: int, corpus: str, **dims) -> Utterance:
    return Utterance(id=f"{corpus}-{i}", path="", corpus=corpus, language="en", speaker=f"{corpus}-s{i % 2}",
                     gender=None, label="neutral", label_raw="neu", **dims)


# -- IEMOCAP -----------------------------------------------------------------------------------------
# A turn block as the release writes it (tabs), an angry turn: raters say val 1-2, act 4-5, dom 4-5.
ANGRY_TURN = ("[140.2250 - 145.6000]\tSes01F_impro05_F019\tang\t[1.5000, 4.0000, 4.5000]\n"
              "C-E1:\tAnger;\t()\nC-E3:\tAnger;\t()\n"
              "A-E3:\tval 2; act 4; dom  4;\t()\nA-E4:\tval 1; act 4; dom  5;\t(threatening, belligerent)\n")
SAD_TURN = ("[150.0000 - 152.5000]\tSes01F_impro05_M020\tsad\t[2.0000, 1.5000, 2.5000]\n"
            "C-E1:\tSadness;\t()\n")


def test_iemocap_reads_the_triple_as_valence_activation_dominance(tmp_path):
    session = tmp_path / "Session1"
    evaluation = session / "dialog" / "EmoEvaluation" / "Ses01F_impro05.txt"
    evaluation.parent.mkdir(parents=True)
    evaluation.write_text(f"{HEADER}\n\n{ANGRY_TURN}\n{SAD_TURN}\n", encoding="utf-8")
    for name in ("Ses01F_impro05_F019", "Ses01F_impro05_M020"):
        write_wav(session / "sentences" / "wav" / "Ses01F_impro05" / f"{name}.wav")
    m = get_corpus("iemocap").load(tmp_path)
    assert m.problems == []
    got = {u.id: (u.arousal, u.valence, u.dominance, u.dimension_scale) for u in m}
    assert got == {"iemocap-Ses01F_impro05_F019": (4.0, 1.5, 4.5, (1.0, 5.0)),   # A is the second value
                   "iemocap-Ses01F_impro05_M020": (1.5, 2.0, 2.5, (1.0, 5.0))}
    angry, sad = dimension_array(m.utterances)                                   # (arousal, valence, dominance)
    np.testing.assert_allclose(angry, [0.5, -0.75, 0.75])                        # 1-5 onto [-1, 1]
    assert angry[0] > sad[0] and angry[1] < sad[1]                               # angry: more aroused, less pleasant


# -- MSP-Podcast ------------------------------------------------------------------------------------
# (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set), the release's columns and order
MSP_ROWS = [
    ("MSP-PODCAST_0001_0001.wav", "A", "6.2", "2.0", "5.8", "127", "Male", "Train"),
    ("MSP-PODCAST_0001_0002.wav", "H", "4.6", "6.0", "4.4", "127", "Male", "Train"),
    ("MSP-PODCAST_0002_0001.wav", "N", "4.0", "4.0", "4.0", "33", "Female", "Train"),
    ("MSP-PODCAST_0002_0002.wav", "O", "3.0", "5.0", "3.5", "33", "Female", "Train"),          # other
    ("MSP-PODCAST_0002_0003.wav", "X", "2.4", "3.2", "3.0", "33", "Female", "Train"),          # no agreement
    ("MSP-PODCAST_0003_0001.wav", "S", "2.0", "1.6", "2.2", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0003_0002.wav", "S", "2.2", "1.8", "2.6", "Unknown", "Unknown", "Train"),
    ("MSP-PODCAST_0004_0001.wav", "C", "4.2", "2.6", "5.0", "410", "Female", "Development"),
    ("MSP-PODCAST_0004_0002.wav", "N", "3.8", "4.2", "4.0", "410", "Female", "Development"),
    ("MSP-PODCAST_0005_0001.wav", "U", "5.4", "4.8", "4.2", "512", "Male", "Test1"),
    ("MSP-PODCAST_0005_0002.wav", "F", "5.0", "2.4", "2.8", "Unknown", "Unknown", "Test1"),
    ("MSP-PODCAST_0006_0001.wav", "D", "4.4", "2.2", "4.6", "613", "Female", "Test2"),
    ("MSP-PODCAST_0006_0002.wav", "N", "4.0", "4.0", "4.0", "613", "Female", "Test2"),
    ("MSP-PODCAST_0007_0001.wav", "", "", "", "", "", "", "Test3"),                             # labels hidden
]


def msp_tree(root: Path, rows=MSP_ROWS, *, as_json: bool = False, wavs=None) -> Path:
    (root / "Labels").mkdir(parents=True)
    columns = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
    if as_json:
        data = {r[0]: {c: (float(v) if c.startswith("Emo") and c != "EmoClass" and v else v)
                       for c, v in zip(columns[1:], r[1:])} for r in rows}
        (root / "Labels" / "labels_consensus.json").write_text(json.dumps(data), encoding="utf-8")
    else:
        text = ",".join(columns) + "\n" + "".join(",".join(r) + "\n" for r in rows)
        (root / "Labels" / "labels_consensus.csv").write_text(text, encoding="utf-8")
    for r in rows if wavs is None else wavs:
        write_wav(root / "Audios" / r[0])
    return root


@pytest.mark.parametrize("as_json", [False, True])
def test_msppodcast_reads_its_release_layout(tmp_path, as_json):
    m = get_corpus("msppodcast").load(msp_tree(tmp_path, as_json=as_json))
    assert m.problems == []
    by_id = {u.id: u for u in m}
    assert len(m) == 11                                   # 14 rows - O - X - Test3 (hidden)
    assert {u.label_raw for u in m} == set("AHNSCUFD")    # O and X stay out of the categorical task
    angry = by_id["msppodcast-MSP-PODCAST_0001_0001"]
    assert (angry.label, angry.speaker, angry.gender, angry.session) == ("angry", "msppodcast-127", "male", "Train")
    assert (angry.arousal, angry.valence, angry.dominance, angry.dimension_scale) == (6.2, 2.0, 5.8, (1.0, 7.0))
    assert by_id["msppodcast-MSP-PODCAST_0004_0001"].label == "contempt"
    unknown = [u for u in m if "unknown" in u.speaker]
    assert len(unknown) == 3 and len({u.speaker for u in unknown}) == 3   # each its own speaker, never pooled
    assert all(u.gender is None for u in unknown)
    assert Counter(u.session for u in m) == {"Train": 5, "Development": 2, "Test1": 2, "Test2": 2}
    np.testing.assert_allclose(dimension_array([angry]), [[(6.2 - 4) / 3, (2.0 - 4) / 3, (5.8 - 4) / 3]])


def test_msppodcast_all_classes_keep_other_and_no_agreement_with_their_dimensions(tmp_path):
    m = MspPodcastCorpus(classes="all").load(msp_tree(tmp_path))
    extra = {u.label_raw: u for u in m if u.label_raw in "OX"}
    assert {k: (u.label, u.arousal, u.valence) for k, u in extra.items()} == {"O": ("other", 3.0, 5.0),
                                                                              "X": ("other", 2.4, 3.2)}
    assert len(m) == 13 and m.problems == []
    with pytest.raises(ValueError, match="classes"):
        MspPodcastCorpus(classes="10")


def test_msppodcast_official_partitions_are_its_standard_folds(tmp_path):
    m = get_corpus("msppodcast").load(msp_tree(tmp_path))
    folds = make_folds(m.utterances, "standard")
    assert [f.name for f in folds] == ["Test1", "Test2"]            # one fold per test set, never pooled
    part = [u.session for u in m]
    for f in folds:
        assert {part[i] for i in f.train} == {"Train"} and len(f.train) == 5
        assert {part[i] for i in f.val} == {"Development"} and len(f.val) == 2
        assert {part[i] for i in f.test} == {f.name}
        assert not speaker_overlap(m.utterances, f)
    with pytest.raises(ProtocolError, match="published partitions"):
        make_folds([utt(i, "mine") for i in range(4)], "official")


def test_msppodcast_problems_are_listed_not_fatal(tmp_path):
    rows = [*MSP_ROWS[:3], ("MSP-PODCAST_0009_0001.wav", "A", "9.5", "2", "3", "9", "Male", "Train"),
            ("MSP-PODCAST_0009_0002.wav", "Q", "4", "4", "4", "9", "Male", "Train")]
    root = msp_tree(tmp_path, rows, wavs=[*rows[1:], ("MSP-PODCAST_0099_0001.wav",)])
    m = get_corpus("msppodcast").load(root)
    reasons = {Path(p.path).name: p.reason for p in m.problems}
    assert "outside MSP-Podcast's scale 1-7" in reasons["MSP-PODCAST_0009_0001.wav"]
    assert "unknown EmoClass 'Q'" in reasons["MSP-PODCAST_0009_0002.wav"]
    assert "no row in Labels/labels_consensus.csv" in reasons["MSP-PODCAST_0099_0001.wav"]
    assert "the wav is missing" in reasons["MSP-PODCAST_0001_0001.wav"]
    assert len(m) == 2
    bare = tmp_path / "bare"
    write_wav(bare / "Audios" / "MSP-PODCAST_0001_0001.wav")
    with pytest.raises(CorpusError, match="labels_consensus.csv"):
        get_corpus("msppodcast").load(bare)


# -- MSP-IMPROV -------------------------------------------------------------------------------------
# Consensus lines as the release writes them (fields by prefix: N: is naturalness, not a dimension), raters below.
IMPROV_EVALUATION = """UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:4.200000; V:1.800000; D:3.900000; N:3.400000;
rater line; A; A:4; V:2; D:4; N:3;

UTD-IMPROV-S01A-M01-P-MF02.avi; N; V:3.000000; A:2.500000; D:3.000000; N:4.000000;

UTD-IMPROV-S02A-F02-R-FM03.avi; X; A:3.000000; V:3.500000; D:3.000000; N:4.000000;

UTD-IMPROV-S02A-M02-T-MF04.avi; H; A:3.600000; V:6.500000; D:3.000000; N:4.000000;

UTD-IMPROV-S03A-F03-S-FM05.avi; H; A:3.600000; V:4.500000; D:3.000000; N:4.000000;
"""


def test_mspimprov_reads_evaluation_lines_by_prefix(tmp_path):
    (tmp_path / "Evalution.txt").write_text(IMPROV_EVALUATION, encoding="utf-8")   # the release's own misspelling
    for line in IMPROV_EVALUATION.splitlines():
        if line.startswith("UTD"):
            stem = "MSP" + line.split(".avi")[0][3:]
            sentence, speaker, kind = stem.split("-")[2:5]
            write_wav(tmp_path / "Audio" / f"session{int(speaker[1:])}" / sentence / kind / f"{stem}.wav")
    write_wav(tmp_path / "Audio" / "session3" / "S09A" / "S" / "MSP-IMPROV-S09A-F03-S-FM09.wav")   # no label line
    m = get_corpus("mspimprov").load(tmp_path)
    by_id = {u.id: u for u in m}
    angry = by_id["mspimprov-MSP-IMPROV-S01A-F01-S-FM01"]
    assert (angry.arousal, angry.valence, angry.dominance, angry.dimension_scale) == (4.2, 1.8, 3.9, (1.0, 5.0))
    assert (angry.label, angry.speaker, angry.gender, angry.session) == ("angry", "mspimprov-F01", "female", "1")
    neutral = by_id["mspimprov-MSP-IMPROV-S01A-M01-P-MF02"]
    assert (neutral.arousal, neutral.valence) == (2.5, 3.0)                     # by prefix, not by position
    assert len(m) == 3                                                          # X out, V:6.5 a problem
    reasons = sorted(p.reason for p in m.problems)
    assert any("outside MSP-IMPROV's scale 1-5" in r for r in reasons)
    assert any("no label line for MSP-IMPROV-S09A-F03-S-FM09" in r for r in reasons)
    everything = MspImprovCorpus(classes="all").load(tmp_path)
    assert {u.label_raw: u.label for u in everything}["X"] == "other" and len(everything) == 4
    folds = make_folds(m.utterances, "standard")                                # leave one session out
    assert [f.name for f in folds] == ["session-1", "session-3"]               # F01+M01 together, F03
    assert all(not speaker_overlap(m.utterances, f) for f in folds)


# -- CSV corpora --------------------------------------------------------------------------------------
def csv_corpus(tmp_path: Path, header: str, rows: list[str]) -> Path:
    for i in range(len(rows)):
        write_wav(tmp_path / "audio" / f"c{i}.wav")
    listing = tmp_path / "mine.csv"
    listing.write_text(header + "\n" + "".join(f"audio/c{i}.wav,{row}\n" for i, row in enumerate(rows)),
                       encoding="utf-8")
    return listing


def test_csv_dimension_columns_with_their_declared_scale(tmp_path):
    listing = csv_corpus(tmp_path, "path,label,speaker,arousal,valence,dominance,scale_min,scale_max",
                         ["angry,a,9,1,5,0,10", "sad,b,1,2,,0,10", "neutral,a,,,,0,10", "happy,b,11,5,5,0,10"])
    m = get_corpus("csv").load(listing)
    got = {u.id: (u.arousal, u.valence, u.dominance, u.dimension_scale) for u in m}
    assert got == {"mine-c0": (9.0, 1.0, 5.0, (0.0, 10.0)), "mine-c1": (1.0, 2.0, None, (0.0, 10.0)),
                   "mine-c2": (None, None, None, None)}
    assert [p.reason for p in m.problems] == ["line 5: arousal 11 lies outside the scale 0-10"]
    arr = dimension_array(m.utterances)
    np.testing.assert_allclose(arr[:2], [[0.8, -0.8, 0.0], [-0.8, -0.6, np.nan]])
    assert np.isnan(arr[2]).all()


def test_csv_dimensions_need_one_scale(tmp_path):
    listing = csv_corpus(tmp_path / "a", "path,label,speaker,arousal", ["angry,a,4", "sad,b,2"])
    with pytest.raises(CorpusError, match="no scale; add the columns scale_min,scale_max"):
        get_corpus("csv").load(listing)
    m = CsvCorpus("mine", dimension_scale=(1, 5)).load(listing)          # or declared in code
    assert [u.dimension_scale for u in m] == [(1.0, 5.0)] * 2
    two = csv_corpus(tmp_path / "b", "path,label,speaker,arousal,scale_min,scale_max", ["angry,a,4,1,5", "sad,b,2,1,7"])
    with pytest.raises(CorpusError, match="two dimension scales"):
        get_corpus("csv").load(two)
    plain = csv_corpus(tmp_path / "c", "path,label,speaker", ["angry,a", "sad,b"])
    assert all(u.dimension_scale is None and u.arousal is None for u in get_corpus("csv").load(plain))


# -- normalisation ------------------------------------------------------------------------------------
def test_dimension_array_maps_each_corpus_scale_onto_minus_one_to_one():
    rows = [utt(0, "iemocap", arousal=1.0, valence=3.0, dominance=5.0),            # registered scale 1-5
            utt(1, "msppodcast", arousal=7.0, valence=4.0, dominance=1.0),        # 1-7
            utt(2, "mine", arousal=0.25, valence=None, dominance=None, dimension_scale=(0.0, 1.0)),
            utt(3, "ravdess")]                                                     # no dimensions at all
    arr = dimension_array(rows)
    assert arr.shape == (4, 3) and arr.dtype == np.float64
    np.testing.assert_allclose(arr[:3], [[-1, 0, 1], [1, 0, -1], [-0.5, np.nan, np.nan]])
    assert np.isnan(arr[3]).all()
    np.testing.assert_array_equal(dimension_array(rows[:2], normalised=False), [[1, 3, 5], [7, 4, 1]])
    np.testing.assert_allclose(dimension_array(rows[:1], ["valence"], scales={"iemocap": (0.0, 6.0)}), [[0.0]])
    assert DIMENSIONS == ("arousal", "valence", "dominance")
    with pytest.raises(CorpusError, match="no scale is known"):
        dimension_array([utt(4, "mine", arousal=3.0)])
    with pytest.raises(CorpusError, match="unknown dimension"):
        dimension_array(rows, ["pleasure"])


# -- the store --------------------------------------------------------------------------------------
def _msp_manifest(tmp_path: Path):
    from featstore.synth import synthesize

    synthesize("msppodcast", tmp_path / "msp", n=12, seed=0, max_duration=0.3, sample_rate=16000)
    return get_corpus("msppodcast").load(tmp_path / "msp")


def test_store_keeps_dimensions_and_relabels_a_store_extracted_without_them(tmp_path, tiny_models):
    from featstore.extract import extract_manifest
    from featstore.store import export_layer, open_store, store_info, verify_store

    now = _msp_manifest(tmp_path)
    assert len(now) >= 6 and all(u.arousal is not None for u in now)
    before = dataclasses.replace(now, utterances=[dataclasses.replace(u, arousal=None, valence=None, dominance=None,
                                                                     dimension_scale=None) for u in now])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    path = extract_manifest(before, **kw).store
    with h5py.File(path, "r") as f:                       # a store of a corpus without dimensions: as before
        assert "arousal" not in f["utterances"] and "dimension_scale" not in f["utterances"]
    old = open_store(path)
    assert all(u.arousal is None and u.dimension_scale is None for u in old.utterances)
    assert old.dimension_scales == {}
    features, digest = old.pooled_all(), old.digest

    res = extract_manifest(now, **kw)                     # the corpus has dimensions now: relabelled, not extracted
    assert res.relabelled == len(now) and res.extracted == 0 and not res.up_to_date
    new = open_store(res.store)
    want = {u.id: (u.arousal, u.valence, u.dominance, u.dimension_scale) for u in now}
    assert {u.id: (u.arousal, u.valence, u.dominance, u.dimension_scale) for u in new.utterances} == want
    assert new.dimension_scales == {"msppodcast": (1.0, 7.0)}
    np.testing.assert_array_equal(new.pooled_all(), features)
    assert new.digest != digest and verify_store(res.store).ok
    order = [u.id for u in new.utterances]
    with h5py.File(res.store, "r") as f:                  # plain h5py reads the table
        arousal = f["utterances/arousal"][()]
        assert f["utterances/dimension_scale"].shape == (len(now), 2)
    np.testing.assert_array_equal(arousal, [want[i][0] for i in order])
    np.testing.assert_allclose(dimension_array(new.utterances, scales=new.dimension_scales)[:, 0],
                               (arousal - 4.0) / 3.0)
    assert extract_manifest(now, **kw).up_to_date         # once relabelled, a re-run is a no-op again
    z = np.load(export_layer(res.store, 1, tmp_path / "l1.npz"))
    np.testing.assert_array_equal(z["arousal"], arousal)
    assert z["dimension_scale"].tolist() == [[1.0, 7.0]] * len(now)
    assert store_info(res.store)["dimension_scales"] == {"msppodcast": (1.0, 7.0)}


def test_a_store_written_before_dimensions_reads_with_none(tmp_path, tiny_models):
    """Delete the dimension datasets (a store written before they existed): it opens, with None."""
    from featstore.extract import extract_manifest
    from featstore.store import open_store

    now = _msp_manifest(tmp_path)
    path = extract_manifest(now, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                            progress=False).store
    with h5py.File(path, "a") as f:
        for name in (*DIMENSIONS, "dimension_scale"):
            del f["utterances"][name]
    fs = open_store(path)
    assert len(fs) == len(now) and all(u.arousal is None and u.dimension_scale is None for u in fs.utterances)
    assert np.isnan(dimension_array(fs.utterances)).all()


# -- synthetic trees ------------------------------------------------------------------------------------
def test_synthetic_iemocap_and_msppodcast_trees_load_with_planted_dimensions(tmp_path):
    from featstore.synth import synthesize

    res = synthesize("iemocap", tmp_path / "iemocap", n=40, seed=0, max_duration=0.2, sample_rate=8000)
    m = get_corpus("iemocap").load(tmp_path / "iemocap")
    assert m.problems == [] and len(m) == 40
    assert all(1 <= u.arousal <= 5 and 1 <= u.valence <= 5 and 1 <= u.dominance <= 5 for u in m)
    text = (tmp_path / "iemocap" / res.annotations[0]).read_text(encoding="utf-8")
    first = next(u for u in m if u.id.endswith(text.split("\t")[1]))
    assert text.split("\t")[3].startswith(f"[{first.valence:.4f}, {first.arousal:.4f}, {first.dominance:.4f}]")
    by_label = {lab: np.mean([u.arousal for u in m if u.label == lab]) for lab in ("angry", "sad")}
    assert by_label["angry"] > by_label["sad"] + 1                   # planted from loudness and pitch
    assert len({round(u.arousal, 2) for u in m if u.label == "angry"}) > 1   # and from each clip, not the class

    res = synthesize("msppodcast", tmp_path / "msp", seed=0, max_duration=0.2, sample_rate=8000)
    m = get_corpus("msppodcast").load(tmp_path / "msp")
    assert m.problems == [] and all(1 <= u.arousal <= 7 for u in m)
    written = Counter(f.label_raw for f in res.files)
    assert written["O"] and written["X"] and not {u.label_raw for u in m} & {"O", "X"}
    assert {u.session for u in m} == {"Train", "Development", "Test1", "Test2"}       # Test3's labels hidden
    folds = make_folds(m.utterances, "standard")
    assert [f.name for f in folds] == ["Test1", "Test2"] and not any(speaker_overlap(m.utterances, f) for f in folds)
    assert sum("unknown" in u.speaker for u in m) == len({u.speaker for u in m if "unknown" in u.speaker}) > 1
    res_improv = synthesize("mspimprov", tmp_path / "improv", n=48, seed=0, max_duration=0.2, sample_rate=8000)
    improv = get_corpus("mspimprov").load(tmp_path / "improv")
    assert improv.problems == [] and len({u.session for u in improv}) == 6 and len({u.speaker for u in improv}) == 12
    assert all(1 <= u.valence <= 5 for u in improv)
    assert len(improv) == sum(f.label_raw not in "OX" for f in res_improv.files)
    again = synthesize("msppodcast", tmp_path / "msp2", seed=0, max_duration=0.2, sample_rate=8000)
    assert [f.relpath for f in again.files] == [f.relpath for f in res.files]
    assert (tmp_path / "msp2" / "Labels" / "labels_consensus.csv").read_bytes() == \
        (tmp_path / "msp" / "Labels" / "labels_consensus.csv").read_bytes()       # same seed, same release
