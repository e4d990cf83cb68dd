"""The registry's store fingerprint means the data: extraction settings and feature values are part
of it, so a probe over a re-extracted store is never answered with another store's run."""

from __future__ import annotations

import shutil

import pytest

from classifiers.results.records import ProbeResults
from classifiers.results.registry import Registry, store_fingerprint
from featstore.extract import extract_manifest
from featstore.store import open_store
from tests.test_extract import write_corpus


@pytest.fixture
def stores(tmp_path, tiny_models, one_torch_thread):
    """The same corpus extracted twice at the same path: --max-seconds 30, then --max-seconds 0.5."""
    manifest = write_corpus(tmp_path / "audio", lengths=[16000, 24001, 9000, 12000])
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    first = extract_manifest(manifest, max_seconds=30.0, **kw).store
    a = tmp_path / "a.h5"
    shutil.copy(first, a)
    first.unlink()
    second = extract_manifest(manifest, max_seconds=0.5, **kw).store
    assert second == first  # the same path, the same utterance ids: only the settings and numbers differ
    return open_store(a), open_store(second)


def test_extraction_settings_and_values_change_the_fingerprint(stores):
    a, b = stores
    assert a.ids == b.ids and a.config["model_id"] == b.config["model_id"]
    fa, fb = store_fingerprint(a), store_fingerprint(b)
    assert fa["extraction"]["max_seconds"] == 30.0 and fb["extraction"]["max_seconds"] == 0.5
    assert fa["features_sha256"] != fb["features_sha256"]
    assert fa != fb
    assert store_fingerprint(open_store(a.paths[0])) == fa  # the same store, the same fingerprint


def test_registry_never_answers_with_another_stores_run(stores, tmp_path):
    a, b = stores
    registry = Registry(tmp_path / "ser.db")
    config = dict(corpus="toy", layers="all", classifier="logreg")
    registry.register(kind="probe", config=config, stores=[store_fingerprint(a)], results=ProbeResults())
    assert registry.find("probe", config, [store_fingerprint(a)]) is not None
    assert registry.find("probe", config, [store_fingerprint(b)]) is None
