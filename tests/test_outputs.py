"""Issue 28 outputs: report figures must be the user's own PNGs, every plot draws its labels literally,
and reports, figures, `store export` and `manifest --out` are written whole or not at all."""

from __future__ import annotations

import builtins
import errno
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.results.plots import confusion_heatmap, layer_curve, transfer_heatmap
from classifiers.results.report import FigureError, read_figure, transfer_figure, write_report
from cli import app
from featstore.outputs import OutputDiskFull, OutputError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error_line(r) -> str:
    """The single `error:` line of a CLI run, whitespace normalised (independent of where rich wraps)."""
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and text.count("error:") == 1 and "Traceback" not in r.output, r.output
    return text


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


@contextmanager
def full_disk(monkeypatch, *, suffix: str = ""):
    """Every write to a temporary output file (`.tmp-` in its name, ending in `suffix`) fails with ENOSPC,
    as tests/test_store_writers.py simulates it (builtins.open and io.open: pathlib and PIL use either)."""
    real_open = io.open

    def full_disk_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        if ("w" in mode or "+" in mode) and ".tmp-" in str(file) and str(file).endswith(suffix):
            def fail(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = fail
        return fh

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", full_disk_open)
        m.setattr(io, "open", full_disk_open)
        yield


@pytest.fixture
def png(tmp_path) -> Path:
    """A real PNG of the user's own."""
    from PIL import Image

    path = tmp_path / "fig.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)
    return path


# -- --figure: the user's own PNG files only ----------------------------------------------------------

def test_cli_repro_figure_etc_passwd_is_refused(tmp_path):
    """Issue 28: `ser report --figure /etc/passwd` embedded the file in the HTML (exit 0)."""
    out = tmp_path / "r.html"
    line = one_error_line(invoke("report", "--figure", "/etc/passwd", "--out", out, "--db", tmp_path / "ser.db"))
    assert "--figure /etc/passwd:" in line and ("not a PNG" in line or "another user" in line)
    assert not out.exists()


def test_a_png_of_ones_own_is_embedded_and_its_bytes_decide_not_its_name(tmp_path, png):
    renamed = tmp_path / "plot.dat"
    renamed.write_bytes(png.read_bytes())
    page = write_report([], tmp_path / "r.html", figures=[png, renamed]).read_text()
    import base64

    assert page.count(base64.b64encode(png.read_bytes()).decode()) == 2
    fake = tmp_path / "fake.png"
    fake.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(FigureError, match=r"fake.png: is not a PNG image"):
        write_report([], tmp_path / "r2.html", figures=[png, fake])
    assert not (tmp_path / "r2.html").exists()


def test_a_figure_owned_by_another_user_is_refused(tmp_path, png, monkeypatch):
    if os.getuid() == 0:
        os.chown(png, 65534, 65534)                           # really another user's file
    else:
        real = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real + 1)  # the file's owner is no longer "us"
    with pytest.raises(FigureError, match=r"belongs to another user \(uid \d+\).*copy it"):
        read_figure(png)
    line = one_error_line(invoke("report", "--figure", png, "--out", tmp_path / "r.html", "--db", tmp_path / "ser.db"))
    assert f"--figure {png}: belongs to another user" in line and not (tmp_path / "r.html").exists()


def test_figures_that_are_not_regular_files_are_one_line_and_never_hang(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)                                        # opening it for reading would block without O_NONBLOCK
    cases = {tmp_path: "is a directory", fifo: "not a regular file", tmp_path / "missing.png": "no such file",
             Path("/proc/self/status"): "system path", Path("/dev/zero"): "system path"}
    for path, what in cases.items():
        with pytest.raises(FigureError, match=what):
            read_figure(path)
        line = one_error_line(invoke("report", "--figure", path, "--out", tmp_path / "r.html",
                                     "--db", tmp_path / "ser.db"))
        assert f"--figure {path}: " in line and what in line


def test_report_out_on_a_directory_or_under_proc_is_one_line(tmp_path):
    for out, what in ((tmp_path, "is a directory"), (Path("/proc/self/report.html"), "system path"),
                      (tmp_path / "r.txt", "expected a .html or .htm file")):
        line = one_error_line(invoke("report", "--out", out, "--db", tmp_path / "ser.db"))
        assert f"--out {out}: " in line and what in line
        with pytest.raises(OutputError, match=what):
            write_report([], out)


# -- labels drawn literally -----------------------------------------------------------------------------

LABELS = ["a$b", "$x$", "50%_sad", "$_$", r"$\frac{$", "^{x}"]


@pytest.fixture
def drawn(monkeypatch):
    """Every text of every figure saved, as (text, whether matplotlib would parse it as math)."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    seen: list[tuple[str, bool]] = []
    real = Figure.savefig

    def savefig(self, *a, **k):
        seen.extend((t.get_text(), t.get_parse_math()) for t in self.findobj(Text) if t.get_text())
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_labels_with_dollars_and_percent_are_drawn_literally(tmp_path, drawn):
    """Issue 28: a `$` in a CSV label crashed matplotlib's mathtext (`$_$`) or lost its dollars (`$x$`)."""
    import matplotlib
    from PIL import Image

    before = matplotlib.rcParams["text.parse_math"]
    n = len(LABELS)
    out = confusion_heatmap(np.arange(n * n).reshape(n, n), LABELS, tmp_path / "cm.png", title="train $_$ → a$b")
    transfer_heatmap(np.full((n, n), 0.5), LABELS, tmp_path / "tr.png")
    transfer_figure({(a, b): 0.5 for a in LABELS[:3] for b in LABELS[3:]}, tmp_path / "tf.png", title="$_$")
    texts = dict(drawn)
    for label in [*LABELS, "train $_$ → a$b"]:
        assert label in texts and texts[label] is False, label      # literal, never mathtext
    assert all(math is False for _, math in drawn)
    assert Image.open(out).size[0] > 100 and not temp_files(tmp_path)
    assert matplotlib.rcParams["text.parse_math"] == before           # other figures keep the user's setting


def test_layer_curve_with_dollar_training_set_names(tmp_path, drawn):
    from classifiers.results.records import ProbeResults, make_record

    labels = ["$_$", "a$b"]
    recs = [make_record(layer=k, fold=f, y_true=labels, y_pred=labels[::-1] if k == f == 0 else labels, labels=labels,
                        n_train=4, train_set=train, test_set="$_$ corpus", classifier="logreg", seed=0)
            for k in range(3) for f in range(2) for train in ("$_$ corpus", "b$")]
    layer_curve(ProbeResults(recs), tmp_path / "curve.png", title="50%_sad $x$")
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG)
    assert ("50%_sad $x$", False) in drawn and any("$_$ corpus" in t for t, _ in drawn)


# -- full disks: one line, nothing half-written ------------------------------------------------------------

def test_full_disk_during_a_figure_keeps_the_earlier_file(tmp_path, monkeypatch):
    out = tmp_path / "cm.png"
    confusion_heatmap(np.eye(2), ["a", "b"], out)
    earlier = out.read_bytes()
    with full_disk(monkeypatch), pytest.raises(OutputDiskFull, match=r"disk full writing .*cm.png"):
        confusion_heatmap(np.eye(3), ["a", "b", "c"], out)
    assert out.read_bytes() == earlier and not temp_files(tmp_path)


def test_full_disk_during_a_report_keeps_the_earlier_report(tmp_path, monkeypatch, png):
    out = tmp_path / "r.html"
    out.write_text("the earlier report")
    with full_disk(monkeypatch, suffix=".html"), pytest.raises(OutputDiskFull, match="nothing was written"):
        write_report([], out, figures=[png])
    assert out.read_text() == "the earlier report" and not temp_files(tmp_path)
    assert write_report([], out, figures=[png]).read_text().startswith("<!doctype html>")


def test_full_disk_during_a_report_with_runs(tmp_path, monkeypatch):
    """A registered probe's report: the full disk hits its figures (in a temporary directory) or its page."""
    from tests.test_runs import probe_args, toy_store

    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    toy_store(cache, "ravdess")
    assert invoke(*probe_args(cache, tmp_path / "ser.db", "--seeds", "1")).exit_code == 0
    out = tmp_path / "report.html"
    for suffix in (".png", ".html"):
        with full_disk(monkeypatch, suffix=suffix):
            line = one_error_line(invoke("report", "--out", out, "--db", tmp_path / "ser.db"))
        assert "disk full writing" in line and suffix in line
        assert not out.exists() and not temp_files(tmp_path)
    assert invoke("report", "--out", out, "--db", tmp_path / "ser.db").exit_code == 0
    assert out.read_text().count("data:image/png;base64,") >= 2


def test_store_export_full_disk_directory_and_proc(tmp_path, monkeypatch):
    from featstore.store import open_store
    from tests.test_runs import toy_store

    store = toy_store(tmp_path / "cache", "ravdess")
    out = tmp_path / "l1.npz"
    with full_disk(monkeypatch):
        line = one_error_line(invoke("store", "export", store, "--layer", "1", "--out", out))
    assert f"disk full writing {out}" in line and not out.exists() and not temp_files(tmp_path)
    for bad, what in ((tmp_path, "is a directory"), (Path("/proc/self/l1.npz"), "system path")):
        line = one_error_line(invoke("store", "export", store, "--layer", "1", "--out", bad))
        assert f"--out {bad}" in line and what in line
    r = invoke("store", "export", store, "--layer", "1", "--out", tmp_path / "l1")   # numpy's suffix, as before
    assert r.exit_code == 0, r.output
    data = np.load(out)
    assert np.array_equal(data["X"], open_store(store).pooled(1)) and not temp_files(tmp_path)


def test_manifest_out_full_disk_and_directory(tmp_path, monkeypatch):
    from featstore.synth import synthesize

    synthesize("ravdess", tmp_path / "rav", n=2, max_duration=0.05, sample_rate=8000)
    args = ("manifest", "--corpus", "ravdess", "--root", tmp_path / "rav", "--out")
    out = tmp_path / "m.csv"
    with full_disk(monkeypatch):
        line = one_error_line(invoke(*args, out))
    assert f"disk full writing {out}" in line and not out.exists() and not temp_files(tmp_path)
    line = one_error_line(invoke(*args, tmp_path))
    assert "is a directory" in line
    assert invoke(*args, out).exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_probe_and_report_over_dollar_labels(tmp_path, monkeypatch):
    """Issue 28: a `$` in a corpus label crashed `ser probe` in matplotlib, leaving a half-written results folder."""
    import tests.test_runs as runs

    weird = ["a$b", "$_$", "50%_sad", "$x$", "angry", "calm", "sad", "happy"]
    monkeypatch.setitem(runs.LABELS, "ravdess", weird)
    monkeypatch.chdir(tmp_path)
    runs.toy_store(tmp_path / "cache", "ravdess")
    r = invoke(*runs.probe_args(tmp_path / "cache", tmp_path / "ser.db"))
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    pngs = sorted(p.name for p in (tmp_path / "results").rglob("*.png"))
    assert pngs == ["probe_confusion.png", "probe_layers.png"] and not temp_files(tmp_path)
    r = invoke("report", "--out", tmp_path / "r.html", "--db", tmp_path / "ser.db")
    assert r.exit_code == 0 and (tmp_path / "r.html").read_text().count("data:image/png;base64,") >= 2
