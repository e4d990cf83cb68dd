"""Every run kind registered and comparable (issue 22, items 2-3): `ser probe --matrix` runs are
registered (each cell a scored setting with predictions) and found again, `ser finetune` runs are
registered with every fold's predictions, `ser results ls --kind` filters, `ser results show`
prints the study file cell that re-creates a run, and `ser results compare` pairs runs of
different kinds on the test utterances they share (and refuses, in one line, when they share none)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from classifiers.results.registry import KINDS, Registry
from cli import app
from featstore.errors import SerError
from tests.test_runs import MODEL, toy_store

runner = CliRunner()
PROTOCOL = "speaker-kfold:4"


def cli(*args: str, ok: bool = True):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})   # wide: no test depends on wrapping
    assert "Traceback" not in r.output, r.output
    if ok:
        assert r.exit_code == 0, r.output
    return r


def one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    [line] = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("error:")
    return line


def flat(text: str) -> str:
    """The output with table borders dropped and whitespace runs as one space."""
    return " ".join(re.sub(r"[│┃]", " ", text).split())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds-cache")
    for i, c in enumerate(("ravdess", "emodb", "cremad")):
        toy_store(root, c, seed=i)
    return root


def matrix_args(cache, db, out, *extra):
    return ("probe", "--matrix", "ravdess,emodb", "--layer", "1", "--C", "1", "--protocol", PROTOCOL,
            "--model", MODEL, "--cache", cache, "--db", db, "--out", out, *extra)


def probe_args(cache, db, corpus, *extra):
    return ("probe", "--corpus", corpus, "--layer", "1", "--C", "1", "--protocol", PROTOCOL, "--model", MODEL,
            "--cache", cache, "--db", db, *extra)


@pytest.fixture(scope="module")
def registered(cache, tmp_path_factory):
    """One registry: a matrix run, its identical re-run, a forced re-run, and probes on ravdess and cremad."""
    tmp = tmp_path_factory.mktemp("kinds")
    db = tmp / "ser.db"
    first = cli(*matrix_args(cache, db, tmp / "m1"))
    again = cli(*matrix_args(cache, db, tmp / "m-unused"))
    forced = cli(*matrix_args(cache, db, tmp / "m2", "--force"))
    probe = cli(*probe_args(cache, db, "ravdess", "--out", tmp / "p-ravdess"))
    cremad = cli(*probe_args(cache, db, "cremad", "--out", tmp / "p-cremad"))
    return dict(tmp=tmp, db=db, first=first, again=again, forced=forced, probe=probe, cremad=cremad,
                runs=Registry(db).runs())


def run_id(output: str) -> str:
    return re.search(r"registered run ([0-9a-f]{10})", output).group(1)


def test_matrix_is_registered_with_each_cell_a_scored_setting_and_its_predictions(registered):
    from classifiers.results.predictions import read_predictions
    from classifiers.runs.study import load_registered

    first = run_id(registered["first"].output)
    registry = Registry(registered["db"])
    run = registry.run(first)
    assert run["kind"] == "matrix" and Path(run["out"]) == registered["tmp"] / "m1"
    assert run["config"] == dict(corpora=["ravdess", "emodb"], layer="1", classifier="logreg", stat="mean", C=1.0,
                                 classes="shared", protocol=PROTOCOL, model=MODEL)
    assert [s["corpus"] for s in run["stores"]] == ["ravdess", "emodb"]
    assert all(s["features_sha256"] for s in run["stores"])       # every store's fingerprint is in the key
    cols = read_predictions(run["predictions"], sha256=run["predictions_sha256"])
    cells = set(zip(cols["train_set"], cols["test_set"]))
    assert cells == {("ravdess", "ravdess"), ("ravdess", "emodb"), ("emodb", "ravdess"), ("emodb", "emodb")}
    scored = {(r["train_set"], r["test_set"]) for r in registry.scores(first)}
    assert scored == cells
    # each cell has the speaker CI of a probe setting, from its own predictions
    rows = {(r["train_set"], r["test_set"]): r for r in load_registered(run).summary()}
    assert set(rows) == cells and all(r["ci_low"] < r["pooled"] < r["ci_high"] for r in rows.values())
    # the transfer matrix's files are still written beside them
    assert (registered["tmp"] / "m1" / "transfer_matrix.json").is_file()


def test_identical_matrix_shows_the_registered_run_and_force_runs_it_again(registered):
    first = run_id(registered["first"].output)
    again = flat(registered["again"].output)
    assert f"run {first}" in again and "already holds this configuration" in again and "--force runs it again" in again
    assert "registered run" not in again and not (registered["tmp"] / "m-unused").exists()   # nothing computed
    assert "transfer, model" in again                                                # the matrix is shown
    forced = run_id(registered["forced"].output)
    matrices = [r for r in registered["runs"] if r["kind"] == "matrix"]
    assert [r["id"] for r in matrices] == [first, forced] and forced != first
    assert Path(matrices[1]["out"]) == registered["tmp"] / "m2"


def test_matrix_still_refuses_what_it_does_not_use(cache, tmp_path):
    line = one_error_line(cli(*matrix_args(cache, tmp_path / "x.db", tmp_path / "m", "--seed", "0-1"), ok=False))
    assert "--seed" in line and "--force" not in line and "--db" not in line
    assert not (tmp_path / "x.db").exists()


def test_results_ls_shows_the_kind_and_filters_by_it(registered):
    db = registered["db"]
    ids = {k: [r["id"] for r in registered["runs"] if r["kind"] == k] for k in ("matrix", "probe")}
    everything = flat(cli("results", "ls", "--db", db).output)
    for kind, found in ids.items():
        for i in found:
            assert re.search(rf"{i} \S+ \S+ {kind} ", everything), everything
    matrix = cli("results", "ls", "--db", db, "--kind", "matrix").output
    assert all(i in matrix for i in ids["matrix"]) and not any(i in matrix for i in ids["probe"])
    assert "ravdess × emodb" in matrix and "2 run(s)" in matrix
    probe = cli("results", "ls", "--db", db, "--kind", "probe").output
    assert all(i in probe for i in ids["probe"]) and not any(i in probe for i in ids["matrix"])
    assert "0 run(s)" in cli("results", "ls", "--db", db, "--kind", "finetune").output
    line = one_error_line(cli("results", "ls", "--db", db, "--kind", "knn", ok=False))
    assert "'knn'" in line and ", ".join(KINDS) in line


def test_kind_choices_come_from_the_registry(monkeypatch, tmp_path):
    import typer

    import classifiers.results.registry as registry

    option = next(p for p in typer.main.get_command(app).commands["results"].commands["ls"].params if p.name == "kind")
    assert all(k in option.help for k in KINDS)
    monkeypatch.setattr(registry, "KINDS", (*KINDS, "newkind"))   # one list: a kind added there is accepted
    line = one_error_line(cli("results", "ls", "--db", tmp_path / "none.db", "--kind", "newkind", ok=False))
    assert "no run registry" in line and "--kind" not in line


def cell_of(output: str) -> dict:
    text = output[output.index("[[cells]]"):]
    return tomllib.loads(text)["cells"][0]


def test_results_show_prints_the_study_cell_that_recreates_a_probe(registered, tmp_path):
    from classifiers.runs.study import cell_config, read_study

    probe = next(r for r in registered["runs"] if r["kind"] == "probe" and r["corpus"] == "ravdess")
    cell = cell_of(cli("results", "show", probe["id"], "--db", registered["db"]).output)
    assert cell == dict(corpus="ravdess", layers="1", C=1.0, protocol=PROTOCOL, stat="mean", seed="0",
                        shuffle_labels=False, classifiers="logreg", models=MODEL)
    study = tmp_path / "again.toml"
    output = cli("results", "show", probe["id"], "--db", registered["db"]).output
    study.write_text(output[output.index("[[cells]]"):], encoding="utf-8")
    _, [read] = read_study(study)
    assert cell_config(read).key() == probe["config"]              # the same configuration: the same registry key


def test_results_show_prints_other_kinds_as_toml_with_their_kind(registered):
    matrix = next(r for r in registered["runs"] if r["kind"] == "matrix")
    cell = cell_of(cli("results", "show", matrix["id"], "--db", registered["db"]).output)
    assert cell.pop("kind") == "matrix"
    assert cell == {k: v for k, v in matrix["config"].items() if v is not None}


def test_toml_values_round_trip():
    from classifiers.results.records import study_cell

    config = dict(name='a "quoted" \\ name', ratio=3e-05, whole=7, on=True, items=["x", "y"], table={"k": 0.1},
                  none=None, empty=[])
    cell = tomllib.loads(study_cell("neighbors", config))["cells"][0]
    assert cell == dict(kind="neighbors", name='a "quoted" \\ name', ratio=3e-05, whole=7, on=True, items=["x", "y"],
                        table={"k": 0.1})


def compare(db, *ids, ok=True):
    return cli("results", "compare", *ids, "--db", db, "--out", Path(db).parent / f"c-{len(ids)}.png", ok=ok)


def test_matrix_cell_compares_with_the_probe_on_the_same_utterances(registered):
    """The diagonal cell ravdess → ravdess is the probe's own computation (same folds, layer, C):
    paired on the same utterances, the difference is exactly zero."""
    matrix = next(r for r in registered["runs"] if r["kind"] == "matrix")
    probe = next(r for r in registered["runs"] if r["kind"] == "probe" and r["corpus"] == "ravdess")
    out = flat(compare(registered["db"], probe["id"], matrix["id"]).output)
    assert "kind matrix" in out and "kind probe" in out and "logreg, ravdess, layer 1" in out
    assert f"{matrix['id']} +0.000 [+0.000, +0.000]" in out, out


def test_knn_compares_with_logistic_regression(cache, tmp_path):
    """A `ser neighbors` run (kNN over leave-one-speaker-out folds) and a logreg probe (4 speaker folds)
    both test every utterance once: they pair on those utterances, whatever their folds."""
    db = tmp_path / "ser.db"
    probe = run_id(cli(*probe_args(cache, db, "ravdess", "--out", tmp_path / "p")).output)
    knn = run_id(cli("neighbors", "--corpus", "ravdess", "--layer", "1", "--model", MODEL, "--cache", cache,
                     "--db", db, "--out", tmp_path / "n").output)
    out = flat(compare(db, probe, knn).output)
    assert "knn, ravdess, layer 1; kind neighbors" in out and "logreg, ravdess, layer 1; kind probe" in out
    assert re.search(rf"{knn} [+-]\d\.\d{{3}} \[[+-]\d\.\d{{3}}, [+-]\d\.\d{{3}}\] \S+ \S+", out), out


def test_runs_without_shared_test_utterances_are_refused_in_one_line(registered):
    from classifiers.runs.study import load_registered

    matrix = next(r for r in registered["runs"] if r["kind"] == "matrix")
    cremad = next(r for r in registered["runs"] if r["kind"] == "probe" and r["corpus"] == "cremad")
    line = one_error_line(compare(registered["db"], matrix["id"], cremad["id"], ok=False))
    n_matrix = len(set(load_registered(matrix).predictions[0]["id"]))
    n_cremad = len(set(load_registered(cremad).predictions[0]["id"]))
    assert f"(0 shared, {n_matrix} only in {matrix['id']}, {n_cremad} only in {cremad['id']})" in line


# -- fine-tuning: a tiny model on a synthetic RAVDESS, against a probe of the same luna5 folds ------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread_module):
    from featstore.synth import synthesize
    from tests.helpers import build_tiny_model

    tmp = tmp_path_factory.mktemp("kinds-ft")
    model = build_tiny_model(tmp / "tiny", "group")
    synthesize("ravdess", tmp / "ravdess", n=48, max_duration=0.5, sample_rate=16000)
    db = tmp / "ser.db"
    common = ("--model", model, "--device", "cpu")
    cli("extract", "--corpus", "ravdess", "--root", tmp / "ravdess", "--cache", tmp / "cache", *common)
    probe = run_id(cli("probe", "--corpus", "ravdess", "--protocol", "luna5", "--layer", "all", "--C", "1",
                       "--model", model, "--cache", tmp / "cache", "--db", db, "--out", tmp / "probe").output)
    ft = ("finetune", "--corpus", "ravdess", "--root", tmp / "ravdess", "--protocol", "luna5", "--max-steps", "1",
          "--no-progress", "--no-plots", "--db", db, *common)
    first = run_id(cli(*ft, "--out", tmp / "ft").output)
    again = run_id(cli(*ft, "--out", tmp / "ft").output)           # finished folds read back, registered anew
    one_fold = run_id(cli(*ft, "--fold", "0", "--out", tmp / "ft0").output)
    return dict(tmp=tmp, db=db, model=model, probe=probe, first=first, again=again, one_fold=one_fold)


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.slow
def test_finetune_is_registered_with_its_predictions(tiny):
    from classifiers.results.predictions import read_predictions
    from featstore.modelfiles import weights_hash

    registry = Registry(tiny["db"])
    run = registry.run(tiny["again"])
    assert run["kind"] == "finetune" and Path(run["out"]) == tiny["tmp"] / "ft"
    assert run["config"]["corpus"] == "ravdess" and run["config"]["protocol"] == "luna5"
    assert run["config"]["max_steps"] == 1 and run["config"]["model"] == str(tiny["model"])
    model, data, folds = run["stores"]
    assert model["weights_sha256"] in (weights_hash(tiny["model"]), weights_hash(tiny["model"], front_end=True))
    assert data["corpus"] == "ravdess" and data["utterances"] == 48 and folds["folds"] == [f"luna-{i}" for i in range(5)]
    cols = read_predictions(run["predictions"], sha256=run["predictions_sha256"])
    assert sorted(set(cols["fold"])) == folds["folds"] and len(set(cols["id"])) == len(cols["id"]) == 48
    assert {r["fold"] for r in registry.scores(run["id"])} == set(folds["folds"])
    # the same folder registered again: one live row, the latest
    live = [r["id"] for r in registry.runs(kind="finetune")]
    assert tiny["first"] not in live and live == [tiny["again"], tiny["one_fold"]]
    with pytest.raises(SerError, match=f"now holds run {tiny['again']}"):
        registry.run(tiny["first"])


@pytest.mark.slow
def test_finetune_compares_with_the_probe_on_the_same_utterances(tiny):
    from classifiers.results.compare import _paired, columns, setting_rows
    from classifiers.runs.study import load_registered

    registry = Registry(tiny["db"])
    out = flat(compare(tiny["db"], tiny["again"], tiny["probe"], "--layer", "3").output)
    assert "finetune-mean, ravdess, layer e2e" in out and "logreg, ravdess, layer 3" in out
    ft, pr = (columns(load_registered(registry.run(i))) for i in (tiny["again"], tiny["probe"]))
    c = _paired(setting_rows(pr, ("ravdess", "ravdess", "logreg", "3")),
                setting_rows(ft, ("ravdess", "ravdess", "finetune-mean", "e2e")), "uar", 0)
    assert f"{tiny['probe']} {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] {c.p:.3g}" in out, out
    assert "paired on the same test utterances" in out


@pytest.mark.slow
def test_finetune_of_one_fold_is_refused_against_the_whole_probe(tiny):
    from classifiers.runs.study import load_registered

    registry = Registry(tiny["db"])
    line = one_error_line(compare(tiny["db"], tiny["one_fold"], tiny["probe"], ok=False))
    n_fold = len(load_registered(registry.run(tiny["one_fold"])).predictions[0]["id"])
    assert 0 < n_fold < 48
    assert f"({n_fold} shared, 0 only in {tiny['one_fold']}, {48 - n_fold} only in {tiny['probe']})" in line


def test_report_holds_matrix_runs_beside_probes(registered, tmp_path):
    """A matrix's off-diagonal cell that dropped test rows (emodb → ravdess: no calm, surprise) has no
    partner among the training sets; the report leaves it out instead of failing."""
    cli("report", "--db", registered["db"], "--out", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    for r in registered["runs"]:
        assert f"run {r['id']} — {r['kind']}," in page


@pytest.mark.slow
def test_report_compares_the_finetune_with_the_probe(tiny, tmp_path):
    cli("report", tiny["again"], tiny["probe"], "--db", tiny["db"], "--out", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"run {tiny['again']} — finetune," in page and "runs on the same test utterances compared" in page


def _cols(*settings):
    """Prediction columns of settings (train, test, classifier, layer, ids): 2 speakers, 2 labels."""
    import numpy as np

    from classifiers.results.predictions import concat

    blocks = []
    for train, test, clf, layer, ids in settings:
        n = len(ids)
        labels = ["happy" if i % 2 else "sad" for i in ids]
        blocks.append(dict(id=[f"u{i}" for i in ids], corpus=["c"] * n, speaker=[f"s{i % 4}" for i in ids],
                           label=labels, predicted=labels[::-1], fold=["f"] * n, seed=[0] * n, layer=[str(layer)] * n,
                           classifier=[clf] * n, train_set=[train] * n, test_set=[test] * n))
    return {k: np.asarray(v) for k, v in concat(blocks).items()}


def test_paired_settings_pairs_on_shared_test_ids_and_names_the_overlap():
    from classifiers.results.compare import paired_settings
    from classifiers.results.stats import StatsError

    a = _cols(("c", "c", "logreg", 1, range(12)), ("c", "c", "logreg", 2, range(12)), ("d", "c", "logreg", 1, range(6)))
    ft = _cols(("c", "c", "finetune-mean", "e2e", range(12)))
    chosen = paired_settings([("A", a), ("F", ft)], layer=2)
    assert chosen == [("c", "c", "logreg", "2"), ("c", "c", "finetune-mean", "e2e")]   # e2e passes --layer
    cell = _cols(("d", "c", "knn", 1, range(6)))
    assert paired_settings([("A", a), ("K", cell)])[0] == ("d", "c", "logreg", "1")  # the one set both have
    shifted = _cols(("c", "c", "logreg", 1, range(6, 18)))
    with pytest.raises(StatsError, match=r"run B with run A: .*\(6 shared, 6 only in A, 6 only in B\)"):
        paired_settings([("A", a), ("B", shifted)])
    with pytest.raises(StatsError, match="no test set was scored by all 3 runs"):
        paired_settings([("A", a), ("F", ft), ("K", cell)])
