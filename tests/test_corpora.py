"""The first 13 corpus loaders against EmoBox's real file lists (the later 16: test_corpora_emobox16.py).

Each corpus gets a tree of tiny WAVs at EmoBox's relative paths (the `downloads/<c>/` prefix
dropped) and its loader must find exactly EmoBox's keys, with EmoBox's labels, the right
speakers, and the rates and lengths written in the headers.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featstore.corpora import CORPORA, REGISTRY, get_corpus
from featstore.corpora.iemocap import IemocapCorpus, format_emo_evaluation
from featstore.labels import CANONICAL, EMOBOX_TO_CANONICAL
from tests.helpers import read_emobox

EMOBOX_CORPORA = ("aesdd", "cafe", "cremad", "emodb", "emovo", "iemocap", "mesd", "ravdess", "savee",
                  "shemo", "subesco", "tess", "urdu")

# utterances, distinct speakers
FACTS = {
    "ravdess": (1440, 24), "cremad": (7442, 91), "emodb": (535, 10), "emovo": (588, 6),
    "iemocap": (5531, 10), "tess": (2800, 2), "savee": (480, 4), "aesdd": (604, 6), "cafe": (936, 12),
    "mesd": (862, 3), "shemo": (2838, 87), "subesco": (7000, 20), "urdu": (400, 29),
}

# EmoBox publishes no label map for EMOVO, and EMO-DB's map says "Neutral" where its rows say
# "neutral": these two are spelled out here, from the corpora's documentation.
EXPLICIT_EMOBOX_LABELS = {
    "emovo": {"dis": "Disgust", "gio": "Happy", "neu": "Neutral", "pau": "Fear", "rab": "Angry",
              "sor": "Surprise", "tri": "Sad"},
    "emodb": {"anger": "Angry", "boredem": "Boredom", "disgust": "Disgust", "fear": "Fear",
              "happy": "Happy", "neutral": "Neutral", "sad": "Sad"},
}

# IEMOCAP utterances outside the 4-class set, added to the tree: the loader must skip them.
IEMOCAP_EXTRA = (("fru", "F900"), ("xxx", "M901"), ("sur", "F902"), ("fea", "M903"))

# A few utterances checked field by field (EmoBox has no speakers, genders, texts or intensities).
SPOT_CHECKS = {
    "ravdess-03-01-05-01-02-01-18": dict(speaker="ravdess-18", gender="female", label="angry", label_raw="05",
                                         intensity="normal", text="Dogs are sitting by the door"),
    "ravdess-03-01-08-02-02-02-01": dict(speaker="ravdess-01", gender="male", label="surprise",
                                         intensity="strong", text="Dogs are sitting by the door"),
    "cremad-1087-IWL-ANG-XX": dict(speaker="cremad-1087", gender=None, label="angry", label_raw="ANG",
                                   intensity=None, text="I would like a new alarm clock"),
    "cremad-1048-IEO-HAP-MD": dict(label="happy", intensity="medium", text="It's eleven o'clock"),
    "emodb-03a01Wa": dict(speaker="emodb-03", gender="male", label="angry", label_raw="W", text="a01"),
    "emodb-08a01Lc": dict(speaker="emodb-08", gender="female", label="boredom", label_raw="L"),
    "emovo-gio-f2-b2": dict(speaker="emovo-f2", gender="female", label="happy", label_raw="gio", text="b2"),
    "emovo-gio-m2-l3": dict(speaker="emovo-m2", gender="male", text="l3"),
    "iemocap-Ses01F_impro04_F000": dict(speaker="iemocap-Ses01F", gender="female", session="Ses01",
                                        label="neutral", label_raw="neu"),
    "iemocap-Ses04F_impro03_F014": dict(label="happy", label_raw="exc", session="Ses04"),
    "iemocap-Ses03M_impro06_F002": dict(speaker="iemocap-Ses03F", gender="female", label="sad"),
    "iemocap-Ses04F_script03_1_M027": dict(speaker="iemocap-Ses04M", gender="male", label="neutral"),
    "tess-OAF-lid-fear": dict(speaker="tess-OAF", gender="female", label="fear", text="lid"),
    "tess-YAF-hate-ps": dict(speaker="tess-YAF", label="surprise", label_raw="ps"),
    "savee-JE-n23": dict(speaker="savee-JE", gender="male", label="neutral", label_raw="n"),
    "savee-JK-a09": dict(speaker="savee-JK", label="angry"),
    "aesdd-a03-3": dict(speaker="aesdd-3", label="angry", label_raw="a", text="03"),
    "aesdd-a06-5b": dict(speaker="aesdd-5", label="angry"),
    "aesdd-f10-01": dict(speaker="aesdd-1", label="fear", text="10"),
    "cafe-12-P-2-5": dict(speaker="cafe-12", gender="female", label="fear", label_raw="P", intensity="strong",
                          text="Cinq pumas fiers et passionnés"),
    "cafe-07-C-1-2": dict(speaker="cafe-07", gender="male", label="angry", intensity="weak"),
    "cafe-02-N-1-1": dict(label="neutral", intensity=None, text="Un cheval fou dans mon jardin"),
    "mesd-Anger_F_A_tarde": dict(speaker="mesd-F", gender="female", label="angry", label_raw="Anger", text="tarde"),
    "mesd-Happiness_F_A_de_nada": dict(label="happy", text="de nada"),
    "mesd-Disgust_C_B_cucaracha": dict(speaker="mesd-C", gender="child", label="disgust"),
    "shemo-M36S02": dict(speaker="shemo-M36", gender="male", label="sad", label_raw="S"),
    "shemo-F21W08": dict(speaker="shemo-F21", gender="female", label="surprise"),
    "subesco-F_10_FAHMEE_S_6_FEAR_5": dict(speaker="subesco-F_10", gender="female", label="fear", text="S_6"),
    "subesco-F_02_MONIKA_S_2_SURPRISE_3]": dict(speaker="subesco-F_02", label="surprise"),
    "subesco-M_10_EVAN_S_8_DISGUST_2": dict(speaker="subesco-M_10", gender="male", label="disgust"),
    "urdu-SM20_F8_N012": dict(speaker="urdu-SM20", gender="male", label="neutral", label_raw="N"),
    "urdu-SF2_F1_H013": dict(speaker="urdu-SF2", gender="female", label="happy"),
}

LANGUAGES = {"ravdess": "en", "cremad": "en", "emodb": "de", "emovo": "it", "iemocap": "en", "tess": "en",
             "savee": "en", "aesdd": "el", "cafe": "fr", "mesd": "es", "shemo": "fa", "subesco": "bn",
             "urdu": "ur"}


@cache
def wav_bytes(sample_rate: int, frames: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, dtype=np.int16), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def frames_for(index: int) -> int:
    """A few distinct lengths, so a wrong duration would show."""
    return 120 + 20 * (index % 5)


def relative(row: dict, corpus: str) -> str:
    prefix = f"downloads/{corpus}/"
    assert row["wav"].startswith(prefix)
    return row["wav"][len(prefix):]


def build_tree(root: Path, corpus: str, rows: list[dict]) -> dict[str, int]:
    """Write every EmoBox row as a tiny WAV; returns key -> frames written."""
    frames = {}
    for i, row in enumerate(rows):
        path = root / relative(row, corpus)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(row["sample_rate"], frames_for(i)))
        frames[row["key"]] = frames_for(i)
    if corpus == "iemocap":
        write_iemocap_labels(root, rows)
    return frames


def write_iemocap_labels(root: Path, rows: list[dict]) -> None:
    """EmoEvaluation files in the real format for EmoBox's utterances, plus non-4-class extras."""
    by_dialog: dict[Path, list] = defaultdict(list)
    for row in rows:
        wav = root / relative(row, "iemocap")
        start = by_dialog[wav.parent][-1][2] + 0.5 if by_dialog[wav.parent] else 1.0
        by_dialog[wav.parent].append((wav.stem, start, start + row["length"], row["emo"]))
    for n, (dialog_dir, entries) in enumerate(sorted(by_dialog.items())):
        if n < len(IEMOCAP_EXTRA):
            code, suffix = IEMOCAP_EXTRA[n]
            name = f"{dialog_dir.name}_{suffix}"
            (dialog_dir / f"{name}.wav").write_bytes(wav_bytes(16000, 160))
            entries = entries + [(name, entries[-1][2] + 1, entries[-1][2] + 2, code)]
        session_dir = dialog_dir.parents[2]
        evaluation = session_dir / "dialog" / "EmoEvaluation" / f"{dialog_dir.name}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text(format_emo_evaluation(entries), encoding="utf-8")


def emobox_canonical(corpus: str, emo: str, label_map: dict | None) -> str:
    name = EXPLICIT_EMOBOX_LABELS[corpus][emo] if corpus in EXPLICIT_EMOBOX_LABELS else label_map[emo]
    return EMOBOX_TO_CANONICAL[name]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """corpus -> (root, EmoBox rows, folds, frames per key); each tree is written once."""
    cache = {}

    def get(corpus: str):
        if corpus not in cache:
            rows, folds = read_emobox(corpus)
            root = tmp_path_factory.mktemp(corpus)
            cache[corpus] = (root, rows, folds, build_tree(root, corpus, rows))
        return cache[corpus]

    return get


@pytest.fixture(scope="module", params=EMOBOX_CORPORA)
def loaded(request, trees):
    corpus = request.param
    root, rows, folds, frames = trees(corpus)
    return corpus, rows, folds, frames, get_corpus(corpus).load(root)


def test_registry_lists_every_corpus_with_its_description():
    from featstore.reference import reference_corpora

    assert set(CORPORA) == set(reference_corpora()) | {"csv", "msppodcast", "mspimprov"} and set(EMOBOX_CORPORA) < set(CORPORA)
    assert [c.name for c in REGISTRY] == list(CORPORA) and len(REGISTRY) == len(CORPORA)
    for name in EMOBOX_CORPORA:
        corpus = CORPORA[name]
        assert corpus.name == name
        assert corpus.language == LANGUAGES[name]
        assert corpus.title and corpus.layout_hint and corpus.source.licence
        assert corpus.source.page.startswith("http") and corpus.protocol.why
        assert corpus.expected_count >= FACTS[name][0] and corpus.n_speakers == FACTS[name][1]
        assert set(corpus.labels.values()) <= set(CANONICAL), name
        assert type(corpus).__module__ == f"featstore.corpora.{name}"


def test_finds_exactly_emobox_keys(loaded):
    corpus, rows, _, _, manifest = loaded
    assert manifest.problems == []
    ids = [u.id for u in manifest]
    assert len(ids) == len(set(ids)) == FACTS[corpus][0]
    assert set(ids) == {row["key"] for row in rows}


def test_labels_match_emobox(loaded):
    corpus, rows, folds, _, manifest = loaded
    expected = {row["key"]: emobox_canonical(corpus, row["emo"], folds["label_map"]) for row in rows}
    got = {u.id: u.label for u in manifest}
    wrong = {k: (got[k], v) for k, v in expected.items() if got.get(k) != v}
    assert not wrong, list(wrong.items())[:5]
    assert Counter(got.values()) == Counter(expected.values())


def test_speakers_genders_and_language(loaded):
    corpus, _, _, _, manifest = loaded
    speakers = manifest.speaker_counts()
    assert len(speakers) == FACTS[corpus][1]
    assert all(s.startswith(f"{corpus}-") for s in speakers)
    gender_of = defaultdict(set)
    for u in manifest:
        gender_of[u.speaker].add(u.gender)
        assert u.corpus == corpus and u.language == LANGUAGES[corpus]
    assert all(len(g) == 1 for g in gender_of.values()), "a speaker with two genders"


def test_rate_and_duration_come_from_the_headers(loaded):
    corpus, rows, _, frames, manifest = loaded
    rate = {row["key"]: row["sample_rate"] for row in rows}
    for u in manifest:
        assert u.sample_rate == rate[u.id]
        assert u.duration == pytest.approx(frames[u.id] / rate[u.id])
        assert Path(u.path).is_absolute() and Path(u.path).is_file()


def test_spot_checked_fields(loaded):
    corpus, _, _, _, manifest = loaded
    by_id = {u.id: u for u in manifest}
    checks = {k: v for k, v in SPOT_CHECKS.items() if k.startswith(f"{corpus}-")}
    assert checks, f"no spot check for {corpus}"
    for key, fields in checks.items():
        got = {name: getattr(by_id[key], name) for name in fields}
        assert got == fields, key


def test_gender_balance_where_documented(trees):
    expected = {"ravdess": {"male": 12, "female": 12}, "emodb": {"male": 5, "female": 5},
                "emovo": {"male": 3, "female": 3}, "cafe": {"male": 6, "female": 6},
                "subesco": {"male": 10, "female": 10}, "iemocap": {"male": 5, "female": 5}}
    for corpus, counts in expected.items():
        manifest = get_corpus(corpus).load(trees(corpus)[0])
        genders = Counter({u.speaker: u.gender for u in manifest}.values())
        assert genders == counts, corpus


def test_iemocap_sessions_are_emobox_folds(trees):
    root, _, folds, _ = trees("iemocap")
    manifest = get_corpus("iemocap").load(root)
    by_session = defaultdict(set)
    for u in manifest:
        by_session[u.session].add(u.id)
    assert sorted(by_session) == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    for n, session in enumerate(sorted(by_session), start=1):
        assert by_session[session] == set(folds["test_keys_by_fold"][f"fold_{n}"])
    assert [len(by_session[s]) for s in sorted(by_session)] == [1085, 1023, 1151, 1031, 1241]


def test_iemocap_class_sets(trees):
    root = trees("iemocap")[0]
    four = get_corpus("iemocap").load(root)
    assert not any(u.label_raw in {"fru", "xxx", "sur", "fea"} for u in four)
    assert four.label_counts() == Counter({"neutral": 1708, "angry": 1103, "sad": 1084, "happy": 595 + 1041})
    assert Counter(u.label_raw for u in four)["exc"] == 1041

    everything = IemocapCorpus(classes="all").load(root)
    assert everything.problems == []
    extra = {u.label_raw: u for u in everything if u.label_raw in {"fru", "xxx", "sur", "fea"}}
    assert sorted(extra) == ["fea", "fru", "sur"]  # xxx (no majority) is dropped
    assert (extra["fru"].label, extra["sur"].label, extra["fea"].label) == ("frustrated", "surprise", "fear")
    assert len(everything) == 5531 + 3
    assert IemocapCorpus(classes="all").expected_count > IemocapCorpus().expected_count
    assert IemocapCorpus(classes=4).labels == IemocapCorpus().labels
    with pytest.raises(ValueError, match="classes"):
        IemocapCorpus(classes="6")


def test_docs_state_every_corpus_protocol_and_source_as_the_registry_does():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "CORPORA.md").read_text(encoding="utf-8")
    rows = {}
    for line in docs.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`") and cells[0] in CORPORA:
            rows[cells[0]] = (cells[1].strip("`"), cells[2])
    assert rows == {c.name: (c.protocol.name, c.protocol.why) for c in REGISTRY if c.name != "csv"}
    for c in REGISTRY:
        assert f"— `{c.name}`" in docs or c.name == "csv", c.name       # one section per corpus
        assert c.source.page in docs, c.name
    assert "EMOBOX-LICENSE" in docs and "https://github.com/emo-box/EmoBox" in docs


def test_emobox_licence_ships_next_to_the_data():
    import tomllib
    from fnmatch import fnmatch

    repo = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["featstore"]
    for name in ("emobox.json.gz", "EMOBOX-LICENSE"):
        assert (repo / "featstore" / "data" / name).is_file()
        assert any(fnmatch(f"data/{name}", p) for p in patterns), name
    licence = (repo / "featstore" / "data" / "EMOBOX-LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "emobox.json.gz" in licence
    assert "the ser authors" in (repo / "LICENSE").read_text(encoding="utf-8")


def test_cli_corpora_and_download_list_come_from_the_registry():
    from typer.testing import CliRunner

    import cli

    wide = {"COLUMNS": "1000"}                       # one line per table row (the console's width is not pinned)
    listed = CliRunner().invoke(cli.app, ["corpora", "--long"], env=wide)   # sources and notes: --long (issue 24)
    assert listed.exit_code == 0, listed.output
    sources = CliRunner().invoke(cli.app, ["download", "--list"], env=wide)
    assert sources.exit_code == 0, sources.output
    for c in REGISTRY:
        assert f"{c.protocol.name}: {c.protocol.why}" in listed.output, c.name
        assert c.source.licence in listed.output and c.source.licence in sources.output, c.name
    assert "zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip" in sources.output
