"""Metrics for emotion classification over a fixed label order, and their aggregation.

Every number is scikit-learn's, over the *scored* labels (the label set a record is scored on):

- WA = `accuracy_score`;
- UAR = `recall_score(average="macro")` over the scored labels present in `y_true` (balanced
  accuracy: a class with no test row has no recall);
- macro-F1 = `f1_score(average="macro", zero_division=0)` over the scored labels that occur in
  `y_true` or `y_pred` — sklearn's own default label set, so a predicted class absent from the
  test set counts (with F1 0), as EmoBox reports it;
- per-class recall (classes present in `y_true`) and `confusion_matrix` in the scored order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts `(n_labels, n_labels)`: rows true label, columns predicted, in `labels` order."""
    from sklearn.metrics import confusion_matrix

    if not len(y_true):
        return np.zeros((len(labels), len(labels)), dtype=np.int64)
    return confusion_matrix(list(y_true), list(y_pred), labels=list(labels)).astype(np.int64)


def scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """wa, uar, macro_f1, per-class recall, the confusion matrix (nested lists) and the label order."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    y_true, y_pred, labels = list(y_true), list(y_pred), list(labels)
    cm = confusion(y_true, y_pred, labels)
    present = [lab for lab in labels if lab in set(y_true)]
    occurring = [lab for lab in labels if lab in set(y_true) | set(y_pred)]
    out = {"wa": float("nan"), "uar": float("nan"), "macro_f1": float("nan"), "recall": {}}
    if y_true:
        recall = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
        out.update(wa=float(accuracy_score(y_true, y_pred)), uar=float(np.mean(recall)),
                   macro_f1=float(f1_score(y_true, y_pred, labels=occurring, average="macro", zero_division=0)),
                   recall={lab: float(r) for lab, r in zip(present, recall)})
    return dict(out, confusion=cm.tolist(), labels=labels)


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
