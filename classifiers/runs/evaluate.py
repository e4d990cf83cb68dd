"""`ser evaluate`: score a saved probe or a fine-tuned model on a whole corpus (or one fold's test
speakers) — the cross-corpus question "trained on RAVDESS, how good on CREMA-D?".

Two scores, always both: "all" (every test utterance, predictions over every trained class, a
test class the model never learnt counted as an error) and "shared" (only test utterances of
classes the model knows and the corpus declares, predictions restricted to those classes: the
trained classes the corpus lacks, e.g. calm and surprise on CREMA-D, cannot be predicted).
`--map calm=neutral` and `--drop surprise` apply to both sides (`relabel`): the test truth and the
model's classes. A mapped class' probability is added to its target's, so a calm prediction counts
as neutral; a dropped class leaves the test set (utterances whose truth it is) and the model's
probability columns (the rest renormalised, argmax over them). Maps come first, so drop names are
read after mapping. A mapped or dropped class neither side has is one warning line. A saved probe
reads pooled features from the store when `ser extract` made one for its backbone (no
re-extraction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.config import results_root
from featstore.errors import SerError


class EvaluateError(SerError):
    """Bad `ser evaluate` input (the message names the value and the fix)."""


def parse_maps(items: Sequence[str]) -> dict[str, str]:
    """["calm=neutral", ...] -> {"calm": "neutral"}; a malformed item fails with its text."""
    out = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise EvaluateError(f"--map {item!r}: write it as FROM=TO, e.g. --map calm=neutral")
        out[src.strip()] = dst.strip()
    return out


def relabel(classes: Sequence[str], probs: np.ndarray, maps: dict[str, str],
            drop: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The model's side of --map/--drop: (classes, probabilities (N, K')) after both.

    Columns of classes mapped to one name are added (in first-appearance order of the mapped
    names); dropped classes' columns are removed and every row renormalised over the rest.
    Refused when every class is dropped."""
    probs = np.asarray(probs, dtype=np.float64)
    merged: dict[str, list[int]] = {}
    for j, c in enumerate(classes):
        merged.setdefault(maps.get(c, c), []).append(j)
    kept = [c for c in merged if c not in set(drop)]
    if not kept:
        raise EvaluateError(f"--drop {', '.join(drop)} leaves none of the model's classes ({', '.join(classes)}); "
                            f"drop fewer classes")
    P = np.stack([probs[:, merged[c]].sum(1) for c in kept], axis=1) if len(probs) else np.zeros((0, len(kept)))
    if len(kept) < len(merged) and len(P):
        total = P.sum(1, keepdims=True)
        P = np.divide(P, total, out=np.full_like(P, 1 / len(kept)), where=total > 0)
    return kept, P


def unused_relabels(maps: dict[str, str], drop: Sequence[str], truth_labels, model_classes) -> list[str]:
    """The --map/--drop items that change nothing: a mapped class that neither the test labels nor
    the model's classes hold, a dropped class neither holds after mapping ("--map X=Y", "--drop Z")."""
    sides = set(truth_labels) | set(model_classes)
    mapped = {maps.get(c, c) for c in sides}
    return ([f"--map {a}={b}" for a, b in maps.items() if a not in sides]
            + [f"--drop {d}" for d in drop if d not in mapped])


@dataclass
class Scored:
    """One policy's scores: WA, UAR with its speaker-bootstrap CI (`Interval`), macro-F1, rows."""

    wa: float
    uar: object
    macro_f1: float
    n: int
    what: str


@dataclass
class Evaluation:
    scores: dict[str, Scored]
    training_only: list[str]
    test_only: dict[str, int]
    files: list[Path] = field(default_factory=list)
    run_id: str = ""
    results: object = None            # the `ProbeResults` written (its summary(): the headline per policy)
    reused: dict | None = None        # the registry row of an identical earlier run shown instead of computing
    # a model fine-tuned on emotion dimensions (`ser finetune --target`, no classes): dim -> CCC with its
    # speaker CI, Pearson r, RMSE (`classifiers.finetuning.finetune.dimension_intervals`); `scores` is then empty
    dimensions: dict | None = None


def _features(model_dir: Path, corpus: str, cache, root, device: str, backbone=None):
    """(kind, classes, probs (N, K), utterances, layer, stores) for every utterance of `corpus`."""
    from classifiers.finetuning.inference import (
        _predict_finetuned,
        is_adapter_dir,
        load_probe,
        model_kind,
        probe_features,
    )
    from classifiers.results.registry import store_fingerprint
    from classifiers.runs.runpaths import store_for
    from featstore.device import resolve_device
    from featstore.store import StoreError, open_store

    kind = model_kind(model_dir)
    if kind != "probe" and backbone is not None and not is_adapter_dir(model_dir):
        raise EvaluateError(f"--backbone is for saved probes and adapter exports; the fine-tuned model in {model_dir} carries its own "
                            f"backbone weights: leave --backbone out")
    if kind == "probe":
        probe = load_probe(model_dir, backbone=backbone)
        try:
            fs = open_store(store_for(cache, probe.backbone_id, corpus))
        except StoreError:
            fs = None
        if fs is not None:
            sha = fs.config.get("weights_sha256")
            if probe.weights_sha256 and sha and sha != probe.weights_sha256:
                raise EvaluateError(f"the store {fs.paths[0]} was extracted with other weights of {probe.backbone_id} "
                                    f"than the probe in {model_dir} was trained on; re-extract {corpus}")
            X = fs.pooled(probe.layer % fs.num_layers, probe.stat)
            return kind, probe.classes, probe.predict_proba(X), fs.utterances, probe.layer, [store_fingerprint(fs)]
        utts = _manifest(corpus, root)
        X = probe_features([u.path for u in utts], probe, device=device)
        return kind, probe.classes, probe.predict_proba(X), utts, probe.layer, [_audio_fingerprint(corpus, utts)]
    utts = _manifest(corpus, root)
    classes, probs = _predict_finetuned([u.path for u in utts], Path(model_dir), 8, resolve_device(device),
                                        backbone=backbone)
    return kind, list(classes), probs, utts, "e2e", [_audio_fingerprint(corpus, utts)]


def _stores(model_dir: Path, corpus: str, cache, root, backbone=None) -> list[dict]:
    """What `_features` will read, fingerprinted without scoring anything: the store a saved
    probe's features come from, else the corpus' utterances (the audio a model will hear)."""
    from classifiers.finetuning.inference import load_probe, model_kind
    from classifiers.results.registry import store_fingerprint
    from classifiers.runs.runpaths import store_for
    from featstore.store import StoreError, open_store

    if model_kind(model_dir) == "probe":
        probe = load_probe(model_dir, backbone=backbone)
        try:
            return [store_fingerprint(open_store(store_for(cache, probe.backbone_id, corpus)))]
        except StoreError:
            pass
    return [_audio_fingerprint(corpus, _manifest(corpus, root))]


def model_digest(model_dir: Path) -> str:
    """What identifies a saved model's content: its weights (`featstore.modelfiles.weights_hash`,
    remembered per file identity) and its JSON files (classes, head, adapter, config), so a model
    trained again into the same folder is another model for the registry."""
    import hashlib

    from featstore.modelfiles import weights_hash

    h = hashlib.sha256(weights_hash(Path(model_dir)).encode())
    for p in sorted(Path(model_dir).glob("*.json")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _manifest(corpus: str, root):
    from featstore.config import resolve_root
    from featstore.corpora import load_manifest

    return load_manifest(corpus, resolve_root(corpus, root)).utterances


def _audio_fingerprint(corpus: str, utts) -> dict:
    import hashlib

    return dict(corpus=corpus, utterances=len(utts),
                ids_sha256=hashlib.sha256("\n".join(sorted(u.id for u in utts)).encode()).hexdigest()[:16])


def _score(y_true, y_pred, speakers, labels, what: str) -> Scored:
    from classifiers.results.metrics import scores
    from classifiers.results.stats import bootstrap_ci

    s = scores(y_true, y_pred, labels)
    iv = bootstrap_ci(y_true, y_pred, speakers, labels, metric="uar") if len(set(speakers)) > 1 else None
    return Scored(s["wa"], iv if iv is not None else f"{s['uar']:.3f}", s["macro_f1"], len(y_true), what)


def evaluate_key(model_dir: str | Path, corpus: str, *, fold: str | None = None, protocol: str | None = None,
                 maps: dict[str, str] | None = None, drop: Sequence[str] = (), target: str | None = None) -> dict:
    """The configuration an evaluation is registered under: the model's folder and content digest,
    corpus, fold, protocol, maps, drop, and `target` when it picks a scored subset or a multitask
    model's dimensions. A missing or foreign folder is one line before anything is read."""
    from classifiers.finetuning.inference import model_kind

    model_dir = Path(model_dir)
    model_kind(model_dir)
    config = dict(model_dir=str(model_dir.resolve()), model_sha256=model_digest(model_dir), corpus=corpus, fold=fold,
                  protocol=protocol, maps=dict(maps or {}), drop=sorted(dict.fromkeys(drop)))
    if target not in (None, "emotion") and _target_dimensions(model_dir, target):
        config["target"] = target            # the key of a scored subset or of a multitask model's dimensions
    return config


def evaluate_stores(model_dir: str | Path, corpus: str, cache, root=None, backbone=None,
                    target: str | None = None) -> list[dict]:
    """The fingerprints an evaluation's key holds beside its configuration (what `evaluate_model` reads)."""
    model_dir = Path(model_dir)
    return _stores(model_dir, corpus, None if _target_dimensions(model_dir, target) else cache, root, backbone)


def _test_rows(utts, corpus: str, protocol: str | None, fold: str | None) -> np.ndarray:
    """Row indices scored: every utterance, or the test rows of `fold` in the corpus' (or given) protocol."""
    if not fold:
        return np.arange(len(utts))
    from featstore.folds import make_folds, standard_protocol

    folds = {f.name: f for f in make_folds(utts, protocol or standard_protocol(corpus))}
    if fold not in folds:
        raise EvaluateError(f"no fold {fold!r} in {corpus}'s {protocol or standard_protocol(corpus)} folds: use "
                            f"{', '.join(folds)}")
    return np.asarray(folds[fold].test, dtype=np.int64)


def evaluate_model(model_dir: str | Path, corpus: str, *, cache="cache", root=None, fold: str | None = None,
                   protocol: str | None = None, maps: dict[str, str] | None = None, drop: Sequence[str] = (),
                   out: str | Path | None = None, device: str = "auto", registry=None,
                   command: str = "", backbone: str | Path | None = None, force: bool = False,
                   target: str | None = None) -> Evaluation:
    """Score the model in `model_dir` on `corpus` (or the test speakers of `fold`), both ways.

    target: what to score (`classifiers.runs.dimensional.TARGETS`): None, what the model predicts (its
    classes; a model fine-tuned on dimensions only, its dimensions); "emotion", its classes; a
    dimension or "avd", those of its regression outputs (a multitask model's too), CCC per dimension.
    A target the model does not predict is one line.

    maps: label -> label, applied to the test truth and to the model's classes (a mapped class'
    probability is added to its target's); drop: classes left out after mapping, of the test set
    and of the model's probability columns (argmax over the rest); see `relabel`. Writes
    evaluate.json/.csv (records "all" and "shared"), predictions.parquet and one confusion
    heatmap per policy to `out` (refused when it holds files; default: a new directory under
    the results root), and registers the run in `registry` (kind "evaluate"). With a registry, an identical
    configuration (the model's content digest, corpus, fold, maps, drop) over identical stores
    returns the registered run (`Evaluation.reused`) without computing, unless `force`.
    """
    from classifiers.results.plots import confusion_heatmap, figure_paths
    from classifiers.results.predictions import block, write_predictions
    from classifiers.results.records import (
        ProbeResults,
        check_out,
        declared_labels,
        make_record,
        settings_tag,
        write_results,
    )
    from featstore.backbones.runtime import model_slug
    from featstore.labels import canonical_order

    maps = dict(maps or {})
    model_dir = Path(model_dir)
    config = evaluate_key(model_dir, corpus, fold=fold, protocol=protocol, maps=maps, drop=drop, target=target)
    dims = _target_dimensions(model_dir, target)
    if dims:
        return _evaluate_dimensions(model_dir, dims, corpus, config, root=root, fold=fold, protocol=protocol,
                                    maps=maps, drop=drop, out=out, device=device, registry=registry, command=command,
                                    backbone=backbone, force=force)
    if registry is not None and not force:
        from classifiers.results.runfiles import load_registered, registered_files

        found = registry.find("evaluate", config, _stores(model_dir, corpus, cache, root, backbone))
        if found is not None and registered_files(found):
            results = load_registered(found)
            return Evaluation({}, list(results.meta.get("training_only", [])), dict(results.meta.get("test_only", {})),
                              files=sorted(p for p in Path(found["out"]).iterdir() if p.is_file()),
                              run_id=found["id"], results=results, reused=found)
    kind, classes, probs, utts, layer, stores = _features(model_dir, corpus, cache, root, device, backbone)
    rows = _test_rows(utts, corpus, protocol, fold)
    trained, drop = list(classes), list(dict.fromkeys(drop))
    raw_declared = declared_labels([corpus], utts) | {u.label for u in utts}
    unused = unused_relabels(maps, drop, raw_declared, trained)
    if unused:
        import warnings

        from featstore.labels import LabelWarning

        warnings.warn(LabelWarning(
            f"{', '.join(unused)}: neither {corpus}'s labels ({', '.join(canonical_order(raw_declared))}) nor the "
            f"model's classes ({', '.join(trained)}) hold {'that class' if len(unused) == 1 else 'these classes'}, "
            f"so {'it changes' if len(unused) == 1 else 'they change'} nothing; check the spelling"),
            stacklevel=2)
    truth = np.array([maps.get(utts[i].label, utts[i].label) for i in rows], dtype=object)
    keep = ~np.isin(truth, drop)
    rows, truth = rows[keep], truth[keep]
    if not len(rows):
        raise EvaluateError(f"no test utterance of {corpus} is left after --drop {', '.join(drop)}")
    classes, P = relabel(trained, np.asarray(probs)[rows], maps, drop)
    speakers = np.array([utts[i].speaker for i in rows], dtype=object)
    declared = {maps.get(c, c) for c in declared_labels([corpus], utts)} - set(drop)
    shared = [c for c in classes if c in declared]
    training_only = [c for c in classes if c not in declared]
    test_only = dict(Counter(t for t in truth.tolist() if t not in classes))
    pred_all = np.asarray(classes, dtype=object)[P.argmax(1)]
    scored_all = canonical_order(set(classes) | set(truth.tolist()))
    over = (f"all {len(classes)} trained classes" if classes == trained else
            f"the model's {len(classes)} classes after --map/--drop (of {len(trained)} trained)")
    result = Evaluation({"all": _score(truth, pred_all, speakers, scored_all,
                                       f"every test utterance, predictions over {over}")},
                        training_only, test_only)
    records = [make_record(layer=layer, fold=fold or "all", y_true=truth, y_pred=pred_all, labels=scored_all,
                           n_train=0, classifier=kind, seed=0, train_set=_trained_on(model_dir, kind), test_set=corpus,
                           shuffled=False, C=None, classes="all")]
    if not shared:
        raise EvaluateError(f"the model's classes ({', '.join(classes)}) share none with {corpus}; map them with --map")
    in_shared = np.isin(truth, shared)
    cols = [classes.index(c) for c in shared]
    pred_shared = np.asarray(shared, dtype=object)[P[in_shared][:, cols].argmax(1)]
    result.scores["shared"] = _score(truth[in_shared], pred_shared, speakers[in_shared], shared,
                                     f"only the {len(shared)} classes both sides know, predictions restricted to them")
    records.append(make_record(layer=layer, fold=fold or "all", y_true=truth[in_shared], y_pred=pred_shared,
                               labels=shared, n_train=0, classifier=kind, seed=0, train_set=records[0]["train_set"],
                               test_set=f"{corpus} (shared classes)", shuffled=False, C=None, classes="shared"))
    out = check_out(out) if out else _free_dir(results_root() / "-".join(
        ["evaluate", model_slug(str(model_dir)), corpus, *([fold] if fold else []), settings_tag(config)]))
    results = ProbeResults(records=records, meta=dict(kind="evaluate", model=str(model_dir), corpus=corpus,
                                                      classifier=kind, training_only=training_only, test_only=test_only,
                                                      maps=maps, drop=sorted(drop), trained_classes=trained,
                                                      model_classes=list(classes)))
    results.predictions = [block(utts, rows, pred_all, proba=P, classes=classes, labels=truth, layer=layer,
                                 fold=fold or "all", seed=0, classifier=kind, train_set=records[0]["train_set"],
                                 test_set=corpus)]
    for r in records:                 # the speaker CI of each policy's UAR travels with its record
        iv = result.scores[r["classes"]].uar
        if hasattr(iv, "to_dict"):
            r["ci"] = iv.to_dict()
    result.results = results
    result.files.extend(write_results(results, out, name="evaluate", summary_csv=True))
    pred_path = write_predictions(results.predictions, out / "predictions.parquet")
    result.files.append(pred_path)
    for r in records:
        result.files.extend(figure_paths(confusion_heatmap(
            np.asarray(r["confusion"]), r["labels"], out / f"confusion_{r['classes']}.png",
            title=f"{model_dir.name} on {corpus}: classes {r['classes']} (UAR {r['uar']:.3f}, {r['n_test']} utterances)")))
    if registry is not None:
        result.run_id = registry.register(kind="evaluate", config=config, stores=stores, results=results,
                                          command=command, out=out, predictions=pred_path)
    return result


def _target_dimensions(model_dir: Path, target: str | None) -> list[str]:
    """The dimensions `evaluate_model` scores for `target` (see there); [] for the classes."""
    import json

    from classifiers.finetuning.inference import model_dimensions
    from classifiers.runs.targets import target_dimensions

    if target is None:
        return _dimensions_only(model_dir)
    wanted = list(target_dimensions(target))
    has = model_dimensions(model_dir) or []
    labels = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("labels") \
        if (model_dir / "config.json").is_file() else None
    if not wanted:
        if has and not labels:
            raise EvaluateError(f"{model_dir} regresses {', '.join(has)} and has no classes: use --target "
                                f"{'avd' if len(has) == 3 else has[0]} (or leave --target out)")
        return []
    missing = [d for d in wanted if d not in has]
    if missing:
        raise EvaluateError(f"{model_dir} does not predict {', '.join(missing)} (it predicts "
                            f"{', '.join(has) or 'classes only'}): choose --target "
                            f"{' or '.join(has + ['emotion'] if labels or not has else has)}")
    return wanted


def _dimensions_only(model_dir: Path) -> list[str]:
    """The dimensions of a fine-tuned model that regresses dimensions and has no classes, else []."""
    import json

    from classifiers.finetuning.inference import model_dimensions

    dims = model_dimensions(model_dir)
    if not dims:
        return []
    labels = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("labels")
    return [] if labels else dims


def _evaluate_dimensions(model_dir: Path, dims: list[str], corpus: str, config: dict, *, root, fold, protocol,
                         maps, drop, out, device, registry, command, backbone, force) -> Evaluation:
    """`evaluate_model` of a model fine-tuned on emotion dimensions: its values on every rated utterance of
    `corpus` (or `fold`'s test speakers) against the ratings mapped onto [-1, 1]
    (`featstore.corpora.base.dimension_array`), CCC per dimension with its jackknife-t interval over
    speakers, Pearson r and RMSE. Writes evaluate.json (meta, summary: one row per dimension, records),
    evaluate.csv and evaluate_predictions.csv (id, speaker, true_<dim>, pred_<dim>); registers kind
    "evaluate" with ccc_<dim> metrics. --map / --drop relabel classes: refused here in one line."""
    import json

    from classifiers.finetuning.finetune import _csv_rows, dimension_intervals, dimension_scores
    from classifiers.finetuning.inference import _finetuned_outputs
    from classifiers.results.records import check_out, settings_tag
    from featstore import serialize
    from featstore.backbones.runtime import model_slug
    from featstore.corpora.base import dimension_array
    from featstore.device import resolve_device
    from featstore.outputs import write_text

    if maps or drop:
        what = (f"{model_dir} regresses {', '.join(dims)} and has no classes" if _dimensions_only(model_dir) else
                f"scoring {model_dir}'s {', '.join(dims)} (--target) uses no classes")
        raise EvaluateError(f"--map / --drop relabel classes; {what}: leave them out")
    stores = _stores(model_dir, corpus, None, root, backbone)
    if registry is not None and not force:
        found = registry.find("evaluate", config, stores)
        if found is not None and (Path(found["out"]) / "evaluate.json").is_file():
            data = json.loads((Path(found["out"]) / "evaluate.json").read_text(encoding="utf-8"))
            return Evaluation({}, [], {}, files=sorted(p for p in Path(found["out"]).iterdir() if p.is_file()),
                              run_id=found["id"], reused=found,
                              dimensions={r["dimension"]: r for r in data.get("summary", [])})
    utts = _manifest(corpus, root)
    rows = _test_rows(utts, corpus, protocol, fold)
    Y = dimension_array([utts[i] for i in rows], dims)
    rated = np.isfinite(Y).any(1)
    if not rated.any():
        raise EvaluateError(f"no test utterance of {corpus} carries {'/'.join(dims)} ratings, which the model in "
                            f"{model_dir} predicts; score it on a corpus with dimensions")
    rows, Y = rows[rated], Y[rated]
    _, _, model_dims, values = _finetuned_outputs([utts[i].path for i in rows], model_dir, 8, resolve_device(device),
                                                  backbone=backbone)
    values = np.asarray(values)[:, [list(model_dims).index(d) for d in dims]]   # --target: a subset, or a multitask
                                                                                # model's regression outputs
    speakers = [utts[i].speaker for i in rows]
    summary = dimension_intervals(Y, values, speakers, dims)
    train_set = _trained_on(model_dir, "finetuned") or ",".join(
        json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("extra", {}).get("train_corpora")
        or [])
    record = serialize.plain(dict(layer="e2e", fold=fold or "all", classifier="finetuned", seed=0, train_set=train_set,
                                  test_set=corpus, n_test=len(rows), n_train=0, dimensions=dims,
                                  **dimension_scores(Y, values, dims)))
    out = check_out(out) if out else _free_dir(results_root() / "-".join(
        ["evaluate", model_slug(str(model_dir)), corpus, *([fold] if fold else []), settings_tag(config)]))
    out.mkdir(parents=True, exist_ok=True)
    rows_out = [{"dimension": d, **r} for d, r in summary.items()]
    meta = dict(kind="evaluate", model=str(model_dir), corpus=corpus, classifier="finetuned", dimensions=dims,
                scale=[-1.0, 1.0], headline="CCC per dimension with its 95% speaker jackknife CI")
    files = [write_text(out / "evaluate.json", serialize.dumps(dict(meta=meta, summary=rows_out, records=[record]),
                                                               indent=1)),
             write_text(out / "evaluate.csv", _csv_rows(rows_out, ["dimension", "ccc", "ci_low", "ci_high", "ci_level",
                                                                   "ci_method", "n_speakers", "n", "pearson", "rmse"]))]
    preds = [{"id": utts[i].id, "speaker": utts[i].speaker,
              **{f"{k}_{d}": (None if k == "true" and Y[j, t] != Y[j, t] else float((Y if k == "true" else values)[j, t]))
                 for t, d in enumerate(dims) for k in ("true", "pred")}} for j, i in enumerate(rows)]
    files.append(write_text(out / "evaluate_predictions.csv",
                            _csv_rows(preds, ["id", "speaker", *[f"{k}_{d}" for d in dims for k in ("true", "pred")]])))
    result = Evaluation({}, [], {}, files=files, dimensions=summary)
    if registry is not None:
        from classifiers.results.records import ProbeResults

        result.run_id = registry.register(kind="evaluate", config=config, stores=stores,
                                          results=ProbeResults(records=[record], meta=meta), command=command, out=out)
    return result


def _free_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... : the first that does not exist (earlier runs' files stay)."""
    base, i = path, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _trained_on(model_dir: Path, kind: str) -> str:
    """The training corpora recorded with the model ("" when it does not say)."""
    import json

    if kind == "probe":
        from classifiers.finetuning.inference import load_probe

        return ",".join(load_probe(model_dir).extra.get("trained_on", []))
    cfg = model_dir / "config.json"
    data = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    return str(data.get("trained_on", ""))
