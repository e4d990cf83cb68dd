"""Uncertainty of scores from per-utterance predictions: speaker-bootstrap confidence intervals,
paired comparisons (bootstrap CI of the difference, paired permutation p-value) and Holm's
adjustment for a family of comparisons.

Speakers are the unit of independence in SER (a speaker's utterances share voice, recording and
acting style), so every resampling here draws whole groups (`groups`: the speaker of each row);
an utterance bootstrap is `groups=None`. Everything is computed from per-group confusion counts
`(G, C, C)`, so B resamples cost one `(B, G) @ (G, C*C)` product. The metrics equal
`classifiers.metrics.scores` on the same rows: WA, UAR (recall averaged over the classes present
in the truth), macro-F1 (over the classes occurring in truth or prediction).

Rows may repeat an utterance (one row per seed): a resampled speaker brings all of its rows, so
the score is the pooled score over seeds, and its interval covers speaker-to-speaker variation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from featstore.errors import SerError

METRICS = ("wa", "uar", "macro_f1")


class StatsError(SerError, ValueError):
    """Predictions that cannot be compared or resampled (the message says why)."""


def group_confusions(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence | None,
                     labels: Sequence[str]) -> tuple[list, np.ndarray]:
    """Confusion counts per group: (group names, `(G, C, C)` int64), rows true, columns predicted
    in `labels` order; groups None: one group per row. Rows whose truth or prediction is not in
    `labels` are not counted (as `sklearn.metrics.confusion_matrix(labels=...)`)."""
    index = {lab: i for i, lab in enumerate(labels)}
    t = np.array([index.get(v, -1) for v in y_true], dtype=np.int64)
    p = np.array([index.get(v, -1) for v in y_pred], dtype=np.int64)
    if groups is None:
        names, g = list(range(len(t))), np.arange(len(t))
    else:
        names, g = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        names = names.tolist()
    keep = (t >= 0) & (p >= 0)
    C = len(labels)
    cm = np.zeros((len(names), C * C), dtype=np.int64)
    np.add.at(cm, (g[keep], t[keep] * C + p[keep]), 1)
    return names, cm.reshape(len(names), C, C)


def metric_from_confusion(cm: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of confusion counts `(..., C, C)` -> `(...)`; NaN where nothing is counted."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    truth, pred = cm.sum(-1), cm.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "wa":
            return tp.sum(-1) / truth.sum(-1)
        if metric == "uar":
            present = truth > 0
            return np.where(present, tp / np.where(present, truth, 1), 0).sum(-1) / present.sum(-1)
        if metric == "macro_f1":
            occurring = (truth + pred) > 0
            f1 = np.where(occurring, 2 * tp / np.where(occurring, truth + pred, 1), 0)
            return f1.sum(-1) / occurring.sum(-1)
    raise StatsError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")


def _resample_counts(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_boot, n_groups)` how often each group is drawn in each resample (with replacement)."""
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)


@dataclass(frozen=True)
class Interval:
    """A score and its bootstrap percentile interval [low, high] at `level`, over `n_groups` units."""

    metric: str
    value: float
    low: float
    high: float
    level: float
    n_groups: int
    unit: str

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence | None, labels: Sequence[str], *,
                 metric: str = "uar", n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """`metric` of the rows and its 95% (`level`) percentile interval from `n_boot` resamples of
    whole groups (speakers; None: utterances). Seeded: same inputs and seed, same interval."""
    names, cm = group_confusions(y_true, y_pred, groups, labels)
    if len(names) < 2:
        raise StatsError(f"a bootstrap needs at least 2 {'speakers' if groups is not None else 'utterances'}, "
                         f"got {len(names)}")
    rng = np.random.default_rng(seed)
    boot = _resample_counts(len(names), n_boot, rng) @ cm.reshape(len(names), -1)
    values = metric_from_confusion(boot.reshape(n_boot, *cm.shape[1:]), metric)
    low, high = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(metric, float(metric_from_confusion(cm.sum(0), metric)), float(low), float(high), level,
                    len(names), "speaker" if groups is not None else "utterance")


@dataclass(frozen=True)
class Comparison:
    """Setting a minus setting b on the same test utterances: the difference of `metric`, its
    bootstrap interval (speakers resampled jointly for both), and the two-sided paired
    permutation p-value (each speaker's a/b predictions swapped at random)."""

    metric: str
    value_a: float
    value_b: float
    diff: float
    low: float
    high: float
    p: float
    level: float
    n_groups: int

    def __str__(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}], p={self.p:.3g}"

    def to_dict(self) -> dict:
        return asdict(self)


def paired_compare(a: dict, b: dict, labels: Sequence[str], *, metric: str = "uar", n_boot: int = 1000,
                   n_perm: int = 2000, level: float = 0.95, seed: int = 0) -> Comparison:
    """Compare two settings scored on the same test utterances.

    a, b: {"id", "y_true", "y_pred", "speaker"} equal-length sequences per setting (rows may
    repeat an id, one per seed). Refused (`StatsError`) unless both cover the same utterance ids:
    a paired test needs the same utterances. Seeded and reproducible.
    """
    ids_a, ids_b = set(map(str, a["id"])), set(map(str, b["id"]))
    if ids_a != ids_b:
        raise StatsError(f"the two runs were scored on different test utterances ({len(ids_a - ids_b)} only in the "
                         f"first, {len(ids_b - ids_a)} only in the second); a paired test needs the same utterances")
    names_a, ca = group_confusions(a["y_true"], a["y_pred"], a["speaker"], labels)
    names_b, cb = group_confusions(b["y_true"], b["y_pred"], b["speaker"], labels)
    if names_a != names_b:
        raise StatsError("the two runs give the same utterances different speakers; compare runs of one corpus version")
    G = len(names_a)
    if G < 2:
        raise StatsError(f"a paired comparison needs at least 2 speakers, got {G}")
    rng = np.random.default_rng(seed)
    fa, fb = ca.reshape(G, -1), cb.reshape(G, -1)
    shape = (-1, *ca.shape[1:])
    value_a = float(metric_from_confusion(ca.sum(0), metric))
    value_b = float(metric_from_confusion(cb.sum(0), metric))
    diff = value_a - value_b
    counts = _resample_counts(G, n_boot, rng)
    boot = (metric_from_confusion((counts @ fa).reshape(shape), metric)
            - metric_from_confusion((counts @ fb).reshape(shape), metric))
    low, high = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
    swap = rng.random((n_perm, G)) < 0.5
    perm_a = (~swap) @ fa + swap @ fb
    perm_b = swap @ fa + (~swap) @ fb
    null = metric_from_confusion(perm_a.reshape(shape), metric) - metric_from_confusion(perm_b.reshape(shape), metric)
    extreme = np.sum(np.abs(null) >= abs(diff) - 1e-12)
    p = float((1 + extreme) / (1 + n_perm))
    return Comparison(metric, value_a, value_b, diff, float(low), float(high), p, level, G)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values `(m,)` (same order): family-wise error control for m tests."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
