"""The fold runner: every classifier over layers x folds x seeds, dispatched from one registry.

`CLASSIFIERS` maps a name to a runner (s3prl-style downstream table); a runner takes a
`ProbeTask` and returns `ProbeResults`. Inputs are arrays and records (or a `FeatureStore`),
never paths: pooled features are `(N, n_layers, D)` (rows = `utterances`), `layers` names the
stored layer of each column, and `folds` are `featstore.folds.Fold`s (index arrays into the rows).

Label harmonisation is `classifiers.results.records.harmonise` for every classifier: within-corpus, a
fold scores the classes of its training rows; cross-corpus, `policy="shared"` trains and scores
on the classes both sides declare, `policy="all"` scores every test row with the model as trained.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from classifiers.results.records import CLASS_POLICIES, ProbeResults, declared_labels, harmonise, make_record
from classifiers.runs.progress import progress_bar  # noqa: F401 - re-exported
from featstore.errors import SerError


@dataclass
class ProbeTask:
    """What every classifier runner receives.

    source: pooled features `(N, len(layers), D)`, or a `FeatureStore` (pooled `stat` rows; the
    attention runner reads its frame-level features, or `source` as N frame arrays (T, D)).
    utterances: N records (label, speaker, corpus); folds: `Fold`s over the rows; layers: the
    stored layer of each column; seeds: one run per seed. C/Cs/inner_folds: logreg (Cs None:
    `classifiers.estimators.linear.DEFAULT_CS`); k: kNN; params: estimator hyper-parameters (attention). policy/shared: label harmonisation
    (`classifiers.results.records.harmonise`). progress: called with n after n (layer, fold, seed) units.
    """

    source: object
    utterances: Sequence
    folds: Sequence
    layers: Sequence[int]
    seeds: Sequence[int] = (0,)
    stat: str = "mean"
    policy: str | None = None
    shared: set[str] | None = None
    shuffle_labels: bool = False
    train_set: str = ""
    test_set: str = ""
    device: str | None = None
    C: float | None = None
    Cs: Sequence[float] | None = None
    inner_folds: int = 3
    k: int = 10
    params: dict = field(default_factory=dict)
    progress: Callable[[int], None] | None = None

    @property
    def units(self) -> int:
        """(layer, fold, seed) combinations the runner works through."""
        return len(self.layers) * len(self.folds) * len(self.seeds)

    def advance(self, n: int = 1) -> None:
        if self.progress:
            self.progress(n)

    def common(self, seed: int) -> dict:
        """The record keys every classifier sets the same way."""
        return dict(seed=seed, train_set=self.train_set, test_set=self.test_set, shuffled=self.shuffle_labels,
                    classes=self.policy or "train")

    def keep(self, results: ProbeResults, rows, y_pred, y, proba, classes, layer, fold: str, seed: int,
             classifier: str) -> None:
        """Append the per-utterance predictions of test `rows` to `results.predictions`."""
        from classifiers.results.predictions import block

        results.predictions.append(block(self.utterances, rows, y_pred, proba=proba, classes=list(classes),
                                         labels=y[rows], layer=layer, fold=fold, seed=seed, classifier=classifier,
                                         train_set=self.train_set, test_set=self.test_set))

    def pooled(self) -> np.ndarray:
        """`(N, len(layers), D)` pooled features."""
        if hasattr(self.source, "pooled_all"):
            return self.source.pooled_all(self.stat, list(self.layers))
        X = np.asarray(self.source)
        if X.ndim != 3 or X.shape[1] != len(self.layers) or X.shape[0] != len(self.utterances):
            raise ValueError(f"X must be (N={len(self.utterances)}, len(layers)={len(self.layers)}, D), got {X.shape}")
        return X

    def labels(self, seed: int) -> np.ndarray:
        """(N,) labels; with shuffle_labels, each fold's training labels permuted (seeded)."""
        y = np.array([u.label for u in self.utterances], dtype=object)
        if self.shuffle_labels:
            rng = np.random.default_rng(seed)
            for fold in self.folds:
                y[fold.train] = rng.permutation(y[fold.train])
        return y


def cpu_count() -> int:
    """CPU threads to use: `featstore.threads.threads()` (--threads, $SER_THREADS, config `threads`, else the
    CPUs this process may use: affinity and cgroup quota)."""
    from featstore.threads import threads

    return threads()


def _layer_features(task: ProbeTask, li: int) -> np.ndarray:
    """`(N, D)` pooled features of `task.layers[li]`, read alone (a sweep holds one layer at a time)."""
    if hasattr(task.source, "pooled"):
        X = task.source.pooled(task.layers[li], task.stat)
    else:
        X = np.asarray(task.source)
        if X.ndim != 3 or X.shape[1] != len(task.layers) or X.shape[0] != len(task.utterances):
            raise ValueError(f"X must be (N={len(task.utterances)}, len(layers)={len(task.layers)}, D), got {X.shape}")
        X = X[:, li]
    if task.params.get("speaker_norm"):
        from classifiers.estimators.linear import speaker_normalise

        X = speaker_normalise(X, [u.speaker for u in task.utterances])
    return X


def _run_logreg(task: ProbeTask) -> ProbeResults:
    """Logistic regression layer by layer, C by inner CV on each fold's training speakers unless task.C.

    task.params: class_weight (None or "balanced"), speaker_norm (bool: `linear.speaker_normalise`).
    """
    from classifiers.estimators.linear import DEFAULT_CS, selection_masks, sweep_layer

    speakers = np.array([u.speaker for u in task.utterances])
    results = ProbeResults()
    groups = []  # (seed, y, classes, yi, masks, inner, [(fold, harmonised)]): folds with the same classes solve together
    for seed in task.seeds:
        y = task.labels(seed)
        by_classes = defaultdict(list)
        for fold in task.folds:
            h = harmonise(y, fold.train, fold.test, policy=task.policy, shared=task.shared)
            results.add(fold.name, h)
            by_classes[tuple(h.classes)].append((fold, h))
        for classes, group in by_classes.items():
            index = {c: i for i, c in enumerate(classes)}
            # rows of other classes are never training rows of this group's folds
            yi = np.array([index.get(v, 0) for v in y])
            masks = np.zeros((len(group), len(y)), dtype=bool)
            for fi, (_, h) in enumerate(group):
                masks[fi, h.train] = True
            inner = None if task.C is not None else selection_masks(list(masks), speakers, yi, task.inner_folds, seed)
            groups.append((seed, y, classes, yi, masks, inner, group))

    def solve(li: int) -> list:
        X = _layer_features(task, li)
        return [sweep_layer(X, yi, len(classes), list(masks), C=task.C, Cs=task.Cs or DEFAULT_CS, inner=inner,
                            class_weight=task.params.get("class_weight"), device=task.device)
                for _, _, classes, yi, masks, inner, _ in groups]

    for li, sweeps in _layer_parallel(task, solve):
        for sweep, (seed, y, classes, _, _, _, group) in zip(sweeps, groups):
            pred = sweep.predict                                           # (F, N)
            for fi, (fold, h) in enumerate(group):
                y_pred = [classes[k] for k in pred[fi, h.test]]
                results.records.append(make_record(
                    layer=task.layers[li], fold=fold.name, y_true=y[h.test], y_pred=y_pred,
                    labels=h.scored, n_train=len(h.train), classifier="logreg", C=float(sweep.C[fi]),
                    **_c_search(sweep, fi), **task.common(seed)))
                task.keep(results, h.test, y_pred, y, sweep.proba[fi, h.test], classes, task.layers[li], fold.name,
                          seed, "logreg")
            task.advance(len(group))
    return results


def _c_search(sweep, fi: int) -> dict:
    """Record keys of fold fi's C search beyond the grid (`linear.LayerSweep.extended`/`at_bound`; issue 23)."""
    if sweep.scores is None:
        return {}
    beyond = sweep.extended[fi]
    return dict(C_extended=[c for c, _ in beyond], C_at_bound=bool(sweep.at_bound[fi]))


def _layer_parallel(task: ProbeTask, solve: Callable[[int], object]):
    """Yield (layer index, solve(layer index)) in layer order, `cpu_count()` layers at a time on the CPU.

    One single-threaded torch solve per core: on 2 cores, two layers side by side beat one layer
    on two threads (the solver's many small operations make threads wait on each other, worst on
    a shared machine), and at most that many layers' matrices are held at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from featstore.device import resolve_device

    workers = 1 if resolve_device(task.device).type == "cuda" else min(cpu_count(), len(task.layers))
    if workers == 1:
        for li in range(len(task.layers)):
            yield li, solve(li)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending = {}
            for li in range(len(task.layers)):
                pending[li] = pool.submit(solve, li)
                if li + 1 - workers >= 0:                                  # keep `workers` layers in flight
                    done = li + 1 - workers
                    yield done, pending.pop(done).result()
            for li in sorted(pending):
                yield li, pending.pop(li).result()
    finally:
        torch.set_num_threads(threads)


def _run_xgboost(task: ProbeTask) -> ProbeResults:
    """XGBoost (`hist`) per layer and fold, on every core this process may use, one layer read at a time.

    Trees stop early on a validation split of each fold's *training* speakers (15%, drawn by
    `featstore.folds.validation_split`; never a test speaker). task.params: early_stopping
    (True; False trains every tree on every training row), class_weight (None or "balanced"),
    speaker_norm (bool), n_estimators/max_depth/learning_rate (`XGBProbe`'s).
    """
    from classifiers.estimators.boosting import XGBProbe
    from featstore.folds import validation_split

    early = task.params.get("early_stopping", True)
    est = {k: v for k, v in task.params.items() if k in ("n_estimators", "max_depth", "learning_rate", "class_weight")}
    results = ProbeResults()
    plans = []  # (seed, y, fold, harmonised, trained-on rows, validation rows)
    for seed in task.seeds:
        y = task.labels(seed)
        for fold in task.folds:
            h = harmonise(y, fold.train, fold.test, policy=task.policy, shared=task.shared)
            results.add(fold.name, h)
            train, val = np.asarray(h.train), None
            if early and len({task.utterances[i].speaker for i in train}) > 1:
                train, val = validation_split(task.utterances, train, fraction=0.15, seed=seed)
            plans.append((seed, y, fold, h, train, val))
    for li, layer in enumerate(task.layers):
        X = _layer_features(task, li)
        for seed, y, fold, h, train, val in plans:
            model = XGBProbe(random_state=seed, device=task.device, n_jobs=cpu_count(), **est)
            model.fit(X[train], y[train], eval_set=None if val is None else (X[val], y[val]))
            proba = model.predict_proba(X[h.test])
            y_pred = np.asarray(model.classes_, dtype=object)[proba.argmax(1)]
            results.records.append(make_record(
                layer=layer, fold=fold.name, y_true=y[h.test], y_pred=y_pred,
                labels=h.scored, n_train=len(train), classifier="xgboost", C=None, **task.common(seed)))
            task.keep(results, h.test, y_pred, y, proba, model.classes_, layer, fold.name, seed, "xgboost")
            task.advance()
        del X
    return results


def _run_attention(task: ProbeTask) -> ProbeResults:
    """The attention-pooling head over frames, one per layer (`classifiers.estimators.attention`)."""
    from classifiers.estimators.attention import probe_attention

    params = {"device": task.device or "auto", **task.params}
    return probe_attention(task.source, task.utterances, task.folds, list(task.layers), seeds=tuple(task.seeds),
                           shuffle_labels=task.shuffle_labels, train_set=task.train_set, test_set=task.test_set,
                           policy=task.policy, shared=task.shared, progress=task.advance, **params)


def _run_knn(task: ProbeTask) -> ProbeResults:
    """Speaker-independent kNN on the pooled features (`classifiers.runs.neighbors.knn_evaluate`)."""
    from classifiers.runs.neighbors import knn_evaluate

    if task.shuffle_labels:
        raise SerError("the kNN probe has no shuffled-label control; use --classifier logreg for it")
    X = task.pooled()
    results = ProbeResults()
    for li, layer in enumerate(task.layers):
        results.extend(knn_evaluate(X[:, li], task.utterances, task.folds, k=task.k, layer=layer,
                                    train_set=task.train_set, test_set=task.test_set, policy=task.policy,
                                    shared=task.shared))
        task.advance(len(task.folds) * len(task.seeds))
    return results


#: classifier name -> runner(ProbeTask) -> ProbeResults
CLASSIFIERS: dict[str, Callable[[ProbeTask], ProbeResults]] = {
    "logreg": _run_logreg, "xgboost": _run_xgboost, "attention": _run_attention, "knn": _run_knn,
}
#: runners reading frame-level features instead of pooled ones
FRAME_CLASSIFIERS = ("attention",)


def check_classifier(name: str) -> str:
    """`name` if it is in the registry; else a one-line error listing every name."""
    if name not in CLASSIFIERS:
        raise SerError(f"unknown classifier {name!r}: use one of {', '.join(CLASSIFIERS)}")
    return name


def check_policy(policy: str | None) -> str | None:
    if policy not in (None, *CLASS_POLICIES):
        raise SerError(f"unknown --classes {policy!r}: use {' or '.join(CLASS_POLICIES)}")
    return policy


#: probe options each classifier accepts (`ser probe --class-weight/--speaker-norm/--no-early-stopping`)
PROBE_OPTIONS = {"logreg": ("class_weight", "speaker_norm"),
                 "xgboost": ("class_weight", "speaker_norm", "early_stopping"),
                 "attention": ("class_weight",), "knn": ()}


def check_params(classifier: str, params: dict | None) -> dict:
    """The probe options `params`, validated for `classifier` (one-line SerError naming what it takes)."""
    params = dict(params or {})
    allowed = PROBE_OPTIONS[check_classifier(classifier)]
    bad = sorted(set(params) - set(allowed))
    if bad:
        flags = {"class_weight": "--class-weight", "speaker_norm": "--speaker-norm", "early_stopping": "--no-early-stopping"}
        raise SerError(f"--classifier {classifier} does not take {', '.join(flags.get(b, b) for b in bad)} "
                       f"(it takes: {', '.join(flags[a] for a in allowed) or 'none of these options'})")
    if params.get("class_weight") not in (None, "balanced"):
        raise SerError(f"--class-weight {params['class_weight']!r}: use balanced (or leave it out)")
    return params


def run_classifier(name: str, task: ProbeTask) -> ProbeResults:
    """Run registry entry `name` on `task`."""
    return CLASSIFIERS[check_classifier(name)](task)


def probe_layers(X, utterances, folds, layers: Sequence[int], *, classifier: str = "logreg",
                 seeds: Sequence[int] = (0,), C: float | None = None, Cs: Sequence[float] | None = None,
                 inner_folds: int = 3, shuffle_labels: bool = False, device: str | None = None,
                 train_set: str = "", test_set: str = "", policy: str | None = None,
                 shared: set[str] | None = None, progress=None) -> ProbeResults:
    """Evaluate a registry classifier on every layer and fold of pooled features.

    X: `(N, len(layers), D)` float array (or a FeatureStore); utterances: N records (label,
    speaker used); folds: Folds over the rows. classifier: a `CLASSIFIERS` name ("logreg":
    batched, C by inner speaker CV unless `C` is given). shuffle_labels permutes training
    labels (an honesty control: scores must fall to chance). policy/shared: see
    `classifiers.results.records.harmonise`. Returns per-(layer, fold, seed) records.
    """
    task = ProbeTask(X, list(utterances), list(folds), list(layers), seeds=tuple(seeds), C=C, Cs=Cs,
                     inner_folds=inner_folds, shuffle_labels=shuffle_labels, device=device, train_set=train_set,
                     test_set=test_set, policy=check_policy(policy), shared=shared, progress=progress)
    return run_classifier(classifier, task)


def transfer_matrix(features: dict, utterances: dict, corpora: Sequence[str], layer_index: int, *,
                    within_folds: dict, classifier: str = "logreg", C: float | None = None, seed: int = 0,
                    device: str | None = None, policy: str = "shared", layer: int | None = None,
                    progress=None) -> tuple[np.ndarray, dict]:
    """Train on each corpus, test on each corpus: `(len(corpora), len(corpora))` UAR matrix.

    features[c]: `(N_c, n_layers, D)` pooled; utterances[c]: its records; within_folds[c]: the
    speaker-independent folds of the diagonal. Off-diagonal cells train on all of the row
    corpus and test on all of the column corpus, harmonised by `policy` over the labels both
    declare. layer: the stored layer recorded (default `layer_index`). progress: called per cell.
    Returns (matrix, {(train, test): summary row + dropped + dropped_train + results (the cell's ProbeResults,
    predictions included)}).
    """
    from featstore.folds import Fold

    layer = layer_index if layer is None else layer
    n = len(corpora)
    M = np.full((n, n), np.nan)
    details = {}
    for i, a in enumerate(corpora):
        for j, b in enumerate(corpora):
            common = dict(classifier=classifier, C=C, seeds=(seed,), device=device, train_set=a, test_set=b)
            if a == b:
                res = probe_layers(features[a][:, [layer_index]], utterances[a], within_folds[a], [layer], **common)
            else:
                X = np.concatenate([features[a][:, [layer_index]], features[b][:, [layer_index]]])
                utts = list(utterances[a]) + list(utterances[b])
                na = len(utterances[a])
                fold = Fold(f"{a}->{b}", np.arange(na), np.arange(na, len(utts)))
                shared = declared_labels([a], utterances[a]) & declared_labels([b], utterances[b])
                res = probe_layers(X, utts, [fold], [layer], policy=policy, shared=shared, **common)
            row = res.summary()[0]
            M[i, j] = row["uar"]
            details[(a, b)] = dict(row, dropped=res.dropped, dropped_train=res.dropped_train, results=res)
            if progress:
                progress()
    return M, details
