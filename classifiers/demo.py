"""`ser demo`: the research loop on the embedded default, with no network and no corpus.

synthetic RAVDESS-shaped corpus -> manifest and luna5 folds -> every layer of a small local
wav2vec2 into the store -> logistic-regression probe of every layer -> nearest neighbours ->
the run registered, the HTML report, and the best layer against the runner-up (exploratory: CI and p
adjusted for picking the best layer on the test speakers).
`demo` yields what to show, step by step; the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: measured: 87 s wall, 41 s CPU for the default demo on 2 cores shared with other jobs (load ~5)
ESTIMATE = "about a minute on 2 free CPU cores (40 s of CPU time; longer on a busy machine)"


def _threads(n: int | None) -> int:
    """--threads, else $SER_THREADS or config `threads` when set, else 1 (see `demo`)."""
    from featstore.threads import default_threads

    if n is not None:
        return n
    default, source = default_threads()
    return default if source in ("env $SER_THREADS", "config file") else 1


@dataclass
class DemoStep:
    """A heading (`title`) or something to print (`text`: a string or a rich renderable)."""

    title: str | None = None
    text: object = None
    files: list[Path] = field(default_factory=list)


def demo(out: str | Path = "demo", *, n: int = 240, model: str | None = None, seed: int = 0,
         overwrite: bool = True, threads: int | None = None) -> Iterator[DemoStep]:
    """Run the demo into `out` (corpus, models, cache, results), yielding `DemoStep`s to show.

    n: synthetic utterances (balanced over 24 actors and 8 emotions); model: None = a small
    random-weight wav2vec2 built locally. Re-running reuses the corpus and the store and
    replaces the results (`overwrite`). The last step's `files` lists every result written.
    threads: CPU threads (`featstore.threads.limited`); None: $SER_THREADS or config `threads` when
    set, else one: the demo's tiny model and probe gain nothing from a second thread (measured
    before the no-spin OpenMP settings: two threads on busy shared cores, 208 s of CPU instead of 45 s).
    """
    from featstore.threads import limited

    with limited(_threads(threads)):
        yield from _demo(Path(out), n, model, seed, overwrite)


def _demo(out: Path, n: int, model: str | None, seed: int, overwrite: bool) -> Iterator[DemoStep]:
    from classifiers.neighbors import neighbor_analysis
    from classifiers.probe import run_probe
    from classifiers.results import check_out, summary_table, table
    from featstore.backbone import build_demo_model
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.folds import fold_summary, make_folds
    from featstore.store import open_store
    from featstore.synth import synthesize, synthesized

    yield DemoStep(text=f"ser demo: {n} synthetic utterances, every layer probed and analysed; {ESTIMATE}")
    root = out / "ravdess"
    if synthesized(root) is None:  # none yet, or one stopped half-way: (re)written, only ever its own files
        yield DemoStep("1. synthetic corpus")
        yield DemoStep(text=synthesize("ravdess", root, n=n, seed=seed, progress=True, overwrite=True).summary())
    m = load_manifest("ravdess", root)
    yield DemoStep("2. manifest and luna5 folds")
    labels = m.label_counts()
    yield DemoStep(text=f"{len(m)} utterances, {len(m.speaker_counts())} speakers, "
                        f"{sum(u.duration for u in m) / 60:.1f} min; labels: "
                        + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    for p in m.problems:
        yield DemoStep(text=f"skipped {p.path}: {p.reason}")
    folds = make_folds(m.utterances, "luna5")
    t = table("fold", "train", "test", "test speakers", "leaked speakers")
    for row in fold_summary(m.utterances, folds):
        t.add_row(row["fold"], str(row["n_train"]), str(row["n_test"]), ", ".join(row["test_speakers"]),
                  str(row["leaked_speakers"]))
    yield DemoStep(text=t)
    yield DemoStep("3. extract every layer")
    if model is None:
        model = str(build_demo_model(out / "models" / "demo-wav2vec2-random"))
        yield DemoStep(text=f"model: {model} (6 layers x 256, random weights: no hub download here; "
                            "pass --model facebook/wav2vec2-base for the real one)")
    res = extract_manifest(m, model=model, cache=out / "cache", device="auto", progress=True)
    yield DemoStep(text=f"store: {res.store} ({res.extracted} extracted, {res.already} already there)")
    yield DemoStep("4. probe every layer (logistic regression, C by inner speaker CV, luna5 folds)")
    run = run_probe("ravdess", layers="all", protocol="luna5", model=model, cache=out / "cache",
                    out=out / "results" / "probe", overwrite=overwrite, progress=True)
    yield DemoStep(text=summary_table(run.results, title="demo probe"))
    yield DemoStep("5. nearest neighbours: what each layer encodes")
    report = neighbor_analysis(open_store(res.store), k=10)
    head, rows = report.table_rows()
    t = table(*head)
    for r in rows:
        t.add_row(*r)
    yield DemoStep(text=t)
    nb_out = check_out(out / "results" / "neighbors", overwrite)
    files = run.files + [report.write(nb_out / "neighbors.json"), report.write(nb_out / "neighbors.csv"),
                         report.plot(nb_out / "neighbors_purity.png")]
    yield DemoStep("6. registry, report and one comparison with its uncertainty")
    page, line = _register_and_report(run, res.store, model, out / "results", files[-1])
    files.append(page)
    yield DemoStep(text=f"{line}\nreport: {page}")
    yield DemoStep("done", text="results and plots:\n  " + "\n  ".join(str(f) for f in files), files=files)


def _register_and_report(run, store: Path, model: str, results_dir: Path, purity_png: Path) -> tuple[Path, str]:
    """Register the probe in `results_dir`/ser.db, write the HTML report, and say whether the best
    layer really beats the runner-up: (report path, one line with the difference, CI and p)."""
    from classifiers.compare import layer_differences
    from classifiers.registry import Registry, store_fingerprint
    from classifiers.report import write_report
    from featstore.store import open_store

    registry = Registry(results_dir / "ser.db")
    predictions = next((f for f in run.files if f.suffix == ".parquet"), None)
    run_id = registry.register(kind="probe", config=dict(corpus="ravdess", layers="all", protocol="luna5", seeds=1, model=model),
                               stores=[store_fingerprint(open_store(store))], results=run.results, command="ser demo",
                               out=results_dir / "probe", predictions=predictions)
    page = write_report([(registry.run(run_id), run.results)], results_dir / "report.html", figures=[purity_png],
                        title="ser demo report")
    rows = layer_differences(run.results)  # the best layer is picked on these test speakers: exploratory, adjusted
    close = min(rows, key=lambda r: r["diff"])
    line = (f"exploratory (both layers picked on these test speakers): {close['a']} vs the runner-up {close['b']}: "
            f"UAR {close['diff']:+.3f}, 95% CI [{close['low']:+.3f}, {close['high']:+.3f}], p = {close['p']:.3g}, "
            f"both adjusted for picking the best of {close['family']} layers (max-T speaker permutation); "
            f"run {run_id} in {registry.path}")
    return page, line
