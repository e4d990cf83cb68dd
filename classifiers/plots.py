"""Plots people would rather look at than read: layer curves, confusion heatmaps, transfer matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.results import ProbeResults


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


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
    return _save(plt, fig, out)


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
    return _save(plt, fig, out)


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
    return _save(plt, fig, out)
