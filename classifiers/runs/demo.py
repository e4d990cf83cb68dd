"""`ser demo`: the research loop on the embedded default, with no network and no corpus.

synthetic RAVDESS-shaped corpus -> manifest and luna5 folds -> every layer of a small local
wav2vec2 into the store -> logistic-regression probe of every layer -> nearest neighbours ->
the runs registered (a re-run shows them), the HTML report, and the best layer against the runner-up (exploratory: CI and p
adjusted for picking the best layer on the test speakers).
`demo` yields what to show, step by step; the CLI prints it.
"""

from __future__ import annotations

import tempfile
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
         overwrite: bool = True, threads: int | None = None, force: bool = False) -> Iterator[DemoStep]:
    """Run the demo into `out` (corpus, models, cache, results), yielding `DemoStep`s to show.

    n: synthetic utterances (balanced over 24 actors and 8 emotions); model: None = a small
    random-weight wav2vec2 built locally. Re-running reuses the corpus and the store; the probe
    and the neighbours are registered runs (`out`/results/ser.db), so a re-run with the same
    settings over the same store shows the registered runs and writes nothing, unless `force`
    (which runs them again into the same folders). `overwrite`: results in those folders that are
    not the registered runs' (an earlier corpus) may be replaced. The last step's `files` lists
    every result.
    threads: CPU threads (`featstore.threads.limited`); None: $SER_THREADS or config `threads` when
    set, else one: the demo's tiny model and probe gain nothing from a second thread (measured
    before the no-spin OpenMP settings: two threads on busy shared cores, 208 s of CPU instead of 45 s).
    """
    from featstore.threads import limited

    with limited(_threads(threads)):
        yield from _demo(Path(out), n, model, seed, overwrite or force, force)


def _shown(run: dict) -> str:
    return (f"registered run {run['id']} of {run['created']} (identical configuration over identical stores; "
            f"--force runs it again)")


def _demo(out: Path, n: int, model: str | None, seed: int, overwrite: bool, force: bool = False) -> Iterator[DemoStep]:
    from classifiers.results.records import summary_table, table
    from classifiers.results.registry import Registry
    from classifiers.runs.configs import NeighborsConfig, ProbeConfig
    from featstore.backbones.runtime import build_demo_model
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.folds import fold_summary, make_folds
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
        # absolute: the registry, saved probes and figures name a model that any directory can load (issue 23)
        model = str(Path(build_demo_model(out / "models" / "demo-wav2vec2-random")).resolve())
        yield DemoStep(text=f"model: {model} (6 layers x 256, random weights: no hub download here; "
                            "pass --model facebook/wav2vec2-base for the real one)")
    res = extract_manifest(m, model=model, cache=out / "cache", device="auto", progress=True)
    yield DemoStep(text=f"store: {res.store} ({res.extracted} extracted, {res.already} already there)")
    results_dir = out / "results"
    registry = Registry(results_dir / "ser.db")
    yield DemoStep("4. probe every layer (logistic regression, C by inner CV, luna5 folds)")
    # the configurations `ser probe` and `ser neighbors` build: the same registry keys, so an identical
    # `ser probe --corpus ravdess --protocol luna5` finds the demo's run
    probe = ProbeConfig("ravdess", layers="all", protocol="luna5", model=model).run(
        cache=out / "cache", registry=registry, force=force, out=results_dir / "probe", overwrite=overwrite,
        progress=True, command="ser demo")
    yield DemoStep(text=_shown(probe.run) if probe.reused else f"registered run {probe.run['id']} in {registry.path}")
    yield DemoStep(text=summary_table(probe.results, title="demo probe"))
    yield DemoStep("5. nearest neighbours: what each layer encodes")
    nb = NeighborsConfig(["ravdess"], layers="all", k=10, model=model).run(
        cache=out / "cache", registry=registry, force=force, out=results_dir / "neighbors", overwrite=overwrite,
        command="ser demo")
    yield DemoStep(text=_shown(nb.run) if nb.reused else f"registered run {nb.run['id']} in {registry.path}")
    head, rows = nb.report.table_rows()
    t = table(*head)
    for r in rows:
        t.add_row(*r)
    yield DemoStep(text=t)
    yield DemoStep("6. registry, report and one comparison with its uncertainty")
    files = [*(_folder_files(probe.run) if probe.reused else probe.files),
             *(_folder_files(nb.run) if nb.reused else nb.files)]
    with tempfile.TemporaryDirectory() as tmp:  # the report embeds PNG, whatever --format wrote
        purity_png = (next((f for f in files if f.name == "neighbors_purity.png"), None)
                      or nb.report.plot(Path(tmp) / "neighbors_purity.png", formats="png"))
        page, line = _report(probe, registry, results_dir, purity_png, write=not (probe.reused and nb.reused))
    files.append(page)
    yield DemoStep(text=f"{line}\nreport: {page}" + (" (the registered runs' report, unchanged)"
                                                     if probe.reused and nb.reused and page.exists() else ""))
    yield DemoStep("done", text="results and plots:\n  " + "\n  ".join(str(f) for f in files), files=files)


def _folder_files(run: dict) -> list[Path]:
    """The files of a registered run's folder (a re-run shows them; nothing is written)."""
    return sorted(p for p in Path(run["out"]).iterdir() if p.is_file())


def _report(probe, registry, results_dir: Path, purity_png: Path, *, write: bool = True) -> tuple[Path, str]:
    """Write the HTML report of the registered probe run (unless `write` is False and it is there),
    and say whether the best layer really beats the runner-up: (report path, one line with the
    difference, CI and p)."""
    from classifiers.results.compare import layer_differences
    from classifiers.results.report import write_report

    page = results_dir / "report.html"
    if write or not page.exists():
        page = write_report([(probe.run, probe.results)], page, figures=[purity_png], title="ser demo report")
    rows = layer_differences(probe.results)  # the best layer is picked on these test speakers: exploratory, adjusted
    close = min(rows, key=lambda r: r["diff"])
    line = (f"exploratory (both layers picked on these test speakers): {close['a']} vs the runner-up {close['b']}: "
            f"UAR {close['diff']:+.3f}, 95% CI [{close['low']:+.3f}, {close['high']:+.3f}], p = {close['p']:.3g}, "
            f"both adjusted for picking the best of {close['family']} layers (max-T speaker permutation); "
            f"run {probe.run['id']} in {registry.path}")
    return page, line
