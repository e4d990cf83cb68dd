"""`ser probe`: layer sweeps over cached features, within-corpus, multi-corpus and cross-corpus.

Reads features only through `featstore.store`; builds folds with `featstore.folds`; runs
`classifiers.evaluate.probe_layers`; writes results (JSON, CSV) and plots.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifiers.evaluate import ProbeResults, probe_layers, transfer_matrix
from featstore.errors import SerError
from featstore.store import parse_layers


@dataclass
class ProbeRun:
    results: ProbeResults
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def store_for(cache: str | Path, model: str, corpus: str) -> Path:
    """Where `ser extract` put (model, corpus); a clear error naming the command when missing."""
    from featstore.store import find_store

    return find_store(cache, model, corpus)


def _features(fs, layers: Sequence[int], stat: str) -> np.ndarray:
    return fs.pooled_all(stat, layers)  # (N, n_layers, D)


def run_probe(corpus: str | None, *, layers: str | Sequence[int] = "all", classifier: str = "logreg",
              protocol: str | None = None, stat: str = "mean", train: Sequence[str] | None = None,
              test: Sequence[str] | None = None, seeds: int = 1, model: str, cache: str | Path = "cache",
              out: str | Path | None = None, C: float | None = None, device: str | None = None,
              shuffle_labels: bool = False, plots: bool = True) -> ProbeRun:
    """Probe `layers` of the cached features of `corpus` (or train on `train`, test on `test`).

    train: one or more training sets, each a comma-separated corpus list ("ravdess,emodb"); each
    is tested on `corpus`' speaker-independent folds (multi-corpus), or, with `test`, on all of
    the test corpora (cross-corpus, classes absent from training dropped and reported).
    """
    from featstore.folds import cross_corpus_folds, make_folds, multi_corpus_folds, standard_protocol
    from featstore.store import open_store

    t0 = time.monotonic()
    train_sets = [t for t in (train or []) if t] or ([corpus] if corpus else [])
    if not train_sets:
        raise SerError("name a corpus (--corpus) or training corpora (--train)")
    test_corpora = [c for t in (test or []) for c in t.split(",") if c]
    target = corpus or (test_corpora[0] if test_corpora else train_sets[0].split(",")[0])
    protocol = protocol or standard_protocol(target)
    results = ProbeResults()
    stores = []
    for tset in train_sets:
        tcorpora = [c for c in tset.split(",") if c]
        needed = list(dict.fromkeys(tcorpora + (test_corpora or [target])))
        paths = [store_for(cache, model, c) for c in needed]
        fs = open_store(*paths)
        stores.extend(str(p) for p in fs.paths)
        layer_list = parse_layers(layers, fs.num_layers)
        utts = fs.utterances
        if test_corpora:
            if set(tcorpora) & set(test_corpora):
                raise SerError(f"training corpora {tcorpora} and test corpora {test_corpora} overlap; "
                               "for within-corpus results leave out --test")
            folds = cross_corpus_folds(utts, tcorpora, test_corpora)
            test_name = ",".join(test_corpora)
        else:
            extra = [c for c in tcorpora if c != target]
            folds = (multi_corpus_folds(utts, target, protocol, extra) if extra
                     else make_folds(utts, protocol))
            test_name = target
        if classifier == "attention":
            from classifiers.attention import probe_attention

            if layers == "all":
                layer_list = fs.frame_layers
            missing = [k for k in layer_list if k not in fs.frame_layers]
            if missing or not layer_list:
                raise SerError(f"the attention probe reads frame-level features; layers {missing or layer_list} "
                               f"have none in {', '.join(map(str, fs.paths))} (it has {fs.frame_layers or 'none'}): "
                               f"re-extract with --frames {','.join(map(str, missing or layer_list)) or 12}")
            res = probe_attention(fs, utts, folds, layer_list, seeds=tuple(range(seeds)),
                                  shuffle_labels=shuffle_labels, train_set=tset, test_set=test_name)
        else:
            X = _features(fs, layer_list, stat)
            res = probe_layers(X, utts, folds, layer_list, classifier=classifier, seeds=tuple(range(seeds)), C=C,
                               device=device, shuffle_labels=shuffle_labels, train_set=tset, test_set=test_name)
        results.extend(res)
    results.meta = dict(model=model, stores=sorted(set(stores)), protocol=protocol if not test_corpora else "cross-corpus",
                        stat=stat, classifier=classifier, seeds=list(range(seeds)), corpus=target,
                        train_sets=train_sets, test=test_corpora, C=C, shuffled=shuffle_labels)
    run = ProbeRun(results)
    if out is not None:
        run.files.extend(write_outputs(results, Path(out), plots=plots))
    run.seconds = time.monotonic() - t0
    return run


def write_outputs(results: ProbeResults, out: Path, *, plots: bool = True, name: str = "probe") -> list[Path]:
    from classifiers.plots import confusion_heatmap, layer_curve
    from classifiers.results import write_results

    files = list(write_results(results, out, name))
    if plots and results.records:
        labels = results.records[0]["labels"]
        chance = 1.0 / len(labels) if labels else None
        files.append(layer_curve(results, out / f"{name}_layers.png", chance=chance,
                                 title=f"{results.meta.get('corpus', '')}: UAR by layer "
                                       f"({results.meta.get('protocol', '')}, mean ± std over folds)"))
        best = results.best()
        cm, lab = results.confusion(best["layer"], best["classifier"], best["train_set"])
        files.append(confusion_heatmap(cm, lab, out / f"{name}_confusion.png",
                                       title=f"train {best['train_set']} → test {best['test_set']}, "
                                             f"layer {best['layer']}, {best['classifier']} (UAR {best['uar']:.3f})"))
    return files


def run_matrix(corpora: Sequence[str], *, layer: int, model: str, cache: str | Path = "cache",
               classifier: str = "logreg", stat: str = "mean", C: float | None = None,
               out: str | Path | None = None, device: str | None = None):
    """Train corpus x test corpus UAR at one layer; diagonal on each corpus' standard folds."""
    from classifiers.plots import transfer_heatmap
    from featstore.folds import make_folds, standard_protocol
    from featstore.store import open_store

    feats, utts, folds = {}, {}, {}
    for c in corpora:
        fs = open_store(store_for(cache, model, c))
        k = parse_layers(str(layer), fs.num_layers)[0]
        X = fs.pooled(k, stat)[:, None, :]
        feats[c], utts[c] = X, fs.utterances
        folds[c] = make_folds(fs.utterances, standard_protocol(c))
    M, details = transfer_matrix(feats, utts, list(corpora), 0, within_folds=folds, classifier=classifier, C=C,
                                 device=device)
    files = []
    if out is not None:
        import json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files.append(transfer_heatmap(M, corpora, out / "transfer_matrix.png",
                                      title=f"train × test UAR, layer {layer} ({classifier})"))
        (out / "transfer_matrix.json").write_text(json.dumps(dict(
            corpora=list(corpora), layer=layer, model=model, uar=M.tolist(),
            cells=[dict(train=a, test=b, **{k: v for k, v in d.items() if k != "dropped"}, dropped=d["dropped"])
                   for (a, b), d in details.items()]), indent=1, default=float))
        files.append(out / "transfer_matrix.json")
    return M, details, files


def fit_and_save_probe(directory: str | Path, train: Sequence[str], *, layer: str, stat: str, model: str,
                       cache: str | Path = "cache", C: float | None = None, device: str | None = None) -> Path:
    """Fit `LogRegProbe` on every utterance of the training corpora at one layer and save it."""
    from classifiers.linear import LogRegProbe
    from classifiers.predict import save_probe
    from featstore.store import open_store

    corpora = [c for t in train for c in t.split(",") if c]
    fs = open_store(*[store_for(cache, model, c) for c in corpora])
    layers = parse_layers(layer, fs.num_layers)
    if len(layers) != 1:
        raise SerError(f"--save-probe needs one layer (e.g. --layer 12), not {layer!r}")
    X = fs.pooled(layers[0], stat)
    clf = LogRegProbe(C=C, device=device).fit(X, [u.label for u in fs.utterances],
                                              groups=[u.speaker for u in fs.utterances])
    return save_probe(directory, fs.config["model_id"], layers[0], stat, clf.mean_, clf.scale_, clf.coef_,
                      clf.intercept_, list(clf.classes_), max_seconds=fs.config.get("max_seconds", 30.0),
                      weights_sha256=fs.config.get("weights_sha256"),
                      extra=dict(trained_on=corpora, C=clf.C_, n=len(fs)))
