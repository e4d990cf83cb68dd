"""Issue 24, paper-ready figures: --format png,pdf,svg, titles wrapped to fit (never cut), the
canonical class order, never-true classes out of confusions, a dot plot for one layer, overlapping
series told apart, fine-tune figures titled, forest plots labelled by setting, report images at
their own aspect ratio."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifiers.results.plots import (
    FigureFormatError,
    confusion_heatmap,
    figure_formats,
    figure_paths,
    layer_curve,
    parse_formats,
    save_figure,
    transfer_heatmap,
)
from classifiers.results.records import ProbeResults, make_record
from cli import app

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def titles(fig) -> list:
    sup = getattr(fig, "_suptitle", None)
    found = [sup] if sup is not None and sup.get_text() else []
    return found + [t for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()]


def assert_titles_inside(fig, *given: str) -> None:
    """Each title's drawn box lies inside the figure, and its words are the words given (wrapped, not cut)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = titles(fig)
    assert shown
    for t in shown:
        box = t.get_window_extent(renderer)
        assert box.x0 >= -0.5 and box.x1 <= fig.bbox.width + 0.5, (t.get_text(), box, fig.bbox)
        assert box.y0 >= -0.5 and box.y1 <= fig.bbox.height + 0.5, (t.get_text(), box, fig.bbox)
    words = sorted(w for t in shown for w in t.get_text().split())
    assert words == sorted(w for g in given for w in g.split())


def records(layers, trains=("ravdess",), labels=("angry", "sad"), seed_offset=0):
    out = []
    for train in trains:
        for k in layers:
            for f in range(3):
                y = list(labels) * 3
                pred = y[::-1] if (f + k + seed_offset) % 2 else y
                out.append(make_record(layer=k, fold=f, y_true=y, y_pred=pred, labels=list(labels), n_train=6,
                                       train_set=train, test_set="ravdess", classifier="logreg", seed=0))
    return out


# -- formats ----------------------------------------------------------------------------------------------

def test_parse_formats_orders_dedups_and_refuses_in_one_line():
    assert parse_formats("PDF, png,pdf") == ("pdf", "png")
    assert parse_formats(["svg"]) == ("svg",)
    for bad, why in (("png,jpg", "unknown figure format 'jpg'"), ("", "name one or more"), ("png,", "name one")):
        with pytest.raises(FigureFormatError, match=why) as e:
            parse_formats(bad)
        assert "\n" not in str(e.value)


def test_each_format_is_written_whole_and_valid(tmp_path):
    out = confusion_heatmap(np.eye(3, dtype=int) * 4 + 1, ["sad", "angry", "neutral"], tmp_path / "cm.png",
                            title="a title", formats="png,pdf,svg")
    assert out == tmp_path / "cm.png"
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG)
    pdf = (tmp_path / "cm.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/FontFile2" in pdf                        # TrueType embedded: text stays text
    root = ET.parse(tmp_path / "cm.svg").getroot()
    assert root.tag.endswith("svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.pdf", "cm.png", "cm.svg"]   # no temp files left


def test_the_formats_of_a_block_and_figure_paths(tmp_path):
    res = ProbeResults(records(range(3)))
    with figure_formats("pdf,svg") as formats:
        first = layer_curve(res, tmp_path / "curve.png")
        assert formats == ("pdf", "svg") and figure_paths(first) == [tmp_path / "curve.pdf", tmp_path / "curve.svg"]
    assert first == tmp_path / "curve.pdf" and not (tmp_path / "curve.png").exists()
    assert (tmp_path / "curve.svg").exists()
    layer_curve(res, tmp_path / "again.png")             # outside the block: png again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "curve.pdf", "curve.svg"]


def test_format_option_is_checked_before_any_work(tmp_path):
    for command in (["probe"], ["neighbors"], ["evaluate", "--trained", "x", "--corpus", "ravdess"], ["finetune"]):
        r = runner.invoke(app, [*command, "--format", "png,tiff", "--cache", str(tmp_path / "none")]
                          if command[0] != "finetune" else [*command, "--format", "png,tiff"], env={"COLUMNS": "200"})
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and text.count("error:") == 1, (command, r.output)
        assert "--format 'png,tiff': unknown figure format 'tiff'" in text, text


# -- titles that fit --------------------------------------------------------------------------------------

LONG = ("train × test pooled UAR, model facebook/wav2vec2-large-xlsr-53, layer 12 (logreg; diagonal: each corpus' "
        "folds pooled, off-diagonal: classes shared)")


def test_long_titles_are_wrapped_inside_the_figure_never_cut(tmp_path, kept):
    transfer_heatmap(np.full((3, 3), 0.5), ["ravdess", "emodb", "cremad"], tmp_path / "t.png", title=LONG)
    confusion_heatmap(np.eye(2, dtype=int) + 1, ["sad", "angry"], tmp_path / "c.png", title=LONG + "\n" + LONG)
    layer_curve(ProbeResults(records(range(4))), tmp_path / "l.png", title=LONG)
    t, c, lc = kept
    assert_titles_inside(t, LONG)
    assert t.axes[0].title.get_text().count("\n") >= 1            # it did need wrapping
    assert_titles_inside(c, LONG, LONG)
    assert_titles_inside(lc, LONG)


def test_panel_titles_and_suptitle_fit(tmp_path, kept):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.set_title("emotion: speaker-independent kNN (mean over 16 folds), cross-corpus retrieval")
    b.set_title("neighbour purity per attribute (mean over 336 utterances)")
    fig.suptitle("model toy/model | emodb+ravdess | N=336, k=5 | kNN: loso (same-speaker neighbours excluded) " * 2)
    save_figure(plt, fig, tmp_path / "panels.png")
    assert_titles_inside(kept[0], *(t.get_text() for t in titles(kept[0])))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert a.title.get_window_extent(r).x1 <= b.title.get_window_extent(r).x0      # panel titles do not overlap


# -- classes ----------------------------------------------------------------------------------------------

def ticks(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def test_confusion_in_canonical_order_with_never_true_classes_left_out(tmp_path, kept):
    labels = ["angry", "calm", "happy", "neutral", "sad", "surprise"]      # alphabetical, as some callers give
    cm = np.zeros((6, 6), dtype=int)
    cm[0, 0], cm[2, 2], cm[3, 3], cm[4, 4], cm[3, 0] = 7, 8, 9, 10, 3
    cm[4, 5] = 2                                                          # surprise predicted, never true
    confusion_heatmap(cm, labels, tmp_path / "cm.png")                   # calm: never true, never predicted
    ax = kept[0].axes[0]
    assert ticks(ax.yaxis) == ["neutral", "happy", "sad", "angry"]
    assert ticks(ax.xaxis) == ["neutral", "happy", "sad", "angry", "surprise*"]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 3)] == "0.25\n(3)" and cells[(0, 0)] == "0.75\n(9)"    # neutral row: 3 angry of 12
    assert cells[(2, 4)] == "0.17\n(2)"
    assert "never true in this test set: calm, surprise" in " ".join(ax.get_xlabel().split())


def test_a_confusion_with_every_class_true_keeps_them_all(tmp_path, kept):
    confusion_heatmap(np.eye(3, dtype=int) + 1, ["sad", "neutral", "angry"], tmp_path / "cm.png")
    ax = kept[0].axes[0]
    assert ticks(ax.yaxis) == ticks(ax.xaxis) == ["neutral", "sad", "angry"]
    assert ax.get_xlabel() == "predicted"


# -- one layer, overlapping series, forest labels -----------------------------------------------------------

def test_one_layer_is_a_dot_plot_per_setting_not_a_curve(tmp_path, kept):
    layer_curve(ProbeResults(records([6], trains=("ravdess", "ravdess,emodb"))), tmp_path / "one.png", chance=0.5)
    ax = kept[0].axes[0]
    assert ticks(ax.yaxis) == ["logreg, train ravdess", "logreg, train ravdess,emodb → ravdess"]
    assert "at layer 6" in ax.get_xlabel()
    assert len(ax.containers) == 2                                      # one error bar per setting
    assert all(len(line.get_xdata()) == 1 for line in ax.lines if line.get_marker() not in ("None", "", None, "|"))
    assert not [line for line in ax.lines if line.get_marker() == "*"]  # no "best" stars on one tick


def test_the_report_draws_one_layer_settings_as_a_dot_plot(tmp_path, kept):
    from classifiers.results.predictions import block as predictions_block
    from classifiers.results.predictions import concat
    from classifiers.results.report import layer_ci_figure
    from featstore.corpora.base import Utterance

    utts = [Utterance(id=f"u{s}{c}{r}", path="", corpus="ravdess", language="en", speaker=f"s{s}", gender=None,
                      label=c, label_raw=c) for s in range(6) for c in ("angry", "sad") for r in range(2)]
    rows = np.arange(len(utts))
    parts = [predictions_block(utts, rows, [u.label if (i + t) % 3 else "sad" for i, u in enumerate(utts)], fold="0",
                               seed=0, layer=12, classifier="logreg", train_set=train, test_set="ravdess")
             for t, train in enumerate(("ravdess", "ravdess,emodb"))]
    out = layer_ci_figure(concat(parts), tmp_path / "dots.png")
    assert out is not None and out.read_bytes().startswith(PNG)
    ax = kept[0].axes[0]
    assert len(ax.containers) == 2 and "CI over 6 speakers" in ax.get_xlabel()
    assert ticks(ax.yaxis)[0].startswith("logreg, ravdess, layer 12")


def test_overlapping_series_are_told_apart(tmp_path, kept):
    res = ProbeResults(records(range(5), trains=("a", "b", "c")))    # identical scores for the three sets
    layer_curve(res, tmp_path / "same.png")
    lines = [line for line in kept[0].axes[0].lines if len(line.get_xdata()) == 5]
    assert len(lines) == 3
    xs = [tuple(np.round(line.get_xdata(), 3)) for line in lines]
    assert len(set(xs)) == 3                                          # offset sideways
    styles = {(line.get_marker(), line.get_linestyle(), str(line.get_markerfacecolor())) for line in lines}
    assert len(styles) == 3                                           # and marked apart
    for line in lines:
        assert np.allclose(np.round(line.get_xdata()), range(5))      # never moved off their layer


def test_forest_plots_are_labelled_by_setting(tmp_path, kept):
    from classifiers.results.report import comparison_figure

    row = dict(diff=0.05, low=-0.01, high=0.11, p=0.1, p_holm=0.1)
    comparison_figure([dict(row, a="ravdess,emodb, layer 6", b="ravdess", classifier="logreg", layer="6",
                            train_set="ravdess,emodb")], tmp_path / "train.png")
    comparison_figure([dict(row, a="run2", b="run1")], tmp_path / "runs.png",
                      settings={"run2": "xgboost, ravdess, layer 9", "run1": "logreg, ravdess, layer 6"})
    assert " ".join(ticks(kept[0].axes[0].yaxis)[0].split()) == "logreg, layer 6: ravdess,emodb − ravdess"
    assert " ".join(ticks(kept[1].axes[0].yaxis)[0].split()) == "run2 (xgboost, ravdess, layer 9) − run1"


# -- fine-tune figures ---------------------------------------------------------------------------------------

def test_finetune_figures_are_titled_with_model_corpus_and_folds(tmp_path, kept):
    from classifiers.finetuning.finetune import FinetuneResult, FoldResult, summarize, write_results

    labels = ["sad", "angry"]
    folds = [FoldResult(fold=f"luna-{k}", train_set="ravdess", test_set="cremad", n_train=4, n_val=2, n_test=4,
                        val_speakers=["s1"], metrics=dict(wa=0.5, uar=0.5, macro_f1=0.5), recall={},
                        confusion=[[1, 1], [1, 1]], best_val_uar=0.5, best_checkpoint=None, global_step=2,
                        model_dir="m", seconds=1.0, log_history=[dict(epoch=1, loss=1.0), dict(epoch=1, eval_loss=1.1,
                                                                                                 eval_uar=0.5)])
             for k in range(2)]
    run = FinetuneResult(out_dir=tmp_path, labels=labels, folds=folds, summary=summarize(folds),
                         plan=dict(model="org/base-model", pooling="attention", seed=0, protocol="luna5", labels=labels))
    files = write_results(run, formats="png,pdf")
    assert files["confusion"].suffix == ".png" and files["confusion_pdf"].read_bytes().startswith(b"%PDF")
    assert files["learning_curves_pdf"].exists()
    for fig in kept:
        text = " ".join(" ".join(t.get_text() for t in titles(fig)).split())
        for part in ("org/base-model", "attention pooling", "ravdess → cremad", "luna-0, luna-1"):
            assert part in text, (part, text)
        assert_titles_inside(fig, *(t.get_text() for t in titles(fig)))


# -- through the CLI, and the report ---------------------------------------------------------------------------

def test_probe_format_writes_every_format_and_the_report_embeds_png(tmp_path, monkeypatch):
    from classifiers.results.report import png_size
    from tests.test_runs import probe_args, toy_store

    monkeypatch.chdir(tmp_path)
    cache, db = tmp_path / "cache", tmp_path / "ser.db"
    toy_store(cache, "ravdess", speakers=4, per_class=2)
    r = runner.invoke(app, [str(a) for a in probe_args(cache, db, "--format", "pdf,svg,png", "--out", "p")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "p").iterdir() if p.suffix in (".png", ".pdf", ".svg"))
    assert names == sorted(f"probe_{kind}.{ext}" for kind in ("confusion", "layers") for ext in ("png", "pdf", "svg"))
    assert all(f"probe_layers.{ext}" in " ".join(r.output.split()) for ext in ("pdf", "svg", "png"))  # all listed
    with figure_formats("pdf"):                                     # the report's images stay PNG
        r = runner.invoke(app, ["report", "--out", str(tmp_path / "r.html"), "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    import base64

    imgs = re.findall(r'<img alt="[^"]*" width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) >= 2
    for w, h, data in imgs:                                         # each at its own size and aspect ratio
        assert png_size(base64.b64decode(data)) == (int(w), int(h))
    assert "align-items:flex-start" in page and "height:auto" in page
    assert not list(Path(tmp_path).glob("*.pdf"))


def _figures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf", ".svg"))


def test_a_study_file_says_its_formats_and_re_used_runs_get_the_formats_they_lack(tmp_path, monkeypatch):
    """[study] formats writes each run's figures in those formats; asked again with --format svg,
    the registered run is re-used (nothing computed: same run id, same probe.json) and its folder
    gains the svg figures; a bad formats value is one line before any work."""
    from classifiers.results.registry import Registry
    from tests.test_runs import MODEL, toy_store

    monkeypatch.chdir(tmp_path)
    cache, db = tmp_path / "cache", tmp_path / "ser.db"
    toy_store(cache, "ravdess", speakers=4, per_class=2)
    study = tmp_path / "s.toml"
    body = (f'models = ["{MODEL}"]\nlayers = "all"\nC = 1.0\nprotocol = "speaker-kfold:2"\n'
            f'[[cells]]\ncorpus = "ravdess"\n')
    study.write_text('[study]\nname = "fmt"\nformats = ["pdf"]\n' + body)
    run = ["study", "run", str(study), "--cache", str(cache), "--db", str(db)]
    r = runner.invoke(app, run, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    (only,) = Registry(db).runs()
    folder = Path(only["out"])
    assert _figures(folder) == ["probe_confusion.pdf", "probe_layers.pdf"]
    before = (folder / "probe.json").read_bytes()
    r = runner.invoke(app, [*run, "--format", "svg"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "registered already" in r.output and [x["id"] for x in Registry(db).runs()] == [only["id"]]
    assert _figures(folder) == ["probe_confusion.pdf", "probe_confusion.svg", "probe_layers.pdf", "probe_layers.svg"]
    assert (folder / "probe.json").read_bytes() == before
    ET.parse(folder / "probe_layers.svg")                               # a whole SVG document
    study.write_text('[study]\nname = "fmt"\nformats = "png,jpeg"\n' + body)
    r = runner.invoke(app, run, env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "formats" in r.output and "jpeg" in " ".join(r.output.split())
    assert len(Registry(db).runs()) == 1


def test_demo_format_writes_its_figures_in_each_and_a_re_run_adds_missing_ones(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--n", "24", "--format", "pdf"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert _figures(out / "results" / "probe") == ["probe_confusion.pdf", "probe_layers.pdf"]
    assert _figures(out / "results" / "neighbors") == ["neighbors_purity.pdf"]
    page = (out / "results" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2                   # the report embeds PNG all the same
    r = runner.invoke(app, ["demo", "--out", str(out), "--n", "24", "--format", "png"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert _figures(out / "results" / "neighbors") == ["neighbors_purity.pdf", "neighbors_purity.png"]
    assert "probe_layers.png" in _figures(out / "results" / "probe")


def test_titles_count_the_folds_of_one_setting_not_the_training_sets():
    """Two training sets tested cross-corpus are one split each, not '2 folds'; a corpus' own
    folds are counted once whatever the number of training sets."""
    from types import SimpleNamespace

    from classifiers.runs.probe import _aggregated

    cross = SimpleNamespace(records=[dict(fold=f"train-{t}-test-emodb", train_set=t, classifier="logreg", layer=k,
                                          seed=0) for t in ("cremad", "savee") for k in (0, 1)])
    assert _aggregated(cross) == "one train→test split × 1 seed"
    multi = SimpleNamespace(records=[dict(fold=f"luna-{f}", train_set=t, classifier="logreg", layer=0, seed=s)
                                     for t in ("ravdess", "ravdess,emodb") for f in range(5) for s in (0, 1)])
    assert _aggregated(multi) == "5 folds × 2 seeds"
    assert _aggregated(multi, train_set="ravdess") == "5 folds × 2 seeds"
