"""Shared fixtures; plain helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

import pytest

from tests.helpers import build_tiny_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """{"group": dir, "layer": dir} of tiny wav2vec2 models saved with save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    return {kind: build_tiny_model(root / f"tiny-{kind}", kind) for kind in ("group", "layer")}


@pytest.fixture(scope="session", autouse=True)
def no_user_files(tmp_path_factory):
    """Before any fixture of any scope: the user's registry, results root and data dir are temporary
    ones, so module-scoped fixtures (set up before `own_registry`) never write under ~/.local/share."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
        mp.setenv("SER_DB", str(base / "session-registry" / "ser.db"))
        mp.setenv("SER_RESULTS", "results")
        mp.setenv("SER_CACHE_HOME", str(base / "ser-cache"))
        yield


@pytest.fixture(autouse=True)
def own_registry(tmp_path_factory, monkeypatch):
    """Each test registers its runs in a registry of its own, never in ./results/ser.db, and keeps its weight
    hashes out of ~/.cache."""
    monkeypatch.setenv("SER_DB", str(tmp_path_factory.mktemp("registry") / "ser.db"))
    monkeypatch.setenv("SER_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "ser-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg-data"))   # never ~/.local/share
    monkeypatch.setenv("SER_RESULTS", "results")   # runs without --out: under each test's working directory


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and two threads on busy shared cores spin-wait (4x slower)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# A test may skip only where the machine makes the check meaningless (root reads any file): these exact
# reasons, never any reason that merely mentions root (a tmpfs that cannot be mounted is a missing check).
ALLOWED_SKIP = ("running as root: file permissions cannot deny root a read",
                "root reads files whatever their permissions")
_bad_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(reason.endswith(f"Skipped: {allowed}") or reason == allowed for allowed in ALLOWED_SKIP):
            _bad_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    """With SER_FAIL_ON_SKIP=1 (CI), a skip for anything but an allowed reason fails the run."""
    if _bad_skips and os.environ.get("SER_FAIL_ON_SKIP") == "1":
        print("\nunexpected skips (SER_FAIL_ON_SKIP=1):\n  " + "\n  ".join(_bad_skips))
        session.exitstatus = 1


@pytest.fixture
def own_modules_cache(tmp_path_factory, monkeypatch):
    """trust_remote_code copies modeling_ser.py into transformers' modules cache: keep it out of ~/.cache (an old
    copy there would hide a changed hf_modeling.py from the tests that load exports)."""
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path_factory.getbasetemp() / "hf-modules"))


@pytest.fixture
def kept(monkeypatch):
    """Every figure save_figure closes, kept open for inspection (after it was laid out and written)."""
    import matplotlib.pyplot as plt

    figures = []
    real = plt.close

    def close(fig=None):
        if fig is not None and not isinstance(fig, str):
            figures.append(fig)
        else:
            real(fig)

    monkeypatch.setattr(plt, "close", close)
    yield figures
    for fig in figures:
        real(fig)
