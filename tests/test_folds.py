"""Fold protocols, checked against published splits (Luna-Jiménez 2022, EmoBox's raw metadata).

Utterance lists are built straight from the EmoBox jsonl rows (id = key, speaker derived from
the key here), so these tests do not depend on the corpus loaders.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import pytest

from featstore.corpora import CORPORA
from featstore.corpora.base import Utterance
from featstore.errors import CorpusError, SerError
from featstore.folds import (
    LUNA5_TEST_ACTORS,
    PROTOCOLS,
    Fold,
    FoldWarning,
    ProtocolError,
    check_protocol,
    cross_corpus_folds,
    fold_summary,
    leakage_report,
    make_folds,
    multi_corpus_folds,
    speaker_overlap,
    standard_protocol,
    standard_protocols,
    validation_split,
    with_validation,
)
from tests.helpers import read_emobox

EMOBOX_CORPORA = ["aesdd", "cafe", "cremad", "emodb", "emovo", "iemocap", "mesd", "ravdess",
                  "savee", "shemo", "subesco", "tess", "urdu"]
# SUBESCO too, although CORPORA.md lists only the first five: EmoBox's 5 folds hold 4 speakers each.
SPEAKER_INDEPENDENT_IN_EMOBOX = ["ravdess", "savee", "emovo", "cafe", "iemocap", "subesco"]
MIXED_IN_EMOBOX = ["cremad", "emodb", "tess", "aesdd", "mesd", "shemo", "urdu"]


def _speaker_session(corpus: str, key: str) -> tuple[str, str | None]:
    """Local speaker id (and session) from an EmoBox key, per the corpus' file-name scheme."""
    name = key[len(corpus) + 1:]
    if corpus == "ravdess":
        return name.rsplit("-", 1)[1], None                    # ...-AA actor
    if corpus in ("cremad", "savee", "tess", "cafe"):
        return name.split("-")[0], None                        # 1001-..., JE-n23, OAF-..., 12-P-2-5
    if corpus == "emodb":
        return name[:2], None                                  # 03a01Wa
    if corpus == "emovo":
        return name.split("-")[1], None                        # dis-f1-b1
    if corpus == "iemocap":                                    # Ses01F_impro04_F000
        return name[:5] + name.rsplit("_", 1)[1][0], name[:5]
    if corpus == "shemo":
        return name[:3], None                                  # M36S02
    if corpus == "subesco":
        return "_".join(name.split("_")[:2]), None             # F_10_FAHMEE_...
    if corpus == "urdu":
        return name.split("_")[0], None                        # SM20_F8_N012
    if corpus == "mesd":
        return name.split("_")[1], None                        # Anger_F_A_tarde (voice type)
    if corpus == "aesdd":
        return str(int(re.match(r"\d+", name.rsplit("-", 1)[1]).group())), None  # a03-3, a03-5b
    raise AssertionError(corpus)


def _utterances(rows: list[dict], corpus: str) -> list[Utterance]:
    out = []
    for r in rows:
        spk, session = _speaker_session(corpus, r["key"])
        out.append(Utterance(id=r["key"], path=r["wav"], corpus=corpus, language="xx", speaker=f"{corpus}-{spk}",
                             gender=None, label=str(r["emo"]).lower(), label_raw=str(r["emo"]), session=session))
    return out


@pytest.fixture(scope="session")
def emobox():
    """corpus -> (utterances, raw folds.json)."""
    data = {}
    for c in EMOBOX_CORPORA:
        rows, folds = read_emobox(c)
        data[c] = (_utterances(rows, c), folds)
    return data


def _check_fold(f: Fold, n: int) -> None:
    """Sorted, disjoint int64 index arrays inside [0, n)."""
    parts = [f.train, f.test] + ([] if f.val is None else [f.val])
    for a in parts:
        assert a.dtype == np.int64 and a.ndim == 1
        assert np.all(np.diff(a) > 0)
        assert len(a) == 0 or (a[0] >= 0 and a[-1] < n)
    assert len(f.test) > 0 and len(f.train) > 0
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)


def _test_speakers(utts, f):
    return {utts[i].speaker for i in f.test}


# -- luna5 ----------------------------------------------------------------------------------------

def test_luna5_test_actors_are_the_published_ones(emobox):
    utts, _ = emobox["ravdess"]
    folds = make_folds(utts, "luna5")
    expected = [{2, 5, 14, 15, 16}, {3, 6, 7, 13, 18}, {10, 11, 12, 19, 20}, {8, 17, 21, 23, 24}, {1, 4, 9, 22}]
    assert [set(s) for s in LUNA5_TEST_ACTORS] == expected
    assert [f.name for f in folds] == [f"luna-{k}" for k in range(5)]
    seen = Counter()
    for f, actors in zip(folds, expected):
        _check_fold(f, len(utts))
        assert _test_speakers(utts, f) == {f"ravdess-{a:02d}" for a in actors}
        assert len(f.train) + len(f.test) == len(utts)          # train is everything else
        assert len(f.test) == 60 * len(actors)
        seen.update(actors)
    assert seen == Counter(range(1, 25))                          # every actor tested exactly once


def test_luna5_rejects_other_corpora(emobox):
    with pytest.raises(ProtocolError, match="RAVDESS"):
        make_folds(emobox["ravdess"][0] + emobox["savee"][0], "luna5")
    with pytest.raises(ProtocolError, match="RAVDESS"):
        make_folds(emobox["savee"][0], "luna5")


# -- emobox ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("corpus", EMOBOX_CORPORA)
def test_emobox_reproduces_reference_test_keys(emobox, corpus):
    utts, raw = emobox[corpus]
    expected = raw["test_keys_by_fold"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FoldWarning)               # the full corpus: nothing left out
        folds = make_folds(utts, "emobox")
    assert [f.name for f in folds] == list(expected)
    for f in folds:
        _check_fold(f, len(utts))
        test_keys = [utts[i].id for i in f.test]
        assert sorted(test_keys) == sorted(expected[f.name])
        assert len(f.train) + len(f.test) == len(utts)


def test_emobox_unknown_utterances_reported(emobox):
    utts, raw = emobox["savee"]
    stray = Utterance(id="savee-XX-a99", path="x.wav", corpus="savee", language="en", speaker="savee-XX",
                      gender=None, label="a", label_raw="a")
    mixed = [stray] + utts
    with pytest.warns(FoldWarning, match=r"1 of 481 savee utterances .*savee-XX-a99"):
        folds = make_folds(mixed, "emobox")
    for f in folds:                                               # left out of every split
        assert 0 not in f.train and 0 not in f.test
        assert sorted(mixed[i].id for i in f.test) == sorted(raw["test_keys_by_fold"][f.name])
    with pytest.raises(ProtocolError, match="1 of 481"):
        make_folds(mixed, "emobox", strict=True)
    with pytest.warns(FoldWarning, match="missing"):
        make_folds(utts[:-3], "emobox")


def test_emobox_needs_one_known_corpus(emobox):
    with pytest.raises(ProtocolError, match="one corpus"):
        make_folds(emobox["savee"][0] + emobox["emovo"][0], "emobox")
    other = [Utterance(id=f"foo-{i}", path="", corpus="foo", language="en", speaker=f"foo-{i % 3}", gender=None,
                       label="angry", label_raw="a") for i in range(6)]
    with pytest.raises(ProtocolError, match="no splits for corpus 'foo'"):
        make_folds(other, "emobox")


# -- speaker independence -------------------------------------------------------------------------

@pytest.mark.parametrize("corpus,protocol", [
    ("ravdess", "luna5"), ("emodb", "loso"), ("tess", "loso"), ("iemocap", "loso-session"),
    ("cremad", "speaker-kfold:5"), ("shemo", "speaker-kfold:5"),
] + [(c, "emobox") for c in SPEAKER_INDEPENDENT_IN_EMOBOX])
def test_speaker_independent_protocols_have_no_overlap(emobox, corpus, protocol):
    utts, _ = emobox[corpus]
    folds = make_folds(utts, protocol)
    for f in folds:
        _check_fold(f, len(utts))
        assert speaker_overlap(utts, f) == set()
    assert all(row.n_speakers == 0 for row in leakage_report(utts, folds))
    tested = Counter(s for f in folds for s in _test_speakers(utts, f))
    assert set(tested) == {u.speaker for u in utts} and set(tested.values()) == {1}   # each speaker tested once


@pytest.mark.parametrize("corpus", MIXED_IN_EMOBOX)
def test_emobox_speaker_leakage_is_flagged(emobox, corpus):
    utts, _ = emobox[corpus]
    folds = make_folds(utts, "emobox")
    report = leakage_report(utts, folds)
    assert all(row.n_speakers > 0 for row in report)
    assert all(len(row.examples) == min(5, row.n_speakers) for row in report)
    if corpus == "cremad":
        assert report[0].fold == "fold_1" and report[0].n_speakers == 91   # every actor on both sides


@pytest.mark.parametrize("corpus", EMOBOX_CORPORA)
def test_standard_protocol_is_speaker_independent(emobox, corpus):
    utts, _ = emobox[corpus]
    assert standard_protocol(corpus) == standard_protocols()[corpus][0]
    folds = make_folds(utts, "standard")
    assert len(folds) >= 2
    for f in folds:
        _check_fold(f, len(utts))
        assert speaker_overlap(utts, f) == set()


def test_standard_protocol_table():
    assert standard_protocol("ravdess") == "luna5"
    assert standard_protocol("IEMOCAP") == "loso-session"
    assert {standard_protocol(c) for c in ("emovo", "savee", "cafe", "subesco")} == {"emobox"}
    assert standard_protocol("cremad") == "speaker-kfold:5"
    assert standard_protocol("emodb") == "loso"
    assert standard_protocol("tess") == "loso"
    assert standard_protocol("mesd") == "loso"
    assert standard_protocol("my-csv-corpus") == "speaker-kfold:5"
    table = standard_protocols()
    assert set(table) == set(CORPORA) and set(EMOBOX_CORPORA) < set(table)
    for name, (protocol, why) in table.items():
        assert check_protocol(protocol) == protocol and protocol != "standard", name
        assert why, name


def test_standard_protocol_of_a_misspelt_corpus_suggests_the_name():
    with pytest.raises(CorpusError) as e:
        standard_protocol("ravdes")
    assert "unknown corpus 'ravdes' - did you mean ravdess?" in str(e.value)
    assert "--protocol" in str(e.value) and "\n" not in str(e.value)
    assert standard_protocol("my_emotions") == "speaker-kfold:5"   # far from every name: a CSV corpus


@pytest.mark.parametrize("spelling, expected", [(" LUNA5 ", "luna5"), ("speaker-kfold:12", "speaker-kfold:12"),
                                                ("standard", "standard"), ("loso-session", "loso-session")])
def test_check_protocol_normalises_known_names(spelling, expected):
    assert check_protocol(spelling) == expected


@pytest.mark.parametrize("bad", ["luna6", "speaker-kfold:1", "speaker-kfold", "kfold:5"])
def test_check_protocol_refuses_unknown_names(bad):
    with pytest.raises(ProtocolError) as e:
        check_protocol(bad)
    assert repr(bad) in str(e.value) and any(p.split(":")[0] in str(e.value) for p in PROTOCOLS)


# -- loso, loso-session ---------------------------------------------------------------------------

def test_loso_one_fold_per_speaker(emobox):
    utts, _ = emobox["emodb"]
    folds = make_folds(utts, "loso")
    speakers = sorted({u.speaker for u in utts})
    assert len(folds) == 10 and [f.name for f in folds] == [f"loso-{s}" for s in speakers]
    for f, s in zip(folds, speakers):
        assert _test_speakers(utts, f) == {s}
        assert len(f.test) == sum(u.speaker == s for u in utts)
        assert len(f.train) + len(f.test) == len(utts)
    tess = make_folds(emobox["tess"][0], "loso")
    assert [len(f.test) for f in tess] == [1400, 1400]          # train on one speaker, test on the other
    with pytest.raises(ProtocolError, match="at least 2 speakers"):
        make_folds([u for u in emobox["tess"][0] if u.speaker == "tess-OAF"], "loso")


def test_loso_session_iemocap(emobox):
    utts, _ = emobox["iemocap"]
    folds = make_folds(utts, "loso-session")
    assert [f.name for f in folds] == [f"session-Ses0{k}" for k in range(1, 6)]
    assert [len(f.test) for f in folds] == [1085, 1023, 1151, 1031, 1241]   # CORPORA.md
    for f in folds:
        assert len(_test_speakers(utts, f)) == 2
    with pytest.raises(ProtocolError, match="no session"):
        make_folds(emobox["emodb"][0], "loso-session")


# -- speaker-kfold --------------------------------------------------------------------------------

def test_speaker_kfold_deterministic_and_seeded(emobox):
    utts, _ = emobox["cremad"]
    a = make_folds(utts, "speaker-kfold:5", seed=0)
    b = make_folds(utts, "speaker-kfold:5", seed=0)
    c = make_folds(utts, "speaker-kfold:5", seed=1)
    assert len(a) == 5 and [f.name for f in a] == [f"kfold-{i}" for i in range(5)]
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.test, fb.test) and np.array_equal(fa.train, fb.train)
    assert [_test_speakers(utts, f) for f in a] != [_test_speakers(utts, f) for f in c]
    labels = sorted({u.label for u in utts})
    overall = np.array([sum(u.label == lab for u in utts) for lab in labels]) / len(utts)
    for f in a:
        _check_fold(f, len(utts))
        assert len(f.train) + len(f.test) == len(utts)
        assert 17 <= len(_test_speakers(utts, f)) <= 20               # 91 speakers in 5 folds
        counts = Counter(utts[i].label for i in f.test)
        props = np.array([counts[lab] for lab in labels]) / len(f.test)
        assert np.abs(props - overall).max() < 0.03                   # stratified by label


def test_speaker_kfold_needs_enough_speakers(emobox):
    with pytest.raises(ProtocolError, match=r"at least 5 speakers.*has 4|needs at least 5 speakers.*4"):
        make_folds(emobox["savee"][0], "speaker-kfold:5")
    assert len(make_folds(emobox["savee"][0], "speaker-kfold:4")) == 4


@pytest.mark.parametrize("bad", ["luna", "LOSO-speaker", "speaker-kfold", "speaker-kfold:1", "speaker-kfold:x",
                                 "kfold:5", "", "emobox5"])
def test_bad_protocol_names(emobox, bad):
    with pytest.raises(ProtocolError) as e:
        make_folds(emobox["savee"][0], bad)
    assert isinstance(e.value, SerError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert "speaker-kfold" in msg
    if not bad.startswith("speaker-kfold"):
        assert all(p in msg for p in ("luna5", "emobox", "loso", "loso-session", "speaker-kfold:K"))


def test_protocol_name_is_case_insensitive(emobox):
    utts = emobox["savee"][0]
    assert [f.name for f in make_folds(utts, "LOSO")] == [f.name for f in make_folds(utts, "loso")]


# -- validation -----------------------------------------------------------------------------------

def test_validation_split_uses_whole_training_speakers(emobox):
    utts, _ = emobox["cremad"]
    fold = make_folds(utts, "speaker-kfold:5")[0]
    train, val = validation_split(utts, fold.train, fraction=0.1, seed=3)
    train_spk, val_spk = _speakers(utts, train), _speakers(utts, val)
    original = _speakers(utts, fold.train)
    assert val_spk <= original and not (val_spk & train_spk) and not (val_spk & _test_speakers(utts, fold))
    assert len(val_spk) == round(0.1 * len(original))
    assert np.array_equal(np.sort(np.concatenate([train, val])), fold.train)    # a partition of train
    again = validation_split(utts, fold.train, fraction=0.1, seed=3)
    assert np.array_equal(again[1], val)
    other = validation_split(utts, fold.train, fraction=0.1, seed=4)
    assert not np.array_equal(other[1], val)
    _, val2 = validation_split(utts, fold.train, n_speakers=2, seed=0)
    assert len(_speakers(utts, val2)) == 2


def test_validation_at_least_one_speaker_and_errors(emobox):
    utts, _ = emobox["savee"]
    fold = make_folds(utts, "emobox")[0]
    train, val = validation_split(utts, fold.train, fraction=0.01)
    assert len(_speakers(utts, val)) == 1 and len(_speakers(utts, train)) == 2
    with pytest.raises(ProtocolError, match="1 to 2 speakers"):
        validation_split(utts, fold.train, n_speakers=3)
    tess = emobox["tess"][0]
    with pytest.raises(ProtocolError, match="at least 2 training speakers"):
        with_validation(make_folds(tess, "loso"), tess)


def test_with_validation_fills_val(emobox):
    utts, _ = emobox["iemocap"]
    folds = make_folds(utts, "loso-session")
    vfolds = with_validation(folds, utts, n_speakers=2, seed=0)
    for f, v in zip(folds, vfolds):
        _check_fold(v, len(utts))
        assert np.array_equal(v.test, f.test) and v.name == f.name
        assert len(v.train) + len(v.val) == len(f.train)
        assert len(_speakers(utts, v.val)) == 2
        assert not (_speakers(utts, v.val) & (_speakers(utts, v.train) | _test_speakers(utts, v)))
        assert speaker_overlap(utts, v) == set()
    leaky = Fold("leaky", vfolds[0].train, vfolds[0].test, vfolds[0].test[:1])  # val shares a test speaker
    assert speaker_overlap(utts, leaky) == {utts[vfolds[0].test[0]].speaker}


def _speakers(utts, idx):
    return {utts[i].speaker for i in idx}


# -- multi- and cross-corpus ----------------------------------------------------------------------

def test_multi_corpus_folds(emobox):
    rav, sav, tess = emobox["ravdess"][0], emobox["savee"][0], emobox["tess"][0]
    utts = sav + rav + tess                                     # target sits in the middle
    folds = multi_corpus_folds(utts, "ravdess", "luna5", extra_train=["savee"])
    plain = make_folds(rav, "luna5")
    savee_idx = set(range(len(sav)))
    for f, p in zip(folds, plain):
        _check_fold(f, len(utts))
        assert {utts[i].corpus for i in f.test} == {"ravdess"}
        assert [utts[i].id for i in f.test] == [rav[i].id for i in p.test]
        assert savee_idx <= set(f.train.tolist())
        assert {utts[i].corpus for i in f.train} == {"ravdess", "savee"}         # tess unused
        assert len(f.train) == len(p.train) + len(sav)
        assert speaker_overlap(utts, f) == set()
    with pytest.raises(ProtocolError, match="also listed"):
        multi_corpus_folds(utts, "ravdess", "luna5", extra_train=["ravdess"])
    with pytest.raises(ProtocolError, match="emodb"):
        multi_corpus_folds(utts, "ravdess", "luna5", extra_train=["emodb"])
    with pytest.raises(ProtocolError, match="target corpus"):
        multi_corpus_folds(utts, "emodb", "loso", extra_train=["savee"])


def test_cross_corpus_folds(emobox):
    rav, sav, tess = emobox["ravdess"][0], emobox["savee"][0], emobox["tess"][0]
    utts = rav + sav + tess
    (fold,) = cross_corpus_folds(utts, ["ravdess", "tess"], ["savee"])
    _check_fold(fold, len(utts))
    assert {utts[i].corpus for i in fold.train} == {"ravdess", "tess"} and len(fold.train) == len(rav) + len(tess)
    assert {utts[i].corpus for i in fold.test} == {"savee"} and len(fold.test) == len(sav)
    assert "savee" in fold.name
    with pytest.raises(ProtocolError, match="both"):
        cross_corpus_folds(utts, ["ravdess", "savee"], ["savee"])
    with pytest.raises(ProtocolError, match="at least one"):
        cross_corpus_folds(utts, [], ["savee"])
    with pytest.raises(ProtocolError, match="emodb"):
        cross_corpus_folds(utts, ["ravdess"], ["emodb"])


# -- summaries ------------------------------------------------------------------------------------

def test_fold_summary_rows(emobox):
    utts, _ = emobox["savee"]
    folds = with_validation(make_folds(utts, "emobox"), utts, n_speakers=1)
    rows = fold_summary(utts, folds)
    assert len(rows) == 4
    for row, f in zip(rows, folds):
        assert row["fold"] == f.name
        assert (row["n_train"], row["n_val"], row["n_test"]) == (240, 120, 120)
        assert row["n_test_speakers"] == 1 and row["n_train_speakers"] == 2 and len(row["test_speakers"]) == 1
        assert sum(row["test_labels"].values()) == 120 and row["test_labels"]["n"] == 30
        assert row["leaked_speakers"] == 0
    assert fold_summary(utts, make_folds(utts, "loso"))[0]["n_val"] is None
    cremad = emobox["cremad"][0]
    assert fold_summary(cremad, make_folds(cremad, "emobox"))[0]["leaked_speakers"] == 91


# -- the CLI --------------------------------------------------------------------------------------

def test_cli_prints_a_fold_warning_as_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app
    from tests.helpers import write_wav

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    for actor in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):  # actors 11-24 missing
        write_wav(tmp_path / "r" / f"Actor_{actor:02d}" / f"03-01-05-01-01-01-{actor:02d}.wav")
    result = CliRunner().invoke(app, ["folds", "--corpus", "ravdess", "--root", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "standard protocol for ravdess: luna5 (the published 5-fold actor split" in result.output
    warned = [line for line in result.output.splitlines() if "warning" in line.lower()]
    assert warned == ["warning: luna5: actors [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24] have no "
                      "utterances; folds are not the published ones"]
    assert "FoldWarning" not in result.output and "warnings.warn" not in result.output


# -- emobox-track2 --------------------------------------------------------------------------------

def _track2_utterances(corpus: str) -> list[Utterance]:
    """Every EmoBox file of `corpus` as an utterance, canonical labels; track2's speakers where it names them."""
    from featstore.labels import EMOBOX_TO_CANONICAL
    from featstore.reference import reference, track2

    ref = reference(corpus)
    speaker = {key: spk for key, _label, spk in track2(corpus)}
    return [Utterance(id=f.key, path=f.relpath, corpus=corpus, language="en",
                      speaker=f"{corpus}-{speaker.get(f.key, f'other{i % 7}')}", gender=None,
                      label=EMOBOX_TO_CANONICAL[ref.label_map[f.label_raw]], label_raw=f.label_raw)
            for i, f in enumerate(ref.files)]


@pytest.mark.parametrize("corpus", ["iemocap", "meld", "ravdess", "savee"])
def test_emobox_track2_folds_are_the_balanced_subset_by_speaker(corpus):
    from featstore.folds import TRACK2_CLASSES, track2_indices
    from featstore.reference import track2

    utts = _track2_utterances(corpus)
    rows = track2(corpus)
    assert len(rows) == 240
    by_id = {u.id: u for u in utts}
    assert {by_id[key].label for key, _l, _s in rows} == set(TRACK2_CLASSES)
    assert all(by_id[key].label == label for key, label, _s in rows)  # our labels are track2's
    subset = track2_indices(utts)
    assert {utts[i].id for i in subset} == {key for key, _l, _s in rows}
    folds = make_folds(utts, "emobox-track2")
    assert len(folds) == 4
    tested = Counter()
    for f in folds:
        _check_fold(f, len(utts))
        assert speaker_overlap(utts, f) == set()
        assert set(f.train) | set(f.test) == set(subset.tolist())
        tested.update(utts[i].id for i in f.test)
    assert set(tested) == {key for key, _l, _s in rows} and set(tested.values()) == {1}


def test_emobox_track2_refuses_corpora_outside_the_track():
    utts = [Utterance(id="emodb-03a01Wa", path="x", corpus="emodb", language="de", speaker="emodb-03", gender=None,
                      label="angry", label_raw="W")]
    with pytest.raises(ProtocolError, match="covers iemocap, meld, ravdess, savee only"):
        make_folds(utts, "emobox-track2")
    assert check_protocol("emobox-track2") == "emobox-track2"


def test_corpora_without_real_speakers_say_so_when_folded():
    from featstore.folds import SpeakerWarning

    utts = [Utterance(id=f"mer2023-sample_{i:08d}", path="x", corpus="mer2023", language="zh",
                      speaker=f"mer2023-sample_{i:08d}", gender=None, label=("angry", "sad")[i % 2], label_raw="x")
            for i in range(10)]
    with pytest.warns(SpeakerWarning, match="MER2023 publishes no speakers.*proves nothing"):
        make_folds(utts, "speaker-kfold:2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpeakerWarning)
        make_folds(_track2_utterances("savee"), "loso")  # real speakers: no such warning
