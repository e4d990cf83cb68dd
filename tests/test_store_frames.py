"""A finished store gains frame layers: the model runs once more, the pooled data stays as it was."""

from __future__ import annotations

import numpy as np
import pytest

import featstore.extract as ex
from featstore.store import StoreError, open_store
from tests.test_extract import LENGTHS, store_arrays, write_corpus


def test_complete_store_gains_frame_layers(tmp_path, tiny_models, monkeypatch):
    manifest = write_corpus(tmp_path / "audio", LENGTHS[:5])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    first = ex.extract_manifest(manifest, **kw)
    before = store_arrays(first.store)
    calls = []
    real = ex.hidden_states
    monkeypatch.setattr(ex, "hidden_states", lambda bb, waves, **k: calls.append(len(waves)) or real(bb, waves, **k))

    added = ex.extract_manifest(manifest, **kw, frames="1,3")
    assert added.frames_added == [1, 3] and added.extracted == 0 and not added.up_to_date
    assert sum(calls) == 5                                   # each utterance ran once, for its frames only
    after = store_arrays(added.store)
    for name in before:                                      # pooled data and metadata: byte for byte
        if name != "attrs/config":
            assert np.array_equal(after[name], before[name]), name
    fs = open_store(added.store)
    assert fs.frame_layers == [1, 3] and fs.config["frame_layers"] == [1, 3]
    monkeypatch.setattr(ex, "hidden_states", real)
    clean = open_store(ex.extract_manifest(manifest, **{**kw, "cache": tmp_path / "clean"}, frames="1,3").store)
    for i in range(len(fs)):
        for k in (1, 3):
            np.testing.assert_array_equal(fs.frames(k, i), clean.frames(k, i))

    assert ex.extract_manifest(manifest, **kw, frames="1,3").up_to_date
    with pytest.raises(StoreError, match="re-run with --frames 1,2,3"):
        ex.extract_manifest(manifest, **kw, frames="2")
    grown = write_corpus(tmp_path / "audio", LENGTHS)
    more = ex.extract_manifest(grown, **kw, frames="1,3")
    assert more.extracted == len(LENGTHS) - 5 and more.already == 5
    assert open_store(more.store).frames(3, len(LENGTHS) - 1).shape[0] == open_store(more.store).n_frames[-1]


def test_interrupted_run_names_the_command(tmp_path, tiny_models):
    from featstore.store import parts_dir

    manifest = write_corpus(tmp_path / "audio", LENGTHS[:3])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False)
    res = ex.extract_manifest(manifest, **kw, frames="2")
    parts_dir(res.store).mkdir()
    (res.store.parent / "toy.h5").rename(parts_dir(res.store) / "part-000-000001-1-aaaaaaaa.h5")
    with pytest.raises(StoreError, match="finish it with --frames 2, then re-run with --frames 1,2"):
        ex.extract_manifest(manifest, **kw, frames="1,2")
