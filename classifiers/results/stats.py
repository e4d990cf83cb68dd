"""Uncertainty of scores from per-utterance predictions: confidence intervals for a score and for
the paired difference of two settings (a jackknife-t over speakers), and the best of a family of
settings (layers) against the others with the selection accounted for (max-T speaker permutation);
Holm's adjustment for a family of comparisons.

Speakers are the unit of independence in SER (a speaker's utterances share voice, recording and
acting style), so everything here leaves out or reassigns whole groups (`groups`: the speaker of
each row); `groups=None` makes every utterance its own group. Everything is computed from
per-group confusion counts `(G, C, C)`. The metrics equal `classifiers.results.metrics.scores` on the same
rows: WA, UAR (recall averaged over the classes present in the truth), macro-F1 (over the classes
occurring in truth or prediction).

The interval (`method="jackknife-t"`, the default): the pooled score, its leave-one-speaker-out
jackknife standard error, and t quantiles with G-1 degrees of freedom; a paired difference gets
the same interval and the p-value of the same t statistic, so the CI excludes 0 exactly when
p < 1 - level. Why not the speaker bootstrap it replaced (`method="percentile"`, kept for
comparison): with 10-30 speakers its percentile interval is too narrow (type I error 7-10% at
12-24 speakers, coverage 90-93%) and disagrees with the permutation test; the jackknife-t holds
95% from 12 speakers up (bench/uncertainty.py prints the simulation; tests/test_intervals.py
holds it).

Rows may repeat an utterance (one row per seed): a speaker left out takes all of its rows, so
the score is the pooled score over seeds, and its interval covers speaker-to-speaker variation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from featstore.errors import SerError

METRICS = ("wa", "uar", "macro_f1")
#: interval methods: "jackknife-t" (the default; see the module docstring) and "percentile" (the
#: speaker bootstrap with a paired permutation p-value that ser used before; kept for comparison)
METHODS = ("jackknife-t", "percentile")


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


def marginals(cm: np.ndarray) -> np.ndarray:
    """Confusion counts `(..., C, C)` -> `(..., 3, C)` float: true positives, truth and prediction
    counts per class, all that WA, UAR and macro-F1 need (and they add over groups)."""
    cm = np.asarray(cm, dtype=np.float64)
    return np.stack([np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), cm.sum(-2)], axis=-2)


def metric_from_marginals(m: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of `marginals` `(..., 3, C)` -> `(...)`; NaN where nothing is counted."""
    tp, truth, pred = m[..., 0, :], m[..., 1, :], m[..., 2, :]
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


def metric_from_confusion(cm: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of confusion counts `(..., C, C)` -> `(...)`; NaN where nothing is counted."""
    return metric_from_marginals(marginals(cm), metric)


def _resample_counts(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_boot, n_groups)` how often each group is drawn in each resample (with replacement)."""
    return rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)


def _check(metric: str, level: float, method: str) -> None:
    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if not 0 < level < 1:
        raise StatsError(f"confidence level {level!r} is not between 0 and 1: use e.g. 0.95")
    if method not in METHODS:
        raise StatsError(f"unknown interval method {method!r}: use one of {', '.join(METHODS)}")


def t_quantile(level: float, n_groups) -> np.ndarray:
    """The two-sided `level` quantile of Student's t with `n_groups - 1` degrees of freedom."""
    from scipy.stats import t

    return t.ppf((1 + level) / 2, np.asarray(n_groups) - 1)


def jackknife(cm: np.ndarray, metric: str, cm_b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled `metric` of per-group confusions `cm` `(..., G, C, C)` (minus that of `cm_b`, paired:
    same shape, same groups) and its leave-one-group-out jackknife standard error: (value, se),
    each `(...)`. Batched: `...` can hold simulated repetitions or permutations.

    se^2 = (G-1)/G * sum_g (theta_(-g) - mean theta_(-))^2, theta_(-g) the pooled metric without
    group g: a ratio metric of pooled counts needs no per-speaker score (speakers with one
    utterance of a class count as they should)."""
    return _jackknife(marginals(cm), metric, None if cm_b is None else marginals(cm_b))


def _jackknife(m: np.ndarray, metric: str, m_b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`jackknife` of `marginals` `(..., G, 3, C)`."""
    G = m.shape[-3]

    def loo(x):
        total = x.sum(-3)
        return metric_from_marginals(total, metric), metric_from_marginals(total[..., None, :, :] - x, metric)

    value, left_out = loo(m)
    if m_b is not None:
        value_b, left_out_b = loo(m_b)
        value, left_out = value - value_b, left_out - left_out_b
    dev = left_out - left_out.mean(-1, keepdims=True)
    return value, np.sqrt((G - 1) / G * np.sum(dev * dev, -1))


def group_jackknife(parts: np.ndarray, statistic) -> tuple[np.ndarray, np.ndarray]:
    """A statistic of per-group sums and its leave-one-group-out jackknife standard error: (value, se).

    parts: `(G, ...)` sums that add over groups (counts, sums, cross-products), groups on axis 0;
    statistic: totals `(...)` -> value, broadcasting over leading axes (it is called on the total
    and on the `(G, ...)` leave-one-out totals). The same jackknife as `jackknife` (which does this
    for confusion counts), for any statistic of pooled sums: each replicate recomputes the
    statistic from the remaining groups' rows, none is a mean of per-row terms.
    se^2 = (G-1)/G * sum_g (theta_(-g) - mean theta_(-))^2."""
    parts = np.asarray(parts, dtype=np.float64)
    G = parts.shape[0]
    total = parts.sum(0)
    value = np.asarray(statistic(total), dtype=np.float64)
    left_out = np.asarray(statistic(total[None] - parts), dtype=np.float64)
    dev = left_out - left_out.mean(0)
    return value, np.sqrt((G - 1) / G * np.sum(dev * dev, 0))


def t_interval(value, se, n_groups, level: float = 0.95):
    """value ± t(G-1) x se: (low, high, p) with p the two-sided p-value of value / se against
    t(G-1) (H0: the true value is 0). The interval excludes 0 exactly when p < 1 - level: both
    come from |value| / se and the same t(G-1); se 0 gives [value, value] and p 0 (1 when value is 0)."""
    from scipy.stats import t

    value, se = np.asarray(value, dtype=np.float64), np.asarray(se, dtype=np.float64)
    q = t_quantile(level, n_groups)
    half = q * se
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, np.abs(value) / np.where(se > 0, se, 1), np.where(value == 0, 0.0, np.inf))
    p = 2 * t.sf(stat, np.asarray(n_groups) - 1)
    # agreement exactly, not up to rounding: where |value|/se does not exceed q, the interval holds 0
    inside = stat <= q
    low = np.where(inside, np.minimum(value - half, 0.0), value - half)
    high = np.where(inside, np.maximum(value + half, 0.0), value + half)
    p = np.where(inside, np.maximum(p, 1 - level), np.minimum(p, np.nextafter(1 - level, 0)))
    return low, high, p


def _nonempty(*cms: np.ndarray) -> np.ndarray:
    """Groups with at least one counted row in any of `cms` (a group with none contributes nothing)."""
    return np.any([c.reshape(c.shape[0], -1).sum(1) > 0 for c in cms], axis=0)


def _unit(groups) -> str:
    return "speaker" if groups is not None else "utterance"


def _compressed(*cms: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct groups and how often each occurs: utterance-level jackknifes have at most C*C
    distinct one-row groups, so thousands of utterances cost as little as a few speakers."""
    G = cms[0].shape[0]
    flat = np.concatenate([c.reshape(G, -1) for c in cms], axis=1)
    rows, counts = np.unique(flat, axis=0, return_counts=True)
    K = cms[0][0].size
    return [rows[:, i * K:(i + 1) * K].reshape(-1, *cms[0].shape[1:]) for i in range(len(cms))], counts


def _weighted_jackknife(cms: list[np.ndarray], counts: np.ndarray, metric: str, G: int) -> tuple[float, float]:
    """`jackknife` of groups given once each with multiplicity `counts` (sum G): (value, se)."""
    ms = [marginals(c) for c in cms]
    total = [(m * counts[:, None, None]).sum(0) for m in ms]
    value = metric_from_marginals(total[0], metric)
    left_out = metric_from_marginals(total[0] - ms[0], metric)
    if len(ms) == 2:
        value = value - metric_from_marginals(total[1], metric)
        left_out = left_out - metric_from_marginals(total[1] - ms[1], metric)
    mean = np.sum(counts * left_out) / G
    return float(value), float(np.sqrt((G - 1) / G * np.sum(counts * (left_out - mean) ** 2)))


@dataclass(frozen=True)
class Interval:
    """A score and its interval [low, high] at `level` over `n_groups` units (speakers or
    utterances), by `method` ("jackknife-t": value ± t(G-1) x `se`; "percentile": bootstrap)."""

    metric: str
    value: float
    low: float
    high: float
    level: float
    n_groups: int
    unit: str
    method: str = "jackknife-t"
    se: float = float("nan")

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        return asdict(self)


def score_interval(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence | None, labels: Sequence[str], *,
                   metric: str = "uar", level: float = 0.95, method: str = "jackknife-t", n_boot: int = 1000,
                   seed: int = 0) -> Interval:
    """`metric` of the rows and its `level` interval over whole groups (speakers; None: utterances).

    method "jackknife-t": value ± t(G-1) x the leave-one-group-out jackknife SE (deterministic);
    "percentile": the 2.5/97.5% quantiles of `n_boot` group-bootstrap resamples (seeded), too
    narrow with few speakers and kept only for comparison."""
    _check(metric, level, method)
    _, cm = group_confusions(y_true, y_pred, groups, labels)
    cm = cm[_nonempty(cm)]
    G = len(cm)
    if G < 2:
        raise StatsError(f"an interval needs at least 2 {_unit(groups)}s with predictions in the label set, got {G}")
    if method == "percentile":
        rng = np.random.default_rng(seed)
        boot = metric_from_confusion((_resample_counts(G, n_boot, rng) @ cm.reshape(G, -1)).reshape(-1, *cm.shape[1:]),
                                     metric)
        low, high = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
        return Interval(metric, float(metric_from_confusion(cm.sum(0), metric)), float(low), float(high), level, G,
                        _unit(groups), method, float(np.nanstd(boot, ddof=1)))
    (distinct,), counts = _compressed(cm)
    value, se = _weighted_jackknife([distinct], counts, metric, G)
    half = float(t_quantile(level, G)) * se
    return Interval(metric, value, value - half, value + half, level, G, _unit(groups), method, se)


def bootstrap_ci(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence | None, labels: Sequence[str], *,
                 metric: str = "uar", n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 method: str = "jackknife-t") -> Interval:
    """The entry point every score's interval goes through (kept under its old name): now
    `score_interval`'s jackknife-t over groups by default; `method="percentile"` is the old
    speaker bootstrap. Same inputs, same interval."""
    return score_interval(y_true, y_pred, groups, labels, metric=metric, level=level, method=method, n_boot=n_boot,
                          seed=seed)


@dataclass(frozen=True)
class Comparison:
    """Setting a minus setting b on the same test utterances: the difference of `metric`, its
    interval and the two-sided p-value (H0: no difference), by `method`: "jackknife-t" (the
    paired difference's leave-one-speaker-out SE, t(G-1) for both, so the interval excludes 0
    exactly when p < 1 - level) or "percentile" (speaker bootstrap CI and paired permutation p:
    the old pair, which can disagree)."""

    metric: str
    value_a: float
    value_b: float
    diff: float
    low: float
    high: float
    p: float
    level: float
    n_groups: int
    method: str = "jackknife-t"
    se: float = float("nan")

    def __str__(self) -> str:
        return f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}], p={self.p:.3g}"

    def to_dict(self) -> dict:
        return asdict(self)


def _same_utterances(sides: Sequence[dict], labels: Sequence[str], what: str = "runs") -> np.ndarray:
    """`(S, G, C, C)` per-speaker confusions of settings scored on the same utterances (refused
    otherwise), groups with no counted row in any setting dropped."""
    ids = [set(map(str, s["id"])) for s in sides]
    for i, other in enumerate(ids[1:], 1):
        if other != ids[0]:
            raise StatsError(f"the {what} were scored on different test utterances ({len(ids[0] - other)} only in the "
                             f"first, {len(other - ids[0])} only in {'the second' if len(sides) == 2 else f'number {i + 1}'}); "
                             "a paired test needs the same utterances")
    found = [group_confusions(s["y_true"], s["y_pred"], s["speaker"], labels) for s in sides]
    if any(names != found[0][0] for names, _ in found[1:]):
        raise StatsError(f"the {what} give the same utterances different speakers; compare runs of one corpus version")
    cms = np.stack([cm for _, cm in found])
    return cms[:, _nonempty(*cms)]


def paired_compare(a: dict, b: dict, labels: Sequence[str], *, metric: str = "uar", n_boot: int = 1000,
                   n_perm: int = 2000, level: float = 0.95, seed: int = 0, method: str = "jackknife-t") -> Comparison:
    """Compare two settings scored on the same test utterances.

    a, b: {"id", "y_true", "y_pred", "speaker"} equal-length sequences per setting (rows may
    repeat an id, one per seed). Refused (`StatsError`) unless both cover the same utterance ids:
    a paired test needs the same utterances. Deterministic for "jackknife-t" (`n_boot`, `n_perm`,
    `seed`: used by "percentile" only).
    """
    _check(metric, level, method)
    ca, cb = _same_utterances([a, b], labels, "two runs")
    G = ca.shape[0]
    if G < 2:
        raise StatsError(f"a paired comparison needs at least 2 speakers, got {G}")
    value_a = float(metric_from_confusion(ca.sum(0), metric))
    value_b = float(metric_from_confusion(cb.sum(0), metric))
    if method == "jackknife-t":
        (da, db), counts = _compressed(ca, cb)
        diff, se = _weighted_jackknife([da, db], counts, metric, G)
        low, high, p = t_interval(diff, se, G, level)
        return Comparison(metric, value_a, value_b, diff, float(low), float(high), float(p), level, G, method, se)
    rng = np.random.default_rng(seed)
    fa, fb = ca.reshape(G, -1), cb.reshape(G, -1)
    shape = (-1, *ca.shape[1:])
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
    return Comparison(metric, value_a, value_b, diff, float(low), float(high), p, level, G, method,
                      float(np.nanstd(boot, ddof=1)))


@dataclass(frozen=True)
class SelectedComparison(Comparison):
    """The best of `family` settings (picked on these very test speakers) minus another one.
    `low`, `high`, `p`: adjusted for the pick and for the family (max-T speaker permutation,
    the best re-picked in every permutation; the interval excludes 0 exactly when p < 1 - level);
    `*_unadjusted`: the pair's own jackknife-t, as if it had been chosen in advance (it was not)."""

    family: int = 0
    p_unadjusted: float = float("nan")
    low_unadjusted: float = float("nan")
    high_unadjusted: float = float("nan")


def max_t_null(cms: np.ndarray, metric: str, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """`(n_perm,)` null distribution of the largest studentized difference best - other, over a
    family of settings `cms` `(S, G, C, C)` scored on the same groups: in each permutation every
    group's S predictions are shuffled among the settings (H0: the settings are exchangeable within
    each speaker), the best is re-picked, and max_k (value_best - value_k) / se_k is kept (se: the
    paired jackknife SE, as for the observed data)."""
    S, G = cms.shape[:2]
    m = marginals(cms)                                                          # (S, G, 3, C)
    chunk = max(1, int(2_000_000 // (S * G * m[0, 0].size)))
    out = np.empty(n_perm)
    for start in range(0, n_perm, chunk):
        P = min(chunk, n_perm - start)
        order = np.argsort(rng.random((P, G, S)), axis=-1)
        perm = m[order, np.arange(G)[None, :, None]].transpose(0, 2, 1, 3, 4)  # (P, S, G, 3, C)
        total = perm.sum(2)
        values = metric_from_marginals(total, metric)                           # (P, S)
        left_out = metric_from_marginals(total[:, :, None] - perm, metric)       # (P, S, G)
        best = np.argmax(values, axis=1)
        rows = np.arange(P)
        d = values[rows, best][:, None] - values
        dl = left_out[rows, best][:, None, :] - left_out
        dev = dl - dl.mean(-1, keepdims=True)
        se = np.sqrt((G - 1) / G * np.sum(dev * dev, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, d / np.where(se > 0, se, 1), np.where(d > 0, np.inf, 0.0))
        t[rows, best] = -np.inf
        out[start:start + P] = t.max(1)
    return out


def best_against_rest(sides: Sequence[dict], labels: Sequence[str], *, metric: str = "uar", n_perm: int = 2000,
                      level: float = 0.95, seed: int = 0) -> tuple[int, list[SelectedComparison]]:
    """The best of a family of settings (e.g. the layers of a sweep) on these test utterances,
    against each other one, honestly: the best was picked on the same data, so each difference's
    interval and p are adjusted for that pick and for the family by a max-T permutation over
    speakers (`max_t_null`). Exploratory: to confirm a best layer, pick it on training speakers.

    sides: one {"id", "y_true", "y_pred", "speaker"} per setting, all on the same utterances.
    Returns (index of the best, one `SelectedComparison` best - other per other setting, in order).
    Seeded: same inputs and seed, same result."""
    _check(metric, level, "jackknife-t")
    if len(sides) < 2:
        raise StatsError(f"picking the best needs at least 2 settings, got {len(sides)}")
    return best_against_rest_counts(_same_utterances(sides, labels, "settings"), metric=metric, n_perm=n_perm,
                                    level=level, seed=seed)


def best_against_rest_counts(cms: np.ndarray, *, metric: str = "uar", n_perm: int = 2000, level: float = 0.95,
                             seed: int = 0) -> tuple[int, list[SelectedComparison]]:
    """`best_against_rest` from per-setting, per-speaker confusion counts `(S, G, C, C)`."""
    alpha = 1 - level
    if (1 + 0) / (1 + n_perm) >= alpha:
        raise StatsError(f"{n_perm} permutations cannot give p < {alpha:g}: use at least {int(np.ceil(1 / alpha))}")
    S, G = cms.shape[:2]
    if G < 2:
        raise StatsError(f"a paired comparison needs at least 2 speakers, got {G}")
    values = metric_from_confusion(cms.sum(1), metric)
    best = int(np.argmax(values))
    others = [k for k in range(S) if k != best]
    diff, se = jackknife(np.broadcast_to(cms[best], cms[others].shape), metric, cms[others])
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, diff / np.where(se > 0, se, 1), np.where(diff > 0, np.inf, 0.0))
    null = max_t_null(cms, metric, n_perm, np.random.default_rng(seed))
    # p_k = (1 + #{max-T >= t_k}) / (1 + n_perm); the interval's half-width uses the critical value
    # c = the (m+1)-th largest max-T, m the most exceedances that still give p < alpha, so that
    # t_k > c exactly when p_k < alpha; ties with the observed statistic count as exceedances
    p = (1 + np.sum(null[None, :] >= stat[:, None] * (1 - 1e-9), axis=1)) / (1 + n_perm)
    m = int(np.ceil(alpha * (1 + n_perm) - 1)) - 1
    crit = float(np.sort(null)[::-1][m])
    low, high = diff - crit * se, diff + crit * se
    significant = p < alpha
    low = np.where(significant, np.maximum(low, np.nextafter(0.0, 1)), np.minimum(low, 0.0))
    low_u, high_u, p_u = t_interval(diff, se, G, level)
    method = f"max-T speaker permutation over {S} settings, best re-picked ({n_perm} permutations)"
    rows = [SelectedComparison(metric, float(values[best]), float(values[k]), float(diff[i]), float(low[i]),
                               float(high[i]), float(p[i]), level, G, method, float(se[i]), S, float(p_u[i]),
                               float(low_u[i]), float(high_u[i]))
            for i, k in enumerate(others)]
    return best, rows


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values `(m,)` (same order): family-wise error control for m tests."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
