"""Config file round-trips, key validation, precedence of defaults, and corpus-root resolution."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from featstore import config
from featstore.errors import CorpusError, SerError
from featstore.folds import standard_protocol


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Path:
    """An isolated config file, home and data dir under tmp_path; no SER_* variables."""
    path = tmp_path / "conf" / "ser.toml"
    monkeypatch.setenv("SER_CONFIG", str(path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("SER_DATA", "SER_CACHE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_set_get_show_round_trip(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.set_value("model", "facebook/hubert-base-ls960") == cfg
    config.set_value("device", "CUDA:1")
    config.set_value("corpus", "RAVDESS")
    config.set_value("corpora.ravdess.root", "data/RAVDESS")
    config.set_value("corpora.iemocap.protocol", "loso-session")

    on_disk = tomllib.loads(cfg.read_text(encoding="utf-8"))
    assert on_disk == {
        "model": "facebook/hubert-base-ls960", "device": "cuda:1", "corpus": "ravdess",
        "corpora": {"ravdess": {"root": str(tmp_path / "data" / "RAVDESS")},
                    "iemocap": {"protocol": "loso-session"}},
    }
    assert config.get("corpora.ravdess.root") == str(tmp_path / "data" / "RAVDESS")
    assert config.get("corpora.savee.root", "nope") == "nope"
    assert config.default_model() == "facebook/hubert-base-ls960"
    assert config.default_device() == "cuda:1"
    assert config.default_corpus() == "ravdess"
    assert config.default_protocol("iemocap") == "loso-session"
    assert config.default_protocol("ravdess") == standard_protocol("ravdess")

    rows = {key: (value, source) for key, value, source in config.show()}
    assert rows["model"] == ("facebook/hubert-base-ls960", "config file")
    assert rows["cache"] == ("cache", "default")
    assert rows["data"] == (str(tmp_path / "home" / "ser-data"), "default")
    assert rows["corpora.iemocap.protocol"] == ("loso-session", "config file")
    assert rows["corpora.ravdess.root"][0] == str(tmp_path / "data" / "RAVDESS")

    assert config.unset_value("corpora.iemocap.protocol") is True
    assert config.unset_value("corpora.iemocap.protocol") is False
    assert "iemocap" not in config.load_config()["corpora"]  # the emptied table is dropped
    assert config.unset_value("model") is True
    from featstore.backbones.runtime import DEFAULT_MODEL
    assert config.default_model() == DEFAULT_MODEL


def test_toml_writer_escapes_what_tomllib_reads_back(cfg):
    odd = 'C:\\data\\"quoted"\tdir\nline é'
    data = {"a": odd, "n": 3, "flag": True, "corpora": {"x y": {"root": "/r"}}, "empty": {}}
    assert tomllib.loads(config.dumps_toml(data)) == data


def test_unknown_key_lists_the_valid_ones_and_writes_nothing(cfg):
    with pytest.raises(SerError) as e:
        config.set_value("modle", "x")
    msg = str(e.value)
    assert "'modle'" in msg
    for key in ("model", "cache", "device", "data", "corpus", "corpora.<corpus>.root", "corpora.<corpus>.protocol"):
        assert key in msg
    assert not cfg.exists()


@pytest.mark.parametrize("key, value, words", [
    ("corpora.nosuch.root", "/x", ["'nosuch'", "ravdess", "iemocap"]),
    ("corpus", "nosuch", ["'nosuch'", "ravdess"]),
    ("device", "gpu", ["cuda:N"]),
    ("corpora.ravdess.protocol", "speaker-kfold:1", ["speaker-kfold:K"]),
    ("corpora.ravdess.bogus", "x", ["corpora.<corpus>.root"]),
    ("data", "  ", ["ser config unset data"]),
])
def test_bad_values_are_refused(cfg, key, value, words):
    with pytest.raises(SerError) as e:
        config.set_value(key, value)
    for word in words:
        assert word in str(e.value)
    assert not cfg.exists()


def test_broken_file_names_itself(cfg):
    cfg.parent.mkdir(parents=True)
    cfg.write_text("model = [unclosed\n", encoding="utf-8")
    with pytest.raises(SerError, match="not valid TOML") as e:
        config.load_config()
    assert str(cfg) in str(e.value)


def test_environment_beats_the_file_for_directories(cfg, tmp_path, monkeypatch):
    config.set_value("cache", str(tmp_path / "cfg-cache"))
    config.set_value("data", str(tmp_path / "cfg-data"))
    assert config.default_cache() == tmp_path / "cfg-cache"
    assert config.data_dir() == tmp_path / "cfg-data"
    monkeypatch.setenv("SER_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("SER_DATA", str(tmp_path / "env-data"))
    assert config.default_cache() == tmp_path / "env-cache"
    assert config.data_dir() == tmp_path / "env-data"
    rows = {key: (value, source) for key, value, source in config.show()}
    assert rows["cache"] == (str(tmp_path / "env-cache"), "env $SER_CACHE")
    assert rows["data"] == (str(tmp_path / "env-data"), "env $SER_DATA")


def test_resolve_root_order(cfg, tmp_path, monkeypatch):
    configured = tmp_path / "configured" / "RAVDESS"
    env_data = tmp_path / "env-data"
    data = tmp_path / "data"
    for d in (configured, env_data / "ravdess", data / "ravdess"):
        d.mkdir(parents=True)
    config.set_value("corpora.ravdess.root", str(configured))
    config.set_value("data", str(data))
    monkeypatch.setenv("SER_DATA", str(env_data))

    explicit = tmp_path / "explicit-missing"
    assert config.resolve_root("ravdess", explicit) == explicit  # as is, even missing
    assert config.resolve_root("ravdess", None) == configured
    configured.rmdir()
    assert config.resolve_root("ravdess") == env_data / "ravdess"
    (env_data / "ravdess").rmdir()
    with pytest.raises(CorpusError):  # with SER_DATA set, the data dir *is* $SER_DATA
        config.resolve_root("ravdess")
    monkeypatch.delenv("SER_DATA")
    assert config.resolve_root("RAVDESS") == data / "ravdess"


def test_not_found_lists_places_and_fixes(cfg, tmp_path, monkeypatch):
    config.set_value("corpora.ravdess.root", str(tmp_path / "gone"))
    monkeypatch.setenv("SER_DATA", str(tmp_path / "env-data"))
    with pytest.raises(CorpusError) as e:
        config.resolve_root("ravdess")
    msg = str(e.value)
    assert str(tmp_path / "gone") in msg
    assert str(tmp_path / "env-data" / "ravdess") in msg
    assert "ser download ravdess" in msg
    assert "ser config set corpora.ravdess.root /path/to/ravdess" in msg

    monkeypatch.delenv("SER_DATA")
    with pytest.raises(CorpusError) as e:
        config.resolve_root("iemocap")
    msg = str(e.value)
    assert "config corpora.iemocap.root: (not set)" in msg
    assert str(tmp_path / "home" / "ser-data" / "iemocap") in msg
    assert "sail.usc.edu" in msg  # licensed: where to obtain it, no `ser download iemocap` command
    assert "ser download iemocap    #" not in msg
    assert "ser config set corpora.iemocap.root" in msg
