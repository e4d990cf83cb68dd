"""Metrics for emotion classification, with a fixed label order, and their aggregation.

WA = accuracy (weighted by class frequency), UAR = unweighted average recall (balanced
accuracy over the classes present in y_true), macro-F1 over the scored labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts `(n_labels, n_labels)`: rows true label, columns predicted, in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """wa, uar, macro_f1, per-class recall, and the confusion matrix (as nested lists)."""
    cm = confusion(y_true, y_pred, labels)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    n = int(support.sum())
    return {
        "wa": float(tp.sum() / n) if n else float("nan"),
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "recall": {label: float(recall[i]) for i, label in enumerate(labels) if present[i]},
        "confusion": cm.tolist(),
        "labels": list(labels),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std, ignoring NaN."""
    a = np.asarray(values, dtype=float)
    a = a[~np.isnan(a)]
    if not len(a):
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `(N, C)` logits -> `(N, C)` probabilities (max-shifted, stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)

