"""Behaviour every command shares: parse-time option checks, ser's warnings as one line."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_device_typo_is_one_line_before_any_heavy_import(tmp_path):
    code = ("import sys, cli\n"
            "try:\n"
            "    cli.app(['extract', '--corpus', 'ravdess', '--device', 'cuda0'])\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1]),
                              "SER_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "exit 2 False", out.stdout + out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown device 'cuda0'"), out.stderr


def test_fold_warning_is_one_warning_line(tmp_path, monkeypatch):
    from featstore.synth import synthesize

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=24, seed=0, max_duration=0.3, sample_rate=16000)
    for wav in root.rglob("*-05.wav"):  # actor 05 gone: luna5 can no longer be the published folds
        wav.unlink()
    r = runner.invoke(app, ["folds", "--corpus", "ravdess", "--root", str(root), "--protocol", "luna5"])
    assert r.exit_code == 0, r.output
    warning_lines = [x for x in r.output.splitlines() if "luna5: actors" in x]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("warning: "), r.output
    assert "FoldWarning" not in r.output and "warnings.warn" not in r.output


def test_probe_on_a_misspelt_corpus_suggests_the_name(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    r = runner.invoke(app, ["probe", "--corpus", "ravdes", "--cache", str(tmp_path / "cache"), "--model", "m"])
    assert r.exit_code == 2, r.output
    assert "did you mean ravdess?" in r.output and "Traceback" not in r.output


def test_reversed_or_empty_layer_ranges_are_one_line_errors():
    import pytest

    from featstore.store import StoreError, parse_layers

    for spec, option in [("3-1", "--layer"), ("3-1", "--frames"), ("", "--layer"), (",", "--frames")]:
        with pytest.raises(StoreError, match=option):
            parse_layers(spec, 13, option=option)
    assert parse_layers("1-3", 13) == [1, 2, 3] and parse_layers("5-5", 13) == [5]


def test_out_of_range_layers_are_named_as_runs():
    """`--layer 3-99` on a 13-layer model listed all 87 layers past the end; the runs say it in a few characters."""
    import pytest

    from featstore.store import StoreError, parse_layers

    with pytest.raises(StoreError) as e:
        parse_layers("3-99,-20,15,17,18", 13)
    assert str(e.value) == "--layer: layer(s) -20, 13-99 out of range; the model has layers 0..12"


def test_reversed_frames_range_is_refused_by_extract(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    from featstore.synth import synthesize

    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=4, seed=0, max_duration=0.3, sample_rate=16000)
    from tests.helpers import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    r = runner.invoke(app, ["extract", "--corpus", "ravdess", "--root", str(root), "--model", str(model),
                            "--cache", str(tmp_path / "cache"), "--frames", "3-1", "--device", "cpu"])
    assert r.exit_code == 2 and "--frames '3-1'" in r.output and "Traceback" not in r.output, r.output
    assert not list((tmp_path / "cache").rglob("*.h5"))


def test_probe_options_reach_the_runner_and_are_checked_per_classifier(tmp_path, monkeypatch):
    """--class-weight/--speaker-norm reach logreg's task; options a classifier does not take are one line."""
    import classifiers.runs.crossval as ev
    from featstore.synth import synthesize
    from tests.helpers import build_tiny_model

    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SER_DB", str(tmp_path / "ser.db"))
    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=48, seed=0, max_duration=0.4, sample_rate=16000)
    model = str(build_tiny_model(tmp_path / "m"))
    common = ["--corpus", "ravdess", "--cache", str(tmp_path / "cache"), "--model", model]
    assert runner.invoke(app, ["extract", "--root", str(root), "--device", "cpu", *common]).exit_code == 0
    seen = []
    real = ev.CLASSIFIERS["logreg"]
    monkeypatch.setitem(ev.CLASSIFIERS, "logreg", lambda task: seen.append(dict(task.params)) or real(task))
    r = runner.invoke(app, ["probe", *common, "--layer", "2", "--C", "1", "--class-weight", "balanced",
                            "--speaker-norm", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert seen == [{"class_weight": "balanced", "speaker_norm": True}]
    bad = runner.invoke(app, ["probe", *common, "--layer", "2", "--classifier", "knn", "--speaker-norm"])
    assert bad.exit_code == 2 and "does not take --speaker-norm" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["probe", *common, "--layer", "2", "--class-weight", "inverse"])
    assert bad.exit_code == 2 and "--class-weight 'inverse'" in bad.output
