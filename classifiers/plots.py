"""Plots people would rather look at than read: layer curves, confusion heatmaps, transfer matrices.

Every text is drawn literally (a corpus label such as `a$b`, `$x$` or `50%_sad` is never parsed as
mathtext: `literal_text`), and every figure is written whole or not at all (`save_figure`: temp, rename).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.results import ProbeResults


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def literal_text(fn):
    """Run the plotting function `fn` with mathtext off: labels, titles and legends are drawn as given.

    Matplotlib reads text between `$` signs as math (a label `$_$` raises, `$x$` loses its dollars);
    `text.parse_math` is read when each text is made, so the whole function, savefig included, runs
    inside the setting. Other figures of the process keep the user's settings.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)

    return wrapper


def save_figure(plt, fig, out: str | Path, *, dpi: float | None = None, tight: bool = True) -> Path:
    """Write `fig` to `out` whole (temp file, fsync, rename) and close it, even when writing fails.

    A full disk is one OutputDiskFull line and leaves neither a partial PNG nor the temp file.
    """
    from featstore.outputs import atomic_output

    out = Path(out)
    try:
        if tight:
            fig.tight_layout()
        with atomic_output(out) as tmp:
            fig.savefig(tmp, **({} if dpi is None else {"dpi": dpi}))
    finally:
        plt.close(fig)
    return out


@literal_text
def layer_curve(results: ProbeResults, out: str | Path, metric: str = "uar", chance: float | None = None,
                title: str = "") -> Path:
    """Metric vs layer: a line per (classifier, training set), fold/seed std as a band, best marked."""
    plt = _plt()
    rows = results.summary()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=150)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["classifier"], r["train_set"], r["test_set"]), []).append(r)
    for (clf, train, test), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["layer"])
        x = np.array([r["layer"] for r in rs])
        m = np.array([r[metric] for r in rs])
        s = np.array([r[metric + "_std"] for r in rs])
        label = clf if len(groups) == 1 else f"{clf}, train {train}" + (f" → {test}" if test and test != train else "")
        line, = ax.plot(x, m, marker="o", ms=4, label=label)
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.18, lw=0)
        b = int(np.argmax(m))
        ax.annotate(f"{m[b]:.3f}", (x[b], m[b]), textcoords="offset points", xytext=(0, 8), ha="center",
                    fontsize=8, color=line.get_color())
        ax.plot([x[b]], [m[b]], marker="*", ms=13, color=line.get_color())
    if chance is not None:
        ax.axhline(chance, ls="--", color="grey", lw=1, label=f"chance ({chance:.3f})")
    ax.set_xlabel("layer (hidden_states[k])")
    ax.set_ylabel({"uar": "UAR", "wa": "WA (accuracy)", "macro_f1": "macro-F1"}.get(metric, metric))
    layers = sorted({r["layer"] for r in rows})
    ax.set_xticks(layers)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"{metric.upper()} by layer (mean ± std over folds and seeds)", fontsize=10)
    return save_figure(plt, fig, out)


@literal_text
def confusion_heatmap(cm: np.ndarray, labels: Sequence[str], out: str | Path, title: str = "") -> Path:
    """Row-normalised confusion heatmap with counts annotated (rows: true, columns: predicted)."""
    plt = _plt()
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=150)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall share")
    return save_figure(plt, fig, out)


@literal_text
def transfer_heatmap(matrix: np.ndarray, corpora: Sequence[str], out: str | Path, metric: str = "UAR",
                     title: str = "") -> Path:
    """Train corpus (rows) x test corpus (columns) heatmap, values annotated."""
    plt = _plt()
    n = len(corpora)
    fig, ax = plt.subplots(figsize=(1.6 + 1.0 * n, 1.2 + 0.9 * n), dpi=150)
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if (not np.isnan(v) and v > 0.6) else "white")
    ax.set_xticks(range(n), corpora, rotation=30, ha="right")
    ax.set_yticks(range(n), corpora)
    ax.set_xlabel("test corpus")
    ax.set_ylabel("train corpus")
    ax.set_title(title or f"cross-corpus transfer ({metric}; diagonal: speaker-independent folds)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=metric)
    return save_figure(plt, fig, out)


_PAIR_COLORS = ("#e377c2", "#bcbd22", "#17becf", "#8c564b", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")


def _finish_axes(ax, layers: Sequence[int]) -> None:
    step = max(1, int(np.ceil(len(layers) / 13)))
    ax.set_xticks(list(layers)[::step])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


@literal_text
def neighbor_plot(report, out: str | Path, title: str | None = None) -> Path:
    """A `NeighborReport` as PNG: purity vs layer per attribute (solid) with its chance level
    (dashed, same colour); a second panel with kNN WA/UAR (mean over its folds) and, with
    several corpora, cross-corpus emotion purity."""
    plt = _plt()
    second = bool(report.knn or report.cross)
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(13 if second else 7, 5.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    ax = axes[0, 0]
    for i, attr in enumerate(report.attributes()):
        rows = sorted((r for r in report.purity if r.attribute == attr), key=lambda r: r.layer)
        x = [r.layer for r in rows]
        c = colors[i % len(colors)]
        ax.plot(x, [r.purity for r in rows], "-", marker=markers[i % len(markers)], color=c, lw=2, ms=5,
                alpha=0.85, label=attr)
        ax.plot(x, [r.chance for r in rows], "--", color=c, lw=1.2, alpha=0.8)
    ax.plot([], [], "--", color="gray", lw=1.2, label="chance (dashed, same colour)")
    ax.set(xlabel="layer (hidden_states index)", ylabel=f"share of the {report.k} nearest neighbours agreeing",
           ylim=(0, 1.02), title=f"neighbour purity per attribute (mean over {report.n_utterances} utterances)")
    _finish_axes(ax, report.layers)
    if second:
        ax = axes[0, 1]
        s = report.knn_summary()
        n_folds = len({r["fold"] for r in report.knn})
        if s:
            x = sorted(s)
            ax.plot(x, [s[k]["wa_mean"] for k in x], "o-", color="black", lw=2, ms=5, label="kNN WA")
            ax.plot(x, [s[k]["uar_mean"] for k in x], "s-", color="dimgray", lw=2, ms=5, label="kNN UAR")
            n_classes = len({lab for r in report.knn for lab in r.get("recall", {})}) or 1
            ax.axhline(1 / n_classes, color="dimgray", ls=":", lw=1.2, label=f"UAR chance (1/{n_classes})")
        pairs = list(dict.fromkeys((r.query, r.database) for r in report.cross))
        for j, (q, d) in enumerate(pairs):
            rows = sorted((r for r in report.cross if (r.query, r.database) == (q, d)), key=lambda r: r.layer)
            c = _PAIR_COLORS[j % len(_PAIR_COLORS)]
            langs = f"{rows[0].query_language}->{rows[0].database_language}"
            ax.plot([r.layer for r in rows], [r.purity for r in rows], "-", marker=markers[(j + 3) % len(markers)],
                    color=c, lw=1.6, ms=5, label=f"purity, {q} queries -> {d} ({langs})")
            ax.plot([r.layer for r in rows], [r.chance for r in rows], "--", color=c, lw=1.0, alpha=0.8)
        panel = f"emotion: speaker-independent kNN (mean over {n_folds} folds)" if report.knn else "emotion"
        if report.cross:
            panel += ", cross-corpus retrieval"
        ax.set(xlabel="layer (hidden_states index)", ylabel="score", ylim=(0, 1.02), title=panel)
        _finish_axes(ax, report.layers)
    fig.suptitle(title or f"model {report.model or '(not recorded)'} | {'+'.join(report.corpora)} | "
                 f"N={report.n_utterances}, k={report.k} | kNN: {report.protocol}", fontsize=10.5)
    return save_figure(plt, fig, out, dpi=130)
