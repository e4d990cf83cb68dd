"""Comparisons of settings from per-utterance predictions: training sets against the first, a
layer against every other layer, run against run (any kinds: a probe's layer, a matrix cell, kNN, a
fine-tuned model, paired on the test utterance ids both were scored on). Each row is a `classifiers.results.stats.paired_compare`
(difference, jackknife-t CI over speakers and the p-value of the same statistic) plus Holm's
adjustment over the family; the best layer picked on the test predictions themselves is compared
exploratorily, adjusted for the pick (`classifiers.results.stats.best_against_rest`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifiers.results.predictions import concat, layer_sort_key, select, settings
from classifiers.results.stats import StatsError, best_against_rest, bootstrap_ci, holm, paired_compare
from featstore.labels import canonical_order

Setting = tuple[str, str, str, str]  # (train_set, test_set, classifier, layer)


def columns(results) -> dict[str, np.ndarray]:
    """The `ProbeResults`' predictions as one column dict; a clear error when it has none."""
    if not results.predictions:
        raise StatsError("these results have no per-utterance predictions (written before ser kept them); "
                         "re-run the probe to compare it")
    return concat(results.predictions)


def setting_rows(cols: dict, setting: Setting) -> dict:
    train, test, clf, layer = setting
    return select(cols, train_set=train, test_set=test, classifier=clf, layer=layer)


def label_order(*parts: dict) -> list[str]:
    return canonical_order({v for p in parts for k in ("label", "predicted") for v in p[k].tolist()})


def _paired(a: dict, b: dict, metric: str, seed: int):
    sides = [dict(id=p["id"], y_true=p["label"], y_pred=p["predicted"], speaker=p["speaker"]) for p in (a, b)]
    return paired_compare(*sides, label_order(a, b), metric=metric, seed=seed)


def _row(name_a: str, name_b: str, c) -> dict:
    return dict(a=name_a, b=name_b, **c.to_dict())


def with_holm(rows: list[dict]) -> list[dict]:
    """`rows` with p_holm: Holm-adjusted over the rows (one family of comparisons)."""
    for r, p in zip(rows, holm([r["p"] for r in rows]) if rows else []):
        r["p_holm"] = float(p)
    return rows


def setting_name(s: Setting, *, layer: bool = True) -> str:
    train, test, clf, k = s
    where = f"{train}" + (f" → {test}" if test and test != train else "")
    return f"{clf}, {where}" + (f", layer {k}" if layer else "")


def train_set_differences(results, metric: str = "uar", seed: int = 0) -> list[dict]:
    """Every training set against the first one, at each (classifier, layer): the multi-corpus
    question ("does adding EMO-DB help?"). Holm over the whole table. Only settings scored on the
    same test utterances pair: a transfer matrix's off-diagonal cell whose shared-class policy
    dropped test rows has no partner on its diagonal and is left out (not compared, not refused)."""
    cols = columns(results)
    found = settings(cols)
    first = found[0][0]
    rows = []
    for train, test, clf, layer in found:
        if train == first:
            continue
        a = setting_rows(cols, (train, test, clf, layer))
        b = setting_rows(cols, (first, test, clf, layer))
        if len(b["id"]) and set(a["id"].tolist()) == set(b["id"].tolist()):
            rows.append(dict(_row(f"{train}, layer {layer}", first, _paired(a, b, metric, seed)), layer=layer,
                             classifier=clf, train_set=train))
    return with_holm(rows)


def layer_differences(results, reference: str | int | None = None, metric: str = "uar", seed: int = 0,
                      n_perm: int = 2000) -> list[dict]:
    """One layer against every other layer of the first setting (a layer sweep is a family).

    reference given (chosen before looking at these test predictions, e.g. on training speakers):
    paired jackknife-t rows, p_holm Holm-adjusted over the layers, `exploratory` False.
    reference None: the best layer by pooled `metric` on these very test predictions. That pick
    is data-driven, so the rows are exploratory (`exploratory` True): each row's CI and p are
    adjusted for the pick and the family by a max-T speaker permutation that re-picks the best in
    every permutation (`classifiers.results.stats.best_against_rest`; `method` says so, `family` counts
    the layers); `p_unadjusted`, `low_unadjusted`, `high_unadjusted` are the pair's own
    jackknife-t, shown for reference only; no p_holm (p is already family-wise)."""
    cols = columns(results)
    found = settings(cols)
    base = found[0][:3]
    layers = sorted({s[3] for s in found if s[:3] == base}, key=layer_sort_key)
    if reference is None:
        parts = [setting_rows(cols, (*base, k)) for k in layers]
        sides = [dict(id=p["id"], y_true=p["label"], y_pred=p["predicted"], speaker=p["speaker"]) for p in parts]
        best, compared = best_against_rest(sides, label_order(*parts), metric=metric, n_perm=n_perm, seed=seed)
        others = [k for i, k in enumerate(layers) if i != best]
        return [dict(_row(f"layer {layers[best]}", f"layer {k}", c), layer=k, exploratory=True)
                for k, c in zip(others, compared)]
    ref = setting_rows(cols, (*base, str(reference)))
    rows = [dict(_row(f"layer {reference}", f"layer {k}", _paired(ref, setting_rows(cols, (*base, k)), metric, seed)),
                 layer=k, exploratory=False) for k in layers if k != str(reference)]
    return with_holm(rows)


def test_ids(results) -> frozenset:
    """The test utterance ids of a run's predictions (runs with equal ids can be compared)."""
    return frozenset(columns(results)["id"].tolist())


def interval(cols: dict, setting: Setting, metric: str = "uar", seed: int = 0):
    """Pooled `metric` of one setting with its 95% CI over speakers (`classifiers.results.stats.Interval`, jackknife-t)."""
    p = setting_rows(cols, setting)
    return bootstrap_ci(p["label"], p["predicted"], p["speaker"], label_order(p), metric=metric, seed=seed)


def best_setting(cols: dict, metric: str = "uar", layer: str | int | None = None) -> Setting:
    """The setting with the highest pooled `metric` (at `layer` when given)."""
    found = [s for s in settings(cols) if layer is None or s[3] == str(layer)]
    if not found:
        raise StatsError(f"no predictions at layer {layer}; see `ser results show`")
    return max(found, key=lambda s: interval(cols, s, metric).value)


#: configuration keys a setting's name already shows (classifier, training and test sets, the layer)
_SHOWN = frozenset({"classifier", "train", "test", "corpus", "layers"})


def what_differs(runs: Sequence[dict]) -> dict[str, str]:
    """Per registered run (registry rows), what its configuration holds that the others' do not:
    {run id: "model opensmile:eGeMAPSv02, classes all"}, "" where nothing differs. Keys a setting's
    name already shows are left out, and keys only some runs have (another kind's options: the kind
    says it); the run kind counts as a key (a kNN run against a probe)."""
    import json

    def value(run, key):
        return run["kind"] if key == "kind" else run["config"].get(key)

    common = set.intersection(*(set(r.get("config", {})) for r in runs)) if runs else set()
    keys = sorted(({"kind"} | common) - _SHOWN)      # a key one kind lacks is implied by the kind
    differ = [k for k in keys if len({json.dumps(value(r, k), sort_keys=True, default=str) for r in runs}) > 1]

    def shown(v):
        return ",".join(map(str, v)) if isinstance(v, list) else "none" if v is None else str(v)

    return {r["id"]: ", ".join(f"{k} {shown(value(r, k))}" for k in differ) for r in runs}


def _at_layer(found: list[Setting], layer: str | int | None) -> list[Setting]:
    """The settings at `layer` (all when None); a run whose layers are not stored layers (a fine-tuned
    model: "e2e") is compared as it is, a stored-layer run without `layer` is refused."""
    if layer is None:
        return found
    at = [s for s in found if s[3] == str(layer)]
    if at:
        return at
    if not any(str(s[3]).lstrip("-").isdigit() for s in found):
        return found
    raise StatsError(f"no predictions at layer {layer}; see `ser results show`")


def paired_settings(runs: Sequence[tuple[str, dict]], metric: str = "uar",
                    layer: str | int | None = None) -> list[Setting]:
    """The setting of each run (name, prediction columns) that the comparison pairs, whatever the
    runs' kinds (probe layers, matrix cells, kNN, fine-tuned folds): settings pair when they were
    scored on the same test utterance ids. The first run's best setting (pooled `metric`) among
    those whose test utterances every run has a setting for, then each other run's best setting
    on exactly those utterances. Refused in one line (`StatsError`) when two runs share no test
    set, naming how many utterances they share."""
    cands = []
    for _, cols in runs:
        cands.append([(s, frozenset(setting_rows(cols, s)["id"].tolist()))
                      for s in _at_layer(settings(cols), layer)])
    common = set.intersection(*({ids for _, ids in c} for c in cands))
    if not common:
        first = {ids for _, ids in cands[0]}
        i = next((i for i, c in enumerate(cands[1:], 1) if not first & {ids for _, ids in c}), None)
        if i is None:
            raise StatsError(f"each run shares a test set with run {runs[0][0]}, but no test set was scored by all "
                             f"{len(runs)} runs; compare them in pairs")
        a, b = runs[0][0], runs[i][0]
        ids_a = frozenset().union(*(ids for _, ids in cands[0]))
        ids_b = frozenset().union(*(ids for _, ids in cands[i]))
        shared = len(ids_a & ids_b)
        raise StatsError(f"cannot compare run {b} with run {a}: they were scored on different test utterances "
                         f"({shared} shared, {len(ids_a) - shared} only in {a}, {len(ids_b) - shared} only in {b}); "
                         f"a paired test needs the same utterances: compare runs over the same corpus, folds and "
                         f"classes")

    def best(k: int, ids=None) -> tuple[Setting, frozenset]:
        pool = [(s, i) for s, i in cands[k] if (i in common if ids is None else i == ids)]
        return max(pool, key=lambda si: interval(runs[k][1], si[0], metric).value)

    s0, ids = best(0)
    return [s0, *(best(k, ids)[0] for k in range(1, len(runs)))]


def run_differences(runs: Sequence[tuple[str, object]], metric: str = "uar", layer: str | int | None = None,
                    seed: int = 0, differs: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """Runs (name, ProbeResults) against the first, whatever their kinds: each at the setting
    `paired_settings` picks (its best on the test utterances all runs share; at `layer` when given).

    Returns (one summary row per run: name, setting, value with CI; the comparisons with Holm).
    Refused (`StatsError`) when two runs were scored on different test utterances. `differs`
    ({name: text}, `what_differs`) is added to each setting's name, so runs that differ only in
    their model or class policy are told apart.
    """
    cols_of = [(name, columns(results)) for name, results in runs]
    chosen = [(name, s, setting_rows(cols, s), interval(cols, s, metric, seed))
              for (name, cols), s in zip(cols_of, paired_settings(cols_of, metric, layer))]
    differs = differs or {}
    summary = [dict(run=name, setting=setting_name(s) + (f"; {differs[name]}" if differs.get(name) else ""),
                    **iv.to_dict()) for name, s, _, iv in chosen]
    first_name, _, first, _ = chosen[0]
    rows = []
    for name, _, p, _ in chosen[1:]:
        try:
            rows.append(_row(name, first_name, _paired(p, first, metric, seed)))
        except StatsError as e:
            raise StatsError(f"cannot compare run {name} with run {first_name}: {e}") from e
    return summary, with_holm(rows)

