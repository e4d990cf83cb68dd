"""`ser probe --target arousal|valence|dominance|avd`: which layer carries which emotion dimension.

The dimensional counterpart of `classifiers.runs.probe.run_probe` (issue 25): the same stores, the same
speaker-independent folds (`featstore.folds`), the same honest selection (alpha chosen by inner
group k-fold over each outer fold's training speakers only, `classifiers.estimators.regression.sweep_ridge`,
one batched solve per layer), scored by the concordance correlation coefficient (Lin 1989) per
dimension, with Pearson r and RMSE beside it.

Targets are the corpus' arousal / valence / dominance annotations (`Utterance.arousal`, ...),
mapped linearly from each corpus' declared scale onto [-1, 1]
(`featstore.corpora.base.dimension_array`), so several corpora train and test together; rows
without the target (a corpus without dimensions, or an unannotated clip) are left out and
counted. CCC is invariant to that common affine map of truth and prediction, so within-corpus
scores equal those on the raw scale.

Headline per (layer, dimension): the CCC of every test prediction pooled over folds, with its 95%
jackknife-t interval over test speakers (`regression.ccc_interval`: each replicate recomputes the
CCC without one speaker; CCC is not a mean of per-utterance terms); the mean ± std over folds
beside it, named. Records (one per layer x fold) carry `ccc_<dim>`, `pearson_<dim>`, `rmse_<dim>`
and `ccc` (the mean over the target's dimensions): the metrics `ser results` lists.

Files (the run's own directory, never over earlier results): `probe.json` (records, summary,
meta), `probe_summary.csv`, `probe_predictions.csv` (id, speaker, corpus, fold, layer, true and
predicted value per dimension), `probe_layers.png` (CCC per layer per dimension, CI band) and
`probe_scatter.png` (predicted against true at the best layer).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifiers.runs.targets import (  # noqa: F401 - re-exported: the names' old home
    FRAME_REGRESSORS,
    REGRESSOR_CLASSES,
    TARGETS,
    TargetError,
    dimensional_probes,
    target_dimensions,
)
from featstore.errors import SerError


@dataclass
class DimensionalRun:
    """One dimensional probe run: its records, summary rows, meta, the files written, the wall time."""

    records: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    predictions: dict = field(default_factory=dict, repr=False)

    def best(self, dimension: str | None = None) -> dict:
        """The summary row with the highest pooled CCC of `dimension` (None: the target's mean)."""
        key = f"ccc_{dimension}_pooled" if dimension else "ccc_pooled"
        return max(self.summary, key=lambda r: (_num(r.get(key)), -_num(r["layer"])))


def _num(value) -> float:
    import numpy as np

    return -np.inf if value is None or value != value else float(value)


def _folds(utts, corpus: str, train_corpora: Sequence[str], test_corpora: Sequence[str], protocol: str):
    from featstore.folds import cross_corpus_folds, make_folds, multi_corpus_folds

    if test_corpora:
        if set(train_corpora) & set(test_corpora):
            raise SerError(f"training corpora {list(train_corpora)} and test corpora {list(test_corpora)} overlap; "
                           "for within-corpus results leave out --test")
        return cross_corpus_folds(utts, train_corpora, test_corpora)
    extra = [c for c in train_corpora if c != corpus]
    return multi_corpus_folds(utts, corpus, protocol, extra) if extra else make_folds(utts, protocol)


def run_dimensional(corpus: str | None, *, target: str, model: str, cache: str | Path = "cache",
                    layers: str | Sequence[int] = "all", protocol: str | None = None, stat: str = "mean",
                    train: Sequence[str] | None = None, test: Sequence[str] | None = None,
                    alpha: float | None = None, out: str | Path | None = None, overwrite: bool = False,
                    plots: bool = True, progress: bool = False, inner_folds: int = 3, seed: int = 0,
                    regressor: str = "ridge") -> DimensionalRun:
    """Probes of `layers` predicting `target`'s dimensions from the cached features of `corpus`
    (or trained on `train`, tested on `corpus`' folds or on `test` corpora).

    regressor: "ridge" (the batched sweep, alpha by inner speaker CV) or another of
    `dimensional_probes()`, fitted once per layer and fold on the fold's training rows with its
    speakers (XGBoost's early stopping holds out training speakers; `regression.fold_predictions`).

    alpha: fixed ridge penalty (None: chosen per layer and fold by inner speaker CV over
    `regression.DEFAULT_ALPHAS`, extended past an edge while the inner CCC rises). out: results
    directory, refused when it already holds files unless `overwrite`.
    """
    import numpy as np

    from classifiers.estimators.regression import fold_predictions, inner_group_masks, scores, sweep_ridge
    from classifiers.results.records import check_out
    from classifiers.runs.progress import progress_bar
    from classifiers.runs.runpaths import frame_layers, store_for
    from featstore.corpora.base import dimension_array
    from featstore.folds import standard_protocol
    from featstore.store import open_store, parse_layers

    t0 = time.monotonic()
    names = target_dimensions(target)
    if not names:
        raise TargetError("target 'emotion' is the categorical probe (classifiers.runs.probe.run_probe)")
    if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
        raise SerError(f"--alpha must be a positive number, got {alpha!r}")
    if regressor not in REGRESSOR_CLASSES:
        raise SerError(f"unknown regressor {regressor!r}; choose one of {', '.join(REGRESSOR_CLASSES)}")
    frame = regressor in FRAME_REGRESSORS
    if alpha is not None and regressor != "ridge":
        raise SerError(f"--alpha is ridge's penalty; the {regressor} regressor has none")
    train_sets = [t for t in (train or []) if t]
    if len(train_sets) > 1:
        raise SerError("a dimensional probe takes one training set (corpora joined by commas train together)")
    tcorpora = [c for c in (train_sets[0] if train_sets else corpus or "").split(",") if c]
    test_corpora = [c for t in (test or []) for c in t.split(",") if c]
    if not tcorpora:
        raise SerError("name a corpus (--corpus) or training corpora (--train)")
    target_corpus = corpus or (test_corpora[0] if test_corpora else tcorpora[0])
    protocol = protocol or standard_protocol(target_corpus)
    if out is not None:
        out = check_out(out, overwrite)

    needed = list(dict.fromkeys(tcorpora + (test_corpora or [target_corpus])))
    fs = open_store(*[store_for(cache, model, c) for c in needed])
    layer_list = parse_layers(layers, fs.num_layers)
    if frame:                       # the attention regressor reads the stored frames of its layers
        layer_list = frame_layers(fs, layers, layer_list, f"the {regressor} regressor")
    utts_all = fs.utterances
    Y_all = dimension_array(utts_all, names, scales=fs.dimension_scales, normalised=True)
    keep = np.isfinite(Y_all).all(1)
    left_out = {}
    for c in needed:
        n_c = sum(u.corpus == c for u in utts_all)
        n_kept = int(sum(k for u, k in zip(utts_all, keep) if u.corpus == c))
        if n_kept == 0:
            raise TargetError(f"{c} has no {'/'.join(names)} annotations in {store_for(cache, model, c)}: "
                              f"dimensional targets need a corpus that has them (iemocap, msppodcast, mspimprov, "
                              f"or a CSV corpus with arousal,valence,dominance columns; re-run `ser extract` on a "
                              f"store written before dimensions were stored)")
        if n_kept < n_c:
            left_out[c] = n_c - n_kept
    rows = np.flatnonzero(keep)
    utts = [utts_all[i] for i in rows]
    Y = Y_all[rows]
    folds = _folds(utts, target_corpus, tcorpora, test_corpora, protocol)
    speakers = np.array([u.speaker for u in utts])
    masks = []
    for f in folds:
        m = np.zeros(len(utts), dtype=bool)
        m[f.train] = True
        masks.append(m)
    inner = None if alpha is not None or regressor != "ridge" else [inner_group_masks(m, speakers, inner_folds, seed) for m in masks]
    train_name, test_name = ",".join(tcorpora), ",".join(test_corpora) or target_corpus

    run = DimensionalRun()
    pred = np.empty((len(layer_list), len(folds), len(utts), len(names)))
    with progress_bar(len(layer_list), f"{regressor} {train_name}→{test_name} ({'/'.join(names)}): layer",
                      enabled=progress) as advance:
        for li, layer in enumerate(layer_list):
            X = None if frame else fs.pooled(layer, stat)[rows]
            if frame:
                clips = [fs.frames(layer, int(i)).astype(np.float32) for i in rows]
                pred[li] = np.stack([_fit_clips(regressor, clips, Y, m, speakers, seed) for m in masks])
            elif regressor == "ridge":
                sweep = sweep_ridge(X, Y, masks, speakers, alpha=alpha, inner=inner, inner_folds=inner_folds,
                                    seed=seed)
                pred[li] = sweep.predict[0]
            else:
                pred[li] = fold_predictions(regressor, X, Y, masks, speakers, seed=seed)
            for fi, f in enumerate(folds):
                s = scores(Y[f.test], pred[li, fi, f.test], names)
                chosen = (dict(alpha=float(sweep.alpha[0, fi]), alpha_at_bound=bool(sweep.at_bound[0, fi]))
                          if regressor == "ridge" else {})
                run.records.append(dict(
                    layer=int(layer), fold=f.name, n_train=int(len(f.train)), n_test=int(len(f.test)),
                    classifier=regressor, seed=seed, train_set=train_name, test_set=test_name, target=target,
                    **chosen, **s))
            advance(1)
    run.summary = _summary(run.records, Y, pred, folds, speakers, layer_list, names)
    run.predictions = dict(utterances=utts, folds=folds, layers=list(layer_list), names=names, y=Y, pred=pred)
    run.meta = dict(kind="probe", target=target, dimensions=list(names), model=model, corpus=target_corpus,
                    protocol=protocol if not test_corpora else "cross-corpus", stat=stat, classifier=regressor,
                    train_sets=[train_name], test=test_corpora, alpha=alpha, inner_folds=inner_folds, seed=seed,
                    stores=sorted(str(p) for p in fs.paths), scale="[-1, 1] (each corpus' declared scale mapped linearly)",
                    scales={c: list(s) for c, s in fs.dimension_scales.items()}, left_out=left_out,
                    n_utterances=len(utts))
    if out is not None:
        run.files = write_dimensional(run, Path(out), plots=plots)
    run.seconds = time.monotonic() - t0
    return run


def _fit_clips(name: str, clips: list, Y, train_mask, speakers, seed: int):
    """A frame-level regressor (`FRAME_REGRESSORS`) fitted on one fold's training clips (their speakers
    as groups: early stopping holds out whole training speakers), predicting every clip: (N, T)."""
    import numpy as np

    from classifiers.estimators.regression import make_regressor

    est = make_regressor(name)
    if "random_state" in est.get_params():
        est.set_params(random_state=seed)
    idx = np.flatnonzero(train_mask)
    est.fit([clips[i] for i in idx], Y[idx], groups=speakers[idx])
    return np.asarray(est.predict(clips)).reshape(len(clips), -1)


def _summary(records, Y, pred, folds, speakers, layer_list, names) -> list[dict]:
    """One row per layer: per dimension the pooled CCC of every fold's test rows with its speaker
    jackknife-t CI, and the mean ± std over folds; the same for the mean over dimensions."""
    import numpy as np

    from classifiers.estimators.regression import ccc_interval

    rows = []
    tests = [f.test for f in folds]
    idx = np.concatenate(tests)
    for li, layer in enumerate(layer_list):
        P = np.concatenate([pred[li, fi, t] for fi, t in enumerate(tests)])
        T, G = Y[idx], speakers[idx]
        recs = [r for r in records if r["layer"] == layer]
        row = dict(layer=int(layer), n_folds=len(folds), n_test=int(len(idx)), n_speakers=int(len(set(G))))
        for key, cols in [(n, [k]) for k, n in enumerate(names)] + ([("mean", list(range(len(names))))]
                                                                     if len(names) > 1 else []):
            iv = ccc_interval(T[:, cols], P[:, cols], G)
            m = "ccc" if key == "mean" else f"ccc_{key}"
            per_fold = [r[m] for r in recs]
            row.update({f"{m}_pooled": iv.value, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high,
                        f"{m}_mean": float(np.mean(per_fold)),
                        f"{m}_std": float(np.std(per_fold)) if len(per_fold) > 1 else None})
        if len(names) == 1:
            for suffix in ("pooled", "ci_low", "ci_high", "mean", "std"):
                row[f"ccc_{suffix}"] = row[f"ccc_{names[0]}_{suffix}"]
        row["ci_method"] = "jackknife-t over test speakers"
        rows.append(row)
    return rows


def write_dimensional(run: DimensionalRun, out: Path, *, plots: bool = True, name: str = "probe") -> list[Path]:
    """The run's files (see the module docstring), each written atomically."""

    from classifiers.results.records import versions
    from featstore.outputs import write_text
    from featstore.serialize import dumps

    out.mkdir(parents=True, exist_ok=True)
    files = [write_text(out / f"{name}.json", dumps(dict(meta=run.meta, records=run.records, summary=run.summary,
                                                         versions=versions()), indent=1, sort_keys=True))]
    fields_ = ["layer"] + [k for k in run.summary[0] if k != "layer"] if run.summary else ["layer"]
    files.append(write_text(out / f"{name}_summary.csv", _csv(run.summary, fields_)))
    p = run.predictions
    if p:
        rows = []
        for li, layer in enumerate(p["layers"]):
            for fi, f in enumerate(p["folds"]):
                for i in f.test:
                    u = p["utterances"][i]
                    row = dict(id=u.id, speaker=u.speaker, corpus=u.corpus, fold=f.name, layer=layer)
                    for k, n in enumerate(p["names"]):
                        row[f"true_{n}"] = f"{p['y'][i, k]:.6g}"
                        row[f"pred_{n}"] = f"{p['pred'][li, fi, i, k]:.6g}"
                    rows.append(row)
        files.append(write_text(out / f"{name}_predictions.csv", _csv(rows, list(rows[0]) if rows else ["id"])))
    if plots and run.summary:
        files.extend(draw_dimensional(run, out, name=name))
    return files


def _csv(rows: Sequence[dict], fields_: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields_), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def draw_dimensional(run: DimensionalRun, out: Path, *, name: str = "probe") -> list[Path]:
    """`<name>_layers.png`: CCC per layer, one line per dimension; `<name>_scatter.png`: predicted
    against true at the best layer (by the target's pooled CCC), every fold's test rows (in each
    configured figure format)."""
    import numpy as np

    from classifiers.results.plots import dimension_layer_curve, figure_paths, prediction_scatter

    meta = run.meta
    curves = {n: [(r["layer"], r[f"ccc_{n}_pooled"], r[f"ccc_{n}_ci_low"], r[f"ccc_{n}_ci_high"])
                  for r in run.summary] for n in meta["dimensions"]}
    title = (f"{meta.get('corpus', '')}: CCC by layer, model {meta.get('model', '?')}\n"
             f"({meta.get('protocol', '')}; pooled over {run.summary[0]['n_folds']} folds, 95% speaker CI)")
    files = list(figure_paths(dimension_layer_curve(curves, out / f"{name}_layers.png", title=title)))
    p = run.predictions
    if p:
        layer = run.best()["layer"]
        li = p["layers"].index(layer)
        tests = [f.test for f in p["folds"]]
        y = p["y"][np.concatenate(tests)]
        pred = np.concatenate([p["pred"][li, fi, t] for fi, t in enumerate(tests)])
        files.extend(figure_paths(prediction_scatter(
            y, pred, out / f"{name}_scatter.png", list(p["names"]),
            title=f"{meta.get('corpus', '')}, layer {layer} ({meta.get('classifier', '')}): predicted vs true on "
                  f"[-1, 1], every fold's test rows")))
    return files


def summary_lines(run: DimensionalRun) -> list[str]:
    """Plain lines for the closing report: the best layer per dimension with its CI."""
    out = []
    for n in run.meta["dimensions"]:
        b = run.best(n)
        out.append(f"{n}: best layer {b['layer']}, CCC {b[f'ccc_{n}_pooled']:.3f} "
                   f"[{b[f'ccc_{n}_ci_low']:.3f}, {b[f'ccc_{n}_ci_high']:.3f}] (pooled over folds; "
                   f"mean over folds {b[f'ccc_{n}_mean']:.3f})"
                   + ("; no layer's interval lies above 0" if b[f"ccc_{n}_ci_low"] <= 0 else ""))
    return out


def summary_table(run: DimensionalRun, title: str = ""):
    """A rich table: layer, then per dimension the pooled CCC [CI] and the fold mean ± std."""
    from classifiers.results.records import table

    names = run.meta["dimensions"]
    one = len(names) == 1            # three dimensions' fold views would not fit 80 columns: the CSV has them
    # the jackknife-t interval is symmetric: value ± half-width says it exactly, in a cell that fits
    t = table("layer", *([f"{names[0]} CCC pooled [95% CI]", "folds mean ± std"] if one else
                         [f"{n} CCC ± 95% CI" for n in names]), title=title)
    for r in run.summary:
        cells = [str(r["layer"])]
        cells += [f"{r[f'ccc_{n}_pooled']:.3f} [{r[f'ccc_{n}_ci_low']:.3f}, {r[f'ccc_{n}_ci_high']:.3f}]" if one else
                  f"{r[f'ccc_{n}_pooled']:.3f} ± {(r[f'ccc_{n}_ci_high'] - r[f'ccc_{n}_ci_low']) / 2:.3f}"
                  for n in names]
        if one:
            std = r[f"ccc_{names[0]}_std"]
            cells.append(f"{r[f'ccc_{names[0]}_mean']:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        t.add_row(*cells)
    return t


def dimensional_config(corpus: str | None, *, target: str, model: str, train: Sequence[str] | None = None,
                       test: str | None = None, layers: str = "all", protocol: str | None = None,
                       stat: str = "mean", alpha: float | None = None, regressor: str = "ridge") -> dict:
    """The registry key's configuration of a dimensional probe (every option that changes a score)."""
    from featstore.folds import standard_protocol

    train = [t for t in (train or []) if t]
    where = corpus or (test.split(",")[0] if test else (train[0].split(",")[0] if train else ""))
    return dict(corpus=corpus, target=str(target).lower(), model=model, train=train, test=test, layers=str(layers),
                protocol=protocol or (standard_protocol(where) if where else None), stat=stat, alpha=alpha,
                classifier=regressor)


@dataclass
class RegisteredDimensional:
    """A dimensional run through the registry: the registry's row, the run, whether it was reused."""

    run: dict
    result: DimensionalRun
    reused: bool


def read_dimensional(out: str | Path, name: str = "probe") -> DimensionalRun:
    """A dimensional run read back from its folder's `<name>.json` (records, summary, meta)."""
    import json

    path = Path(out) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DimensionalRun(records=data["records"], summary=data["summary"], meta=data["meta"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SerError(f"{path}: not a readable dimensional probe result ({type(e).__name__}: {e})") from None


def registered_dimensional(corpus: str | None, *, target: str, model: str, cache, registry, force: bool = False,
                           train: Sequence[str] | None = None, test: str | None = None, layers: str = "all",
                           protocol: str | None = None, stat: str = "mean", alpha: float | None = None,
                           classifier: str = "ridge", out=None, overwrite: bool = False, progress: bool = False,
                           command: str = "") -> RegisteredDimensional:
    """`run_dimensional` through the registry, as `classifiers.runs.study.registered_probe` runs a probe:
    an identical configuration over identical stores returns the registered run unless `force`."""
    from classifiers.results.records import forced_dir
    from classifiers.results.registry import run_key
    from classifiers.results.runfiles import _needed, fingerprints
    from classifiers.runs.runpaths import default_out

    config = dimensional_config(corpus, target=target, model=model, train=train, test=test, layers=layers,
                                protocol=protocol, stat=stat, alpha=alpha, regressor=classifier)
    stores = fingerprints(cache, model, _needed(corpus, config["train"], test))
    found = None if force else registry.find("probe", config, stores)
    if found is not None and found.get("out") and (Path(found["out"]) / "probe.json").is_file():
        return RegisteredDimensional(found, read_dimensional(found["out"]), reused=True)
    if out is None:
        settings = {k: v for k, v in config.items() if k != "model"}
        out = forced_dir(default_out("probe", corpus or f"{'+'.join(config['train'])}-to-{test}", model, settings),
                         force)
    try:
        run = run_dimensional(corpus, target=target, model=model, cache=cache, layers=layers,
                              protocol=config["protocol"], stat=stat, train=config["train"] or None,
                              test=[test] if test else None, alpha=alpha, out=out, overwrite=overwrite,
                              progress=progress, regressor=classifier)
        run_id = registry.register(kind="probe", config=config, stores=stores, results=run, command=command, out=out)
    except BaseException:
        registry.release(run_key("probe", config, stores))  # a failed run never blocks an identical one
        raise
    return RegisteredDimensional(registry.run(run_id), run, reused=False)


# ---------------------------------------------------------------------------------- cross-corpus matrix

@dataclass
class DimensionalMatrix:
    """Train corpus x test corpus CCC per dimension at one layer: `cells[(a, b)]` is that cell's
    summary row (pooled CCC with its speaker CI per dimension, fold mean); the diagonal is each
    corpus' own speaker-independent folds."""

    corpora: list[str]
    cells: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def matrix(self, dimension: str):
        import numpy as np

        return np.array([[self.cells[(a, b)][f"ccc_{dimension}_pooled"] for b in self.corpora] for a in self.corpora])


def dimensional_matrix(corpora: Sequence[str], *, target: str, layer: str | int, model: str,
                       cache: str | Path = "cache", protocol: str | None = None, stat: str = "mean",
                       alpha: float | None = None, regressor: str = "ridge", out: str | Path | None = None,
                       overwrite: bool = False, progress: bool = False) -> DimensionalMatrix:
    """`ser probe --matrix A,B,C --target DIM`: every corpus trained on and tested on every corpus at
    one layer (the diagonal on its own folds: `protocol`, else each corpus' standard one), each cell
    a `run_dimensional` run; writes transfer_ccc.json/.csv and one heatmap per dimension to `out`."""
    from classifiers.results.records import check_out

    names = target_dimensions(target)
    if not names:
        raise TargetError("target 'emotion' is the categorical matrix (classifiers.runs.probe.run_matrix)")
    corpora = [c for c in corpora if c]
    if len(corpora) < 2 or len(set(corpora)) != len(corpora):
        raise SerError(f"--matrix needs two or more different corpora, got {', '.join(corpora) or 'none'}")
    if not str(layer).strip().lstrip("-").isdigit():
        raise SerError(f"--matrix runs at one layer (e.g. --layer 12), not {layer!r}")
    if out is not None:
        out = check_out(out, overwrite)
    m = DimensionalMatrix(corpora=list(corpora))
    for a in corpora:
        for b in corpora:
            run = (run_dimensional(a, target=target, model=model, cache=cache, layers=str(layer), protocol=protocol,
                                   stat=stat, alpha=alpha, regressor=regressor, plots=False, progress=progress)
                   if a == b else
                   run_dimensional(None, target=target, model=model, cache=cache, layers=str(layer), stat=stat,
                                   train=[a], test=[b], alpha=alpha, regressor=regressor, plots=False,
                                   progress=progress))
            m.cells[(a, b)] = dict(run.summary[0], train_set=a, test_set=b)
            m.records.extend(run.records)
    m.meta = dict(kind="matrix", target=target, dimensions=list(names), model=model, corpora=list(corpora),
                  layer=m.records[0]["layer"], stat=stat, classifier=regressor, alpha=alpha, protocol=protocol,
                  corpus=",".join(corpora))
    if out is not None:
        m.files = write_matrix(m, Path(out))
    return m


def write_matrix(m: DimensionalMatrix, out: Path) -> list[Path]:
    """transfer_ccc.json (meta, cells, records), transfer_ccc.csv (one row per cell) and
    transfer_ccc_<dimension>.png per dimension."""
    from classifiers.results.plots import ccc_transfer_heatmap, figure_paths
    from classifiers.results.records import versions
    from featstore.outputs import write_text
    from featstore.serialize import dumps

    out.mkdir(parents=True, exist_ok=True)
    cells = [m.cells[(a, b)] for a in m.corpora for b in m.corpora]
    files = [write_text(out / "transfer_ccc.json", dumps(dict(meta=m.meta, cells=cells, records=m.records,
                                                              versions=versions()), indent=1, sort_keys=True))]
    fields_ = ["train_set", "test_set"] + [k for k in cells[0] if k not in ("train_set", "test_set")]
    files.append(write_text(out / "transfer_ccc.csv", _csv(cells, fields_)))
    for n in m.meta["dimensions"]:
        files.extend(figure_paths(ccc_transfer_heatmap(
            m.matrix(n), m.corpora, out / f"transfer_ccc_{n}.png", dimension=n,
            title=f"{n}: train (rows) → test (columns), model {m.meta['model']}, layer {m.meta['layer']} "
                  f"({m.meta['classifier']}; diagonal: own folds)")))
    return files


def read_matrix(out: str | Path) -> DimensionalMatrix:
    """A dimensional matrix read back from its folder's transfer_ccc.json."""
    import json

    path = Path(out) / "transfer_ccc.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        m = DimensionalMatrix(corpora=list(data["meta"]["corpora"]), records=data["records"], meta=data["meta"])
        m.cells = {(c["train_set"], c["test_set"]): c for c in data["cells"]}
        return m
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SerError(f"{path}: not a readable dimensional matrix ({type(e).__name__}: {e})") from None


def matrix_table(m: DimensionalMatrix, title: str = ""):
    """A rich table: one row per train→test cell, the pooled CCC ± its 95% speaker CI half-width per dimension."""
    from classifiers.results.records import table

    names = m.meta["dimensions"]
    t = table("train → test", *[f"{n} CCC ± 95% CI" for n in names], title=title)
    for a in m.corpora:
        for b in m.corpora:
            c = m.cells[(a, b)]
            t.add_row(f"{a} → {b}" + (" (own folds)" if a == b else ""),
                      *[f"{c[f'ccc_{n}_pooled']:.3f} ± {(c[f'ccc_{n}_ci_high'] - c[f'ccc_{n}_ci_low']) / 2:.3f}"
                        for n in names])
    return t


def registered_dimensional_matrix(corpora: Sequence[str], *, target: str, layer: str | int, model: str, cache,
                                  registry, protocol: str | None = None, stat: str = "mean",
                                  alpha: float | None = None, classifier: str = "ridge", force: bool = False,
                                  out=None, overwrite: bool = False, progress: bool = False, command: str = ""):
    """`dimensional_matrix` through the registry (kind "matrix"): an identical configuration over
    identical stores returns the registered run (read back from its folder) unless `force`.
    Returns (registry row, DimensionalMatrix, reused)."""
    from classifiers.results.records import forced_dir
    from classifiers.results.registry import run_key
    from classifiers.results.runfiles import fingerprints
    from classifiers.runs.runpaths import default_out

    config = dict(corpora=list(corpora), layer=str(layer).strip(), target=str(target).lower(), classifier=classifier,
                  stat=stat, alpha=alpha, protocol=protocol, model=model)
    stores = fingerprints(cache, model, list(corpora))
    found = None if force else registry.find("matrix", config, stores)
    if found is not None and found.get("out") and (Path(found["out"]) / "transfer_ccc.json").is_file():
        return found, read_matrix(found["out"]), True
    if out is None:
        out = forced_dir(default_out("matrix", "+".join(corpora), model,
                                     {k: v for k, v in config.items() if k != "model"}), force)
    try:
        m = dimensional_matrix(corpora, target=target, layer=layer, model=model, cache=cache, protocol=protocol,
                               stat=stat, alpha=alpha, regressor=classifier, out=out, overwrite=overwrite,
                               progress=progress)
        run_id = registry.register(kind="matrix", config=config, stores=stores, results=m, command=command, out=out)
    except BaseException:
        registry.release(run_key("matrix", config, stores))
        raise
    return registry.run(run_id), m, False


# ---------------------------------------------------------------------------------- runs compared on CCC

def _read_rows(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def dimension_predictions(run: dict, layer: str | None = None) -> tuple[str, dict, list[str]]:
    """A registered run's per-clip predictions on emotion dimensions: (the setting compared, {id:
    (speaker, truth (T,), prediction (T,))}, the dimensions). A dimensional probe gives the layer
    `layer` (default: its best by pooled mean CCC) from probe_predictions.csv; a fine-tune on
    dimensions every fold's test predictions (predictions.csv). Other runs: one line."""
    import json

    import numpy as np

    out = Path(run.get("out") or "")
    cfg = run.get("config") or {}
    if run.get("kind") == "probe" and cfg.get("target", "emotion") != "emotion":
        data = json.loads((out / "probe.json").read_text(encoding="utf-8"))
        names = list(data["meta"]["dimensions"])
        summary = data["summary"]
        if layer is None:
            chosen = str(max(summary, key=lambda r: _num(r.get("ccc_pooled")))["layer"])
        else:
            chosen = str(layer).strip()
            if chosen not in {str(r["layer"]) for r in summary}:
                raise SerError(f"run {run['id']} has no layer {chosen}: it probed layers "
                               f"{', '.join(str(r['layer']) for r in summary)}")
        rows = [r for r in _read_rows(out / "probe_predictions.csv") if r["layer"] == chosen]
        setting = f"{run.get('classifier', 'ridge')}, layer {chosen}"
    elif run.get("kind") == "finetune" and cfg.get("target", "emotion") != "emotion":
        names = list(target_dimensions(cfg["target"]))
        rows = [r for p in sorted(out.glob("*/predictions.csv")) for r in _read_rows(p)]
        setting = f"fine-tuned ({cfg.get('pooling', '')} pooling)"
    else:
        raise SerError(f"run {run['id']} ({run.get('kind')}) has no per-clip predictions of emotion dimensions; "
                       f"compare dimensional probes and fine-tunes on dimensions (ser results ls)")

    def value(v: str) -> float:
        return float(v) if v not in ("", None) else np.nan

    clips = {r["id"]: (r["speaker"], np.array([value(r.get(f"true_{n}")) for n in names]),
                       np.array([value(r.get(f"pred_{n}")) for n in names])) for r in rows}
    return setting, clips, names


def compare_dimensional(runs: Sequence[dict], metric: str = "ccc", layer: str | None = None,
                        level: float = 0.95) -> tuple[list[dict], list[dict]]:
    """Runs scored on emotion dimensions, each against the first on the clips both predicted: the
    CCC of each (its speaker jackknife-t CI) and the paired difference with its CI and p
    (`regression.paired_ccc`: the interval excludes 0 exactly when p < 1 - level), Holm over the
    comparisons. metric: "ccc" (the mean over the dimensions the runs share) or "ccc_<dimension>".
    Returns (one summary row per run, one difference row per later run)."""
    import numpy as np

    from classifiers.estimators.regression import ccc_interval, paired_ccc
    from classifiers.results.stats import holm

    loaded = [(r, *dimension_predictions(r, layer)) for r in runs]
    shared_dims = [n for n in loaded[0][3] if all(n in names for *_, names in loaded)]
    wanted = shared_dims if metric == "ccc" else [metric.removeprefix("ccc_")]
    if not wanted or any(n not in shared_dims for n in wanted):
        raise SerError(f"--metric {metric}: the runs share the dimensions {', '.join(shared_dims) or 'none'}; use "
                       f"ccc or ccc_<dimension> of those")
    first_run, first_setting, first, first_names = loaded[0]
    summary, diffs = [], []
    cols0 = [first_names.index(n) for n in wanted]
    for run, setting, clips, names in loaded:
        cols = [names.index(n) for n in wanted]
        ids = [i for i in first if i in clips and np.isfinite(first[i][1][cols0]).all()]
        if not ids:
            raise SerError(f"runs {first_run['id']} and {run['id']} share no rated test clip ({len(first)} and "
                           f"{len(clips)} clips): compare runs scored on the same test utterances")
        y = np.array([first[i][1][cols0] for i in ids])
        spk = np.array([first[i][0] for i in ids])
        p = np.array([clips[i][2][cols] for i in ids])
        iv = ccc_interval(y, p, spk, level=level)
        summary.append(dict(run=run["id"], setting=setting, value=iv.value, low=iv.low, high=iv.high,
                            n_groups=iv.n_groups, n=len(ids)))
        if run is not first_run:
            a = np.array([first[i][2][cols0] for i in ids])
            c = paired_ccc(y, p, a, spk, level=level)
            diffs.append(dict(a=run["id"], b=first_run["id"], diff=c.diff, low=c.low, high=c.high, p=c.p,
                              n=len(ids), n_groups=c.n_groups))
    for d, ph in zip(diffs, holm([d["p"] for d in diffs])):
        d["p_holm"] = float(ph)
    return summary, diffs


def is_dimension_scored(run: dict) -> bool:
    """Whether a registered run is scored on emotion dimensions only (a dimensional probe or matrix, a
    fine-tune on dimensions without --multitask, or its evaluation): it has no UAR to compare."""
    from classifiers.finetuning.finetune import is_dimension_only

    cfg = run.get("config") or {}
    return (run.get("kind") in ("probe", "matrix") and cfg.get("target", "emotion") != "emotion") or \
        is_dimension_only(run)
