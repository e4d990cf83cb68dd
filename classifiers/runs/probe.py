"""`ser probe`: layer sweeps over cached features, within-corpus, multi-corpus and cross-corpus.

Reads features only through `featstore.store`; builds folds with `featstore.folds`; runs a
`classifiers.runs.crossval.CLASSIFIERS` entry over layers x folds x seeds; writes results (JSON,
CSV) and plots into a directory of its own (never over earlier results).
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifiers.results.records import ProbeResults
from classifiers.results.runfiles import Registered, _needed, fingerprints, load_registered, registered_files
from classifiers.runs.crossval import check_params, transfer_matrix
from classifiers.runs.runpaths import _layer_tag, default_out, frame_layers, store_for  # noqa: F401 - re-exported
from featstore.errors import SerError
from featstore.store import cached_corpora, parse_layers


@dataclass
class ProbeRun:
    """One probe run: its results, the files written, and its wall time."""

    results: ProbeResults
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _class_policy(classes: str | None, train_corpora: Sequence[str], test_corpora: Sequence[str], utts) -> dict:
    """The harmonisation of a run: policy, and the declared label sets of both sides.

    Within-corpus: the fold's training classes (policy None). Training corpora differing from
    the test corpora: `classes` ("shared" by default when the test corpora are not trained on)."""
    from classifiers.results.records import declared_labels

    if set(train_corpora) == set(test_corpora):
        return dict(policy=None)
    cross = not set(train_corpora) & set(test_corpora)
    policy = classes or ("shared" if cross else None)
    train_labels = declared_labels(train_corpora, utts)
    test_labels = declared_labels(test_corpora, utts)
    shared = train_labels & test_labels
    return dict(policy=policy, shared=shared, info=dict(
        policy=policy or "train", shared=sorted(shared), train_only=sorted(train_labels - test_labels),
        test_only=sorted(test_labels - train_labels)))


def run_probe(corpus: str | None, *, layers: str | Sequence[int] = "all", classifier: str = "logreg",
              protocol: str | None = None, stat: str = "mean", train: Sequence[str] | None = None,
              test: Sequence[str] | None = None, seeds: int | Sequence[int] = 1, model: str, cache: str | Path = "cache",
              out: str | Path | None = None, C: float | None = None, device: str | None = None,
              shuffle_labels: bool = False, plots: bool = True, classes: str | None = None,
              overwrite: bool = False, progress: bool = False, params: dict | None = None) -> ProbeRun:
    """Probe `layers` of the cached features of `corpus` (or train on `train`, test on `test`).

    train: one or more training sets, each a comma-separated corpus list ("ravdess,emodb"); each
    is tested on `corpus`' speaker-independent folds (multi-corpus), or, with `test`, on all of
    the test corpora (cross-corpus). classifier: a `classifiers.runs.crossval.CLASSIFIERS` name.
    classes: where training and test corpora differ, "shared" (default cross-corpus: train on and
    predict among the classes both sides declare, other test rows dropped and counted) or "all"
    (every test row, model as trained); see `classifiers.results.records.harmonise`.
    out: results directory, refused when it already holds files unless `overwrite`.
    progress: a rich bar over layer x fold x seed with ETA, on stderr.
    params: probe options (`crossval.PROBE_OPTIONS`): class_weight "balanced", speaker_norm (each
    speaker standardised with their own utterances), early_stopping False (XGBoost).
    """
    from classifiers.results.records import check_out
    from classifiers.runs.crossval import (
        FRAME_CLASSIFIERS,
        ProbeTask,
        check_classifier,
        check_policy,
        progress_bar,
        run_classifier,
    )
    from featstore.folds import cross_corpus_folds, make_folds, multi_corpus_folds, standard_protocol
    from featstore.store import open_store

    t0 = time.monotonic()
    check_classifier(classifier)
    check_policy(classes)
    train_sets = [t for t in (train or []) if t] or ([corpus] if corpus else [])
    if not train_sets:
        raise SerError("name a corpus (--corpus) or training corpora (--train)")
    test_corpora = [c for t in (test or []) for c in t.split(",") if c]
    target = corpus or (test_corpora[0] if test_corpora else train_sets[0].split(",")[0])
    protocol = protocol or standard_protocol(target)
    if classifier == "knn":
        from classifiers.estimators.knn_index import faiss_module

        faiss_module()  # a missing optional dependency fails before any work
    if out is not None:
        out = check_out(out, overwrite)
    results = ProbeResults()
    stores, class_info = [], {}
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
        if classifier in FRAME_CLASSIFIERS:
            layer_list = frame_layers(fs, layers, layer_list, f"the {classifier} probe")
        harmony = _class_policy(classes, tcorpora, test_corpora or [target], utts)
        if "info" in harmony:
            class_info[tset] = harmony["info"]
        task = ProbeTask(fs, utts, folds, layer_list, seeds=tuple(seed_list(seeds)), stat=stat, policy=harmony["policy"],
                         shared=harmony.get("shared"), shuffle_labels=shuffle_labels, train_set=tset,
                         test_set=test_name, device=device, C=C, params=check_params(classifier, params))
        with progress_bar(task.units, f"{classifier} {tset}→{test_name}: layer×fold×seed",
                          enabled=progress) as advance:
            task.progress = advance
            results.extend(run_classifier(classifier, task))
    results.meta = dict(model=model, stores=sorted(set(stores)), protocol=protocol if not test_corpora else "cross-corpus",
                        stat=stat, classifier=classifier, seeds=seed_list(seeds), corpus=target,
                        train_sets=train_sets, test=test_corpora, C=C, shuffled=shuffle_labels, classes=class_info,
                        params=dict(params or {}))
    run = ProbeRun(results)
    if out is not None:
        run.files.extend(write_outputs(results, out, plots=plots))
    run.seconds = time.monotonic() - t0
    return run


def probe(corpus: str | None = None, *, layers: str = "all", classifier: str = "logreg", protocol: str | None = None,
          train: Sequence[str] | None = None, test: str | None = None, model: str, cache: str | Path = "cache",
          out: str | Path | None = None, overwrite: bool = False, **kw) -> list[ProbeRun]:
    """`ser probe`: `run_probe` on `corpus`, or on every corpus cached for `model` when neither a
    corpus nor training/test corpora are named. Each run writes to `out` (`out/<corpus>` when
    there are several), or by default to its own `default_out` directory.

    protocol: None = each corpus' configured protocol (`featstore.config.default_protocol`).
    kw: the other `run_probe` options (stat, seeds, C, device, classes, shuffle_labels, progress).
    """
    from classifiers.runs.crossval import check_classifier, check_policy
    from featstore.config import default_protocol

    check_classifier(classifier)
    check_policy(kw.get("classes"))
    targets = cached_corpora(cache, model) if corpus is None and not train and not test else [corpus]
    runs = []
    for target in targets:
        prot = protocol or (default_protocol(target) if target else None)
        settings = dict(corpus=target, train=list(train or []), test=test, classifier=classifier, layers=layers,
                        protocol=prot, **{k: v for k, v in kw.items() if k not in ("progress", "device")})
        o = (Path(out) / target if len(targets) > 1 else Path(out)) if out else \
            default_out("probe", target or f"{'+'.join(train or [])}-to-{test}", model, settings)
        runs.append(run_probe(target, layers=layers, classifier=classifier, protocol=prot, train=train,
                              test=[test] if test else None, model=model, cache=cache, out=o, overwrite=overwrite, **kw))
    return runs


def _aggregated(results: ProbeResults, **where) -> str:
    """'mean over 5 folds × 1 seed' for the records matching `where`."""
    recs = [r for r in results.records if all(r.get(k) == v for k, v in where.items())]
    per_setting: dict = {}                  # folds of one setting: several training sets are not several folds
    for r in recs:
        per_setting.setdefault((r.get("train_set"), r.get("classifier"), r.get("layer")), set()).add(r["fold"])
    n_folds = max(map(len, per_setting.values()), default=0)
    n_seeds = len({r["seed"] for r in recs})
    cross = recs and all(str(r["fold"]).startswith("train-") for r in recs)
    splits = "one train→test split" if cross and n_folds == 1 else f"{n_folds} fold{'s' * (n_folds != 1)}"
    return f"{splits} × {n_seeds} seed{'s' * (n_seeds != 1)}"


def write_outputs(results: ProbeResults, out: Path, *, plots: bool = True, name: str = "probe") -> list[Path]:
    from classifiers.results.records import write_results

    files = list(write_results(results, out, name, summary_csv=True))
    if results.predictions:
        from classifiers.results.predictions import write_predictions

        files.append(write_predictions(results.predictions, out / f"{name}_predictions.parquet"))
    if plots:
        files.extend(draw_figures(results, out, name=name))
    return files


def draw_figures(results: ProbeResults, out: Path, *, name: str = "probe") -> list[Path]:
    """The run's figures ({name}_layers, {name}_confusion), in the current figure formats
    (`classifiers.results.plots.figure_formats`), drawn from its records alone: a registered run's folder
    gets the formats it lacks without computing anything again."""
    from classifiers.results.plots import confusion_heatmap, figure_paths, layer_curve
    from classifiers.results.records import ci_text

    files: list[Path] = []
    if results.records:
        labels = results.records[0]["labels"]
        chance = 1.0 / len(labels) if labels else None
        meta = results.meta
        layers = sorted({r["layer"] for r in results.records}, key=str)
        what = "by layer" if len(layers) > 1 else f"at layer {layers[0]}"
        files.extend(figure_paths(layer_curve(results, out / f"{name}_layers.png", chance=chance,
                                              title=f"{meta.get('corpus', '')}: UAR {what}, model "
                                                    f"{meta.get('model', '?')}\n({meta.get('protocol', '')}; "
                                                    f"{_aggregated(results)})")))
        best = results.best()
        cm, lab = results.confusion(best["layer"], best["classifier"], best["train_set"])
        over = _aggregated(results, layer=best["layer"], classifier=best["classifier"], train_set=best["train_set"])
        files.extend(figure_paths(confusion_heatmap(
            cm, lab, out / f"{name}_confusion.png",
            title=f"model {meta.get('model', '?')}, layer {best['layer']}, {best['classifier']}\ntrain "
                  f"{best['train_set']} → test {best['test_set']}, summed over {over} (pooled UAR {ci_text(best)})")))
    return files


def run_matrix(corpora: Sequence[str], *, layer: str | int, model: str, cache: str | Path = "cache",
               classifier: str = "logreg", stat: str = "mean", C: float | None = None,
               out: str | Path | None = None, device: str | None = None, classes: str | None = None,
               overwrite: bool = False, progress: bool = False, protocol: str | None = None):
    """Train corpus x test corpus UAR at one layer; diagonal on each corpus' standard folds.

    protocol: the diagonal's folds instead of each corpus' standard ones; "emobox-track2" also
    keeps only each corpus' EmoBox cross-corpus subset, so every cell trains on one subset and
    tests on another.

    layer: one layer spec ("12", "-1"); a multi-layer spec is refused. classes: off-diagonal
    harmonisation ("shared" by default, see `run_probe`). Writes transfer_matrix.{png,json,csv}
    (every file names the model and the stored layer) to `out`, refused when it holds files
    unless `overwrite`, and every cell's records and per-utterance predictions as a probe run's
    files (probe.json, probe.csv, probe_predictions.parquet: `matrix_results`), so each cell is a
    scored setting (train_set, test_set) with speaker CIs that `ser results compare` pairs.
    Returns (matrix (n, n) UAR, {(train, test): summary + the cell's `ProbeResults` as "results"},
    files).
    """
    from classifiers.results.plots import figure_paths, transfer_heatmap
    from classifiers.results.records import check_out, versions
    from classifiers.runs.crossval import FRAME_CLASSIFIERS, check_classifier, check_policy, progress_bar
    from featstore.folds import make_folds, standard_protocol, track2_indices
    from featstore.outputs import write_text
    from featstore.serialize import dumps
    from featstore.store import open_store

    if check_classifier(classifier) in FRAME_CLASSIFIERS:
        raise SerError(f"--matrix runs on pooled features; the {classifier} probe reads frames: "
                       "use --classifier logreg, xgboost or knn")
    policy = check_policy(classes) or "shared"
    if out is not None:
        out = check_out(out, overwrite)
    feats, utts, folds = {}, {}, {}
    k = None
    for c in corpora:
        fs = open_store(store_for(cache, model, c))
        ks = parse_layers(str(layer), fs.num_layers)
        if len(ks) != 1:
            raise SerError(f"--matrix needs one layer (e.g. --layer 12), not {str(layer)!r}")
        k = ks[0]
        keep = track2_indices(fs.utterances) if protocol == "emobox-track2" else list(range(len(fs.utterances)))
        feats[c], utts[c] = fs.pooled(k, stat)[keep][:, None, :], [fs.utterances[i] for i in keep]
        folds[c] = make_folds(utts[c], protocol or standard_protocol(c))
    with progress_bar(len(corpora) ** 2, f"{classifier} transfer matrix: train×test", progress) as advance:
        M, details = transfer_matrix(feats, utts, list(corpora), 0, within_folds=folds, classifier=classifier, C=C,
                                     device=device, policy=policy, layer=k, progress=advance)
    files = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        P = pooled_matrix(details, corpora)
        files.extend(figure_paths(transfer_heatmap(P, corpora, out / "transfer_matrix.png",
                                      title=f"train × test pooled UAR, model {model}, layer {k} ({classifier}; "
                                            f"diagonal: each corpus' folds pooled, off-diagonal: classes {policy})")))
        cells = [dict(train=a, test=b, **{key: v for key, v in d.items() if key != "results"})
                 for (a, b), d in details.items()]
        files.append(write_text(out / "transfer_matrix.json", dumps(dict(
            corpora=list(corpora), layer=k, model=model, classifier=classifier, stat=stat, classes=policy,
            headline="pooled: UAR of every test prediction of a cell, with its 95% speaker CI in cells; "
                     "uar: mean over the cell's folds (the diagonal's folds; one split off the diagonal)",
            pooled=P.tolist(), uar=M.tolist(), cells=cells, versions=versions()), indent=1)))
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        extra = ["pooled", "ci_low", "ci_high", "ci_method", "n_speakers", "n_folds", "n_classes", "chance"]
        w.writerow(["model", "layer", "classifier", "train", "test", "uar", "uar_std", "wa", "macro_f1", "n", *extra])
        for c in cells:
            w.writerow([model, k, classifier, c["train"], c["test"], c["uar"], c["uar_std"], c["wa"],
                        c["macro_f1"], c["n"], *["" if c.get(x) is None else c[x] for x in extra]])
        files.append(write_text(out / "transfer_matrix.csv", buf.getvalue()))
        results = matrix_results(details, model=model, corpora=corpora, classifier=classifier, stat=stat,
                                 C=C, policy=policy, protocol=protocol, layer=k)
        files.extend(write_outputs(results, out, plots=False))
    return M, details, files


def matrix_results(details: dict, *, model: str, corpora: Sequence[str], classifier: str, stat: str,
                   C: float | None, policy: str, protocol: str | None, layer: int) -> ProbeResults:
    """Every cell of `run_matrix`'s `details` as one `ProbeResults`: each cell's records and
    predictions keep its train_set and test_set, so a cell is one setting (train, test,
    classifier, layer) of the run, scored, resampled and compared like a probe's."""
    results = ProbeResults()
    for d in details.values():
        results.extend(d["results"])
    results.meta = dict(kind="matrix", model=model, corpus=",".join(corpora), corpora=list(corpora),
                        classifier=classifier, stat=stat, C=C, classes=policy, layer=layer,
                        protocol=protocol or "standard", seeds=[0])
    return results


def read_matrix(out: str | Path) -> dict:
    """The cells of a matrix run's transfer_matrix.json as `run_matrix`'s details ({(train, test):
    summary}), for showing a registered run without computing it again."""
    import json

    from classifiers.results.records import ResultsError

    path = Path(out) / "transfer_matrix.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {(c["train"], c["test"]): c for c in data["cells"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{path}: cannot read the transfer matrix ({e}); re-run with --force") from e


def matrix_config(corpora: Sequence[str], *, layer: str | int, model: str, classifier: str = "logreg",
                  stat: str = "mean", C: float | None = None, classes: str | None = None,
                  protocol: str | None = None) -> dict:
    """A matrix run's configuration as the registry keys it: the corpora in order (rows and
    columns), the layer as given, the classifier, stat, C, the off-diagonal class policy
    (None is "shared", its default, so both spellings are one run), the diagonal's protocol
    (None: each corpus' standard one) and the model."""
    from classifiers.runs.crossval import check_policy

    return dict(corpora=list(corpora), layer=str(layer).strip(), classifier=classifier, stat=stat,
                C=None if C is None else float(C), classes=check_policy(classes) or "shared", protocol=protocol,
                model=model)


def registered_matrix(corpora: Sequence[str], *, layer: str | int, model: str, cache: str | Path, registry,
                      classifier: str = "logreg", stat: str = "mean", C: float | None = None,
                      classes: str | None = None, protocol: str | None = None, force: bool = False,
                      out: str | Path | None = None, overwrite: bool = False, device: str | None = None,
                      progress: bool = False, command: str = ""):
    """`run_matrix` through the run registry (kind "matrix"), as `registered_probe` does for probes.

    The key: `matrix_config` and the `store_fingerprint` of every corpus' store. An identical
    configuration over identical stores returns the registered run (reused=True; its cells read
    back from its folder, nothing computed) unless `force`; a forced run never writes over the
    folder of the run registered before. Returns (`classifiers.runs.study.Registered`, details).
    """
    from classifiers.results.registry import run_key
    from classifiers.results.runfiles import Registered, fingerprints, load_registered, registered_files

    config = matrix_config(corpora, layer=layer, model=model, classifier=classifier, stat=stat, C=C,
                           classes=classes, protocol=protocol)
    stores = fingerprints(cache, model, list(corpora))
    found = None if force else registry.find("matrix", config, stores)
    if found is not None and registered_files(found) and (Path(found["out"]) / "transfer_matrix.json").exists():
        return Registered(found, load_registered(found), reused=True), read_matrix(found["out"])
    if out is None:
        settings = {k: v for k, v in config.items() if k not in ("model", "layer")}
        from classifiers.results.records import forced_dir

        out = forced_dir(default_out("matrix", "+".join(corpora), model, {**settings, "layers": config["layer"]}), force)
    try:
        M, details, files = run_matrix(corpora, layer=layer, model=model, cache=cache, classifier=classifier,
                                       stat=stat, C=C, classes=classes, device=device, overwrite=overwrite,
                                       progress=progress, protocol=protocol, out=out)
        results = matrix_results(details, model=model, corpora=corpora, classifier=classifier, stat=stat, C=C,
                                 policy=config["classes"], protocol=protocol,
                                 layer=next(iter(details.values()))["layer"])
        predictions = next((f for f in files if f.suffix == ".parquet"), None)
        run_id = registry.register(kind="matrix", config=config, stores=stores, results=results, command=command,
                                   out=out, predictions=predictions)
    except BaseException:
        registry.release(run_key("matrix", config, stores))  # a failed run never blocks an identical one
        raise
    return Registered(registry.run(run_id), results, reused=False, files=files), details


def pooled_matrix(details: dict, corpora: Sequence[str]):
    """`(n, n)` pooled UAR of `run_matrix`'s cells (train row, test column; NaN where missing)."""
    import numpy as np

    P = np.full((len(corpora), len(corpora)), np.nan)
    for i, a in enumerate(corpora):
        for j, b in enumerate(corpora):
            value = details.get((a, b), {}).get("pooled")
            if value is not None:
                P[i, j] = value
    return P


def fit_and_save_probe(directory: str | Path, train: Sequence[str], *, layer: str, stat: str, model: str,
                       cache: str | Path = "cache", C: float | None = None, device: str | None = None) -> Path:
    """Fit `LogRegProbe` on every utterance of the training corpora at one layer and save it."""
    from classifiers.estimators.linear import LogRegProbe
    from classifiers.finetuning.inference import save_probe
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


# -- registered probe runs (the run registry, kind "probe") ---------------------------------

def complete_figures(run: dict, results) -> list[Path]:
    """Draw a registered probe run's figures in the current formats its folder lacks (a run made
    with png, asked again with --format pdf); nothing is computed again. Returns the files drawn.
    A folder that cannot be written (another user's) keeps what it has, with one warning."""
    from classifiers.results.plots import current_formats, figure_formats

    out = Path(run["out"])
    missing = [f for f in current_formats() if not (out / f"probe_layers.{f}").exists()]
    if run["kind"] != "probe" or not missing or not out.is_dir():
        return []
    try:
        with figure_formats(missing):
            return draw_figures(results, out)
    except (OSError, SerError) as e:
        warnings.warn(f"run {run['id']}: its figures as {', '.join(missing)} could not be drawn in {out} "
                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); the run's scores are unchanged", stacklevel=2)
        return []


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """The seeds of a probe: a count N is seeds 0..N-1 (the library's old spelling), a list is itself."""
    return list(range(seeds)) if isinstance(seeds, int) else sorted({int(s) for s in seeds})


def probe_config(corpus: str | None, *, model: str, train: Sequence[str] | None = None, test: str | None = None,
                 layers: str = "all", classifier: str = "logreg", protocol: str | None = None, stat: str = "mean",
                 seeds: int | Sequence[int] = 1, C: float | None = None, classes: str | None = None,
                 shuffle_labels: bool = False, params: dict | None = None) -> dict:
    """A probe run's configuration as the registry keys it (CONFIG_KEYS, plus `params` when set);
    `seeds` keyed as a count N when they are 0..N-1 (as runs were registered before --seed took a
    spec), else as the list."""
    from featstore.config import default_protocol

    protocol = protocol or (default_protocol(corpus) if corpus else None)
    seeds = seed_list(seeds)
    seeds = len(seeds) if seeds == list(range(len(seeds))) else seeds
    config = dict(corpus=corpus, train=list(train or []), test=test, classifier=classifier, layers=layers,
                  protocol=protocol, stat=stat, seeds=seeds, C=C, classes=classes, shuffle_labels=shuffle_labels,
                  model=model)
    if params:  # probe options join the key only when set, so runs registered without them keep their key
        config["params"] = dict(sorted(params.items()))
    return config


def registered_probe(corpus: str | None, *, model: str, cache, registry, force: bool = False,
                     train: Sequence[str] | None = None, test: str | None = None, layers: str = "all",
                     classifier: str = "logreg", protocol: str | None = None, stat: str = "mean", seeds: int | Sequence[int] = 1,
                     C: float | None = None, classes: str | None = None, shuffle_labels: bool = False,
                     out=None, overwrite: bool = False, device: str | None = None, progress: bool = False,
                     command: str = "", params: dict | None = None) -> Registered:
    """`run_probe` on one test corpus, through the registry `registry` (a `Registry`).

    The configuration (CONFIG_KEYS) and the fingerprints of the stores read make the run's key:
    a registered run with the same key is returned (reused=True) unless `force`. Otherwise the
    probe runs, writes its files (`out`, default `default_out`) and is registered.
    """
    from classifiers.results.records import forced_dir
    from classifiers.results.registry import run_key

    config = probe_config(corpus, model=model, train=train, test=test, layers=layers, classifier=classifier,
                          protocol=protocol, stat=stat, seeds=seeds, C=C, classes=classes,
                          shuffle_labels=shuffle_labels, params=params)
    protocol, train = config["protocol"], config["train"]
    stores = fingerprints(cache, model, _needed(corpus, train, test))
    found = None if force else registry.find("probe", config, stores)
    if found is not None and registered_files(found):
        results = load_registered(found)
        return Registered(found, results, reused=True, files=complete_figures(found, results))
    settings = {k: v for k, v in config.items() if k != "model"}
    if out is None:
        out = forced_dir(default_out("probe", corpus or f"{'+'.join(train)}-to-{test}", model, settings), force)
    try:
        run = run_probe(corpus, layers=layers, classifier=classifier, protocol=protocol, stat=stat,
                        train=train or None, test=[test] if test else None, seeds=seeds, model=model, cache=cache,
                        out=out, C=C, device=device, shuffle_labels=shuffle_labels, classes=classes,
                        overwrite=overwrite, progress=progress, params=params)
        predictions = next((f for f in run.files if f.suffix == ".parquet"), None)
        run_id = registry.register(kind="probe", config=config, stores=stores, results=run.results,
                                   command=command, out=out, predictions=predictions)
    except BaseException:
        registry.release(run_key("probe", config, stores))  # a failed run never blocks an identical one
        raise
    return Registered(registry.run(run_id), run.results, reused=False, files=run.files)
