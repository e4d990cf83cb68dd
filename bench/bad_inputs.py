"""Bad inputs over every command: each must be refused in one `error:` line (or click's usage
message), never a traceback, never accepted.

    python bench/bad_inputs.py            # builds a small world (synthetic RAVDESS, tiny model,
                                          # a store, a registered run, a saved probe) and prints
                                          # tried / one line / usage message / traceback / accepted

Each case runs in-process through typer's CliRunner (as `ser ...` would) in a temporary
directory; `tests/test_bad_inputs.py` runs the same cases and fails on any traceback or acceptance.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (command line, what is wrong). Placeholders: {root} synthetic RAVDESS, {model} tiny model dir,
#: {store} its store, {run} a registered run id, {probe} a saved probe, {wav} an audio file,
#: {txt} a text file, {dir} an existing directory, {study} a study file, {empty} an empty file,
#: {nan_toml} a study with a bad value.
CASES: list[tuple[str, str]] = [
    # corpora, models, config
    ("corpora --labels --nope", "unknown option"),
    ("config set nope.key 1", "unknown config key"),
    ("config set model", "missing value"),
    ("config unset", "missing key"),
    ("config set device gpu7", "bad device"),
    # manifest, folds
    ("manifest --corpus nope --root {root}", "unknown corpus"),
    ("manifest --corpus ravdess --root {dir}/missing", "missing root"),
    ("manifest --corpus ravdess --root {txt}", "root is a file"),
    ("manifest --corpus ravdess --root {root} --out {dir}", "--out is a directory"),
    ("manifest --corpus ravdess --root {root} --out /proc/x.csv", "--out under /proc"),
    ("manifest --corpus ravdess --root {root} --out {txt}/x.csv", "--out under a file"),
    ("manifest --corpus ravdess --root {root} --out m.xlsx", "--out with an unknown suffix"),
    ("folds --corpus ravdess --root {root} --protocol nope", "unknown protocol"),
    ("folds --corpus ravdess --root {root} --protocol speaker-kfold:0", "K = 0"),
    ("folds --corpus ravdess --root {root} --protocol speaker-kfold:x", "K not a number"),
    ("folds --corpus ravdess --root {root} --protocol speaker-kfold:100", "more folds than speakers"),
    ("folds --corpus ravdess --root {root} --seed -1", "negative seed"),
    ("folds --corpus ravdess --root {root} --seed x", "seed not a number"),
    # synth
    ("synth --like nope --out s1", "unknown corpus"),
    ("synth --like ravdess --out {txt} --n 2", "--out is a file"),
    ("synth --like ravdess --out s2 --n 0", "n = 0"),
    ("synth --like ravdess --out s3 --n -3", "negative n"),
    ("synth --like ravdess --out s4 --n 2 --max-duration nan", "NaN duration"),
    ("synth --like ravdess --out s5 --n 2 --max-duration 0", "zero duration"),
    ("synth --like ravdess --out s6 --n 2 --sample-rate 0", "zero sample rate"),
    ("synth --like ravdess --out s7 --n 2 --sample-rate -16000", "negative sample rate"),
    ("synth --like ravdess --out s8 --n 2 --seed -1", "negative seed"),
    ("synth --like ravdess --out {root} --n 2", "non-empty target without --overwrite"),
    ("synth --like ravdess --out /proc/ser-synth --n 2", "--out under /proc"),
    # extract
    ("extract --corpus ravdess --root {root} --model {model} --frames=-1", "negative frame layer"),
    ("extract --corpus ravdess --root {root} --model {model} --frames 99", "frame layer beyond the model"),
    ("extract --corpus ravdess --root {root} --model {model} --frames 3-1", "empty frame range"),
    ("extract --corpus ravdess --root {root} --model {model} --frames x", "frame layers not numbers"),
    ("extract --corpus ravdess --root {root} --model {model} --max-seconds nan", "NaN max-seconds"),
    ("extract --corpus ravdess --root {root} --model {model} --max-seconds inf", "infinite max-seconds"),
    ("extract --corpus ravdess --root {root} --model {model} --max-seconds 0", "zero max-seconds"),
    ("extract --corpus ravdess --root {root} --model {model} --max-seconds -1", "negative max-seconds"),
    ("extract --corpus ravdess --root {root} --model {model} --max-seconds 0.001",
     "max-seconds below the receptive field"),
    ("extract --corpus ravdess --root {root} --model {model} --dtype float8", "unknown dtype"),
    ("extract --corpus ravdess --root {root} --model {model} --batch-size 0", "zero batch size"),
    ("extract --corpus ravdess --root {root} --model {model} --batch-seconds nan", "NaN batch seconds"),
    ("extract --corpus ravdess --root {root} --model {model} --shards 0", "zero shards"),
    ("extract --corpus ravdess --root {root} --model {model} --shards 2 --shard 2", "shard out of range"),
    ("extract --corpus ravdess --root {root} --model {model} --shard -1", "negative shard"),
    ("extract --corpus ravdess --root {root} --model {model} --device gpu", "bad device"),
    ("extract --corpus ravdess --root {root} --model {model} --device cuda:x", "bad device index"),
    ("extract --corpus ravdess --root {root} --model {dir}/no-model", "missing model directory"),
    ("extract --corpus ravdess --root {root} --model {txt}", "model is a text file"),
    ("extract --corpus ravdess --root {root} --model {model} --cache {txt}", "cache is a file"),
    ("extract --corpus ravdess --root {root} --model {model} --cache /proc/ser", "cache under /proc"),
    # store
    ("store info {dir}/none.h5", "no store"),
    ("store info {txt}", "not a store"),
    ("store info {empty}", "empty file as a store"),
    ("store verify {dir}/x[/].h5", "markup in a path"),
    ("store verify {txt}", "not a store"),
    ("store export {store} --layer 99 --out l.npz", "layer out of range"),
    ("store export {store} --layer -1 --out l.npz", "negative layer"),
    ("store export {store} --layer 1-2 --out l.npz", "several layers where one is written"),
    ("store export {store} --layer 1 --stat median --out l.npz", "unknown statistic"),
    ("store export {store} --layer 1 --out {dir}", "--out is a directory"),
    ("store export {store} --layer 1 --out /proc/l.npz", "--out under /proc"),
    ("store export {store} --layer 1 --out l.txt", "--out not .npz"),
    ("store ls --cache {txt}", "cache is a file"),
    # probe
    ("probe --corpus ravdess --model {model} --C nan", "NaN C"),
    ("probe --corpus ravdess --model {model} --C inf", "infinite C"),
    ("probe --corpus ravdess --model {model} --C 0", "zero C"),
    ("probe --corpus ravdess --model {model} --C -1", "negative C"),
    ("probe --corpus ravdess --model {model} --seeds 0", "zero seeds"),
    ("probe --corpus ravdess --model {model} --seeds -2", "negative seeds"),
    ("probe --corpus ravdess --model {model} --layer=-1", "negative layer"),
    ("probe --corpus ravdess --model {model} --layer 99", "layer beyond the model"),
    ("probe --corpus ravdess --model {model} --layer 5-2", "empty layer range"),
    ("probe --corpus ravdess --model {model} --layer x", "layer not a number"),
    ("probe --corpus ravdess --model {model} --layer ,", "layer list of nothing"),
    ("probe --corpus ravdess --model {model} --classifier svm", "unknown classifier"),
    ("probe --corpus ravdess --model {model} --protocol nope", "unknown protocol"),
    ("probe --corpus ravdess --model {model} --stat median", "unknown statistic"),
    ("probe --corpus ravdess --model {model} --classes some", "unknown classes policy"),
    ("probe --corpus ravdess --model {model} --class-weight heavy", "unknown class weight"),
    ("probe --corpus ravdess --model {model} --classifier knn --speaker-norm --no-early-stopping",
     "early stopping for kNN"),
    ("probe --corpus nope --model {model}", "unknown corpus"),
    ("probe --corpus ravdess --model {dir}/other", "no store for the model"),
    ("probe --matrix , --model {model}", "empty matrix"),
    ("probe --matrix ravdess,,emodb --model {model}", "empty name in the matrix"),
    ("probe --matrix ravdess --seeds 3 --model {model}", "seeds ignored by the matrix"),
    ("probe --matrix ravdess --train ravdess --model {model}", "train ignored by the matrix"),
    ("probe --matrix ravdess --force --model {model}", "force ignored by the matrix"),
    ("probe --corpus ravdess --model {model} --out /proc/probe", "--out under /proc"),
    ("probe --corpus ravdess --model {model} --out {txt}", "--out is a file"),
    ("probe --corpus ravdess --model {model} --save-probe {txt}", "--save-probe is a file"),
    ("probe --corpus ravdess --model {model} --train nope", "unknown training corpus"),
    ("probe --corpus ravdess --model {model} --train ravdess --test nope", "unknown test corpus"),
    ("probe --corpus ravdess --model {model} --db {txt}", "registry is a text file"),
    ("probe --corpus ravdess --model {model} --db {dir}", "registry is a directory"),
    ("probe --corpus ravdess --model {model} --device gpu", "bad device"),
    # neighbors
    ("neighbors --corpus ravdess --model {model} --k 0", "k = 0"),
    ("neighbors --corpus ravdess --model {model} --k -5", "negative k"),
    ("neighbors --corpus ravdess --model {model} --k 100000", "k beyond the corpus"),
    ("neighbors --corpus ravdess --model {model} --layer=-1", "negative layer"),
    ("neighbors --corpus ravdess --model {model} --layer 99", "layer beyond the model"),
    ("neighbors --corpus ravdess --model {model} --stat median", "unknown statistic"),
    ("neighbors --corpus , --model {model}", "no corpus names"),
    ("neighbors --corpus nope --model {model}", "unknown corpus"),
    ("neighbors --corpus ravdess --model {model} --out /proc/nb", "--out under /proc"),
    ("neighbors --corpus ravdess --model {model} --out {txt}", "--out is a file"),
    # download
    ("download nope", "unknown corpus"),
    ("download ravdess --md5 xyz --url {txt}", "bad md5"),
    ("download ravdess --url {dir}/none.zip", "missing archive"),
    ("download ravdess --url {txt} --to {dir}/dl", "archive is not an archive"),
    ("download ravdess --to /proc/ravdess --url {txt}", "target under /proc"),
    # finetune
    ("finetune --corpus ravdess --root {root} --model {model} --epochs 0", "zero epochs"),
    ("finetune --corpus ravdess --root {root} --model {model} --epochs nan", "NaN epochs"),
    ("finetune --corpus ravdess --root {root} --model {model} --lr nan", "NaN lr"),
    ("finetune --corpus ravdess --root {root} --model {model} --lr -1", "negative lr"),
    ("finetune --corpus ravdess --root {root} --model {model} --batch-size 0", "zero batch"),
    ("finetune --corpus ravdess --root {root} --model {model} --grad-accum 0", "zero accumulation"),
    ("finetune --corpus ravdess --root {root} --model {model} --val-fraction 1.5", "fraction above 1"),
    ("finetune --corpus ravdess --root {root} --model {model} --dropout 1", "dropout 1"),
    ("finetune --corpus ravdess --root {root} --model {model} --freeze top", "unknown freeze"),
    ("finetune --corpus ravdess --root {root} --model {model} --pooling max", "unknown pooling"),
    ("finetune --corpus ravdess --root {root} --model {model} --augment reverb", "unknown augmentation"),
    ("finetune --corpus ravdess --root {root} --model {model} --labels sad", "one class"),
    ("finetune --corpus ravdess --root {root} --model {model} --report-to myspace", "unknown report target"),
    ("finetune --corpus ravdess --root {root} --model {model} --device cuda:1", "second GPU for the Trainer"),
    ("finetune --corpus ravdess --root {root} --model {model} --out /proc/ft", "--out under /proc"),
    ("finetune --corpus ravdess --root {root} --model {model} --out {txt}", "--out is a file"),
    ("finetune --corpus ravdess --root {root} --model {model} --max-duration nan", "NaN max duration"),
    ("finetune --corpus ravdess --root {root} --model {model} --warmup -1", "negative warm-up"),
    # predict
    ("predict {wav} --trained {dir}/none", "missing model"),
    ("predict {wav} --trained {txt}", "model is a text file"),
    ("predict {dir}/none.wav --trained {probe}", "missing audio"),
    ("predict {txt} --trained {probe}", "text as audio"),
    ("predict {empty} --trained {probe}", "empty file as audio"),
    ("predict {wav} --trained {probe} --out {dir}", "--out is a directory"),
    ("predict {wav} --trained {probe} --out /proc/p.csv", "--out under /proc"),
    ("predict {wav} --trained {probe} --device gpu", "bad device"),
    # align
    ("align --show nope-id --corpus ravdess --ctc-model {model}", "unknown utterance for --show"),
    ("align --corpus ravdess --root {root} --ctc-model {model} --max-seconds nan", "NaN max-seconds"),
    ("align --corpus ravdess --root {root} --ctc-model {model} --max-seconds 0", "zero max-seconds"),
    ("align --corpus ravdess --root {root} --ctc-model {model}", "not a CTC model"),
    ("align --corpus ravdess --root {root} --ctc-model {model} --out /proc/ex --example x", "--out under /proc"),
    ("align --corpus ravdess --root {root} --ctc-model {model} --seed -1", "negative seed"),
    # results, report
    ("results show nope --db {db}", "unknown run id"),
    ("results show {run} --db {txt}", "registry is a text file"),
    ("results show {run} --db {empty}", "registry is an empty file"),
    ("results show {run} --db {dir}/none.db", "no registry"),
    ("results rerun nope --db {db}", "rerun: unknown run id"),
    ("results rerun {run} --cache {empty} --db {db}", "rerun: its stores are not in that cache"),
    ("results rerun {run} --threads 0 --db {db}", "rerun: zero threads"),
    ("results compare {run} --db {db}", "one run to compare"),
    ("results compare {run} {run} --metric acc --db {db}", "unknown metric"),
    ("results compare {run} {run} --out {dir} --db {db}", "--out is a directory"),
    ("results compare {run} {run} --out /proc/c.png --db {db}", "--out under /proc"),
    ("results compare {run} {run} --layer 99 --db {db}", "layer not in the run"),
    ("results ls --db {txt}", "registry is a text file"),
    ("results export --out {dir} --db {db}", "--out is a directory"),
    ("results export --out /proc/all.csv --db {db}", "--out under /proc"),
    ("results export --out {txt}/all.csv --db {db}", "--out under a file"),
    ("report --out {dir} --db {db}", "--out is a directory"),
    ("report --out /proc/r.html --db {db}", "--out under /proc"),
    ("report --figure /etc/passwd --out r1.html --db {db}", "a system file as a figure"),
    ("report --figure {txt} --out r2.html --db {db}", "a text file as a figure"),
    ("report --figure {dir} --out r3.html --db {db}", "a directory as a figure"),
    ("report --figure {dir}/none.png --out r4.html --db {db}", "a missing figure"),
    ("report nope --out r5.html --db {db}", "unknown run id"),
    # study
    ("study run {dir}/none.toml", "missing study file"),
    ("study run {txt}", "not TOML"),
    ("study run {empty}", "empty study"),
    ("study run {study_escape}", "study name leaves results/"),
    ("study run {study_types}", "wrong value types"),
    ("study run {study_unknown}", "unknown key"),
    ("study run {study_seeds}", "zero seeds in a study"),
    ("study run {study} --report /proc/s.html", "--report under /proc"),
    # evaluate
    ("evaluate --trained {dir}/none --corpus ravdess", "missing model"),
    ("evaluate --trained {probe} --corpus nope", "unknown corpus"),
    ("evaluate --trained {probe} --corpus ravdess --fold nope --db {db}", "unknown fold"),
    ("evaluate --trained {probe} --corpus ravdess --map calm --db {db}", "map without ="),
    ("evaluate --trained {probe} --corpus ravdess --out /proc/ev --db {db}", "--out under /proc"),
    ("evaluate --trained {probe} --corpus ravdess --out {txt} --db {db}", "--out is a file"),
    ("evaluate --trained {probe} --corpus ravdess --protocol nope --fold luna-0 --db {db}", "unknown protocol"),
    # demo
    ("demo --n 0 --out d1", "n = 0"),
    ("demo --n -1 --out d2", "negative n"),
    ("demo --out /proc/demo", "--out under /proc"),
    ("demo --out {txt}", "--out is a file"),
    ("demo --seed -1 --out d3", "negative seed"),
]

OUTCOMES = ("one line", "usage message", "traceback", "accepted")


@dataclass
class Outcome:
    line: str
    why: str
    outcome: str
    output: str


def build_world(base: Path) -> dict[str, str]:
    """A synthetic RAVDESS (48 clips), a tiny model, its store, a registered run and a saved probe."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from typer.testing import CliRunner

    from cli import app
    from featstore.synth import synthesize
    from tests.helpers import TINY

    root = base / "RAVDESS"
    synthesize("ravdess", root, n=48, seed=0, max_duration=1.0, sample_rate=16000)
    torch.manual_seed(0)
    model = base / "tiny"
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).save_pretrained(model)
    Wav2Vec2FeatureExtractor().save_pretrained(model)
    cache, db = base / "cache", base / "ser.db"
    runner = CliRunner()
    env = {"SER_CACHE": str(cache), "SER_DB": str(db), "SER_CONFIG": str(base / "config.toml")}
    r = runner.invoke(app, ["extract", "--corpus", "ravdess", "--root", str(root), "--model", str(model)], env=env)
    assert r.exit_code == 0, r.output
    probe_dir = base / "probe"
    r = runner.invoke(app, ["probe", "--corpus", "ravdess", "--model", str(model), "--layer", "2", "--C", "1",
                            "--out", str(base / "probe-run"), "--save-probe", str(probe_dir)], env=env)
    assert r.exit_code == 0, (r.output, r.exception)
    from classifiers.results.registry import Registry

    run = Registry(db).runs()[-1]["id"]
    (base / "dir").mkdir()
    (base / "notes.txt").write_text("not audio, not a store, not TOML [[\n", encoding="utf-8")
    (base / "empty").write_bytes(b"")
    studies = {
        "study": '[study]\nname = "ok"\n[[cells]]\ncorpus = "ravdess"\nlayers = "2"\n',
        "study_escape": '[study]\nname = "x/../../../../escaped"\n[[cells]]\ncorpus = "ravdess"\n',
        "study_types": '[study]\nname = "types"\nseeds = "3"\n[[cells]]\ncorpus = 3\n',
        "study_unknown": '[study]\nname = "unknown"\n[[cells]]\ncorpus = "ravdess"\nlayerz = "2"\n',
        "study_seeds": '[study]\nname = "seeds"\nseeds = 0\n[[cells]]\ncorpus = "ravdess"\n',
    }
    paths = {}
    for name, text in studies.items():
        (base / f"{name}.toml").write_text(text, encoding="utf-8")
        paths[name] = str(base / f"{name}.toml")
    wav = sorted(root.rglob("*.wav"))[0]
    from featstore.store import find_store

    return dict(root=str(root), model=str(model), store=str(find_store(cache, str(model), "ravdess")), run=run,
                probe=str(probe_dir), wav=str(wav), txt=str(base / "notes.txt"), dir=str(base / "dir"),
                empty=str(base / "empty"), db=str(db), cache=str(cache), **paths)


def classify(result) -> str:
    """one line / usage message / traceback / accepted, from a CliRunner result."""
    text = result.output
    if "Traceback" in text or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        return "traceback"
    if result.exit_code == 0:
        return "accepted"
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if len(errors) == 1:
        return "one line"
    if "Usage:" in text or "Error" in text:
        return "usage message"
    return "traceback"


def run_cases(world: dict[str, str], workdir: Path, cases=CASES) -> list[Outcome]:
    import shlex

    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    env = {"SER_CACHE": world["cache"], "SER_DB": world["db"], "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
           "SER_CONFIG": str(Path(world["dir"]).parent / "config.toml")}
    out = []
    old = Path.cwd()
    os.chdir(workdir)
    try:
        for line, why in cases:
            args = shlex.split(line.format(**world))
            result = runner.invoke(app, args, env=env)
            out.append(Outcome(line, why, classify(result), result.output))
    finally:
        os.chdir(old)
    return out


def main() -> None:
    import time

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        world = build_world(base)
        work = base / "work"
        work.mkdir()
        t1 = time.perf_counter()
        outcomes = run_cases(world, work)
        t2 = time.perf_counter()
    counts = Counter(o.outcome for o in outcomes)
    for o in outcomes:
        if o.outcome in ("traceback", "accepted"):
            tail = " | ".join(o.output.strip().splitlines()[-2:])[:300]
            print(f"{o.outcome:9s} ser {o.line}   ({o.why})\n          {tail}")
    commands = Counter(o.line.split()[0] + (" " + o.line.split()[1] if o.line.split()[0] in
                                            ("config", "store", "results", "study") else "") for o in outcomes)
    print(f"\n{len(outcomes)} bad inputs over {len(commands)} commands (world {t1 - t0:.0f} s, cases {t2 - t1:.0f} s)")
    print("  " + ", ".join(f"{k}: {counts.get(k, 0)}" for k in ("one line", "usage message", "traceback", "accepted")))


if __name__ == "__main__":
    main()
