"""Bad corpus names and bad inputs: one `error:` line and exit code 2 in the CLI, or a problem
in the manifest; never a traceback, never a silently ignored file."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from featstore.corpora import CORPORA, check_custom_name, get_corpus
from featstore.corpora.ravdess import RavdessCorpus
from featstore.errors import CorpusError, LayoutError
from tests.helpers import write_wav

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user config, data dir or cache leaks in; the working directory is scratch."""
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("SER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def one_error_line(*args: str) -> str:
    """Run `ser ARGS`; it must fail with exit code 2 and print exactly one `error:` line."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- corpus names ---------------------------------------------------------------------------------

def test_get_corpus_suggests_the_closest_name():
    with pytest.raises(CorpusError) as e:
        get_corpus("ravdes")
    assert str(e.value).startswith("unknown corpus 'ravdes' - did you mean ravdess?")
    with pytest.raises(CorpusError) as e:
        get_corpus("zzz")
    assert "did you mean" not in str(e.value) and "ravdess" in str(e.value)   # lists the known ones
    assert get_corpus("RAVDESS") is CORPORA["ravdess"]


def test_a_near_miss_is_not_taken_for_a_csv_corpus():
    with pytest.raises(CorpusError, match="did you mean emodb"):
        check_custom_name("emodbb")
    assert check_custom_name("My_Emotions") == "my_emotions"
    assert check_custom_name("IEMOCAP") == "iemocap"


# extract and finetune take the same `cli._corpus` path as manifest and folds; probe fails in
# config.default_protocol (tested below). All three import torch first: seconds, not milliseconds.
@pytest.mark.parametrize("args", [
    ("manifest", "--corpus", "ravdes"),
    ("folds", "--corpus", "ravdes"),
    ("download", "ravdes"),
    ("synth", "--like", "ravdes", "--out", "s"),
    ("config", "set", "corpus", "ravdes"),
    ("config", "set", "corpora.ravdes.root", "/x"),
])
def test_misspelt_corpus_everywhere_suggests_the_name(args):
    line = one_error_line(*args)
    assert "unknown corpus 'ravdes' - did you mean ravdess?" in line
    assert "ser extract --corpus ravdes" not in line


def test_probe_default_protocol_of_a_misspelt_corpus_suggests_the_name():
    from featstore.config import default_protocol

    with pytest.raises(CorpusError, match="unknown corpus 'ravdes' - did you mean ravdess?"):
        default_protocol("ravdes")
    assert default_protocol("my_emotions") == "speaker-kfold:5"


# -- parse errors ---------------------------------------------------------------------------------

def test_layout_error_is_a_problem_but_a_bug_in_parse_is_raised(tmp_path):
    write_wav(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.wav")
    write_wav(tmp_path / "Actor_01" / "readme.wav")
    with pytest.raises(LayoutError, match="MM-VV-EE-II-SS-RR-AA"):
        RavdessCorpus().parse(tmp_path / "Actor_01" / "readme.wav", tmp_path)
    manifest = RavdessCorpus().load(tmp_path)
    assert len(manifest) == 1
    assert [p.reason.split(":")[0] for p in manifest.problems] == ["file name not in ravdess layout"]

    class Buggy(RavdessCorpus):
        def parse(self, path, root):
            return int(path.stem)  # a programming error: ValueError, not a data problem

    with pytest.raises(ValueError, match="invalid literal"):
        Buggy().load(tmp_path)


# -- what the walk meets ----------------------------------------------------------------------------

def test_directories_broken_links_and_empty_files_are_problems(tmp_path):
    root = tmp_path / "ravdess"
    write_wav(root / "Actor_01" / "03-01-01-01-01-01-01.wav")
    (root / "Actor_01" / "03-01-02-01-01-01-01.wav").mkdir()                       # a directory
    os.symlink(root / "gone.wav", root / "Actor_01" / "03-01-03-01-01-01-01.wav")  # dangling
    (root / "Actor_01" / "03-01-04-01-01-01-01.wav").write_bytes(b"")               # 0 bytes
    manifest = get_corpus("ravdess").load(root)
    assert [u.id for u in manifest] == ["ravdess-03-01-01-01-01-01-01"]
    reasons = {Path(p.path).name: p.reason for p in manifest.problems}
    assert reasons == {
        "03-01-02-01-01-01-01.wav": "a directory, not an audio file",
        "03-01-03-01-01-01-01.wav": f"broken symbolic link (to {root / 'gone.wav'})",
        "03-01-04-01-01-01-01.wav": "empty file (0 bytes)",
    }

    result = runner.invoke(app, ["manifest", "--corpus", "ravdess", "--root", str(root)])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "a directory, not an audio file" in result.output and "empty file" in result.output


def test_a_tree_of_only_unusable_paths_loads_empty_with_problems(tmp_path):
    (tmp_path / "wav" / "03a01Wa.wav").mkdir(parents=True)
    manifest = get_corpus("emodb").load(tmp_path)
    assert len(manifest) == 0 and [p.reason for p in manifest.problems] == ["a directory, not an audio file"]


# -- CSV corpora ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"path,label,speaker\ncaf\xe9.wav,angry,s1\n", "is not UTF-8 text (byte 22"),    # Latin-1
    (b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4, "is not UTF-8 text"),              # gzip-ish binary
    (b"path,label,speaker\n\x00\x00\x00,angry,s1\n", "is a binary file"),            # NUL bytes
])
def test_binary_or_non_utf8_csv_is_one_line(tmp_path, content, words):
    csv_file = tmp_path / "mine.csv"
    csv_file.write_bytes(content)
    with pytest.raises(CorpusError) as e:
        get_corpus("csv").load(csv_file)
    assert words in str(e.value)
    line = one_error_line("manifest", "--corpus", "csv", "--root", str(csv_file))
    assert words in line and str(csv_file) in line


# -- config files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
    (b'cache = ["a"]\n', "cache must be a string, not list"),
    (b"device = 3\n", "device must be a string, not int"),
    (b'device = "mps"\n', "bad device 'mps'"),
    (b'devcie = "cpu"\n', "unknown config key 'devcie'"),
    (b'corpora = "x"\n', "unknown config key 'corpora'"),
    (b'[corpora.ravdes]\nroot = "/x"\n', "did you mean ravdess?"),
    (b'[corpora.ravdess]\nprotocol = "luna6"\n', "unknown fold protocol 'luna6'"),
])
def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path, content, words):
    (tmp_path / "config.toml").write_bytes(content)
    for args in (("config", "show"), ("manifest", "--corpus", "ravdess")):
        line = one_error_line(*args)
        assert words in line and str(tmp_path / "config.toml") in line


def test_a_mistyped_value_can_be_unset_or_overwritten(tmp_path):
    # model set: `config show` would otherwise import torch for the default model's name
    (tmp_path / "config.toml").write_text('model = "m"\ncache = ["a"]\ndevice = "mps"\n', encoding="utf-8")
    assert "ser config unset cache" in one_error_line("config", "show")
    assert runner.invoke(app, ["config", "unset", "cache"]).exit_code == 0
    assert runner.invoke(app, ["config", "set", "device", "cpu"]).exit_code == 0
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0 and "cpu" in result.output


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda:x"])
def test_config_set_refuses_devices_ser_cannot_use(tmp_path, device):
    line = one_error_line("config", "set", "device", device)
    assert f"'{device}'" in line and "cuda:N" in line and "mps" not in line.replace(f"'{device}'", "")
    assert not (tmp_path / "config.toml").exists()


def test_config_does_not_import_download():
    tree = ast.parse((REPO / "featstore" / "config.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name.startswith("featstore.download") for name in imported)
