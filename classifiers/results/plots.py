"""Plots people would rather look at than read: layer curves, confusion heatmaps, transfer matrices.

Dimensional emotion (issue 25): the CCC layer curve per dimension (`dimension_layer_curve`),
predicted against true per dimension (`prediction_scatter`) and the cross-corpus CCC matrix
(`ccc_transfer_heatmap`, drawn by `transfer_heatmap`).

Every text is drawn literally (a corpus label such as `a$b`, `$x$` or `50%_sad` is never parsed as
mathtext: `literal_text`), and every figure is written whole or not at all (`save_figure`: temp, rename),
in each of the figure formats asked for (`FORMATS`: png, pdf, svg; `figure_formats` sets them for a
block, `formats=` for one figure). Titles are wrapped to fit the figure (`fit_titles`), never cut;
classes are drawn in the canonical order (`featstore.labels.canonical_order`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from classifiers.results.records import ProbeResults
from featstore.errors import SerError

#: the figure formats ser writes, by file suffix
FORMATS = ("png", "pdf", "svg")
_FORMATS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("ser_figure_formats", default=("png",))


class FigureFormatError(SerError):
    """A figure format that is not one of FORMATS."""


def parse_formats(spec: str | Sequence[str], option: str = "--format") -> tuple[str, ...]:
    """'png,pdf' (or ['png', 'pdf']) -> ('png', 'pdf'): each format once, in the order given;
    FigureFormatError (one line) for an empty or unknown name."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(s).strip().lower().lstrip(".") for s in items]
    if not names or not all(names):
        raise FigureFormatError(f"{option} {','.join(map(str, items))!r}: name one or more of {', '.join(FORMATS)} "
                                f"separated by commas, e.g. png,pdf")
    for n in names:
        if n not in FORMATS:
            raise FigureFormatError(f"{option}: unknown figure format {n!r}; use {', '.join(FORMATS)} "
                                    f"(several separated by commas, e.g. png,pdf)")
    return tuple(dict.fromkeys(names))


def current_formats() -> tuple[str, ...]:
    """The formats figures are written in here (`figure_formats`; png by default)."""
    return _FORMATS.get()


@contextlib.contextmanager
def figure_formats(spec: str | Sequence[str] | None) -> Iterator[tuple[str, ...]]:
    """Write every figure of the block in the formats `spec` names ('png,pdf'); None keeps the current ones."""
    formats = current_formats() if spec is None else parse_formats(spec)
    token = _FORMATS.set(formats)
    try:
        yield formats
    finally:
        _FORMATS.reset(token)


def figure_paths(out: str | Path, formats: str | Sequence[str] | None = None) -> list[Path]:
    """The files a figure named `out` is written as: its stem with each format's suffix."""
    formats = current_formats() if formats is None else parse_formats(formats)
    return [Path(out).with_suffix(f".{f}") for f in formats]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def literal_text(fn):
    """Run the plotting function `fn` with mathtext off: labels, titles and legends are drawn as given.

    Matplotlib reads text between `$` signs as math (a label `$_$` raises, `$x$` loses its dollars);
    `text.parse_math` is read when each text is made, so the whole function, savefig included, runs
    inside the setting. Other figures of the process keep the user's settings. PDFs embed TrueType
    fonts (text stays text for journals' checks) and SVGs get stable ids.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False, "pdf.fonttype": 42,
                                    "ps.fonttype": 42, "svg.hashsalt": "ser"}):
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# titles that fit
# ---------------------------------------------------------------------------------------------

def _titles(fig) -> list:
    """(text artist, axes or None) of every non-empty title: the figure's suptitle, each axes' titles."""
    found = []
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text():
        found.append((sup, None))
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax._right_title):
            if t.get_text():
                found.append((t, ax))
    return found


def _wrap(text, width: float, renderer) -> None:
    """Re-break `text` (a matplotlib Text) at spaces so every line is at most `width` pixels wide;
    a single word wider than that shrinks the font instead (never cut)."""
    words_by_line = [line.split() for line in text.get_text().split("\n")]

    def wide(s: str) -> float:
        text.set_text(s)
        return text.get_window_extent(renderer).width

    lines = []
    for words in words_by_line:
        line = ""
        for w in words:
            trial = f"{line} {w}" if line else w
            if line and wide(trial) > width:
                lines.append(line)
                line = w
            else:
                line = trial
        lines.append(line)
    text.set_text("\n".join(lines))
    size = text.get_fontsize()
    while text.get_window_extent(renderer).width > width and size > 5:
        size -= 0.5
        text.set_fontsize(size)


def fit_titles(fig, margin: float = 0.02) -> None:
    """Wrap every title of `fig` so it lies inside the figure: the suptitle to the figure's width;
    an axes title to its axes' width when several axes have titles (panels side by side), else to
    the room it has, centred over its axes, inside the figure."""
    renderer = fig.canvas.get_renderer()
    W = fig.bbox.width
    for ax in fig.axes:
        ax.apply_aspect()       # where drawing puts it (imshow axes shrink to their aspect), titles follow
    found = _titles(fig)
    panels = sum(ax is not None for _, ax in found) > 1
    for text, ax in found:
        if not hasattr(text, "_ser_given"):     # wrapped again after a layout: from the text as given
            text._ser_given = (text.get_text(), text.get_fontsize())
        text.set_text(text._ser_given[0])
        text.set_fontsize(text._ser_given[1])
        room = W * (1 - 2 * margin)
        if ax is not None:
            box = ax.get_window_extent(renderer)
            centre = (box.x0 + box.x1) / 2
            room = box.width if panels else min(room, 2 * min(centre - W * margin, W * (1 - margin) - centre))
            room = max(room, 0.3 * W)
        _wrap(text, room, renderer)


def _layout(fig, tight: bool) -> list[str]:
    """Wrap the titles, lay the figure out (tight) and wrap again until the titles stop changing
    (the layout moves axes, which changes their titles' room); a title still wider than the figure
    after that is made smaller. Returns the titles as drawn."""
    fit_titles(fig)
    drawn = [t.get_text() for t, _ in _titles(fig)]
    for _ in range(4 if tight else 0):
        fig.tight_layout()
        fit_titles(fig)
        now = [t.get_text() for t, _ in _titles(fig)]
        if now == drawn:
            break
        drawn = now
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        ax.apply_aspect()
    for text, _ in _titles(fig):
        box = text.get_window_extent(renderer)
        while (box.x0 < 0 or box.x1 > fig.bbox.width) and text.get_fontsize() > 5:
            text.set_fontsize(text.get_fontsize() - 0.5)
            box = text.get_window_extent(renderer)
    return drawn


def save_figure(plt, fig, out: str | Path, *, dpi: float | None = None, tight: bool = True,
                formats: str | Sequence[str] | None = None) -> Path:
    """Write `fig` whole (temp file, fsync, rename) as `out`'s stem in each of `formats` (default:
    `current_formats()`), after fitting its titles, and close it, even when writing fails. Returns
    the first file (`figure_paths` lists them all).

    A full disk is one OutputDiskFull line and leaves no partial figure and no temp file; the files
    of one figure are renamed into place only once every format has been drawn.
    """
    from featstore.outputs import atomic_output

    paths = figure_paths(out, formats)
    try:
        _layout(fig, tight)
        with contextlib.ExitStack() as stack:
            for path in paths:
                tmp = stack.enter_context(atomic_output(path))
                fmt = path.suffix[1:]
                meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt, {})
                fig.savefig(tmp, format=fmt, metadata=meta, **({} if dpi is None else {"dpi": dpi}))
    finally:
        plt.close(fig)
    return paths[0]


# ---------------------------------------------------------------------------------------------
# series told apart, dot plots, class order
# ---------------------------------------------------------------------------------------------

MARKERS = "osD^vP*X<>"
LINESTYLES = ("-", "--", "-.", ":")


def series_style(i: int) -> dict:
    """The i-th series' marker and line style: overlapping series stay visible (with `dodge`)."""
    return dict(marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[(i // 2) % len(LINESTYLES)],
                markerfacecolor="none" if i % 2 else None)


def dodge(i: int, n: int, span: float) -> float:
    """Horizontal offset of series i of n on a layer axis spanning `span` layers: equal values side by side."""
    if n <= 1:
        return 0.0
    step = min(0.4 / (n - 1), max(0.06, 0.012 * span))
    return (i - (n - 1) / 2) * step


def dot_plot(ax, items: Sequence[tuple[str, float, float | None, float | None]], xlabel: str,
             chance: float | None = None) -> None:
    """One row per (label, value, low, high): the value as a dot with its interval (when given),
    value and interval written beside it; the first item on top."""
    for i, (_label, value, low, high) in enumerate(items):
        style = series_style(i)
        if low is not None and high is not None:
            ax.errorbar([value], [i], xerr=[[value - low], [high - value]], fmt=style["marker"], ms=7, capsize=5,
                        lw=2, color=f"C{i % 10}", mfc=style["markerfacecolor"])
            text = f"{value:.3f} [{low:.3f}, {high:.3f}]"
        else:
            ax.plot([value], [i], style["marker"], ms=7, color=f"C{i % 10}", mfc=style["markerfacecolor"])
            text = f"{value:.3f}"
        ha = "right" if value >= 0.75 else "left" if value <= 0.25 else "center"   # inside the axes
        ax.annotate(text, (value, i), textcoords="offset points", xytext=(0, 7), ha=ha, va="bottom", fontsize=8)
    ax.set_ylim(len(items) - 0.5, -0.75)
    if chance is not None:
        ax.axvline(chance, ls="--", color="grey", lw=1)
        ax.text(chance, len(items) - 0.5, f" chance {chance:.3f}", ha="left", va="bottom", fontsize=8, color="dimgrey")
    ax.set_yticks(range(len(items)), [_wrap_label(label) for label, *_ in items], fontsize=8.5)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")


def _wrap_label(label: str, width: int = 42) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width, break_long_words=False, break_on_hyphens=False)) or label


def canonical_confusion(cm: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """`cm` (rows true, columns predicted, in `labels`' order) in the canonical class order with
    classes never true dropped from the rows, and from the columns too unless they were predicted.

    Returns (matrix (rows, columns), row labels, column labels, the never-true classes).
    """
    from featstore.labels import canonical_order

    labels = [str(x) for x in labels]
    cm = np.asarray(cm)
    order = [labels.index(name) for name in canonical_order(labels)]
    cm, labels = cm[np.ix_(order, order)], [labels[i] for i in order]
    true = cm.sum(axis=1) > 0
    if not true.any():
        return cm, labels, labels, []
    predicted = cm.sum(axis=0) > 0
    never = [name for name, t in zip(labels, true) if not t]
    keep_cols = true | predicted
    return (cm[np.ix_(true, keep_cols)], [n for n, t in zip(labels, true) if t],
            [n for n, k in zip(labels, keep_cols) if k], never)


METRIC_NAMES = {"uar": "UAR", "wa": "WA (accuracy)", "macro_f1": "macro-F1"}


def setting_label(classifier: str, train: str, test: str | None, alone: bool = False) -> str:
    """'logreg, train ravdess,emodb → cremad' (just the classifier when it is the only setting)."""
    if alone:
        return classifier
    return f"{classifier}, train {train}" + (f" → {test}" if test and test != train else "")


@literal_text
def layer_curve(results: ProbeResults, out: str | Path, metric: str = "uar", chance: float | None = None,
                title: str = "", formats: str | Sequence[str] | None = None) -> Path:
    """Metric vs layer: a line per (classifier, training set), fold/seed std as a band, the best
    layer starred and named in the legend; series that coincide are told apart by marker, line
    style and a small sideways offset. One layer: a dot plot per setting instead (the pooled UAR
    with its 95% speaker CI; other metrics, or runs without predictions: mean ± std over folds)."""
    plt = _plt()
    rows = results.summary()
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["classifier"], r["train_set"], r["test_set"]), []).append(r)
    name = METRIC_NAMES.get(metric, metric)
    layers = sorted({r["layer"] for r in rows})
    if len(layers) == 1:
        pooled = metric == "uar" and all(rs[0].get("pooled") is not None and rs[0].get("ci_low") is not None
                                         and rs[0].get("ci_high") is not None for rs in groups.values())
        items = []
        for (clf, train, test), rs in groups.items():
            r, label = rs[0], setting_label(clf, train, test, len(groups) == 1)
            if pooled:
                items.append((label, r["pooled"], r.get("ci_low"), r.get("ci_high")))
            else:
                m, s = r[metric], r[metric + "_std"]
                items.append((label, m, m - s, m + s) if s > 0 else (label, m, None, None))
        fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.45 * len(items)), dpi=150)
        how = "pooled over folds and seeds, 95% speaker CI" if pooled else "mean ± std over folds and seeds"
        dot_plot(ax, items, f"{name} at layer {layers[0]} ({how})", chance=chance)
        ax.set_title(title or f"{name} at layer {layers[0]}", fontsize=10)
        return save_figure(plt, fig, out, formats=formats)
    fig, ax = plt.subplots(figsize=(7.5, 4.2 + 0.22 * max(0, len(groups) - 2)), dpi=150)
    span = layers[-1] - layers[0]
    for i, ((clf, train, test), rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["layer"])
        x = np.array([r["layer"] for r in rs]) + dodge(i, len(groups), span)
        m = np.array([r[metric] for r in rs])
        s = np.array([r[metric + "_std"] for r in rs])
        b = int(np.argmax(m))
        label = f"{setting_label(clf, train, test, len(groups) == 1)} (best {m[b]:.3f}, layer {rs[b]['layer']})"
        line, = ax.plot(x, m, ms=5, lw=1.6, label=label, **series_style(i))
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15, lw=0)
        ax.plot([x[b]], [m[b]], marker="*", ms=13, color=line.get_color(), mec="black", mew=0.5)
    if chance is not None:
        ax.axhline(chance, ls="--", color="grey", lw=1, label=f"chance ({chance:.3f})")
    ax.set_xlabel("layer (hidden_states[k])")
    ax.set_ylabel(f"{name} (mean; band: ± std over folds and seeds)", fontsize=9)
    ax.set_xticks(layers)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(groups) <= 2:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    ax.set_title(title or f"{name} by layer", fontsize=10)
    return save_figure(plt, fig, out, formats=formats)


@literal_text
def confusion_heatmap(cm: np.ndarray, labels: Sequence[str], out: str | Path, title: str = "",
                      formats: str | Sequence[str] | None = None) -> Path:
    """Row-normalised confusion heatmap with counts annotated (rows: true, columns: predicted), in
    the canonical class order; classes never true in this test set are left out of the rows (and
    of the columns unless predicted: such a column is starred) and named under the matrix."""
    plt = _plt()
    cm, row_labels, col_labels, never = canonical_confusion(cm, labels)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    nr, nc = cm.shape
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.75 * nc), max(3.0, 1.2 + 0.7 * nr)), dpi=150)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(nr):
        for j in range(nc):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xticks(range(nc), [f"{c}*" if c in never else c for c in col_labels], rotation=40, ha="right",
                  fontsize=8)
    ax.set_yticks(range(nr), row_labels, fontsize=8)
    xlabel = "predicted"
    if never:
        starred = "; * still predicted" if any(c in never for c in col_labels) else ""
        xlabel += "\n" + _wrap_label(f"rows left out, never true in this test set: {', '.join(never)}{starred}", 64)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall share")
    return save_figure(plt, fig, out, formats=formats)


@literal_text
def transfer_heatmap(matrix: np.ndarray, corpora: Sequence[str], out: str | Path, metric: str = "UAR",
                     title: str = "", formats: str | Sequence[str] | None = None, *, vmin: float = 0.0,
                     vmax: float = 1.0) -> Path:
    """Train corpus (rows) x test corpus (columns) heatmap, values annotated; colours span vmin..vmax
    (0..1 for UAR; `ccc_transfer_heatmap` passes a negative vmin when a CCC is below 0)."""
    plt = _plt()
    n = len(corpora)
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 1.0 * n), max(3.6, 1.2 + 0.9 * n)), dpi=150)
    im = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax)
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if (not np.isnan(v) and (v - vmin) / (vmax - vmin) > 0.6) else "white")
    ax.set_xticks(range(n), corpora, rotation=30, ha="right")
    ax.set_yticks(range(n), corpora)
    ax.set_xlabel("test corpus")
    ax.set_ylabel("train corpus")
    ax.set_title(title or f"cross-corpus transfer ({metric}; diagonal: speaker-independent folds)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=metric)
    return save_figure(plt, fig, out, formats=formats)


# ---------------------------------------------------------------------------------------------
# dimensional emotion (issue 25)
# ---------------------------------------------------------------------------------------------

@literal_text
def dimension_layer_curve(curves, out: str | Path, *, metric: str = "CCC", title: str = "",
                          formats: str | Sequence[str] | None = None) -> Path:
    """CCC vs layer, one line per dimension (arousal, valence, dominance, ...).

    curves: {dimension: [(layer, value, low, high), ...]}: low/high the speaker CI of the value
    (`classifiers.estimators.regression.ccc_interval`; None, or (layer, value) pairs, for no band). The band
    is drawn where a CI is given, the best layer of each dimension starred and named in the
    legend; coinciding lines are told apart by marker, line style and a sideways offset. The y axis
    spans 0..1, extended below 0 when a value or band is (CCC runs from -1 to 1)."""
    plt = _plt()
    if not curves:
        raise SerError("dimension_layer_curve: no dimensions to draw")
    series = {}
    for name, points in curves.items():
        pts = sorted((tuple(p) + (None, None))[:4] for p in points)
        if not pts:
            raise SerError(f"dimension_layer_curve: dimension {name!r} has no layers")
        series[name] = pts
    layers = sorted({p[0] for pts in series.values() for p in pts})
    span = (layers[-1] - layers[0]) if len(layers) > 1 else 1
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=150)
    lowest, banded = 0.0, False
    for i, (name, pts) in enumerate(series.items()):
        x = np.array([p[0] for p in pts], dtype=float) + dodge(i, len(series), span)
        m = np.array([p[1] for p in pts], dtype=float)
        b = int(np.nanargmax(m))
        line, = ax.plot(x, m, ms=5, lw=1.6, label=f"{name} (best {m[b]:.3f}, layer {pts[b][0]})", **series_style(i))
        has_ci = [p[2] is not None and p[3] is not None for p in pts]
        if any(has_ci):
            banded = True
            lo = np.array([p[2] if ok else np.nan for p, ok in zip(pts, has_ci)], dtype=float)
            hi = np.array([p[3] if ok else np.nan for p, ok in zip(pts, has_ci)], dtype=float)
            ax.fill_between(x, lo, hi, where=np.array(has_ci), color=line.get_color(), alpha=0.15, lw=0)
            lowest = min(lowest, float(np.nanmin(lo)))
        lowest = min(lowest, float(np.nanmin(m)))
        ax.plot([x[b]], [m[b]], marker="*", ms=13, color=line.get_color(), mec="black", mew=0.5)
    if lowest < 0:
        ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_ylim(max(-1.0, lowest - 0.05) if lowest < 0 else 0, 1)
    ax.set_xlabel("layer (hidden_states[k])")
    ax.set_ylabel(f"{metric}" + (" (band: 95% speaker CI)" if banded else ""), fontsize=9)
    step = max(1, int(np.ceil(len(layers) / 13)))
    ax.set_xticks(layers[::step])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"{metric} by layer, per dimension", fontsize=10)
    return save_figure(plt, fig, out, formats=formats)


#: above this many points a predicted-vs-true panel is a hexbin density, not a scatter
DENSITY_ABOVE = 2000


@literal_text
def prediction_scatter(y_true, y_pred, out: str | Path, names: Sequence[str] | None = None, *, title: str = "",
                       density_above: int = DENSITY_ABOVE, formats: str | Sequence[str] | None = None) -> Path:
    """Predicted against true, one panel per dimension: a scatter, or a hexbin density (log counts)
    above `density_above` points; the identity line; the panel titled with its CCC
    (`classifiers.estimators.regression.ccc` of that column, 3 decimals) and n.

    y_true, y_pred: (n,) or (n, T); names: T dimension names (default arousal, valence, dominance
    for 3 columns, else t0, t1, ...)."""
    from classifiers.estimators.regression import _pair, ccc

    y, p, _ = _pair(y_true, y_pred)
    T = y.shape[1]
    if names is None:
        names = ["arousal", "valence", "dominance"] if T == 3 else [f"t{k}" for k in range(T)]
    names = list(names)
    if len(names) != T:
        raise SerError(f"prediction_scatter: {len(names)} dimension names for {T} columns")
    plt = _plt()
    values = np.atleast_1d(ccc(y, p))
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    dense = len(y) > density_above
    fig, axes = plt.subplots(1, T, figsize=((4.9 if dense else 4.0) * T, 4.3), dpi=150, squeeze=False)
    for t, ax in enumerate(axes[0]):
        yt, pt = y[:, t], p[:, t]
        lo, hi = float(min(yt.min(), pt.min())), float(max(yt.max(), pt.max()))
        pad = 0.04 * (hi - lo) or 0.5
        lo, hi = lo - pad, hi + pad
        if dense:
            hb = ax.hexbin(yt, pt, gridsize=40, extent=(lo, hi, lo, hi), norm=LogNorm(), mincnt=1, cmap="viridis")
            bar = fig.colorbar(hb, ax=ax, fraction=0.046, pad=0.04, label="points per cell (log scale)")
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))   # plain numbers, no mathtext
            bar.ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.scatter(yt, pt, s=8, alpha=0.45, lw=0, color="C0")
        ax.plot([lo, hi], [lo, hi], ls="--", color="black", lw=1, label="identity")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"true {names[t]}", ylabel=f"predicted {names[t]}")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(f"{names[t]}: CCC {values[t]:.3f} (n={len(yt)})", fontsize=9.5)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return save_figure(plt, fig, out, formats=formats)


def ccc_transfer_heatmap(matrix: np.ndarray, corpora: Sequence[str], out: str | Path, *, dimension: str = "",
                         title: str = "", formats: str | Sequence[str] | None = None) -> Path:
    """The cross-corpus CCC matrix: train corpus (rows) x test corpus (columns), drawn by
    `transfer_heatmap` (the UAR matrix's figure) with colours over 0..1, extended to the lowest
    value (at most -1) when a cell's CCC is negative. dimension: named in the metric ("CCC arousal")."""
    m = np.asarray(matrix, dtype=float)
    low = float(np.nanmin(m)) if np.isfinite(m).any() else 0.0
    vmin = max(-1.0, np.floor(low * 10) / 10) if low < 0 else 0.0
    metric = f"CCC {dimension}".strip()
    return transfer_heatmap(m, corpora, out, metric=metric, title=title, formats=formats, vmin=vmin, vmax=1.0)


_PAIR_COLORS = ("#e377c2", "#bcbd22", "#17becf", "#8c564b", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")


def _finish_axes(ax, layers: Sequence[int]) -> None:
    step = max(1, int(np.ceil(len(layers) / 13)))
    ax.set_xticks(list(layers)[::step])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


@literal_text
def neighbor_plot(report, out: str | Path, title: str | None = None,
                  formats: str | Sequence[str] | None = None) -> Path:
    """A `NeighborReport` as a figure: purity vs layer per attribute (solid) with its chance level
    (dashed, same colour); a second panel with kNN WA/UAR (mean over its folds) and, with
    several corpora, cross-corpus emotion purity. Series that coincide (emotion purity within
    and across speakers, kNN WA and UAR on balanced data) are offset sideways and marked apart."""
    plt = _plt()
    second = bool(report.knn or report.cross)
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(13 if second else 7, 5.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    span = max(report.layers) - min(report.layers) if report.layers else 0
    ax = axes[0, 0]
    attrs = report.attributes()
    for i, attr in enumerate(attrs):
        rows = sorted((r for r in report.purity if r.attribute == attr), key=lambda r: r.layer)
        x = np.array([r.layer for r in rows], dtype=float)
        c = colors[i % len(colors)]
        style = series_style(i)
        ax.plot(x + dodge(i, len(attrs), span), [r.purity for r in rows], "-", marker=style["marker"],
                mfc=style["markerfacecolor"], color=c, lw=2, ms=6, alpha=0.85, label=attr)
        ax.plot(x, [r.chance for r in rows], "--", color=c, lw=1.2, alpha=0.8)
    ax.plot([], [], "--", color="gray", lw=1.2, label="chance (dashed, same colour)")
    ax.set(xlabel="layer (hidden_states index)", ylabel=f"share of the {report.k} nearest neighbours agreeing",
           ylim=(0, 1.02))
    ax.set_title(f"neighbour purity per attribute (mean over {report.n_utterances} utterances)", fontsize=10)
    _finish_axes(ax, report.layers)
    if second:
        ax = axes[0, 1]
        s = report.knn_summary()
        n_folds = len({r["fold"] for r in report.knn})
        pairs = list(dict.fromkeys((r.query, r.database) for r in report.cross))
        n_series = (2 if s else 0) + len(pairs)
        if s:
            x = np.array(sorted(s), dtype=float)
            ax.plot(x + dodge(0, n_series, span), [s[k]["wa_mean"] for k in sorted(s)], "o-", color="black", lw=2,
                    ms=6, label="kNN WA")
            ax.plot(x + dodge(1, n_series, span), [s[k]["uar_mean"] for k in sorted(s)], "s--", color="dimgray",
                    lw=2, ms=6, mfc="white", label="kNN UAR")
            n_classes = len({lab for r in report.knn for lab in r.get("recall", {})}) or 1
            ax.axhline(1 / n_classes, color="dimgray", ls=":", lw=1.2, label=f"UAR chance (1/{n_classes})")
        for j, (q, d) in enumerate(pairs):
            rows = sorted((r for r in report.cross if (r.query, r.database) == (q, d)), key=lambda r: r.layer)
            c = _PAIR_COLORS[j % len(_PAIR_COLORS)]
            style = series_style(j + 2)
            langs = f"{rows[0].query_language}->{rows[0].database_language}"
            x = np.array([r.layer for r in rows], dtype=float)
            ax.plot(x + dodge(j + (2 if s else 0), n_series, span), [r.purity for r in rows], "-",
                    marker=style["marker"], mfc=style["markerfacecolor"], color=c, lw=1.6, ms=6,
                    label=f"purity, {q} queries -> {d} ({langs})")
            ax.plot(x, [r.chance for r in rows], "--", color=c, lw=1.0, alpha=0.8)
        panel = f"emotion: speaker-independent kNN (mean over {n_folds} folds)" if report.knn else "emotion"
        if report.cross:
            panel += ", cross-corpus retrieval"
        ax.set(xlabel="layer (hidden_states index)", ylabel="score", ylim=(0, 1.02))
        ax.set_title(panel, fontsize=10)
        _finish_axes(ax, report.layers)
    fig.suptitle(title or f"model {report.model or '(not recorded)'} | {'+'.join(report.corpora)} | "
                 f"N={report.n_utterances}, k={report.k} | kNN: {report.protocol}", fontsize=10.5)
    return save_figure(plt, fig, out, dpi=130, formats=formats)
