"""Per-utterance predictions, the run registry, `ser results`, `ser evaluate`, study files and the
HTML report, on synthetic stores (no model, no audio: features with a planted class signal)."""

from __future__ import annotations

import csv
import multiprocessing
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from featstore.corpora.base import Utterance

MODEL = "toy/model"
LABELS = {"ravdess": ["angry", "calm", "disgust", "fear", "happy", "neutral", "sad", "surprise"],
          "cremad": ["angry", "disgust", "fear", "happy", "neutral", "sad"],
          "emodb": ["angry", "disgust", "fear", "happy", "neutral", "sad"]}
runner = CliRunner()


def toy_store(cache: Path, corpus: str, *, speakers: int = 8, per_class: int = 3, layers: int = 3, dim: int = 12,
              seed: int = 0) -> Path:
    """A finished store of `corpus` for MODEL: class means shared by every corpus (so transfer
    works), strongest in layer 1, plus a speaker offset and noise."""
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(8, dim))
    names = LABELS["ravdess"]
    utts, X = [], []
    for s in range(speakers):
        offset = rng.normal(scale=0.8, size=dim)
        for label in LABELS[corpus]:
            for r in range(per_class):
                utts.append(Utterance(id=f"{corpus}-{s:02d}-{label}-{r}", path="", corpus=corpus, language="en",
                                      speaker=f"{corpus}-{s:02d}", gender=None, label=label, label_raw=label))
                signal = means[names.index(label)]
                X.append(np.stack([signal * w + offset + rng.normal(scale=1.0, size=dim) for w in (0.2, 1.2, 0.6)]))
    X = np.asarray(X, dtype=np.float32)[:, :layers]
    n = len(utts)
    batch = Batch(utts, X, np.abs(X), np.full(n, 16000), np.full(n, 50))
    config = {"model_id": MODEL, "frame_layers": [], "num_layers": layers, "hidden_size": dim, "weights_sha256": "ab" * 32}
    path = store_path(cache, model_slug(MODEL), corpus)
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", batch, config)
    assemble(path, config, corpus=corpus)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs-cache")
    for i, c in enumerate(("ravdess", "cremad", "emodb")):
        toy_store(root, c, seed=i)
    return root


def cli(*args: str, ok: bool = True):
    r = runner.invoke(app, list(args), env={"COLUMNS": "200"})   # a wide terminal: no test depends on where rich wraps
    assert "Traceback" not in r.output, r.output
    if ok:
        assert r.exit_code == 0, r.output
    return r


def probe_args(cache, db, *extra):
    return ("probe", "--corpus", "ravdess", "--protocol", "speaker-kfold:4", "--layer", "all", "--C", "1",
            "--model", MODEL, "--cache", str(cache), "--db", str(db), *extra)


def test_predictions_of_every_runner_are_complete(cache, tmp_path):
    """logreg, xgboost and kNN keep one row per test utterance and fold, with probabilities (kNN: none)."""
    from classifiers.results.predictions import concat, read_predictions, write_predictions
    from classifiers.runs.crossval import probe_layers
    from featstore.folds import make_folds
    from featstore.store import open_store

    fs = open_store(cache / "toy--model" / "ravdess.h5")
    folds = make_folds(fs.utterances, "speaker-kfold:4")
    for clf in ("logreg", "xgboost", "knn"):
        res = probe_layers(fs, fs.utterances, folds, [1], classifier=clf, C=1.0, train_set="ravdess",
                           test_set="ravdess")
        cols = concat(res.predictions)
        assert sorted(cols["id"]) == sorted(u.id for u in fs.utterances)       # each utterance once (one seed)
        assert set(cols["classifier"]) == {clf} and set(cols["layer"]) == {"1"}
        rec_correct = sum(r["wa"] * r["n_test"] for r in res.records)
        assert np.sum(cols["label"] == cols["predicted"]) == pytest.approx(rec_correct)
        if clf == "knn":
            assert not any(k.startswith("p_") for k in cols)
        else:
            probs = np.stack([cols[f"p_{c}"] for c in LABELS["ravdess"]], 1)
            np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
            picked = np.asarray(LABELS["ravdess"], dtype=object)[probs.argmax(1)]
            assert (picked == cols["predicted"]).mean() > 0.99
        path = write_predictions(res.predictions, tmp_path / f"{clf}.parquet")
        back = read_predictions(path)
        assert list(back["id"]) == list(cols["id"]) and back["seed"].dtype == np.int64


def test_attention_predictions(one_torch_thread):
    from classifiers.estimators.attention import probe_attention
    from classifiers.results.predictions import concat
    from featstore.folds import make_folds

    rng = np.random.default_rng(0)
    utts = [Utterance(id=f"u{s}{c}{r}", path="", corpus="ravdess", language="en", speaker=f"ravdess-{s}", gender=None,
                      label=c, label_raw=c) for s in range(4) for c in ("angry", "sad") for r in range(3)]
    frames = [rng.normal(size=(6, 8)) + (2.0 if u.label == "sad" else 0.0) for u in utts]
    folds = make_folds(utts, "speaker-kfold:2")
    res = probe_attention(frames, utts, folds, layers=[0], seeds=(0, 1), threads=1, max_epochs=2)
    cols = concat(res.predictions)
    assert len(cols["id"]) == 2 * len(utts) and set(cols["seed"]) == {0, 1} and set(cols["classifier"]) == {"attention"}
    np.testing.assert_allclose(cols["p_angry"] + cols["p_sad"], 1, atol=1e-5)
    for seed in (0, 1):
        correct = sum(r["wa"] * r["n_test"] for r in res.records if r["seed"] == seed)
        mine = cols["seed"] == seed
        assert np.sum(cols["label"][mine] == cols["predicted"][mine]) == pytest.approx(correct)


def test_probe_registers_reuses_and_compares_training_sets(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    r = cli(*probe_args(cache, db, "--train", "ravdess", "--train", "ravdess,emodb"))
    assert "registered run" in r.output
    assert "training sets against ravdess" in r.output and "p (Holm)" in r.output
    again = cli(*probe_args(cache, db, "--train", "ravdess", "--train", "ravdess,emodb"))
    assert "already holds this configuration" in again.output
    forced = cli(*probe_args(cache, db, "--train", "ravdess", "--train", "ravdess,emodb", "--force"))
    assert "registered run" in forced.output
    from classifiers.results.registry import Registry

    reg = Registry(db)
    runs = reg.runs()
    assert len(runs) == 2 and runs[0]["key"] == runs[1]["key"] and reg.check() == "ok"
    fp = runs[0]["stores"]
    assert {f["corpus"] for f in fp} == {"ravdess", "emodb"} and fp[0]["model_id"] == MODEL
    assert fp[0]["weights_sha256"] == "ab" * 32 and fp[0]["utterances"] > 0
    scores = reg.scores(runs[0]["id"])
    assert {s["metric"] for s in scores} == {"wa", "uar", "macro_f1"} and {s["layer"] for s in scores} == {"0", "1", "2"}
    assert Path(runs[0]["predictions"]).is_file()
    from classifiers.runs.study import load_registered

    best = max(r["uar"] for r in load_registered(runs[0]).summary())
    assert reg.best_mean(runs[0]["id"]) == pytest.approx(best)
    ls = cli("results", "ls", "--corpus", "ravdess", "--db", str(db))
    assert runs[0]["id"] in ls.output and runs[1]["id"] in ls.output
    assert "0 run(s)" in cli("results", "ls", "--classifier", "xgboost", "--db", str(db)).output
    show = cli("results", "show", runs[0]["id"][:6], "--db", str(db))
    assert "95% speaker CI" in show.output and "ravdess,emodb" in show.output
    cmp = cli("results", "compare", runs[0]["id"], runs[1]["id"], "--db", str(db), "--out", str(tmp_path / "c.png"))
    assert "+0.000" in cmp.output and (tmp_path / "c.png").stat().st_size > 3000   # same run twice: no difference
    # a run named by its results folder (or a file in it) wherever a command names a run (issue 22, item 7)
    folder = Path(runs[1]["out"])
    by_dir = cli("results", "show", str(folder), "--db", str(db))
    assert by_dir.output == cli("results", "show", runs[1]["id"], "--db", str(db)).output
    assert runs[1]["id"] in " ".join(cli("results", "show", str(folder / "probe.json"), "--db", str(db)).output.split())
    cmp = cli("results", "compare", str(Path(runs[0]["out"])), str(folder), "--db", str(db))
    assert "+0.000" in cmp.output
    stray = tmp_path / "not-a-run"
    stray.mkdir()
    bad = cli("results", "show", str(stray), "--db", str(db), ok=False)
    assert bad.exit_code != 0 and bad.output.startswith("error: no run in") and bad.output.count("\n") == 1
    # re-executed from the registered configuration (issue 22, item 4): a new run, a new folder, same scores
    re = cli("results", "rerun", str(folder), "--cache", str(cache), "--db", str(db))
    text = " ".join(re.output.split())
    assert f"re-ran run {runs[1]['id']}" in text and "every score identical" in text
    new = [r for r in Registry(db).runs() if r["id"] not in {x["id"] for x in runs}]
    assert len(new) == 1 and new[0]["out"] not in {runs[0]["out"], runs[1]["out"]}
    assert new[0]["config"] == runs[1]["config"]
    other = tmp_path / "other-cache"                                 # same names, other features
    for i, c in enumerate(("ravdess", "emodb")):
        toy_store(other, c, seed=10 + i)
    bad = cli("results", "rerun", runs[1]["id"], "--cache", str(other), "--db", str(db), ok=False)
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "stores changed" in bad.output
    assert len(Registry(db).runs()) == 3
    out = cli("results", "export", "--out", str(tmp_path / "all.csv"), "--db", str(db))
    assert "all.csv" in out.output
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 1 + 3 * len(scores)


def test_compare_refuses_different_test_sets_and_bad_databases(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    cli(*probe_args(cache, db))
    cli("probe", "--train", "ravdess", "--test", "cremad", "--layer", "1", "--model", MODEL, "--cache", str(cache),
        "--db", str(db))
    a, b = (r["id"] for r in __import__("classifiers.results.registry", fromlist=["Registry"]).Registry(db).runs())
    r = cli("results", "compare", a, b, "--db", str(db), ok=False)
    assert r.exit_code == 2 and "different test utterances" in r.output and "same utterances" in r.output
    assert len(r.output.strip().splitlines()) == 1
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    r = cli("results", "ls", "--db", str(bad), ok=False)
    assert r.exit_code == 2 and str(bad) in r.output and len(r.output.strip().splitlines()) == 1
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        from classifiers.results.registry import Registry, RegistryError

        with pytest.raises(RegistryError, match=f"{db}.*locked"):
            Registry(db, timeout=0.2).register(kind="probe", config={}, stores=[], results=_one_record())
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _one_record():
    from classifiers.results.records import ProbeResults, make_record

    return ProbeResults([make_record(layer=1, fold="f", y_true=["a", "b"], y_pred=["a", "a"], labels=["a", "b"],
                                     n_train=2, classifier="logreg", seed=0, train_set="x", test_set="x")])


def _writer(db: str, tag: int, n: int) -> None:
    from classifiers.results.registry import Registry

    reg = Registry(db)
    for i in range(n):
        reg.register(kind="probe", config=dict(tag=tag, i=i), stores=[], results=_one_record(), command=f"w{tag}")


def test_two_writers_at_once_keep_every_row(tmp_path):
    db = str(tmp_path / "ser.db")
    ctx = multiprocessing.get_context("fork")  # the children only write SQLite; fork starts them in ms
    procs = [ctx.Process(target=_writer, args=(db, tag, 20)) for tag in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    from classifiers.results.registry import Registry

    reg = Registry(db)
    runs = reg.runs()
    assert sorted((r["command"], r["config"]["i"]) for r in runs) == sorted((f"w{t}", i) for t in (1, 2) for i in range(20))
    assert all(len(reg.scores(r["id"])) == 3 for r in runs) and reg.check() == "ok"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_evaluate_saved_probe_cross_corpus(cache, tmp_path, monkeypatch):
    """A probe trained on (synthetic) RAVDESS scored on (synthetic) CREMA-D: all utterances and the
    shared classes, the classes CREMA-D lacks named, predictions saved, a registry row."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    cli(*probe_args(cache, db, "--layer", "1", "--save-probe", str(tmp_path / "probe")))
    r = cli("evaluate", "--trained", str(tmp_path / "probe"), "--corpus", "cremad", "--cache", str(cache),
            "--db", str(db), "--out", str(tmp_path / "ev"))
    assert "all: every test utterance" in r.output and "shared: only the 6 classes" in r.output
    assert "calm, surprise" in r.output
    summary = {row["test_set"]: row for row in csv.DictReader(open(tmp_path / "ev" / "evaluate_summary.csv"))}
    assert summary["cremad"]["n_classes"] == "8" and summary["cremad (shared classes)"]["n_classes"] == "6"
    assert float(summary["cremad (shared classes)"]["chance"]) == pytest.approx(1 / 6)
    for row in summary.values():                                        # the headline: pooled UAR inside its CI
        assert float(row["ci_low"]) < float(row["pooled"]) < float(row["ci_high"]) and row["folds_std"] == ""
    from classifiers.results.predictions import read_predictions

    preds = read_predictions(tmp_path / "ev" / "predictions.parquet")
    assert len(preds["id"]) == 8 * 6 * 3 and set(preds["corpus"]) == {"cremad"} and "p_calm" in preds
    import json

    recs = {r["classes"]: r for r in json.loads((tmp_path / "ev" / "evaluate.json").read_text())["records"]}
    assert recs["shared"]["labels"] == LABELS["cremad"] and "calm" in recs["all"]["labels"]
    assert recs["shared"]["uar"] >= recs["all"]["uar"] > 1 / 8        # restricting to shared classes can only help here
    mapped = cli("evaluate", "--trained", str(tmp_path / "probe"), "--corpus", "cremad", "--cache", str(cache),
                 "--db", str(db), "--out", str(tmp_path / "ev2"), "--drop", "disgust", "--map", "fear=sad")
    assert "disgust" not in json.loads((tmp_path / "ev2" / "evaluate.json").read_text())["records"][1]["labels"]
    assert mapped.exit_code == 0
    ev = ["evaluate", "--trained", str(tmp_path / "probe"), "--corpus", "cremad", "--cache", str(cache), "--db", str(db)]
    from classifiers.results.registry import Registry

    before = len(Registry(db).runs())
    again = cli(*ev)                        # identical to the first evaluation: that run is shown, nothing computed
    text = " ".join(again.output.split())
    first = next(r for r in Registry(db).runs() if Path(r["out"]).resolve() == (tmp_path / "ev").resolve())
    assert f"registered run {first['id']}" in text and "identical configuration" in text and "--force" in text
    assert len(Registry(db).runs()) == before and not list(tmp_path.glob("results/evaluate-*"))
    assert "shared" in text and "cremad" in text                       # its headline table, read back
    cli(*ev, "--force")
    cli(*ev, "--force")
    assert len(list((tmp_path / "results").glob("evaluate-*"))) == 2          # a re-run never replaces files
    from classifiers.runs.evaluate import model_digest

    digest = model_digest(tmp_path / "probe")
    meta = tmp_path / "probe" / "probe.json"
    meta.write_text(meta.read_text() + " ")                            # the saved model changed: another model
    assert model_digest(tmp_path / "probe") != digest
    bad = cli("evaluate", "--trained", str(tmp_path / "probe"), "--corpus", "cremad", "--map", "calm", ok=False)
    assert bad.exit_code == 2 and "FROM=TO" in bad.output


def test_study_file_runs_cells_once_and_writes_the_report(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "s.toml"
    study.write_text(f'''[study]
name = "toy"
models = ["{MODEL}"]
layers = "all"
C = 1.0
seeds = 2
[[cells]]
corpus = "ravdess"
protocol = "speaker-kfold:4"
train = ["ravdess", "ravdess,emodb"]
[[cells]]
train = ["ravdess"]
test = "cremad"
''')
    args = ("study", "run", str(study), "--cache", str(cache), "--db", str(tmp_path / "ser.db"))
    r = cli(*args)
    assert r.output.count(": ran, run") == 2 and "study-toy.html" in r.output
    r = cli(*args)
    assert r.output.count("registered already") == 2
    page = (tmp_path / "results" / "study-toy.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "transfer" in page
    bad = tmp_path / "bad.toml"
    bad.write_text("[study]\nnmae = 1\n[[cells]]\ncorpus = 'ravdess'\n")
    r = cli("study", "run", str(bad), ok=False)
    assert r.exit_code == 2 and "nmae" in r.output


def one_error_line(r) -> str:
    """The CLI run's single `error:` line, whitespace normalised (independent of where rich wraps)."""
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and text.count("error:") == 1 and "Traceback" not in r.output, r.output
    return text


def test_study_name_cannot_lead_outside_results(cache, tmp_path, monkeypatch):
    """Issue 28: name = "x/../../../../escaped" wrote the report outside results/ (exit 0)."""
    from classifiers.runs.study import StudyError, report_path

    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    study = work / "s.toml"
    study.write_text(f'[study]\nname = "x/../../../../escaped"\nmodels = ["{MODEL}"]\nC = 1.0\n'
                     f'[[cells]]\ncorpus = "ravdess"\nprotocol = "speaker-kfold:4"\nlayers = 1\n')
    r = runner.invoke(app, ["study", "run", str(study), "--cache", str(cache), "--db", str(work / "ser.db")],
                      env={"COLUMNS": "200"})
    line = one_error_line(r)
    assert f"{study}: [study] name = " in line and "expected a plain name" in line
    assert not list(tmp_path.rglob("escaped*")) and not (work / "results").exists() and not (work / "ser.db").exists()
    for name in ("..", "/etc/x", "a\\b", "-rf", " x"):
        with pytest.raises(StudyError, match="name"):
            report_path(study, {"name": name})
    assert report_path(study, {"name": "diary.v2"}) == work / "results" / "study-diary.v2.html"


BAD_STUDIES = {  # study file text -> what its one error line must say
    '[study]\nseeds = "3"\n[[cells]]\ncorpus = "ravdess"\n': '[study] seeds = "3": expected a whole number',
    '[[cells]]\ncorpus = "ravdess"\nlayers = [1.5]\n': "cell 1 layers = [1.5]: expected \"all\", a layer number",
    '[[cells]]\ncorpus = 3\n': "cell 1 corpus = 3: expected a corpus name",
    '[[cells]]\ncorpus = "ravdess"\nclasses = true\n': 'cell 1 classes = true: expected "shared", "all"',
    'cells = [1, 2]\n': "cell 1 = 1: expected a table of keys",
    'cells = "ravdess"\n': 'cells = "ravdess": expected [[cells]] tables',
    'study = 3\n[[cells]]\ncorpus = "ravdess"\n': "study = 3: expected a [study] table",
    '[[cells]]\ncorpus = "ravdess"\n[[cells]]\ncorpus = "ravdess"\nC = nan\n': "cell 2 C = NaN: expected a finite number",
    '[[cells]]\ncorpus = "ravdess"\nC = "big"\n': 'cell 1 C = "big": expected a finite number above 0',
    '[[cells]]\ntrain = ["ravdess", 2]\n': 'cell 1 train = ["ravdess", 2]: expected a training set',
    '[study]\nmodels = 3\n[[cells]]\ncorpus = "ravdess"\n': "[study] models = 3: expected a model",
    '[[cells]]\ncorpus = "ravdess"\nshuffle_labels = "yes"\n': 'cell 1 shuffle_labels = "yes": expected true or false',
    '[[cells]]\ncorpus = "ravdess"\nstat = "median"\n': 'cell 1 stat = "median": expected "mean", "std"',
    '[[cells]]\ncorpus = "ravdess"\nlayers = -1\n': "cell 1 layers = -1: expected",
    '[[cells]]\ncorpus = "ravdess"\nseeds = 0\n': "cell 1 seeds = 0: expected a whole number of seeds, 1 or more",
    '[study]\nname = 3\n[[cells]]\ncorpus = "ravdess"\n': "[study] name = 3: expected a plain name",
    '[study]\nreport = "results"\n[[cells]]\ncorpus = "ravdess"\n': "[study] report results: is a directory",
}


@pytest.mark.parametrize("text", list(BAD_STUDIES))
def test_wrong_value_types_in_a_study_are_one_line(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    study = tmp_path / "bad.toml"
    study.write_text(text)
    r = runner.invoke(app, ["study", "run", str(study), "--db", str(tmp_path / "ser.db")], env={"COLUMNS": "200"})
    line = one_error_line(r)
    assert f"error: {study}: " in line and BAD_STUDIES[text] in line, line


def test_study_layers_list_and_integer_C_read_as_the_cli_gives_them(tmp_path):
    from classifiers.runs.study import read_study

    study = tmp_path / "s.toml"
    study.write_text('[study]\nC = 1\nlayers = [6, 12]\n[[cells]]\ncorpus = "ravdess"\n')
    _, cells = read_study(study)
    assert cells[0].options["layers"] == "6,12" and cells[0].options["C"] == 1.0
    assert isinstance(cells[0].options["C"], float)


def test_report_renders_in_chromium(cache, tmp_path, monkeypatch):
    """The report, opened in headless Chromium: the screenshot is not blank and every image decoded."""
    import shutil

    if shutil.which("chromium") is None:  # CI installs it; there SER_FAIL_ON_SKIP=1 turns this skip into a failure
        pytest.skip("chromium is not installed (apt-get install chromium) to check the report in a browser")
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    cli(*probe_args(cache, db, "--train", "ravdess", "--train", "ravdess,emodb", "--seeds", "2"))
    cli(*probe_args(cache, db, "--classifier", "xgboost", "--layer", "1"))
    page = tmp_path / "report.html"
    cli("report", "--out", str(page), "--db", str(db))
    html_text = page.read_text()
    n_images = html_text.count("<img ")
    assert n_images >= 5 and "src=\"http" not in html_text          # self-contained
    shot = tmp_path / "report.png"
    # the page reports how many of its images decoded, in its title, for Chromium's --dump-dom
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html_text.replace("</body>", "<script>addEventListener('load',()=>{document.title="
                                            "'decoded '+[...document.images].filter(i=>i.naturalWidth>0).length})"
                                            "</script></body>"))
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run([*chrome, f"--screenshot={shot}", "--window-size=1366,2400", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([*chrome, "--dump-dom", probe_page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert f"<title>decoded {n_images}</title>" in dom
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1366)
    assert img.std() > 20 and (img < 128).mean() > 0.01                # text and plots, not a blank page


def test_the_diary_study_example_reads():
    from classifiers.runs.study import read_study

    head, cells = read_study(Path(__file__).parents[1] / "examples" / "diary-study.toml")
    assert head["name"] == "diary" and [c.kind for c in cells] == ["probe"] * 10 + ["matrix"] * 2
    assert cells[0].options["train"] == ["ravdess", "ravdess,emodb", "ravdess,emodb,emovo"]
    assert {c.options.get("classes") for c in cells} == {None, "shared", "all"}


def test_finetune_results_carry_each_folds_predictions(tmp_path):
    from classifiers.finetuning.finetune import FinetuneResult, FoldResult, _fold_dir_name, to_probe_results
    from classifiers.results.predictions import concat

    fold_dir = tmp_path / _fold_dir_name("luna-0")
    fold_dir.mkdir()
    (fold_dir / "predictions.csv").write_text("id,corpus,speaker,label,prediction,p_angry,p_sad\n"
                                              "u1,ravdess,ravdess-01,sad,sad,0.2,0.8\n"
                                              "u2,ravdess,ravdess-02,angry,sad,0.4,0.6\n")
    fold = FoldResult(fold="luna-0", train_set="ravdess", test_set="ravdess", n_train=10, n_val=2, n_test=2,
                      val_speakers=["s"], metrics={}, recall={}, confusion=[], best_val_uar=0.5, best_checkpoint=None,
                      global_step=4, model_dir="m", seconds=1.0, y_true=["sad", "angry"], y_pred=["sad", "sad"])
    run = FinetuneResult(out_dir=tmp_path, labels=["angry", "sad"], folds=[fold], summary={},
                         plan={"pooling": "mean", "seed": 3})
    cols = concat(to_probe_results(run).predictions)
    assert list(cols["id"]) == ["u1", "u2"] and list(cols["predicted"]) == ["sad", "sad"]
    assert set(cols["layer"]) == {"e2e"} and set(cols["classifier"]) == {"finetune-mean"} and set(cols["seed"]) == {3}
    np.testing.assert_allclose(cols["p_sad"], [0.8, 0.6])


def test_evaluate_finetuned_model_on_audio(tiny_models, one_torch_thread, tmp_path, monkeypatch):
    """A fine-tuned model directory (RAVDESS' 8 classes) scored on a synthetic CREMA-D from audio."""
    from classifiers.finetuning.heads import build_classifier
    from featstore.synth import synthesize

    monkeypatch.chdir(tmp_path)
    synthesize("cremad", tmp_path / "cremad", n=24, seed=0, max_duration=1.0, sample_rate=16000)
    model = build_classifier(str(tiny_models["group"]), LABELS["ravdess"]).save_pretrained(tmp_path / "model")
    r = cli("evaluate", "--trained", str(model), "--corpus", "cremad", "--root", str(tmp_path / "cremad"),
            "--out", str(tmp_path / "ev"), "--device", "cpu")
    assert "all: every test utterance" in r.output and "shared: only the" in r.output and "calm, surprise" in r.output
    from classifiers.results.predictions import read_predictions

    preds = read_predictions(tmp_path / "ev" / "predictions.parquet")
    assert len(preds["id"]) == 24 and set(preds["layer"]) == {"e2e"} and set(preds["classifier"]) == {"finetuned"}
    np.testing.assert_allclose(np.stack([preds[f"p_{c}"] for c in LABELS["ravdess"]], 1).sum(1), 1, atol=1e-4)


def test_save_probe_with_two_training_sets_or_layers_is_refused_before_the_run(cache, tmp_path):
    """--save-probe fits one probe: two --train sets or several layers are one line, before any probe runs."""
    db = tmp_path / "ser.db"
    for extra, what in ((("--layer", "1", "--train", "ravdess", "--train", "ravdess,emodb"), "2 --train sets"),
                        (("--layer", "0,1"), "give one layer")):
        r = cli(*probe_args(cache, db, *extra, "--save-probe", str(tmp_path / "probe")), ok=False)
        assert r.exit_code == 2 and what in r.output and r.output.count("error:") == 1, r.output
        assert not db.exists() and not (tmp_path / "probe").exists()


def test_runs_are_named_by_what_differs(cache, tmp_path, monkeypatch):
    """Compared runs carry what their configurations do not share (issue 22, item 6): two probes
    that differ only in C, and the rule itself on registry rows differing in model and class policy."""
    from classifiers.results.compare import what_differs
    from classifiers.results.registry import Registry

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    cli(*probe_args(cache, db))
    cli(*[a if a != "1" else "0.1" for a in probe_args(cache, db)])
    a, b = Registry(db).runs()
    cmp = " ".join(cli("results", "compare", a["id"], b["id"], "--db", str(db)).output.split())
    assert f"C {a['config']['C']}" in cmp and f"C {b['config']['C']}" in cmp and a["config"]["C"] != b["config"]["C"]
    rows = [dict(id="r1", kind="probe", config=dict(model="facebook/wav2vec2-base", classes="shared", layers="all",
                                                    train=["ravdess"], C=None)),
            dict(id="r2", kind="probe", config=dict(model="opensmile:eGeMAPSv02", classes="all", layers="all",
                                                    train=["ravdess"], C=None)),
            dict(id="r3", kind="neighbors", config=dict(model="facebook/wav2vec2-base", k=10, layers="all"))]
    assert what_differs(rows[:2]) == {"r1": "classes shared, model facebook/wav2vec2-base",
                                      "r2": "classes all, model opensmile:eGeMAPSv02"}
    assert what_differs([rows[0], rows[2]]) == {"r1": "kind probe", "r3": "kind neighbors"}
    assert what_differs(rows[:1]) == {"r1": ""}
