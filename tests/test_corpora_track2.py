"""EmoBox's cross-corpus track end to end: synthetic IEMOCAP, MELD, RAVDESS and SAVEE trees of
track2 utterances, extracted with a tiny model, then `ser probe --protocol emobox-track2 --matrix`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from featstore.corpora import get_corpus
from featstore.reference import track2, track2_corpora
from featstore.synth import synthesize

CORPORA = ("iemocap", "meld", "ravdess", "savee")


def few_keys(corpus: str, per_cell: int = 1) -> list[str]:
    """`per_cell` track2 keys per (speaker, label): every speaker and class, few files."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for key, label, speaker in track2(corpus):
        if seen.get((speaker, label), 0) < per_cell:
            seen[(speaker, label)] = seen.get((speaker, label), 0) + 1
            keys.append(key)
    return keys


@pytest.fixture(scope="module")
def track2_cache(tmp_path_factory, tiny_models, one_torch_thread):
    from featstore.extract import extract_manifest

    root = tmp_path_factory.mktemp("track2")
    for corpus in CORPORA:
        keys = few_keys(corpus, per_cell=2 if corpus == "savee" else 1)
        out = synthesize(corpus, root / corpus, keys=keys, max_duration=0.6, sample_rate=16000).out
        extract_manifest(get_corpus(corpus).load(out), model=str(tiny_models["group"]), cache=root / "cache",
                         device="cpu", progress=False)
    return root


def test_track2_covers_the_four_corpora():
    assert tuple(track2_corpora()) == CORPORA
    for corpus in CORPORA:
        rows = track2(corpus)
        assert len(rows) == len({key for key, _l, _s in rows}) == 240


def test_probe_matrix_with_emobox_track2_draws_the_4x4_heatmap(track2_cache, tiny_models, one_torch_thread):
    import cli

    out = track2_cache / "matrix"
    r = CliRunner().invoke(cli.app, ["probe", "--protocol", "emobox-track2", "--matrix", ",".join(CORPORA),
                                     "--layer", "1", "--model", str(tiny_models["group"]),
                                     "--cache", str(track2_cache / "cache"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "transfer_matrix.png").stat().st_size > 0
    result = json.loads((out / "transfer_matrix.json").read_text(encoding="utf-8"))
    assert result["corpora"] == list(CORPORA)
    uar = np.array(result["uar"], dtype=float)
    assert uar.shape == (4, 4) and np.isfinite(uar).all() and ((uar >= 0) & (uar <= 1)).all()
    for cell in result["cells"]:
        assert cell["n"] <= len(few_keys(cell["test"], 2))  # tested on one corpus' track2 subset only
