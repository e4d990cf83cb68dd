"""The store owns the cache layout: finding stores, listing corpora, reading an interrupted run."""

from __future__ import annotations

import pytest

from featstore.backbones.runtime import model_slug
from featstore.store import StoreError, cached_corpora, find_store, read_progress
from tests.test_extract import write_corpus


def test_find_store_and_cached_corpora(tmp_path):
    directory = tmp_path / "cache" / model_slug("org/model")
    with pytest.raises(StoreError, match="ser extract --corpus ravdess --model org/model"):
        find_store(tmp_path / "cache", "org/model", "ravdess")
    with pytest.raises(StoreError, match="no extracted corpora"):
        cached_corpora(tmp_path / "cache", "org/model")
    directory.mkdir(parents=True)
    (directory / "ravdess.h5").touch()
    (directory / "cremad.shard-0-of-2.h5").touch()
    (directory / "emo.db.h5").touch()                      # a dot in the corpus name
    (directory / ".iemocap.h5.tmp-123").touch()            # a temp file is no store
    (directory / "emovo.h5.parts").mkdir()                 # nor is an unfinished run
    assert cached_corpora(tmp_path / "cache", "org/model") == ["cremad", "emo.db", "ravdess"]
    assert find_store(tmp_path / "cache", "org/model", "ravdess") == directory / "ravdess.h5"
    assert find_store(tmp_path / "cache", "org/model", "cremad") == directory / "cremad.h5"
    with pytest.raises(StoreError, match="found: cremad, emo.db, ravdess"):
        find_store(tmp_path / "cache", "org/model", "emovo")


def test_read_progress_of_an_interrupted_run(tmp_path, tiny_models):
    from featstore.backbones.runtime import model_info
    from featstore.extract import extract_manifest, store_config

    manifest = write_corpus(tmp_path / "audio", [4000, 5000, 6000])
    kw = dict(model=str(tiny_models["layer"]), cache=tmp_path / "cache", device="cpu", progress=False)
    res = extract_manifest(manifest, **kw)
    config = store_config(model_info(str(tiny_models["layer"])), "float32", [], 30.0)
    done = read_progress(res.store, config)
    assert done.done == {"toy-000", "toy-001", "toy-002"} and done.parts == 0 and done.mtime > 0
    with pytest.raises(StoreError, match="different configuration"):
        read_progress(res.store, {**config, "dtype": "bfloat16"})
    assert read_progress(tmp_path / "nothing.h5", config).done == set()


def test_human_size_is_1024_based_and_labelled():
    from featstore.units import human_size

    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024 ** 2) == "5.0 MiB"
    assert human_size(3 * 1024 ** 3) == "3.0 GiB"
    assert human_size(2 * 1024 ** 4) == "2.0 TiB"


def test_torchrun_reads_the_environment():
    from featstore.extract import torchrun

    assert torchrun({}) is None and torchrun({"WORLD_SIZE": "1"}) is None
    run = torchrun({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (run.rank, run.world_size, run.local_rank) == (3, 4, 1)
    assert run.device("cpu") == "cpu"


@pytest.mark.parametrize("batch_size, sizes", [(None, [1] * 8), (3, [3, 3, 2]), (8, [8])])
def test_cpu_honours_batch_size(tmp_path, tiny_models, monkeypatch, batch_size, sizes):
    import numpy as np

    import featstore.extract as ex
    from featstore.store import open_store
    from tests.test_extract import LENGTHS

    seen = []
    real = ex.hidden_states

    def counting(backbone, waves, **kw):
        seen.append(len(waves))
        return real(backbone, waves, **kw)

    monkeypatch.setattr(ex, "hidden_states", counting)
    manifest = write_corpus(tmp_path / "audio", LENGTHS)
    res = ex.extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "c", device="cpu",
                              batch_size=batch_size, progress=False)
    assert seen == sizes
    monkeypatch.setattr(ex, "hidden_states", real)
    alone = ex.extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "alone",
                                device="cpu", progress=False)
    np.testing.assert_allclose(open_store(res.store).pooled_all(), open_store(alone.store).pooled_all(), atol=1e-4)
