"""The 16 later EmoBox corpora against EmoBox's real file lists (from the packaged table).

Each corpus gets a tree at EmoBox's relative paths (`tests/emobox_trees.py`): its loader must find
exactly EmoBox's keys with EmoBox's labels (through EmoBox's label map and
`featstore.labels.EMOBOX_TO_CANONICAL`), and `--protocol emobox` must give EmoBox's test splits.
The three largest trees (ESD 35000 wavs, MELD 13706 .mp4, ASVP-ESD 13964 wavs) are `slow`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from featstore.corpora import CORPORA, REGISTRY, get_corpus
from featstore.folds import leakage_report, make_folds
from featstore.labels import CANONICAL, EMOBOX_TO_CANONICAL
from featstore.reference import reference
from tests.emobox_trees import PAVOQUE_TEST_RATE, build_tree

# corpus -> (utterances, distinct speakers in the test tree, language)
FACTS = {
    "ased": (2474, 65, "am"), "asvpesd": (13964, 131, "mul"), "casia": (1200, 4, "zh"), "emns": (1181, 1, "en"),
    "emovdb": (6887, 4, "en"), "emozionalmente": (6902, 40, "it"), "enterface": (1263, 43, "en"),
    "esd": (35000, 20, None), "jlcorpus": (2400, 4, "en"), "meld": (13706, 3, "en"), "mer2023": (5030, 5030, "zh"),
    "oreau": (434, 32, "fr"), "pavoque": (7334, 1, "de"), "polish": (450, 5, "pl"), "resd": (1396, 50, "ru"),
    "turevdb": (1735, 6, "tr"),
}
SLOW = {"esd", "meld", "asvpesd"}
PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in FACTS]

SPOT_CHECKS = {
    "ased-a5-02-01-01-33": dict(speaker="ased-33", label="angry", label_raw="a", text="02"),
    "ased-S4-04-02-01-29": dict(label="sad", label_raw="S"),
    "asvpesd-03-01-09-01-06-36-02-02-01-39": dict(speaker="asvpesd-36", label="excited", label_raw="09"),
    "casia-239-wangzhe-neutral": dict(speaker="casia-wangzhe", gender="male", label="neutral", text="239"),
    "emns-recorded_audio_RF6OuQ4": dict(speaker="emns-1", label="disgust", label_raw="Disgust", gender="female"),
    "emovdb-jenie-Amused-0057": dict(speaker="emovdb-jenie", gender="female", label="amused", text="0057"),
    "emozionalmente-1613655062436": dict(speaker="emozionalmente-user36", gender="male", label="neutral",
                                         label_raw="neutrality"),
    "enterface-s19_an_4.avi": dict(speaker="enterface-19", label="angry", label_raw="an", text="4"),
    "enterface-s6_an.avi": dict(speaker="enterface-6", label="angry", text=None),
    "esd-0005-000001": dict(speaker="esd-0005", label="neutral", language="zh"),
    "esd-0014-000056": dict(speaker="esd-0014", language="en"),
    "jlcorpus-male2-concerned-6b-1": dict(speaker="jlcorpus-male2", gender="male", label="concerned", text="6b"),
    "meld-dia0_utt0-train": dict(label="neutral", session="train"),
    "mer2023-samplenew_00059343.mp4": dict(label="worried", label_raw="worried"),
    "oreau-10a02Ja": dict(speaker="oreau-10", gender="female", label="happy", label_raw="J", text="02"),
    "pavoque-poker_n0011-poker": dict(speaker="pavoque-1", gender="male", label="poker", start=4.46, end=9.58),
    "pavoque-e0041b-neutral": dict(label="neutral", session="outtakes", start=3665.26, end=3677.52),
    "polish-m3.s_trzymaj_5": dict(speaker="polish-m3", gender="male", label="fear", label_raw="s", text="trzymaj"),
    "resd-32_happiness_enthusiasm_h_120.wav": dict(speaker="resd-32", label="happy", label_raw="happiness"),
    "resd-15_enthusiasm_sadness_e_040.wav": dict(label="enthusiastic", label_raw="enthusiasm"),
    "turevdb-1984_sk_eger.wav": dict(speaker="turevdb-1984", label="calm", label_raw="Calm", text="eger"),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """corpus -> (manifest, frames per key); each tree is written and read once."""
    cache = {}

    def get(corpus: str):
        if corpus not in cache:
            root = tmp_path_factory.mktemp(corpus)
            frames = build_tree(root, corpus)
            cache[corpus] = (get_corpus(corpus).load(root), frames)
        return cache[corpus]

    return get


def test_registry_has_the_16_with_their_descriptions():
    for name, (count, _speakers, language) in FACTS.items():
        corpus = CORPORA[name]
        assert type(corpus).__module__ == f"featstore.corpora.{name}"
        assert corpus.expected_count == count
        assert corpus.language == (language or "en")
        assert corpus.title and corpus.layout_hint and corpus.source.licence and corpus.protocol.why
        assert corpus.source.page.startswith("http") and corpus.source.method in ("http", "manual")
        assert set(corpus.labels.values()) <= set(CANONICAL), name
    assert len(REGISTRY) == 13 + 16 + 1 + 2   # + MSP-Podcast, MSP-IMPROV (dimensional; not in EmoBox)


@pytest.mark.parametrize("corpus", PARAMS)
def test_ids_labels_and_emobox_folds(corpus, loaded):
    manifest, frames = loaded(corpus)
    ref = reference(corpus)
    assert manifest.problems == []
    ids = [u.id for u in manifest]
    assert len(ids) == len(set(ids)) == FACTS[corpus][0] == len(ref.files)
    expected = {f.key: EMOBOX_TO_CANONICAL[ref.label_map[f.label_raw]] for f in ref.files}
    got = {u.id: u.label for u in manifest}
    assert got == expected
    assert Counter(u.label_raw for u in manifest) == Counter(f.label_raw for f in ref.files)
    assert len(manifest.speaker_counts()) == FACTS[corpus][1]
    assert all(u.speaker.startswith(f"{corpus}-") and u.corpus == corpus for u in manifest)

    folds = make_folds(manifest.utterances, "emobox", strict=True)
    assert [f.name for f in folds] == list(ref.fold_names)
    for k, fold in enumerate(folds, start=1):
        test = {manifest.utterances[i].id for i in fold.test}
        assert test == {f.key for f in ref.files if f.test_fold == k}
        assert len(fold.train) + len(fold.test) == len(manifest)

    rate = {f.key: f.sample_rate for f in ref.files}
    for u in manifest:
        if u.id in frames:  # wavs: rate and duration from the header
            assert u.sample_rate == rate[u.id] and u.duration == pytest.approx(frames[u.id] / rate[u.id])


@pytest.mark.parametrize("corpus", [c for c in FACTS if c not in SLOW])
def test_spot_checked_fields(corpus, loaded):
    manifest, _ = loaded(corpus)
    by_id = {u.id: u for u in manifest}
    checks = {k: v for k, v in SPOT_CHECKS.items() if k.startswith(f"{corpus}-")}
    assert checks, f"no spot check for {corpus}"
    for key, fields in checks.items():
        assert {name: getattr(by_id[key], name) for name in fields} == fields, key


def test_segments_carry_their_bounds(loaded):
    manifest, _ = loaded("pavoque")
    ref = {f.key: f for f in reference("pavoque").files}
    for u in manifest:
        assert (u.start, u.end) == (ref[u.id].start, ref[u.id].end)
        assert u.duration == pytest.approx(u.end - u.start)
        assert u.sample_rate == PAVOQUE_TEST_RATE
    assert len({u.path for u in manifest}) == 6  # one recording per style, plus the outtakes


def test_single_speaker_corpora_say_folds_cannot_be_speaker_independent(loaded):
    for corpus in ("pavoque", "emns"):
        manifest, _ = loaded(corpus)
        rows = leakage_report(manifest.utterances, make_folds(manifest.utterances, "emobox"))
        assert rows and all(row.n_speakers == 1 for row in rows), corpus
        assert "speaker" in CORPORA[corpus].protocol.why
