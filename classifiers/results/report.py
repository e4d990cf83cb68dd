"""`ser report`: one self-contained HTML file over registered runs (every plot embedded as PNG).

Per run, whatever its kind (probe, matrix, neighbors, finetune, evaluate; a dimensional probe by its
CCC per dimension), headed by its id and kind with a link to its folder: the scores with their 95%
speaker CI (jackknife-t) next to mean ± std over folds and seeds, a matrix run's train × test table,
the layer curve with CI bands, the confusion matrix of the best setting, the layer-sweep and
training-set comparisons (Holm-adjusted). Over all runs: the run comparison against the first run,
the train x test transfer matrix when the runs test on several corpora, and any extra figures
(e.g. the neighbour analysis' purity plot).
"""

from __future__ import annotations

import base64
import html
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.results.plots import _plt, confusion_heatmap, figure_formats, literal_text
from featstore.errors import SerError

METRIC_NAMES = {"uar": "UAR", "wa": "WA", "macro_f1": "macro-F1"}

#: the 8 bytes every PNG file starts with
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the largest extra figure embedded (a plot is well under 1 MiB)
MAX_FIGURE_BYTES = 32 * 2**20


class FigureError(SerError):
    """An extra --figure that is not one of the user's own PNG files."""


def read_figure(path: str | Path, option: str = "--figure") -> bytes:
    """The bytes of `path`, checked as a figure to embed: a regular PNG file (its signature, not its
    name) owned by the user running ser, not under /proc, /sys or /dev, at most MAX_FIGURE_BYTES.

    The file is opened once (non-blocking: a FIFO never hangs) and the checks run on what was
    opened, so a file swapped in between cannot slip through. FigureError (one line) otherwise.
    """
    from featstore.outputs import is_system_path
    from featstore.units import human_size

    p = Path(path).expanduser()
    where = f"{option} {path}"
    if is_system_path(p.resolve()):
        raise FigureError(f"{where}: a system path is not a figure; give a PNG file of yours")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise FigureError(f"{where}: no such file; give a PNG file (e.g. neighbors_purity.png)") from e
    except OSError as e:
        raise FigureError(f"{where}: cannot be read ({e.strerror}); give a PNG file of yours") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FigureError(f"{where}: is a directory; give a PNG file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise FigureError(f"{where}: is not a regular file; give a PNG file of yours")
        if st.st_uid != os.getuid():
            raise FigureError(f"{where}: belongs to another user (uid {st.st_uid}); only your own files are "
                              f"embedded: copy it (cp) and pass the copy")
        if st.st_size > MAX_FIGURE_BYTES:
            raise FigureError(f"{where}: {human_size(st.st_size)} is too large for a figure (at most "
                              f"{human_size(MAX_FIGURE_BYTES)}); pass a smaller PNG")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FIGURE_BYTES + 1)
    finally:
        os.close(fd)
    if not data.startswith(PNG_SIGNATURE):
        raise FigureError(f"{where}: is not a PNG image (no PNG signature); pass a .png file, e.g. one ser "
                          f"wrote")
    return data


# ---------------------------------------------------------------------------------------------
# figures (each returns the path written)
# ---------------------------------------------------------------------------------------------

def _finish(plt, fig, out) -> Path:
    from classifiers.results.plots import save_figure

    return save_figure(plt, fig, out)


@literal_text
def interval_figure(intervals: dict, out: str | Path, title: str = "") -> Path:
    """A dot plot of {name: `Interval`}: each value with its CI, first on top."""
    from classifiers.results.plots import dot_plot

    plt = _plt()
    names = list(intervals)
    first = next(iter(intervals.values()))
    fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.45 * len(names)), dpi=130)
    dot_plot(ax, [(name, iv.value, iv.low, iv.high) for name, iv in intervals.items()],
             f"{METRIC_NAMES.get(first.metric, first.metric)} with 95% CI over {first.n_groups} {first.unit}s "
             f"(jackknife-t)")
    ax.set_title(title, fontsize=10)
    return _finish(plt, fig, out)


@literal_text
def layer_ci_figure(cols: dict, out: str | Path, metric: str = "uar", title: str = "") -> Path | None:
    """Pooled `metric` by layer with 95% speaker CI (jackknife-t) bands, a line per setting (told
    apart by marker, line style and a sideways offset); when every setting has one layer, a dot
    plot of each setting with its CI. `title` names what is shown ("run 3fa9: UAR"); the figure
    says how. None when no setting has a numeric layer."""
    from classifiers.results.compare import interval, setting_name
    from classifiers.results.plots import dodge, series_style, setting_label
    from classifiers.results.predictions import settings

    groups: dict = {}
    for s in settings(cols):
        if str(s[3]).lstrip("-").isdigit():
            groups.setdefault(s[:3], []).append(s[3])
    if not groups:
        return None
    name = METRIC_NAMES.get(metric, metric)
    if not any(len(layers) > 1 for layers in groups.values()):
        ivs = {setting_name((*g, layers[0])): interval(cols, (*g, layers[0]), metric) for g, layers in groups.items()}
        return interval_figure(ivs, out, title=f"{title or name} per setting (one layer each), 95% speaker CI")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.0 + 0.22 * max(0, len(groups) - 2)), dpi=130)
    ticks = sorted({int(k) for layers in groups.values() for k in layers})
    for i, ((train, test, clf), layers) in enumerate(groups.items()):
        layers = sorted(layers, key=int)
        ivs = [interval(cols, (train, test, clf, k), metric) for k in layers]
        x = np.array([int(k) for k in layers]) + dodge(i, len(groups), ticks[-1] - ticks[0])
        v = np.array([iv.value for iv in ivs])
        b = int(np.argmax(v))
        line, = ax.plot(x, v, ms=5, lw=1.6, **series_style(i),
                        label=f"{setting_label(clf, train, test)} (best {v[b]:.3f}, layer {layers[b]})")
        ax.fill_between(x, [iv.low for iv in ivs], [iv.high for iv in ivs], color=line.get_color(), alpha=0.15, lw=0)
        ax.plot([x[b]], [v[b]], marker="*", ms=12, color=line.get_color(), mec="black", mew=0.5)
    ax.set_xticks(ticks)
    ax.set_xlabel("layer (hidden_states[k])")
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (pooled over folds and seeds)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(groups) <= 2:
        ax.legend(fontsize=8)
    else:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    ax.set_title(f"{title or name} by layer, band: 95% speaker CI", fontsize=10)
    return _finish(plt, fig, out)


def _forest_label(r: dict, settings: dict | None) -> str:
    """A comparison's row label naming the settings compared: 'logreg, layer 6: ravdess,emodb − ravdess'
    for training sets, 'run b (its setting) − run a' for runs."""
    if "train_set" in r and "classifier" in r:
        return f"{r['classifier']}, layer {r['layer']}: {r['train_set']} − {r['b']}"
    a = f"{r['a']} ({settings[r['a']]})" if settings and r["a"] in settings else str(r["a"])
    return f"{a} − {r['b']}"


@literal_text
def comparison_figure(rows: Sequence[dict], out: str | Path, title: str = "", settings: dict | None = None,
                      formats: str | Sequence[str] | None = None) -> Path:
    """Forest plot: each comparison's difference (a - b) with its CI, labelled by the settings
    compared (`settings`: {run: setting name} for run comparisons); zero marked."""
    from matplotlib.ticker import MaxNLocator

    from classifiers.results.plots import _wrap_label, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.5 * len(rows)), dpi=130)
    for i, r in enumerate(rows):
        sig = r.get("p_holm", r["p"]) < 0.05
        ax.errorbar([r["diff"]], [i], xerr=[[r["diff"] - r["low"]], [r["high"] - r["diff"]]], fmt="o", capsize=4,
                    color="tab:red" if sig else "tab:blue")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_yticks(range(len(rows)), [_wrap_label(_forest_label(r, settings), 48) for r in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("difference with 95% speaker CI (red: p < 0.05 after Holm)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=10)
    return save_figure(plt, fig, out, formats=formats)


@literal_text
def transfer_figure(cells: dict, out: str | Path, title: str = "") -> Path:
    """Train set (rows) x test set (columns) heatmap of {(train, test): value}."""
    plt = _plt()
    trains = list(dict.fromkeys(a for a, _ in cells))
    tests = list(dict.fromkeys(b for _, b in cells))
    M = np.array([[cells.get((a, b), np.nan) for b in tests] for a in trains])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 + 1.2 * len(tests)), max(2.6, 1.2 + 0.6 * len(trains))), dpi=130)
    ax.imshow(M, cmap="viridis", vmin=0, vmax=1)
    for i in range(len(trains)):
        for j in range(len(tests)):
            if np.isnan(M[i, j]):
                ax.text(j, i, "not run", ha="center", va="center", color="grey", fontsize=8)
            else:
                ax.text(j, i, f"{M[i, j]:.3f}", ha="center", va="center", color="white" if M[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(tests)), tests, rotation=30 if len(tests) > 3 else 0, ha="right" if len(tests) > 3 else "center")
    ax.set_yticks(range(len(trains)), trains)
    ax.set_xlabel("test")
    ax.set_ylabel("train")
    ax.set_title(title, fontsize=10)
    return _finish(plt, fig, out)


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{margin-bottom:.3em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;height:auto;object-fit:contain;border:1px solid #eee;margin:.4em 0}.meta{color:#555;font-size:.9em}
code{background:#f5f5f5;padding:0 .3em}.sig{color:#b00;font-weight:bold}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.figs img{flex:0 1 auto;max-width:min(520px,100%)}"""


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, or None for anything else."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _img(path: Path, alt: str, data: bytes | None = None) -> str:
    """The PNG embedded at its own aspect ratio: its pixel size as width/height (the browser
    reserves the right box), scaled down by CSS with height following the width."""
    data = Path(path).read_bytes() if data is None else data
    size = png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return f'<img alt="{html.escape(alt)}"{dims} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(head: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _diff_table(rows: Sequence[dict], what: str) -> str:
    body = []
    for r in rows:
        p_holm = r.get("p_holm", r["p"])
        body.append([html.escape(f"{r['a']} − {r['b']}"), f"{r['diff']:+.3f}",
                     f"[{r['low']:+.3f}, {r['high']:+.3f}]", f"{r['p']:.3g}",
                     f'<span class="{"sig" if p_holm < 0.05 else ""}">{p_holm:.3g}</span>', str(r["n_groups"])])
    return _table([what, "difference", "95% CI", "p (paired)", "p (Holm)", "speakers"], body)


def _best_layer_table(rows: Sequence[dict]) -> str:
    """`compare.layer_differences` rows of the best layer picked on the test predictions: the
    adjusted CI and p (max-T speaker permutation, best re-picked each time) are the evidence; the
    pair's unadjusted p is shown so readers see what the pick would otherwise claim."""
    body = [[html.escape(f"{r['a']} − {r['b']}"), f"{r['diff']:+.3f}", f"[{r['low']:+.3f}, {r['high']:+.3f}]",
             f'<span class="{"sig" if r["p"] < 0.05 else ""}">{r["p"]:.3g}</span>', f"{r['p_unadjusted']:.3g}",
             str(r["n_groups"])] for r in rows]
    note = (f'<p class="meta">The best layer was picked on the same test predictions, so a plain paired test '
            f"would overstate it: every CI and p here are adjusted for that pick and for the {len(rows)} comparisons "
            f"(max-T speaker permutation, the best re-picked in each permutation; the CI excludes 0 exactly when "
            f"p &lt; 0.05). To confirm a layer, choose it on training speakers and compare it as planned.</p>")
    return _table(["layers", "difference", "95% CI (adjusted)", "p (adjusted)", "p (unadjusted: not evidence)",
                   "speakers"], body) + note


def _score_table(results, cols) -> str:
    """Per setting, as `ser probe` prints it: the headline (pooled UAR over folds and seeds with
    its 95% speaker CI), the mean ± std over folds beside it, WA and macro-F1 pooled, classes and
    chance (`ProbeResults.summary`)."""
    from classifiers.results.records import ci_text, classes_text, folds_text, headline_caption

    rows = results.summary()
    body = []
    for row in rows:
        body.append([html.escape(f"{row['classifier']}, {row['train_set']}"
                                 + (f" → {row['test_set']}" if row["test_set"] != row["train_set"] else "")),
                     html.escape(str(row["layer"])), html.escape(ci_text(row)), html.escape(folds_text(row)),
                     *[("–" if row.get(m + "_pooled") is None else f"{row[m + '_pooled']:.3f}")
                       for m in ("wa", "macro_f1")],
                     html.escape(classes_text(row)), f"{row.get('n_folds', row['n'])} × {row.get('n_seeds', 1)}"])
    caption = "<br>".join(html.escape(line) for line in headline_caption(rows).splitlines())
    return _table(["setting", "layer", "UAR pooled [95% speaker CI]", "UAR folds mean ± std", "WA pooled",
                   "macro-F1 pooled", "classes (chance UAR)", "folds × seeds"], body, left=2) + \
        f'<p class="meta">{caption}</p>'


def dimensional_run(run: dict) -> bool:
    """Whether `run` is a dimensional probe or matrix (`classifiers.runs.dimensional`: scored by CCC, not UAR)."""
    return run.get("kind") in ("probe", "matrix") and (run.get("config") or {}).get("target", "emotion") != "emotion"


def _folder_link(run: dict) -> str:
    """A link to the run's results folder (file:// URI), or its path as text when it has none."""
    out = run.get("out")
    if not out:
        return "no folder"
    p = Path(out).expanduser()
    try:
        uri = p.resolve().as_uri()
    except (OSError, ValueError):
        return f"folder <code>{html.escape(str(out))}</code>"
    return f'folder <a href="{html.escape(uri)}"><code>{html.escape(str(out))}</code></a>'


def _run_head(run: dict, results, what: str) -> list[str]:
    """A run section's heading (its id and kind) and meta line (model, time, command, folder link)."""
    cfg = run.get("config", {})
    protocol = results.meta.get("protocol") or cfg.get("protocol")
    settings = [f"protocol {protocol}" if protocol else "", f"seeds {cfg['seeds']}" if "seeds" in cfg else ""]
    return [f"<h2>run {html.escape(run['id'])} — {html.escape(what)}, "
            f"{html.escape(str(run.get('corpus', '')))}, {html.escape(str(run.get('classifier', '')))}</h2>",
            f'<p class="meta">model {html.escape(str(run.get("model", "")))} · {html.escape(run.get("created", ""))}'
            f' · ser {html.escape(str(run.get("code_version", "")))}<br><code>{html.escape(run.get("command", ""))}'
            f"</code><br>{''.join(html.escape(s) + ' · ' for s in settings if s)}{_folder_link(run)}</p>"]


def _dimensional_section(run: dict, result) -> str:
    """A dimensional probe's section: per dimension the best layer's pooled CCC with its 95% speaker
    CI (the headline), then every layer's CCC per dimension."""
    names = list(result.meta.get("dimensions") or [])
    target = (run.get("config") or {}).get("target", "")
    parts = _run_head(run, result, f"{run.get('kind', 'probe')} ({target})")
    if run.get("kind") == "matrix":           # a `DimensionalMatrix`: train → test cells at one layer
        def ccc(r, n):
            return f"{r[f'ccc_{n}_pooled']:.3f} [{r[f'ccc_{n}_ci_low']:.3f}, {r[f'ccc_{n}_ci_high']:.3f}]"

        rows = [[html.escape(f"{a} → {b}"), *[ccc(result.cells[(a, b)], n) for n in names]]
                for a in result.corpora for b in result.corpora]
        parts.append(f"<h3>transfer matrix at layer {html.escape(str(result.meta.get('layer')))}: CCC pooled "
                     f"[95% speaker CI] (diagonal: each corpus' own folds)</h3>")
        parts.append(_table(["train → test", *[f"{n} CCC [95% CI]" for n in names]], rows, left=1))
        return "\n".join(parts)
    body = []
    for n in names:
        b = result.best(n)
        body.append([html.escape(n), html.escape(str(b["layer"])),
                     f"{b[f'ccc_{n}_pooled']:.3f} [{b[f'ccc_{n}_ci_low']:.3f}, {b[f'ccc_{n}_ci_high']:.3f}]"])
    parts.append(_table(["dimension", "best layer", "CCC pooled [95% speaker CI]"], body, left=1))
    rows = [[html.escape(str(r["layer"])), *[f"{r[f'ccc_{n}_pooled']:.3f} [{r[f'ccc_{n}_ci_low']:.3f}, "
                                              f"{r[f'ccc_{n}_ci_high']:.3f}]" for n in names]]
            for r in result.summary]
    parts.append(_table(["layer", *[f"{n} CCC [95% CI]" for n in names]], rows, left=1))
    parts.append('<p class="meta">CCC on [-1, 1], pooled over the folds\' test predictions; CI: jackknife-t over '
                 'test speakers.</p>')
    return "\n".join(parts)


def _dimension_scores_section(run: dict, result) -> str:
    """A fine-tune's (or its evaluation's) section on dimensions only (`finetune.DimensionScores`): per
    dimension the CCC with its 95% speaker CI, Pearson r and RMSE."""
    target = (run.get("config") or {}).get("target") or ", ".join(result.rows)
    parts = _run_head(run, result, f"{run.get('kind', '')} ({target})")
    body = [[html.escape(d), f"{r['ccc']:.3f}" + (f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                                                  if r.get("ci_low") is not None else ""),
             f"{r['pearson']:.3f}", f"{r['rmse']:.3f}"] for d, r in result.rows.items()]
    parts.append(_table(["dimension", "CCC [95% speaker CI]", "Pearson r", "RMSE"], body, left=1))
    parts.append('<p class="meta">CCC on [-1, 1] over the test predictions; CI: jackknife-t over test speakers.</p>')
    return "\n".join(parts)


def _matrix_table(results) -> str:
    """A matrix run's cells as its train × test table of pooled UAR [95% speaker CI]."""
    from classifiers.results.records import ci_text

    rows = results.summary()
    trains = list(dict.fromkeys(r["train_set"] for r in rows))
    tests = list(dict.fromkeys(r["test_set"] for r in rows))
    cell = {(r["train_set"], r["test_set"]): r for r in rows}
    body = [[html.escape(a), *[html.escape(ci_text(cell[(a, b)])) if (a, b) in cell else "–" for b in tests]]
            for a in trains]
    return ("<h3>transfer matrix: UAR pooled [95% speaker CI], train (rows) → test (columns)</h3>"
            + _table(["train \\ test", *tests], body, left=1))


def _run_section(run: dict, results, tmp: Path, idx: int) -> tuple[str, dict]:
    """One run's HTML and its {(train_set, test_set): best UAR} transfer cells."""
    from classifiers.results.compare import (
        best_setting,
        label_order,
        layer_differences,
        setting_rows,
        train_set_differences,
    )
    from classifiers.results.predictions import concat
    from classifiers.results.stats import group_confusions

    if dimensional_run(run):
        return _dimensional_section(run, results), {}
    if hasattr(results, "rows"):              # a fine-tune (or its evaluation) on dimensions only
        return _dimension_scores_section(run, results), {}
    cols = concat(results.predictions) if results.predictions else None
    parts = [*_run_head(run, results, run.get("kind", "")), _score_table(results, cols)]
    if run.get("kind") == "matrix":
        parts.append(_matrix_table(results))
    predicted = set() if cols is None else {s[:2] for s in _settings(cols)}
    transfer = {}
    for row in results.summary():
        key = (row["train_set"], row["test_set"])
        if key in predicted:  # settings scored on every test utterance (not evaluate's shared-classes subset)
            transfer[key] = max(transfer.get(key, 0.0), row["uar_pooled"] if row.get("uar_pooled") is not None
                                else row["uar"])
    if cols is None:
        parts.append("<p>No per-utterance predictions: no intervals or paired tests for this run.</p>")
        return "\n".join(parts), transfer
    figs = []
    curve = layer_ci_figure(cols, tmp / f"layers{idx}.png", title=f"run {run['id']}: UAR")
    if curve:
        figs.append(_img(curve, "UAR with 95% speaker CI, by layer or per setting"))
    best = best_setting(cols)
    rows = setting_rows(cols, best)  # the confusion of exactly the predictions the intervals resample
    labels = label_order(rows)
    cm = group_confusions(rows["label"], rows["predicted"], None, labels)[1].sum(0)
    if len(labels):
        figs.append(_img(confusion_heatmap(cm, labels, tmp / f"confusion{idx}.png",
                                           title=f"run {run['id']}: {best[2]}, layer {best[3]}, "
                                                 f"train {best[0]} → {best[1]}"), "confusion matrix"))
    parts.append('<div class="figs">' + "".join(figs) + "</div>")
    found = _settings(cols)
    if len({s[3] for s in found if s[:3] == found[0][:3]}) > 1:
        rows = layer_differences(results)
        parts.append(f"<h3>exploratory: the best layer on these test speakers against every other layer (UAR; "
                     f"CI and p adjusted for picking the best of {len(rows) + 1} layers)</h3>")
        parts.append(_best_layer_table(rows))
    if len({s[0] for s in found}) > 1:
        rows = train_set_differences(results)
        parts.append(f"<h3>training sets against {html.escape(found[0][0])} (UAR; Holm over "
                     f"{len(rows)} comparisons)</h3>")
        parts.append(_diff_table(rows, "training set"))
        parts.append(_img(comparison_figure(rows, tmp / f"trainsets{idx}.png", title="training sets"), "training sets"))
    return "\n".join(parts), transfer


def _settings(cols):
    from classifiers.results.predictions import settings

    return settings(cols)


def _folded(section: str, summary: str, open_: bool = False) -> str:
    """`section` inside a <details> whose <summary> is `summary` (HTML): closed unless `open_`."""
    return (f'<details class="run"{" open" if open_ else ""}><summary>{summary}</summary>\n{section}\n'
            f"</details>")


def _fold_run(section: str, results) -> str:
    """A run's section folded: its heading (and best headline) as the summary line."""
    import re

    from classifiers.results.records import ci_text

    m = re.match(r"\s*(<h2>.*?</h2>)\s*", section)
    head, body = (m.group(1), section[m.end():]) if m else ("<h2>run</h2>", section)
    if not hasattr(results, "summary"):        # a dimensional matrix: its table says it all
        return _folded(body, head)
    if not callable(getattr(results, "summary", None)):    # a dimensional run: its mean CCC
        best = results.best() if results.summary else None
        tail = "" if best is None or best.get("ccc_pooled") is None else (
            f' <span class="meta">best mean CCC {best["ccc_pooled"]:.3f}, layer {html.escape(str(best["layer"]))}'
            f"</span>")
        return _folded(body, head + tail)
    rows = [r for r in results.summary() if r.get("pooled") is not None]
    best = max(rows, key=lambda r: r["pooled"]) if rows else None
    tail = "" if best is None else (f' <span class="meta">best UAR {html.escape(ci_text(best))}, layer '
                                    f"{html.escape(str(best['layer']))}</span>")
    return _folded(body, head + tail)


def write_report(runs: Sequence[tuple[dict, object]], out: str | Path, *, title: str = "ser report",
                 figures: Sequence[str | Path] = (), metric: str = "uar", lead: str = "",
                 fold: bool = False) -> Path:
    """Write the HTML report over `runs` ((registry row, results) pairs) to `out`; return it.

    Every run kind has its section, headed by its id and kind, with a link to its folder: the
    scores (pooled UAR with its speaker CI), a matrix run's train × test table, a dimensional
    probe's CCC per dimension (its results a `DimensionalRun`, as `classifiers.runs.study.load_run` reads it).

    lead: HTML placed first, under the title (a study's paper table, `classifiers.results.tables`); fold:
    each run's section (and each run comparison) in a closed <details>, its heading as the summary.

    figures: extra PNGs embedded at the end (e.g. neighbors_purity.png): each must be a PNG file the
    user owns (`read_figure`). `out` and the figures are checked before any work; the page is
    written whole or not at all (a full disk is one line and leaves no partial file).
    """
    import tempfile

    from classifiers.results.compare import run_differences, test_ids, what_differs
    from featstore.outputs import check_output, write_text

    out = check_output(out, option="--out", suffixes=(".html", ".htm"))
    extra = [(Path(f), read_figure(f)) for f in figures]
    sections, transfer = [], {}
    with tempfile.TemporaryDirectory() as tmp, figure_formats("png"):  # embedded as PNG whatever --format says
        tmp = Path(tmp)
        by_test: dict = {}  # only runs scored on the same utterances can be compared
        for run, res in runs:
            if not dimensional_run(run) and res.predictions:   # CCC runs are not paired with UAR runs
                by_test.setdefault(test_ids(res), []).append((run["id"], res))
        for i, group in enumerate(g for g in by_test.values() if len(g) > 1):
            rows_of = {run["id"]: run for run, _ in runs}
            summary, rows = run_differences(group, metric, differs=what_differs([rows_of[g] for g, _ in group]))
            setting_of = {s["run"]: s["setting"] for s in summary}
            body = [[html.escape(s["run"]), html.escape(s["setting"]), f"{s['value']:.3f}",
                     f"[{s['low']:.3f}, {s['high']:.3f}]"] for s in summary]
            compared = (f"<h2>runs on the same test utterances compared (each at its best setting, "
                        f"{METRIC_NAMES[metric]})</h2>")
            sections.append((_folded if fold else lambda section, heading: heading + section)(
                            _table(["run", "setting", METRIC_NAMES[metric], "95% speaker CI"], body, left=2)
                            + _diff_table(rows, f"against run {group[0][0]}")
                            + _img(comparison_figure(rows, tmp / f"runs{i}.png", settings=setting_of,
                                                     title=f"runs against {group[0][0]} ({setting_of[group[0][0]]})"),
                                   "run comparison"), compared))
        for i, (run, results) in enumerate(runs):
            html_part, cells = _run_section(run, results, tmp, i)
            sections.append(_fold_run(html_part, results) if fold else html_part)
            for k, v in cells.items():
                transfer[k] = max(transfer.get(k, 0.0), v)
        if len({b for _, b in transfer}) > 1:
            sections.append("<h2>transfer: best UAR per training and test set</h2>"
                            + _img(transfer_figure(transfer, tmp / "transfer.png", title="train × test UAR (best layer)"),
                                   "transfer matrix"))
        if extra:
            sections.append("<h2>more figures</h2>" + "".join(_img(f, f.name, data) for f, data in extra))
    from classifiers.results.tables import CSS as STUDY_CSS  # the lead table and the folded runs
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title><style>{CSS}"
            f"{STUDY_CSS if lead or fold else ''}</style></head><body><h1>{html.escape(title)}</h1>{lead}"
            + ("<h2>runs</h2><p class='meta'>Each run below is folded: click its line to open it.</p>" if fold else "")
            + f"<p class='meta'>{len(runs)} run(s), written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}. Every score: the pooled score over folds and seeds "
            f"with its 95% confidence interval over speakers (the headline), the mean ± std over folds beside it. Differences: paired, "
            f"with a paired p-value from the same jackknife-t statistic over speakers (the CI excludes 0 exactly when p &lt; 0.05); p (Holm) adjusts for the comparisons in the same table.</p>"
            + "\n".join(sections) + "</body></html>")
    return write_text(out, page)


#: the CCC metrics of runs scored on emotion dimensions (`classifiers.runs.dimensional.compare_dimensional`)
CCC_METRICS = ("ccc", "ccc_arousal", "ccc_valence", "ccc_dominance")


def compare_runs(registry, run_ids, metric: str = "uar", layer=None) -> tuple[list[dict], list[dict], list[dict], str]:
    """`ser results compare` as a notebook calls it: registered runs (ids or results folders) of any
    kind side by side, each against the first, paired on the test utterances they share.

    Returns (the registry rows, summary: one row per run with its setting, score and speaker CI;
    differences: each run against the first, with CI, p and Holm-adjusted p; the metric's name).
    Categorical metrics (uar, wa, macro_f1) pair runs by `run_differences`; the CCC metrics pair
    dimensional runs on the clips both rated. A metric or a run that cannot be compared is one line."""
    from classifiers.results.compare import run_differences, what_differs
    from classifiers.results.runfiles import load_registered
    from classifiers.results.stats import METRICS, StatsError

    if metric not in METRICS + CCC_METRICS:
        raise StatsError(f"unknown --metric {metric!r}: use one of {', '.join(METRICS + CCC_METRICS)}")
    if len(run_ids) < 2:
        raise StatsError("name at least two runs to compare (see `ser results ls`)")
    runs = [registry.run(r) for r in run_ids]
    if metric in CCC_METRICS:
        from classifiers.runs.dimensional import compare_dimensional

        summary, rows = compare_dimensional(runs, metric, layer)
        return runs, summary, rows, "CCC" if metric == "ccc" else f"CCC {metric.removeprefix('ccc_')}"
    from classifiers.runs.dimensional import is_dimension_scored

    scored = [r["id"] for r in runs if is_dimension_scored(r)]
    if scored:
        raise StatsError(f"run(s) {', '.join(scored)} are scored on emotion dimensions: compare with --metric ccc "
                         f"(or ccc_arousal, ccc_valence, ccc_dominance)")
    summary, rows = run_differences([(r["id"], load_registered(r)) for r in runs], metric, layer,
                                    differs=what_differs(runs))
    return runs, summary, rows, metric.upper() if metric != "macro_f1" else "macro-F1"
