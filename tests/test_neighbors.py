"""Nearest-neighbour analysis: exact search with exclusions, purity/chance, planted layers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from classifiers.runs.neighbors import (
    EMOTION_OTHER_SPEAKERS,
    NeighborError,
    Neighbors,
    cross_retrieval,
    knn_evaluate,
    neighbor_analysis,
    normalize,
    purity,
    search,
)
from featstore.corpora.base import Utterance
from featstore.folds import make_folds

EMOTIONS = ["neutral", "happy", "sad", "angry"]


def utt(i, speaker, label, corpus="ravdess", language="en", gender=None) -> Utterance:
    return Utterance(id=f"{corpus}-{i}", path="", corpus=corpus, language=language, speaker=f"{corpus}-{speaker}",
                     gender=gender, label=label, label_raw=label)


def brute(X, Q, k, excluded):
    """Reference: cosine top-k by numpy argsort, `excluded` (Q, N) bool removed."""
    S = normalize(Q) @ normalize(X).T
    S[excluded] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(S, order, 1) > -np.inf, order, -1)


# -- exact search ---------------------------------------------------------------------------------

def test_faiss_equals_sklearn_cosine_brute():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(0).standard_normal((400, 32)).astype(np.float32)
    nb = search(normalize(X), None, 10, batch_size=64)
    dist, idx = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(X).kneighbors(X)
    assert (idx[:, 0] == np.arange(400)).all()      # sklearn returns self first; drop it
    np.testing.assert_array_equal(nb.index, idx[:, 1:])
    np.testing.assert_allclose(nb.sim, 1 - dist[:, 1:], atol=1e-5)


def test_self_and_same_speaker_exclusion_by_hand():
    # unit vectors at these angles; row 3 duplicates row 0 (self is excluded by index, not by value)
    angles = np.deg2rad([0, 10, 25, 0, 100, 180])
    X = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    spk = ["A", "A", "B", "C", "B", "C"]
    nb = search(X, None, 2)
    assert nb.index[0].tolist() == [3, 1]           # its duplicate, not itself
    assert nb.index[3].tolist() == [0, 1]
    assert nb.index[4].tolist() == [2, 5]           # 75 and 80 degrees away
    nb = search(X, None, 3, groups=spk)
    assert nb.index[0].tolist() == [3, 2, 4]        # A's rows 0 and 1 skipped
    assert nb.index[1].tolist() == [3, 2, 4]
    assert nb.index[5].tolist() == [4, 2, 1]        # C's rows 3 and 5 skipped
    # fewer eligible rows than k: the rest is -1 / -inf
    nb = search(X, None, 5, groups=spk)
    assert nb.index[0].tolist() == [3, 2, 4, 5, -1]
    assert nb.sim[0, -1] == -np.inf and np.isfinite(nb.sim[0, :4]).all()
    assert (nb.index[4] == -1).sum() == 1           # B: rows 0, 1, 3, 5 remain


def test_group_exclusion_is_exact_with_a_large_group():
    rng = np.random.default_rng(1)
    sizes = [60] + list(rng.integers(1, 6, 30))      # one speaker with many rows, as TESS/IEMOCAP
    groups = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.standard_normal((len(groups), 16)).astype(np.float32)
    nb = search(normalize(X), None, 7, groups=groups, batch_size=37)
    ref = brute(X, X, 7, groups[:, None] == groups[None, :])
    np.testing.assert_array_equal(nb.index, ref)
    # separate queries with their own groups (some shared with the database, one unknown)
    Q = rng.standard_normal((25, 16)).astype(np.float32)
    qg = np.array(list(rng.integers(0, len(sizes), 24)) + [None], dtype=object)
    nb = search(normalize(X), normalize(Q), 7, groups=groups.astype(object), query_groups=qg, batch_size=10)
    ref = brute(X, Q, 7, qg[:, None] == groups[None, :])
    np.testing.assert_array_equal(nb.index, ref)


def test_search_errors():
    X = np.ones((3, 4), np.float32)
    with pytest.raises(NeighborError, match="k must be"):
        search(X, None, 0)
    with pytest.raises(NeighborError, match="query_groups"):
        search(X, X, 1, groups=["a", "b", "c"])
    with pytest.raises(NeighborError, match="NaN"):
        normalize(np.full((2, 2), np.nan))


# -- purity and chance ----------------------------------------------------------------------------

def test_purity_and_chance_by_hand():
    values = np.array([0, 0, 1, 1, 1, -1])             # -1 = unknown
    index = np.array([[1, 2], [0, 5], [3, 4], [2, 0], [3, -1], [0, 1]])
    nb = Neighbors(index, np.where(index >= 0, 0.5, -np.inf).astype(np.float32))
    p, chance, n = purity(nb, values, values, query_rows=np.arange(6))
    assert n == 5                                       # the unknown query is left out
    assert p == pytest.approx((0.5 + 0.5 + 1 + 0.5 + 1) / 5)
    assert chance == pytest.approx((1 / 5 + 1 / 5 + 2 / 5 + 2 / 5 + 2 / 5) / 5)   # (count - self) / (N - 1)
    groups = np.array([0, 0, 1, 1, 2, 2])               # candidates: rows of other groups only
    _, chance, _ = purity(nb, values, values, query_rows=np.arange(6), db_groups=groups, query_groups=groups)
    assert chance == pytest.approx((0 + 0 + 1 / 4 + 1 / 4 + 2 / 4) / 5)


# -- planted layers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    """12 speakers x 4 emotions x 5 clips, 5 layers: layer 1 = speaker centroid + noise,
    layer 3 = emotion centroid + noise, the others noise."""
    rng = np.random.default_rng(0)
    utts, spk, emo = [], [], []
    for s in range(12):
        for e, label in enumerate(EMOTIONS):
            for _r in range(5):
                utts.append(utt(len(utts), f"{s:02d}", label, gender="male" if s % 2 else "female"))
                spk.append(s)
                emo.append(e)
    X = rng.standard_normal((len(utts), 5, 24)).astype(np.float32)
    X[:, 1] += 3 * rng.standard_normal((12, 24))[spk]
    X[:, 3] += 3 * rng.standard_normal((4, 24))[emo]
    return X, utts


def test_purity_curves_find_the_planted_layers(planted, tmp_path):
    X, utts = planted
    rep = neighbor_analysis(X, utts, k=5)
    curve = {a: np.array([[r.purity, r.chance] for r in rep.purity if r.attribute == a]) for a in rep.attributes()}
    assert set(curve) == {"emotion", "speaker", "gender", EMOTION_OTHER_SPEAKERS}
    assert rep.skipped == {"language": "constant (en)", "corpus": "constant (ravdess)"}
    assert curve["speaker"][:, 0].argmax() == 1 and curve["emotion"][:, 0].argmax() == 3
    assert curve["speaker"][1, 0] > curve["speaker"][1, 1] + 0.8      # chance 19/239
    assert curve["emotion"][3, 0] > curve["emotion"][3, 1] + 0.6      # chance 59/239
    assert curve["speaker"][1, 1] == pytest.approx(19 / 239) and curve["emotion"][3, 1] == pytest.approx(59 / 239)
    assert curve["emotion"][1, 0] < 0.45 and curve["speaker"][3, 0] < 0.2
    knn = rep.knn_summary()                              # leave-one-speaker-out kNN
    best = rep.probe_results().best("uar")
    assert best["layer"] == 3 and best["classifier"] == "knn" and best["n"] == 12
    assert knn[3]["uar_mean"] > 0.9 and knn[1]["uar_mean"] < 0.5
    assert {r["fold"] for r in rep.knn} == {f"loso-ravdess-{s:02d}" for s in range(12)}
    # the results object: table rows, JSON, CSV, PNG
    cols, rows = rep.table_rows()
    assert cols[0] == "layer" and len(rows) == 5
    assert cols[-2:] == ["kNN UAR pooled [95% speaker CI]", "kNN UAR folds mean ± std"]   # the headline first
    data = json.loads(rep.write(tmp_path / "nb.json").read_text())
    assert data["k"] == 5 and len(data["purity"]) == 5 * 4 and "3" in data["knn_summary"]
    with open(rep.write(tmp_path / "nb.csv"), newline="") as f:
        tidy = list(csv.DictReader(f))
    assert {r["measure"] for r in tidy} == {"purity", "knn_uar_pooled", "knn_wa", "knn_uar", "knn_macro_f1"}
    png = rep.write(tmp_path / "nb.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_loso_by_exclusion_equals_loso_folds(planted):
    X, utts = planted
    by_exclusion = knn_evaluate(X[:, 3], utts, None, k=5, center=None, layer=3).records
    by_folds = knn_evaluate(X[:, 3], utts, make_folds(utts, "loso"), k=5, center=None, layer=3).records
    assert [r["fold"] for r in by_exclusion] == [r["fold"] for r in by_folds]
    for a, b in zip(by_exclusion, by_folds):
        assert a["confusion"] == b["confusion"] and a["n_train"] == b["n_train"]
        assert a["layer"] == 3 and a["classifier"] == "knn"


def test_knn_scores_only_classes_seen_in_training():
    utts = [utt(i, f"{i % 4}", EMOTIONS[i % 2]) for i in range(16)] + [utt(16 + i, "9", "fear") for i in range(3)]
    X = np.random.default_rng(5).standard_normal((19, 8))
    res = knn_evaluate(X, utts, None, k=3)
    assert res.dropped == {"loso-ravdess-9": {"fear": 3}}                         # only speaker 9 has fear
    assert "loso-ravdess-9" not in {r["fold"] for r in res.records}
    assert all("fear" in r["labels"] for r in res.records)                        # others can still be fooled by it


def test_cross_corpus_retrieval_counts_shared_labels_only():
    rng = np.random.default_rng(3)
    centroids = {lab: 3 * rng.standard_normal(16) for lab in EMOTIONS + ["boredom"]}
    a = [utt(i, f"{i % 4}", EMOTIONS[i % 4]) for i in range(80)]
    b = [utt(i, f"{i % 5}", (EMOTIONS[1:] + ["boredom"])[i % 4], corpus="emodb", language="de") for i in range(80)]
    Xa = np.stack([centroids[u.label] for u in a]) + rng.standard_normal((80, 16))
    Xb = np.stack([centroids[u.label] for u in b]) + rng.standard_normal((80, 16)) + 10  # a channel offset
    row = cross_retrieval(Xa, a, Xb, b, k=5, layer=7)
    assert row.labels == ["happy", "sad", "angry"] and row.dropped == ["neutral", "boredom"]
    assert (row.query, row.database, row.query_language, row.database_language) == ("ravdess", "emodb", "en", "de")
    assert row.n_queries == 60 and row.n_database == 60
    assert row.chance == pytest.approx(1 / 3) and row.purity > 0.9 and row.uar > 0.9


def test_what_cannot_be_measured_is_reported_not_guessed():
    rng = np.random.default_rng(4)
    solo = [utt(i, "solo", EMOTIONS[i % 4]) for i in range(12)]                 # one speaker
    rep = neighbor_analysis(rng.standard_normal((12, 2, 8)), solo, layers=[-1], k=3)
    assert rep.layers == [1] and rep.knn == [] and EMOTION_OTHER_SPEAKERS not in rep.attributes()
    assert rep.skipped["kNN"].startswith("leave-one-speaker-out needs at least 2 speakers")
    a = [utt(i, f"{i % 3}", EMOTIONS[i % 2]) for i in range(12)]
    b = [utt(i, f"{i % 3}", EMOTIONS[2 + i % 2], corpus="emodb", language="de") for i in range(12)]
    rep = neighbor_analysis(rng.standard_normal((24, 2, 8)), a + b, layers=[0], k=3)
    assert rep.cross == [] and "share no emotion label" in rep.skipped["cross emodb->ravdess"]
    assert len(rep.knn) == 6                                                     # one record per speaker


def test_missing_faiss_is_one_line_naming_the_package(monkeypatch, tmp_path):
    import sys

    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setitem(sys.modules, "faiss", None)             # `import faiss` now fails as when not installed
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(NeighborError, match="pip install faiss-cpu") as info:
        search(normalize(X), None, 3)
    assert isinstance(info.value.__cause__, ImportError)          # the cause is kept for --debug
    from tests.test_results import MODEL, RAVDESS, planted, write_store

    write_store(tmp_path / "cache", "ravdess", *planted("ravdess", RAVDESS[:4], n_speakers=3, per=1))
    r = CliRunner().invoke(app, ["neighbors", "--corpus", "ravdess", "--model", MODEL, "--cache",
                                 str(tmp_path / "cache"), "--out", str(tmp_path / "nb")])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert r.output.startswith("error:") and "pip install faiss-cpu (or faiss-gpu" in r.output


def test_torch_flat_search_gives_faiss_neighbours():
    """The GPU search used where faiss has no GPU build (one matrix product and top-k in torch) returns
    the flat index's own neighbours; exercised here with the database tensor left on the CPU."""
    import torch

    from classifiers.estimators.knn_index import FlatIndex, normalize

    rng = np.random.default_rng(0)
    X = normalize(rng.normal(size=(400, 24)))
    index = FlatIndex(X, gpu=False)
    assert index.on_gpu is None
    ref_sims, ref_idx = index.search(X[:60], 7)
    index.torch_db = torch.from_numpy(X)
    assert index.on_gpu == "torch"
    sims, idx = index.search(X[:60], 7)
    assert idx.dtype == np.int64 and (idx == ref_idx).all()
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
