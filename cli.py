"""`ser`: the command line. Thin: parse, call a library function, print.

Every error a user can cause is a `SerError` whose message names the fix; it is caught once
here and printed on one line (`ser --debug ...` shows the traceback).
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="ser: wav2vec2-family feature store and fast probes for speech emotion recognition.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
store_app = typer.Typer(help="Inspect and export feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one problem, one line
_state = {"debug": False}


def friendly(fn):
    """Print a SerError as one line and exit 2; --debug re-raises it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from featstore.errors import SerError

        try:
            return fn(*args, **kwargs)
        except SerError as e:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")):
    _state["debug"] = debug


def _human(n: float) -> str:
    from featstore.units import human_size

    return human_size(n)


def _corpus(corpus: str | None) -> str:
    from featstore.config import default_corpus
    from featstore.errors import SerError

    corpus = corpus or default_corpus()
    if not corpus:
        raise SerError("no corpus given: pass --corpus NAME (see `ser corpora`) or set a default with "
                       "`ser config set corpus ravdess`")
    return corpus.lower()


def _root(corpus: str, root: Path | None) -> Path:
    from featstore.config import resolve_root

    return resolve_root(corpus, root)


def _model(model: str | None) -> str:
    from featstore.config import default_model

    return model or default_model()


def _cache(cache: Path | None) -> Path:
    from featstore.config import default_cache

    return Path(cache) if cache else default_cache()


def _device_opt(device: str | None) -> str:
    from featstore.config import default_device

    return device or default_device()


CORPUS_OPT = typer.Option(None, "--corpus", "-c", help="Corpus name (see `ser corpora`); default: config `corpus`.")
ROOT_OPT = typer.Option(None, "--root", "-r", help="Unpacked corpus directory; default: config, $SER_DATA/<corpus>, data dir.")
MODEL_OPT = typer.Option(None, "--model", "-m", help="Hub id or local model directory; default: config `model` or facebook/wav2vec2-base.")
CACHE_OPT = typer.Option(None, "--cache", help="Store directory; default: $SER_CACHE, config `cache`, or ./cache.")
DEVICE_OPT = typer.Option(None, "--device", help="auto, cpu or cuda[:N]; default: config `device` or auto.")


# ---------------------------------------------------------------------------------------------
# corpora, manifests, folds, synthetic corpora
# ---------------------------------------------------------------------------------------------

@app.command()
@friendly
def corpora(labels: bool = typer.Option(False, "--labels", help="Print the label mapping table instead.")):
    """List the supported corpora (or, with --labels, every corpus code -> canonical label).

    Example: ser corpora
    """
    from featstore.corpora import CORPORA
    from featstore.labels import mapping_table

    if labels:
        t = Table("corpus", "code", "canonical label", title="label mapping")
        for row in mapping_table():
            t.add_row(*row)
        console.print(t)
        return
    t = Table("corpus", "lang", "speakers", "classes", "utterances", "layout", "source / licence",
              title="supported corpora", show_lines=True)
    for name, c in CORPORA.items():
        classes = ", ".join(sorted(set(c.labels.values())))
        t.add_row(name, c.language, str(c.n_speakers or "?"), classes, str(c.expected_count or "?"),
                  c.layout_hint, f"{c.source}\n{c.licence}")
    console.print(t)


def _print_problems(problems, limit: int = 50) -> None:
    for p in problems[:limit]:
        err.print(f"[yellow]skipped[/] {p.path}: {p.reason}", highlight=False)
    if len(problems) > limit:
        err.print(f"[yellow]... and {len(problems) - limit} more problems[/]")
    if problems:
        reasons = Counter(p.reason.split(":")[0].split(" (")[0] for p in problems)
        err.print("[yellow]skipped in all:[/] " + "; ".join(f"{n} × {r}" for r, n in reasons.most_common()),
                  highlight=False)


@app.command()
@friendly
def manifest(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the utterance table (.csv or .jsonl)."),
):
    """Read a corpus: counts per label and speaker, and every problem found.

    Example: ser manifest --corpus ravdess --root /data/RAVDESS --out ravdess.csv
    """
    from featstore.corpora import load_manifest
    from featstore.labels import canonical_order

    corpus = _corpus(corpus)
    m = load_manifest(corpus, _root(corpus, root), progress=True)
    labels = m.label_counts()
    t = Table("label", "utterances", title=f"{m.corpus}: {len(m)} utterances, "
              f"{len(m.speaker_counts())} speakers, {sum(u.duration for u in m) / 3600:.2f} h")
    for label in canonical_order(labels):
        t.add_row(label, str(labels[label]))
    console.print(t)
    speakers = m.speaker_counts()
    console.print("speakers: " + ", ".join(f"{s} {n}" for s, n in sorted(speakers.items())), highlight=False)
    _print_problems(m.problems)
    if out:
        console.print(f"wrote {m.write(out)}")


@app.command()
@friendly
def folds(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    protocol: str = typer.Option("standard", "--protocol", "-p",
                                 help="luna5, emobox, loso, loso-session, speaker-kfold:K or standard."),
    seed: int = typer.Option(0, "--seed", help="Seed for speaker-kfold."),
):
    """Speakers and counts per fold, with a speaker-leakage check.

    Example: ser folds --corpus ravdess --root /data/RAVDESS --protocol luna5
    """
    from featstore.corpora import load_manifest
    from featstore.folds import fold_summary, make_folds, standard_protocol

    corpus = _corpus(corpus)
    m = load_manifest(corpus, _root(corpus, root))
    _print_problems(m.problems, limit=10)
    name = standard_protocol(m.corpus) if protocol == "standard" else protocol
    fl = make_folds(m.utterances, name, seed=seed)
    t = Table("fold", "train", "test", "test speakers", "test labels", "leaked speakers",
              title=f"{m.corpus}: protocol {name}, {len(fl)} folds")
    leaked_any = 0
    for row in fold_summary(m.utterances, fl):
        leaked = row["leaked_speakers"]
        leaked_any += leaked
        spk = row["test_speakers"]
        spk_text = ", ".join(spk[:8]) + (f" (+{len(spk) - 8})" if len(spk) > 8 else "")
        t.add_row(row["fold"], str(row["n_train"]), str(row["n_test"]), spk_text,
                  ", ".join(f"{k} {v}" for k, v in row["test_labels"].items()),
                  f"[red]{leaked}[/]" if leaked else "0")
    console.print(t)
    if leaked_any:
        err.print(f"[yellow]warning:[/] protocol {name} is not speaker-independent on {m.corpus}: "
                  "speakers occur in both train and test")
    else:
        console.print("speaker overlap between train and test: 0 in every fold")


@app.command()
@friendly
def synth(
    like: str = typer.Option(..., "--like", help="Corpus whose layout, names, rates and durations to copy."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the tree into."),
    n: int | None = typer.Option(None, "--n", help="Number of files (balanced over speakers and labels)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Cap every file at S seconds."),
    sample_rate: int | None = typer.Option(None, "--sample-rate", help="Override every file's sample rate."),
):
    """Write a synthetic corpus in the real layout, with prosody-separable emotions.

    Example: ser synth --like ravdess --out /tmp/ravdess --n 240 --seed 0
    """
    from featstore.synth import synthesize

    res = synthesize(like, out, n=n, seed=seed, max_duration=max_duration, sample_rate=sample_rate, progress=True)
    console.print(res.summary(), highlight=False)


# ---------------------------------------------------------------------------------------------
# extraction and stores
# ---------------------------------------------------------------------------------------------

def _torchrun():
    """The torchrun process group this process belongs to (None when not started by torchrun)."""
    from featstore.extract import torchrun

    return torchrun()


@app.command()
@friendly
def extract(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16 (model compute)."),
    frames: str = typer.Option("none", "--frames", help="Layers whose frames to keep: none, all, or 6,12 / 3-9."),
    max_seconds: float = typer.Option(30.0, "--max-seconds", help="Longer clips are cut into windows of at most this."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Utterances per batch (CPU default 1)."),
    batch_seconds: float | None = typer.Option(None, "--batch-seconds", help="GPU: padded audio seconds per batch (default 200)."),
    shards: int = typer.Option(1, "--shards", help="Split the corpus into N shards (one process each)."),
    shard: int = typer.Option(0, "--shard", help="Which shard this process extracts."),
):
    """Extract every layer of a model over a corpus into a crash-safe HDF5 store.

    Re-running resumes an interrupted run, extracts only new utterances of a grown corpus,
    and is a no-op when the store is complete. Under `torchrun --nproc-per-node N` each
    process extracts one shard.

    Example: ser extract --corpus ravdess --root /data/RAVDESS --model facebook/wav2vec2-base
    """
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest

    corpus, model, cache, device = _corpus(corpus), _model(model), _cache(cache), _device_opt(device)
    root = _root(corpus, root)
    dist = _torchrun()
    if dist:
        shard, shards, device = dist.rank, dist.world_size, dist.device(device)
    m = load_manifest(corpus, root, progress=shard == 0)
    lead = shard == 0 or not dist

    def on_skip(s):
        err.print(f"[yellow]skipped[/] {s.path}: {s.reason}", highlight=False)

    def on_wait(line):
        err.print(f"[yellow]waiting[/] {line}", highlight=False)

    res = extract_manifest(m, model=model, cache=cache, device=device, dtype=dtype, frames=frames,
                           max_seconds=max_seconds, batch_size=batch_size, batch_seconds=batch_seconds,
                           shards=shards, shard=shard, progress=lead, on_skip=on_skip, on_wait=on_wait)
    if dist:
        dist.barrier()
    tag = f"[shard {shard}/{shards}] " if shards > 1 else ""
    if res.frames_added:
        console.print(f"{tag}{res.store}: added frame layers {','.join(map(str, res.frames_added))} "
                      f"(pooled features unchanged)", highlight=False)
        if not res.extracted and not res.skipped:
            return
    if res.up_to_date:
        console.print(f"{tag}{res.store}: up to date ({res.already} utterances), nothing to extract")
        return
    console.print(f"{tag}{res.store}: extracted {res.extracted} utterances ({res.audio_seconds:.0f} s of audio, "
                  f"{res.speed:.1f} audio-s/s), {res.already} already there, {len(res.skipped)} skipped",
                  highlight=False)
    if shards > 1 and lead:
        console.print(f"read all shards as one store: ser store info {res.store.parent / (m.corpus + '.h5')}")


@store_app.command("ls")
@friendly
def store_ls(cache: Path | None = CACHE_OPT):
    """List the stores in the cache.

    Example: ser store ls --cache cache
    """
    from featstore.store import list_stores

    cache = _cache(cache)
    rows = list_stores(cache)
    if not rows:
        console.print(f"no stores under {cache} (run `ser extract` first)")
        return
    t = Table("model", "corpus", "utterances", "layers", "size", "status", "path")
    for r in rows:
        t.add_row(r["model"] or r["model_slug"], r["corpus"], str(r["utterances"]), str(r["layers"]),
                  _human(r["size"]), r["status"], r["path"])
    console.print(t)


@store_app.command("info")
@friendly
def store_info_cmd(path: Path = typer.Argument(..., help="A store file (or <corpus>.h5 of a sharded store).")):
    """Counts, layers, size, configuration and skipped utterances of a store.

    Example: ser store info cache/facebook--wav2vec2-base/ravdess.h5
    """
    from featstore.labels import canonical_order
    from featstore.store import store_info

    info = store_info(path)
    cfg = info["config"]
    t = Table(show_header=False, title=str(path))
    for k, v in [("model", cfg.get("model_id")), ("revision", cfg.get("revision") or "-"),
                 ("weights sha256", cfg.get("weights_sha256", "")[:16] + "…"), ("model type", cfg.get("model_type")),
                 ("dtype", cfg.get("dtype")), ("layers", f"{info['layers']} (0..{info['layers'] - 1})"),
                 ("hidden size", info["hidden_size"]), ("frame layers", ", ".join(map(str, info["frame_layers"])) or "none"),
                 ("utterances", info["utterances"]), ("speakers", info["speakers"]),
                 ("audio", f"{info['seconds'] / 3600:.2f} h"),
                 ("labels", ", ".join(f"{k} {info['labels'][k]}" for k in canonical_order(info["labels"]))),
                 ("size", _human(info["size"])), ("files", "\n".join(info["paths"])),
                 ("created", info["attrs"].get("created")), ("code version", info["attrs"].get("code_version")),
                 ("layer convention", cfg.get("layer_convention")), ("skipped", len(info["skipped"])),
                 ("integrity", "checksummed (Fletcher-32 per chunk, verified on every read)" if info["checksums"]
                  else "unverified: written before checksums; `ser store verify` checks that it reads end to end")]:
        t.add_row(k, str(v))
    console.print(t)
    for _uid, p, reason in info["skipped"]:
        console.print(f"  skipped {p}: {reason}", highlight=False)


@store_app.command("verify")
@friendly
def store_verify(path: Path = typer.Argument(..., help="A store file (or <corpus>.h5 of a sharded store).")):
    """Read a store end to end and report what is damaged (exit 2 if anything is).

    Example: ser store verify cache/facebook--wav2vec2-base/ravdess.h5
    """
    from featstore.store import StoreError, verify_store

    report = verify_store(path)
    for line in report.damaged:
        err.print(f"damaged: {line}", highlight=False)
    if not report.ok:
        raise StoreError(f"{path}: {len(report.damaged)} damaged; delete the damaged file and re-run the "
                         f"`ser extract` that made it")
    how = ("checksums verified" if not report.unverified
           else f"readable, but {len(report.unverified)} datasets have no checksums (written before format 2): "
                f"their numbers cannot be proven intact")
    console.print(f"{path}: intact, {len(report.files)} file(s), {_human(report.bytes_read)} read, {how}",
                  highlight=False)


@store_app.command("export")
@friendly
def store_export(
    path: Path = typer.Argument(..., help="A store file."),
    layer: int = typer.Option(..., "--layer", "-l", help="Layer k (hidden_states[k])."),
    stat: str = typer.Option("mean", "--stat", help="mean, std or mean+std."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz (arrays id, X, label, speaker, corpus)."),
):
    """Export one layer's pooled features as .npz.

    Example: ser store export cache/facebook--wav2vec2-base/ravdess.h5 --layer 12 --out l12.npz
    """
    from featstore.store import export_layer

    console.print(f"wrote {export_layer(path, layer, out, stat)}")


# ---------------------------------------------------------------------------------------------
# probes and neighbours
# ---------------------------------------------------------------------------------------------

def _cached_corpora(cache: Path, model: str) -> list[str]:
    from featstore.store import cached_corpora

    return cached_corpora(cache, model)


@app.command()
@friendly
def probe(
    corpus: str | None = typer.Option(None, "--corpus", "-c",
                                         help="Corpus to test on; default: every corpus cached for the model."),
    layer: str = typer.Option("all", "--layer", "-l", help="12, all, 3-9 or 6,12."),
    classifier: str = typer.Option("logreg", "--classifier", help="logreg, xgboost or attention (frame-level)."),
    protocol: str | None = typer.Option(None, "--protocol", "-p",
                                           help="luna5, emobox, loso, loso-session, speaker-kfold:K; default: per corpus."),
    stat: str = typer.Option("mean", "--stat", help="mean, std or mean+std pooled statistics."),
    train: list[str] | None = typer.Option(None, "--train",
                                              help="Training corpora, e.g. ravdess,emodb (repeat to compare training sets)."),
    test: str | None = typer.Option(None, "--test", help="Cross-corpus: test corpora, e.g. cremad."),
    matrix: str | None = typer.Option(None, "--matrix", help="Transfer matrix over corpora, e.g. ravdess,emodb,emovo,cremad."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds (0..N-1)."),
    C: float | None = typer.Option(None, "--C", help="Fix logreg's C (default: chosen by inner speaker CV)."),
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Results directory (default results/probe-...)."),
    save_probe: Path | None = typer.Option(None, "--save-probe",
                                              help="Also fit the probe on all of --corpus at one --layer and save it for `ser predict`."),
):
    """Probe cached features: layer sweeps, multi-corpus training, cross-corpus transfer.

    Examples:
      ser probe --layer 12                          (every cached corpus, side by side)
      ser probe --corpus ravdess --layer all --protocol luna5
      ser probe --corpus ravdess --train ravdess --train ravdess,emodb --train ravdess,emodb,emovo
      ser probe --train ravdess,emodb --test cremad --layer 12
      ser probe --matrix ravdess,emodb,emovo,cremad --layer 12
    """
    from classifiers.probe import run_matrix, run_probe
    from classifiers.results import summary_table
    from featstore.backbone import model_slug
    from featstore.config import default_protocol

    model, cache = _model(model), _cache(cache)
    dev = _device_opt(device)
    slug = model_slug(model)
    if matrix:
        corpora_list = [c for c in matrix.split(",") if c]
        k = int(layer) if layer.lstrip("-").isdigit() else -1
        out = out or Path("results") / f"matrix-{slug}"
        M, details, files = run_matrix(corpora_list, layer=k, model=model, cache=cache, classifier=classifier,
                                       C=C, out=out, device=dev)
        t = Table("train \\ test", *corpora_list, title=f"transfer UAR, layer {k}")
        for i, a in enumerate(corpora_list):
            t.add_row(a, *[f"{M[i, j]:.3f}" for j in range(len(corpora_list))])
        console.print(t)
        for (a, b), d in details.items():
            for dropped in d["dropped"].values():
                console.print(f"{a} → {b}: dropped test classes absent from training: "
                              + ", ".join(f"{k} ({v})" for k, v in dropped.items()), highlight=False)
        console.print("wrote " + ", ".join(str(f) for f in files), highlight=False)
        return
    if corpus is None and not train and not test:
        targets = _cached_corpora(cache, model)
    else:
        targets = [corpus.lower() if corpus else None]
    from classifiers.results import ProbeResults

    combined = ProbeResults()
    files = []
    for target in targets:
        prot = protocol or (default_protocol(target) if target else None)
        o = out or Path("results") / f"probe-{target or 'cross'}-{slug}"
        if len(targets) > 1 and out:
            o = out / target
        run = run_probe(target, layers=layer, classifier=classifier, protocol=prot, stat=stat, train=train,
                        test=[test] if test else None, seeds=seeds, model=model, cache=cache, out=o, C=C,
                        device=dev)
        combined.extend(run.results)
        files.extend(run.files)
        for fold, dropped in run.results.dropped.items():
            console.print(f"{fold}: dropped test classes absent from training: "
                          + ", ".join(f"{k} ({v})" for k, v in dropped.items()), highlight=False)
        console.print(f"[dim]{target or 'cross-corpus'}: {run.seconds:.1f} s[/]")
    console.print(summary_table(combined, title=f"probe, model {model}"))
    console.print("wrote " + ", ".join(str(f) for f in files), highlight=False)
    if save_probe:
        from classifiers.probe import fit_and_save_probe

        path = fit_and_save_probe(save_probe, train or [targets[0]], layer=layer, stat=stat, model=model,
                                  cache=cache, C=C, device=dev)
        console.print(f"saved probe: {path} (use: ser predict FILE... --model {save_probe})", highlight=False)


@app.command()
@friendly
def neighbors(
    corpus: str | None = typer.Option(None, "--corpus", "-c", help="Corpora, e.g. ravdess,emodb (default: all cached)."),
    layer: str = typer.Option("all", "--layer", "-l", help="all, 12, 3-9 or 6,12."),
    k: int = typer.Option(10, "--k", help="Neighbours per query."),
    stat: str = typer.Option("mean", "--stat", help="mean, std or mean+std."),
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Results directory (default results/neighbors-...)."),
):
    """What each layer encodes: neighbour purity (emotion, speaker, gender, language, corpus),
    speaker-independent kNN accuracy and cross-corpus retrieval, with exact faiss search.

    Example: ser neighbors --corpus ravdess,emodb --layer all --k 10
    """
    from classifiers.neighbors import neighbor_analysis
    from classifiers.probe import parse_layers, store_for
    from featstore.backbone import model_slug
    from featstore.store import open_store

    model, cache = _model(model), _cache(cache)
    names = [c for c in (corpus or "").split(",") if c] or _cached_corpora(cache, model)
    fs = open_store(*[store_for(cache, model, c) for c in names])
    report = neighbor_analysis(fs, layers=parse_layers(layer, fs.num_layers), k=k, stat=stat)
    head, rows = report.table_rows()
    t = Table(*head, title=f"neighbour purity (k={k}) vs chance, {', '.join(names)}")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    head, rows = report.cross_rows()
    if rows:
        t = Table(*head, title="cross-corpus retrieval")
        for r in rows:
            t.add_row(*r)
        console.print(t)
    o = out or Path("results") / f"neighbors-{'-'.join(names)}-{model_slug(model)}"
    written = [report.write(o / "neighbors.json"), report.write(o / "neighbors.csv"),
               report.plot(o / "neighbors_purity.png")]
    console.print("wrote " + ", ".join(str(f) for f in written), highlight=False)


# ---------------------------------------------------------------------------------------------
# configuration and downloads
# ---------------------------------------------------------------------------------------------

config_app = typer.Typer(help="Show or change defaults: model, cache, device, data roots.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@friendly
def config_show():
    """Every setting, its value and where it comes from.

    Example: ser config show
    """
    from featstore.config import config_path, show

    t = Table("key", "value", "source", title=str(config_path()))
    for key, value, source in show():
        t.add_row(key, "" if value is None else str(value), source)
    console.print(t)


@config_app.command("set")
@friendly
def config_set(key: str = typer.Argument(..., help="e.g. model, cache, device, data, corpus, corpora.ravdess.root"),
               value: str = typer.Argument(..., help="The value.")):
    """Set a default.

    Example: ser config set corpora.ravdess.root /data/RAVDESS
    """
    from featstore.config import set_value

    console.print(f"{key} = {value}  ({set_value(key, value)})", highlight=False)


@config_app.command("unset")
@friendly
def config_unset(key: str = typer.Argument(..., help="The key to remove.")):
    """Remove a setting (its default applies again).

    Example: ser config unset model
    """
    from featstore.config import unset_value

    console.print(f"{key} removed" if unset_value(key) else f"{key} was not set")


@app.command()
@friendly
def download(
    corpus: str | None = typer.Argument(None, help="Corpus to download (see --list)."),
    to: Path | None = typer.Option(None, "--to", help="Target directory (default <data dir>/<corpus>)."),
    url: str | None = typer.Option(None, "--url", help="Another URL or a local archive of the same corpus."),
    md5: str | None = typer.Option(None, "--md5", help="Expected MD5 of the archive."),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive."),
    force: bool = typer.Option(False, "--force", help="Download again even if the corpus is there."),
    list_: bool = typer.Option(False, "--list", help="List where each corpus comes from."),
):
    """Download and unpack a corpus (resumable, checksummed, safe extraction), then check it.

    Corpora behind a licence or registration print where and how to obtain them instead.
    Example: ser download ravdess
    """
    from featstore.download import SOURCE_COLUMNS, sources
    from featstore.download import download as fetch_corpus

    if list_ or not corpus:
        t = Table(*SOURCE_COLUMNS, title="corpus sources")
        for row in sources():
            t.add_row(*[row[c] for c in SOURCE_COLUMNS])
        console.print(t)
        return
    res = fetch_corpus(corpus.lower(), to, url=url, md5=md5, sha256=sha256, force=force, progress=True)
    console.print(res.summary(), highlight=False)


# ---------------------------------------------------------------------------------------------
# fine-tuning and prediction
# ---------------------------------------------------------------------------------------------

@app.command()
@friendly
def finetune(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    train: str | None = typer.Option(None, "--train", help="Training corpora, e.g. ravdess,emodb (tested on --corpus' folds)."),
    model: str | None = MODEL_OPT,
    protocol: str | None = typer.Option(None, "--protocol", "-p", help="Fold protocol; default: the corpus' standard one."),
    fold: str = typer.Option("all", "--fold", help="all, a fold index or a fold name."),
    epochs: float = typer.Option(6, "--epochs", help="Training epochs."),
    freeze: str = typer.Option("feature-encoder", "--freeze", help="none, feature-encoder, layers:N or backbone."),
    pooling: str = typer.Option("mean", "--pooling", help="mean, attention, layer-weighted or bilstm."),
    augment: str | None = typer.Option(None, "--augment", help="e.g. chunk-permute,noise or speed:0.9/1.0/1.1."),
    seed: int = typer.Option(0, "--seed", help="Random seed (data order, head init, augmentation)."),
    lr: float = typer.Option(3e-5, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", help="Utterances per step."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Gradient accumulation steps."),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Crop training clips to S seconds."),
    report_to: str = typer.Option("none", "--report-to", help="none, tensorboard or wandb."),
    device: str | None = DEVICE_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default runs/finetune-...)."),
):
    """Fine-tune the model end to end over speaker-independent folds (model selection on
    validation speakers, never the test fold); resumes an interrupted run.

    Example: ser finetune --corpus ravdess --model facebook/wav2vec2-large-xlsr-53 --protocol luna5 --epochs 6
    """
    from classifiers.finetune import finetune as run_finetune
    from featstore.backbone import model_slug
    from featstore.config import default_protocol
    from featstore.corpora import load_manifest
    from featstore.folds import make_folds, multi_corpus_folds

    corpus, model = _corpus(corpus), _model(model)
    manifests = [load_manifest(corpus, _root(corpus, root))]
    extra = [c for c in (train or "").split(",") if c and c != corpus]
    for c in extra:
        manifests.append(load_manifest(c, _root(c, None)))
    for m in manifests:
        _print_problems(m.problems, limit=10)
    utts = [u for m in manifests for u in m.utterances]
    prot = protocol or default_protocol(corpus)
    folds_ = multi_corpus_folds(utts, corpus, prot, extra) if extra else make_folds(utts, prot)
    out = out or Path("runs") / f"finetune-{'+'.join([corpus] + extra)}-{model_slug(model)}-{pooling}-seed{seed}"
    res = run_finetune(utts, folds_, model, out_dir=out, epochs=epochs, freeze=freeze, pooling=pooling,
                       augment=augment, seed=seed, lr=lr, batch_size=batch_size, grad_accum=grad_accum, fold=fold,
                       max_duration=max_duration, report_to=report_to, device=_device_opt(device))
    t = Table("fold", "test", "WA", "UAR", "macro-F1", title=f"fine-tuned {model} on {'+'.join([corpus] + extra)} ({prot})")
    for row in res.table():
        t.add_row(str(row["fold"]), "" if row["n_test"] is None else str(row["n_test"]),
                  *[f"{row[k]:.3f}" for k in ("wa", "uar", "macro_f1")])
    console.print(t)
    console.print("wrote " + ", ".join(str(p) for p in res.files.values()), highlight=False)


@app.command()
@friendly
def predict(
    files: list[Path] = typer.Argument(..., help="Audio files."),
    model: Path = typer.Option(..., "--model", "-m", help="A fine-tuned model directory or a saved probe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str | None = DEVICE_OPT,
):
    """Emotion probabilities per file, from a fine-tuned model or a saved probe.

    Example: ser predict clip1.wav clip2.wav --model runs/finetune-ravdess-.../luna-0/model
    """
    import json

    from classifiers.predict import predict as run_predict

    rows = run_predict(files, model, device=_device_opt(device))
    if as_json:
        print(json.dumps([{"file": f, "probabilities": p, "label": max(p, key=p.get)} for f, p in rows], indent=1))
        return
    labels = list(rows[0][1]) if rows else []
    t = Table("file", "predicted", *labels)
    for f, p in rows:
        best = max(p, key=p.get)
        t.add_row(f, best, *[f"{p[k]:.3f}" for k in labels])
    console.print(t)


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Where the corpus, store and results go."),
    n: int = typer.Option(240, "--n", help="Synthetic RAVDESS utterances (balanced over 24 actors, 8 emotions)."),
    model: str | None = typer.Option(None, "--model", "-m",
                                        help="Model to extract with (default: a small local random-weight wav2vec2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic corpus."),
):
    """The main job on the embedded default: synthetic corpus -> folds -> extract -> probe -> plots.

    Needs no network and no corpus: a synthetic RAVDESS-shaped corpus and a small local model.

    Example: ser demo --out demo --n 240
    """
    from featstore.backbone import build_demo_model
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.folds import fold_summary, make_folds
    from featstore.synth import synthesize

    root = out / "ravdess"
    if not (root / ".ser-synth.json").exists():
        console.rule("1. synthetic corpus")
        console.print(synthesize("ravdess", root, n=n, seed=seed, progress=True).summary(), highlight=False)
    m = load_manifest("ravdess", root)
    console.rule("2. manifest and luna5 folds")
    labels = m.label_counts()
    console.print(f"{len(m)} utterances, {len(m.speaker_counts())} speakers, "
                  f"{sum(u.duration for u in m) / 60:.1f} min; labels: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())), highlight=False)
    _print_problems(m.problems)
    fl = make_folds(m.utterances, "luna5")
    t = Table("fold", "train", "test", "test speakers", "leaked speakers")
    for row in fold_summary(m.utterances, fl):
        t.add_row(row["fold"], str(row["n_train"]), str(row["n_test"]), ", ".join(row["test_speakers"]),
                  str(row["leaked_speakers"]))
    console.print(t)
    console.rule("3. extract every layer")
    if model is None:
        model = str(build_demo_model(out / "models" / "demo-wav2vec2-random"))
        console.print(f"model: {model} (6 layers x 256, random weights: no hub download here; "
                      f"pass --model facebook/wav2vec2-base for the real one)", highlight=False)
    res = extract_manifest(m, model=model, cache=out / "cache", device="auto", progress=True)
    console.print(f"store: {res.store} ({res.extracted} extracted, {res.already} already there)", highlight=False)
    console.rule("4. probe every layer (logistic regression, C by inner speaker CV, luna5 folds)")
    from classifiers.neighbors import neighbor_analysis
    from classifiers.probe import run_probe
    from classifiers.results import summary_table
    from featstore.store import open_store

    run = run_probe("ravdess", layers="all", protocol="luna5", model=model, cache=out / "cache",
                    out=out / "results" / "probe")
    console.print(summary_table(run.results, title="demo probe"))
    console.rule("5. nearest neighbours: what each layer encodes")
    report = neighbor_analysis(open_store(res.store), k=10)
    head, rows = report.table_rows()
    t = Table(*head)
    for r in rows:
        t.add_row(*r)
    console.print(t)
    files = run.files + [report.write(out / "results" / "neighbors" / "neighbors.json"),
                         report.plot(out / "results" / "neighbors" / "neighbors_purity.png")]
    console.rule("done")
    console.print("results and plots:\n  " + "\n  ".join(str(f) for f in files), highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
