"""The fold runner: probes over layers x folds x seeds, with label harmonisation.

Inputs are arrays and records, never store paths: `X` is `(N, n_layers, D)` pooled features
(rows = `utterances`), `layers` names the stored layer of each column, and `folds` are
`featstore.folds.Fold`s (index arrays into the rows).

Label harmonisation (cross-corpus): a fold scores only the classes present in its training
rows; test rows of other classes are dropped and counted in `ProbeResults.dropped`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from classifiers.linear import DEFAULT_CS, choose_C, fit_many
from classifiers.results import ProbeResults, make_record

CLASSIFIERS = ("logreg", "xgboost")


def _harmonise(labels: np.ndarray, fold) -> tuple[list[str], np.ndarray, Counter]:
    """(training classes in canonical order, scored test rows, dropped label counts)."""
    from featstore.labels import canonical_order

    classes = canonical_order(labels[fold.train])
    keep = np.isin(labels[fold.test], classes)
    dropped = Counter(labels[fold.test][~keep].tolist())
    return classes, fold.test[keep], dropped


def probe_layers(X, utterances, folds, layers: Sequence[int], *, classifier: str = "logreg",
                 seeds: Sequence[int] = (0,), C: float | None = None, Cs: Sequence[float] = DEFAULT_CS,
                 inner_folds: int = 3, shuffle_labels: bool = False, device: str | None = None,
                 train_set: str = "", test_set: str = "", progress=None) -> ProbeResults:
    """Evaluate a probe on every layer and fold.

    X: `(N, len(layers), D)` float array; utterances: N records (label, speaker used);
    folds: Folds over the rows. classifier: "logreg" (batched, C by inner speaker CV unless `C`
    is given) or "xgboost". shuffle_labels permutes training labels (an honesty control: scores
    must fall to chance). Returns per-(layer, fold, seed) records.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}: use {', '.join(CLASSIFIERS)}")
    X = np.asarray(X)
    if X.ndim != 3 or X.shape[1] != len(layers) or X.shape[0] != len(utterances):
        raise ValueError(f"X must be (N={len(utterances)}, len(layers)={len(layers)}, D), got {X.shape}")
    labels = np.array([u.label for u in utterances])
    speakers = np.array([u.speaker for u in utterances])
    results = ProbeResults()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        y_all = labels.copy()
        if shuffle_labels:
            for fold in folds:
                y_all[fold.train] = rng.permutation(y_all[fold.train])
        # folds with the same training classes are solved together
        by_classes = defaultdict(list)
        for fold in folds:
            classes, test, dropped = _harmonise(y_all, fold)
            if dropped:
                results.dropped[fold.name] = dict(dropped)
            by_classes[tuple(classes)].append((fold, test))
        for classes, group in by_classes.items():
            if classifier == "logreg":
                recs = _logreg_group(X, y_all, speakers, group, list(classes), layers, seed, C, Cs, inner_folds,
                                     device)
            else:
                recs = _xgb_group(X, y_all, speakers, group, list(classes), layers, seed, device, progress)
            for r in recs:
                r.update(classifier=classifier, seed=seed, train_set=train_set, test_set=test_set,
                         shuffled=shuffle_labels)
            results.records.extend(recs)
    return results


def _record(layer, fold, test_idx, y_true, y_pred, classes, n_train, **extra) -> dict:
    return make_record(layer=int(layer), fold=fold.name, y_true=y_true, y_pred=y_pred, labels=classes,
                       n_train=n_train, **extra)


def _logreg_group(X, y, speakers, group, classes, layers, seed, C, Cs, inner_folds, device) -> list[dict]:
    index = {c: i for i, c in enumerate(classes)}
    yi = np.array([index.get(v, -1) for v in y])
    masks = []
    for fold, _ in group:
        m = np.zeros(len(y), dtype=bool)
        m[fold.train] = True
        masks.append(m)
    # rows of classes outside this group's set are never training rows of its folds
    yi_fit = np.where(yi < 0, 0, yi)
    Xl = np.ascontiguousarray(np.moveaxis(X, 1, 0))               # (L, N, D)
    if C is None:
        chosen = choose_C(Xl, yi_fit, masks, speakers, len(classes), Cs, inner_folds, seed, device)  # (L, F)
    else:
        chosen = np.full((len(layers), len(group)), float(C))
    fit = fit_many(Xl, yi_fit, np.broadcast_to(np.stack(masks), (len(layers), len(group), len(y))), chosen,
                   len(classes), device=device)
    pred = fit.predict()                                           # (L, F, N)
    recs = []
    for li, layer in enumerate(layers):
        for fi, (fold, test) in enumerate(group):
            y_pred = [classes[k] for k in pred[li, fi, test]]
            recs.append(_record(layer, fold, test, y[test], y_pred, classes, len(fold.train), C=float(chosen[li, fi])))
    return recs


def _xgb_group(X, y, speakers, group, classes, layers, seed, device, progress) -> list[dict]:
    from classifiers.boosting import XGBProbe

    recs = []
    for li, layer in enumerate(layers):
        for fold, test in group:
            model = XGBProbe(random_state=seed, device=device)
            model.fit(X[fold.train, li], y[fold.train])
            recs.append(_record(layer, fold, test, y[test], model.predict(X[test, li]), classes, len(fold.train)))
            if progress:
                progress()
    return recs


def transfer_matrix(features: dict, utterances: dict, corpora: Sequence[str], layer_index: int, *,
                    within_folds: dict, classifier: str = "logreg", C: float | None = None, seed: int = 0,
                    device: str | None = None) -> tuple[np.ndarray, dict]:
    """Train on each corpus, test on each corpus: `(len(corpora), len(corpora))` UAR matrix.

    features[c]: `(N_c, n_layers, D)`; utterances[c]: its records; within_folds[c]: the
    speaker-independent folds used for the diagonal. Off-diagonal cells train on all of the
    row corpus and test on all of the column corpus, scoring only shared classes.
    Returns (matrix, {(train, test): record}).
    """
    from featstore.folds import Fold

    n = len(corpora)
    M = np.full((n, n), np.nan)
    details = {}
    for i, a in enumerate(corpora):
        for j, b in enumerate(corpora):
            if a == b:
                res = probe_layers(features[a][:, [layer_index]], utterances[a], within_folds[a], [layer_index],
                                   classifier=classifier, C=C, seeds=(seed,), device=device, train_set=a, test_set=a)
            else:
                X = np.concatenate([features[a][:, [layer_index]], features[b][:, [layer_index]]])
                utts = list(utterances[a]) + list(utterances[b])
                na = len(utterances[a])
                fold = Fold(f"{a}->{b}", np.arange(na), np.arange(na, len(utts)))
                res = probe_layers(X, utts, [fold], [layer_index], classifier=classifier, C=C, seeds=(seed,),
                                   device=device, train_set=a, test_set=b)
            row = res.summary()[0]
            M[i, j] = row["uar"]
            details[(a, b)] = dict(row, dropped=res.dropped)
    return M, details
