"""A user's own corpus listed in a CSV file (`ser ... --corpus csv --root my.csv`)."""

from __future__ import annotations

import pytest

from featstore.corpora import CORPORA, get_corpus
from featstore.corpora.csvcorpus import CsvCorpus, canonical_label
from featstore.errors import CorpusError
from tests.helpers import write_wav


def test_happy_path(tmp_path):
    write_wav(tmp_path / "audio" / "a1.wav", 16000, 800)
    write_wav(tmp_path / "audio" / "a2.wav", 22050, 2205)
    elsewhere = write_wav(tmp_path / "other" / "b1.wav", 8000, 80)
    listing = tmp_path / "lists" / "My Data.csv"
    listing.parent.mkdir()
    listing.write_text(
        "Path,Label,Speaker,Language,Gender\n"
        "../audio/a1.wav,Angry,s1,EN,F\n"
        "../audio/a2.wav,Fearful,s2,de,male\n"
        f"{elsewhere},excitement,s1,,\n",
        encoding="utf-8")
    assert "csv" in CORPORA
    manifest = get_corpus("csv").load(listing)
    assert manifest.problems == []
    assert manifest.corpus == "my-data" and manifest.root == str(listing.resolve())
    by_id = {u.id: u for u in manifest}
    assert sorted(by_id) == ["my-data-a1", "my-data-a2", "my-data-b1"]
    a1, a2, b1 = by_id["my-data-a1"], by_id["my-data-a2"], by_id["my-data-b1"]
    assert (a1.label, a1.label_raw, a1.speaker, a1.gender, a1.language) == (
        "angry", "Angry", "my-data-s1", "female", "en")
    assert (a2.label, a2.gender, a2.language, a2.sample_rate, a2.duration) == ("fear", "male", "de", 22050, 0.1)
    assert (b1.label, b1.gender, b1.language, b1.path) == ("excitement", None, "", str(elsewhere))
    assert a1.duration == 0.05 and a1.corpus == "my-data"


def test_explicit_name(tmp_path):
    write_wav(tmp_path / "x.wav")
    (tmp_path / "list.csv").write_text("path,label,speaker,text\nx.wav,Surprised,spk, Kids are here \n", encoding="utf-8")
    (u,) = CsvCorpus("lab").load(tmp_path / "list.csv")
    assert (u.id, u.speaker, u.corpus, u.label) == ("lab-x", "lab-spk", "lab", "surprise")
    assert u.text == "Kids are here"  # the optional text column (transcripts for forced alignment)


def test_label_names():
    assert [canonical_label(x) for x in ("Angry", " NEUTRAL ", "Fearful", "Surprised", "sadness", "Boredom")] == [
        "angry", "neutral", "fear", "surprise", "sad", "boredom"]
    assert canonical_label("Contempt") == "contempt"


def test_bad_rows_are_problems_naming_the_line(tmp_path):
    write_wav(tmp_path / "ok.wav")
    write_wav(tmp_path / "also.wav")
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    listing = tmp_path / "data.csv"
    listing.write_text(
        "path,label,speaker,gender\n"
        "ok.wav,happy,s1,f\n"         # line 2
        "also.wav,,s1,\n"             # 3: no label
        "missing.wav,sad,s2,\n"       # 4: no such file
        "also.wav,sad,s2,robot\n"     # 5: bad gender
        "ok.wav,sad,s3,\n"            # 6: same file again
        ",sad,,\n"                    # 7: no path, no speaker
        "broken.wav,sad,s4,\n",       # 8: not audio
        encoding="utf-8")
    manifest = get_corpus("csv").load(listing)
    assert [u.id for u in manifest] == ["data-ok"]
    reasons = [p.reason for p in manifest.problems]
    assert reasons[:5] == [
        "line 3: no label",
        "line 4: audio file missing.wav not found",
        "line 5: gender 'robot' is not male, female or child",
        "line 6: ok.wav is listed again (first on line 2)",
        "line 7: no path, speaker",
    ]
    assert reasons[5].startswith("unreadable audio") and manifest.problems[5].path == str(tmp_path / "broken.wav")
    assert manifest.problems[0].path == f"{listing.resolve()}:3"


def test_missing_columns_and_bad_roots_are_corpus_errors(tmp_path):
    write_wav(tmp_path / "x.wav")
    listing = tmp_path / "nolabel.csv"
    listing.write_text("path,speaker\nx.wav,s1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="lacks the column\\(s\\) label"):
        get_corpus("csv").load(listing)
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match="lacks the column\\(s\\) path, label, speaker;.*no header"):
        get_corpus("csv").load(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("path,label,speaker\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no usable row .*no data rows"):
        get_corpus("csv").load(tmp_path / "header.csv")
    (tmp_path / "gone.csv").write_text("path,label,speaker\ngone.wav,sad,s1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no usable row .*gone.wav not found"):
        get_corpus("csv").load(tmp_path / "gone.csv")
    with pytest.raises(CorpusError, match="does not exist"):
        get_corpus("csv").load(tmp_path / "absent.csv")
    with pytest.raises(CorpusError, match="is a directory; pass the CSV file"):
        get_corpus("csv").load(tmp_path)


def test_store_extracted_before_the_alias_table_is_relabelled_not_kept(tmp_path, tiny_models):
    """A CSV store made when `hap`/`sad` were read as classes of their own: the next `ser extract` gives it the
    labels the corpus has now (features byte for byte, fresh digests), and says so; it is not "up to date"."""
    import dataclasses

    import numpy as np

    from featstore.extract import extract_manifest
    from featstore.store import open_store, verify_store

    for i in range(4):
        write_wav(tmp_path / "audio" / f"c{i}.wav", 16000, 4000 + 400 * i)
    listing = tmp_path / "my.csv"
    listing.write_text("path,label,speaker\n" + "".join(f"audio/c{i}.wav,{'hap' if i % 2 else 'sad'},s{i % 2}\n"
                                                          for i in range(4)), encoding="utf-8")
    now = get_corpus("csv").load(listing)
    assert {u.label for u in now} == {"happy", "sad"}
    before = dataclasses.replace(now, utterances=[dataclasses.replace(u, label=u.label_raw) for u in now])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    old = open_store(extract_manifest(before, **kw).store)
    assert sorted({u.label for u in old.utterances}) == ["hap", "sad"]
    features, digest = old.pooled_all(), old.digest
    res = extract_manifest(now, **kw)
    assert res.relabelled == 2 and not res.up_to_date and res.extracted == 0
    new = open_store(res.store)
    assert {u.id: u.label for u in new.utterances} == {u.id: u.label for u in now}
    np.testing.assert_array_equal(new.pooled_all(), features)
    assert new.digest != digest and verify_store(res.store).ok
    assert extract_manifest(now, **kw).up_to_date  # once relabelled, a re-run is a no-op again
