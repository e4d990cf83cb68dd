"""Study files take every run kind (issue 22, item 5): one `ser study run` over a file with a cell of
each kind (an emotion probe whose store the study extracts first from the configured corpus root, a
dimensional probe, a matrix, neighbours, an evaluation of a saved probe, a tiny fine-tune) registers
every kind, writes one report holding them all, re-uses them on a second run, re-creates them from
the cells `ser results show` prints, honours [study] cache/db (--db wins), and refuses an unknown
key in one line naming the closest key of the cell's kind."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from classifiers.results.registry import KINDS, Registry
from tests.test_dimensional import CORPUS as DIMS
from tests.test_dimensional import planted_dims
from tests.test_register_kinds import cli, flat, one_error_line
from tests.test_results import MODEL as DIMS_MODEL
from tests.test_results import write_store
from tests.test_runs import MODEL, toy_store

OTHER = "otherdims"     # a second corpus with dimensional labels, for the dimensional matrix


def cells_text(tiny: Path, probe_dir: Path) -> str:
    return f'''
[[cells]]                         # the tiny model's store is missing: extracted first from the configured root
corpus = "ravdess"
models = "{tiny}"
layers = "all"
protocol = "luna5"

[[cells]]                         # a dimensional probe: [study] C is no key of it, so it is not applied
target = "arousal"
corpus = "{DIMS}"
models = "{DIMS_MODEL}"

[[cells]]
kind = "matrix"
corpora = ["ravdess", "emodb"]
layer = 1
model = "{MODEL}"
protocol = "speaker-kfold:4"

[[cells]]                         # a dimensional matrix: CCC train → test at one layer
kind = "matrix"
target = "arousal"
corpora = ["{DIMS}", "{OTHER}"]
layer = 1
model = "{DIMS_MODEL}"

[[cells]]
kind = "neighbors"
corpora = ["ravdess"]
layers = "1"
model = "{MODEL}"

[[cells]]
kind = "evaluate"
model_dir = "{probe_dir}"
corpus = "emodb"

[[cells]]
kind = "finetune"
corpus = "ravdess"
model = "{tiny}"
protocol = "luna5"
max_steps = 1
plots = false
progress = false
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study with one cell of each kind, run twice; the stores, corpus and model it reads."""
    import torch

    from classifiers.runs.probe import fit_and_save_probe
    from featstore.synth import synthesize
    from tests.helpers import build_tiny_model

    tmp = tmp_path_factory.mktemp("study-kinds")
    cache = tmp / "cache"
    for i, c in enumerate(("ravdess", "emodb")):
        toy_store(cache, c, seed=i)
    write_store(cache, DIMS, *planted_dims())
    X, utts = planted_dims(seed=2, n_speakers=6)
    write_store(cache, OTHER, X, [replace(u, id=u.id.replace(DIMS, OTHER), corpus=OTHER,
                                          speaker=u.speaker.replace(DIMS, OTHER)) for u in utts])
    probe_dir = fit_and_save_probe(tmp / "saved-probe", ["ravdess"], layer="1", stat="mean", model=MODEL, cache=cache,
                                   C=1.0)
    tiny = build_tiny_model(tmp / "tiny", "group")
    synthesize("ravdess", tmp / "data" / "ravdess", n=48, max_duration=0.5, sample_rate=16000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)                                     # results/ and runs/ land here
        mp.setenv("SER_CONFIG", str(tmp / "config.toml"))
        cli("config", "set", "corpora.ravdess.root", tmp / "data" / "ravdess")   # as a user configures it
        path = tmp / "kinds.toml"
        path.write_text(f'[study]\nname = "kinds"\ncache = "{cache}"\ndb = "{tmp / "study.db"}"\nC = 1.0\n'
                        + cells_text(tiny, probe_dir), encoding="utf-8")
        first = cli("study", "run", path, "--device", "cpu")
        runs = Registry(tmp / "study.db").runs()
        again = cli("study", "run", path, "--device", "cpu")
        yield dict(tmp=tmp, cache=cache, tiny=tiny, path=path, db=tmp / "study.db", first=first, again=again,
                   runs=runs, probe_dir=probe_dir, mp=mp)
    torch.set_num_threads(threads)


def test_every_kind_runs_and_is_registered(study):
    runs = study["runs"]
    assert sorted({r["kind"] for r in runs}) == sorted(KINDS) and len(runs) == 7
    assert flat(study["first"].output).count(": ran, run") == 7
    listed = flat(cli("results", "ls", "--db", study["db"]).output)
    for r in runs:
        assert re.search(rf"{r['id']} \S+ \S+ {r['kind']} ", listed), listed
    by_kind = {r["kind"]: r for r in runs}
    dims = next(r for r in runs if r["config"].get("target") == "arousal" and r["kind"] == "probe")
    dims_matrix = next(r for r in runs if r["config"].get("target") == "arousal" and r["kind"] == "matrix")
    assert dims_matrix["config"]["corpora"] == [DIMS, OTHER] and dims_matrix["config"]["classifier"] == "ridge"
    assert dims["config"]["classifier"] == "ridge" and dims["config"]["alpha"] is None   # [study] C not applied
    by_kind["matrix"] = next(r for r in runs if r["kind"] == "matrix" and "target" not in r["config"])
    assert by_kind["matrix"]["config"]["C"] == 1.0 and by_kind["matrix"]["config"]["corpora"] == ["ravdess", "emodb"]
    assert by_kind["finetune"]["config"]["max_steps"] == 1 and by_kind["finetune"]["config"]["protocol"] == "luna5"
    assert Path(by_kind["evaluate"]["config"]["model_dir"]) == study["probe_dir"].resolve()


def test_a_missing_store_is_extracted_from_the_configured_root(study):
    from classifiers.runs.probe import store_for
    from featstore.store import open_store

    store = open_store(store_for(study["cache"], str(study["tiny"]), "ravdess"))
    assert len(store) == 48
    tiny_probe = next(r for r in study["runs"] if r["kind"] == "probe" and r["model"] == str(study["tiny"]))
    assert tiny_probe["stores"][0]["utterances"] == 48


def test_one_report_holds_every_kind(study):
    page = (study["tmp"] / "results" / "study-kinds.html").read_text(encoding="utf-8")
    for r in study["runs"]:
        kind = f"{r['kind']} (arousal)" if r["config"].get("target") == "arousal" else r["kind"]
        assert f"run {r['id']} — {kind}," in page
        assert f'href="{Path(r["out"]).resolve().as_uri()}"' in page          # a link to its folder
    assert "CCC pooled [95% speaker CI]" in page                              # the dimensional headline
    assert "transfer matrix: UAR pooled [95% speaker CI]" in page             # the matrix's table
    assert f"{DIMS} → {OTHER}" in page and "transfer matrix at layer 1: CCC pooled" in page   # the dimensional one
    # the paper table holds the emotion probe only, and the study still writes it
    table = (study["tmp"] / "results" / "study-kinds.md").read_text(encoding="utf-8")
    assert "ravdess" in table and "emodb" not in table


def test_a_second_run_re_uses_every_registered_run(study):
    again = flat(study["again"].output)
    assert again.count("registered already") == 7 and ": ran, run" not in again
    assert [r["id"] for r in Registry(study["db"]).runs()] == [r["id"] for r in study["runs"]]


def test_study_db_is_honoured_and_the_default_registry_untouched(study):
    default = Path(os.environ["SER_DB"])
    assert not default.exists() or not any(r["id"] in {x["id"] for x in study["runs"]}
                                           for r in Registry(default).runs())


def test_cells_printed_by_results_show_re_create_their_runs(study):
    """Each run's `ser results show` cell, run as a study: the same configuration, found registered."""
    text = ""
    for r in study["runs"]:
        out = cli("results", "show", r["id"], "--db", study["db"]).output
        text += out[out.index("[[cells]]"):] + "\n"
    assert len(tomllib.loads(text)["cells"]) == 7
    path = study["tmp"] / "shown.toml"
    path.write_text(f'[study]\nname = "shown"\ncache = "{study["cache"]}"\ndb = "{study["db"]}"\n' + text,
                    encoding="utf-8")
    out = flat(cli("study", "run", path, "--device", "cpu").output)
    assert out.count("registered already") == 7, out
    assert len(Registry(study["db"]).runs()) == 7


def test_db_option_wins_over_the_study_file(study, tmp_path):
    path = tmp_path / "one.toml"
    path.write_text(f'[study]\nname = "one"\ncache = "{study["cache"]}"\ndb = "{tmp_path / "file.db"}"\n'
                    f'[[cells]]\nkind = "neighbors"\ncorpora = ["emodb"]\nlayers = "1"\nmodel = "{MODEL}"\n',
                    encoding="utf-8")
    cli("study", "run", path, "--db", tmp_path / "option.db", "--report", tmp_path / "one.html")
    assert [r["kind"] for r in Registry(tmp_path / "option.db").runs()] == ["neighbors"]
    assert not (tmp_path / "file.db").exists()
    assert "run " in (tmp_path / "one.html").read_text(encoding="utf-8")      # a report with no probe cell


BAD_KEYS = {  # a cell -> what its one error line names: the cell, the key, the closest key of that kind
    'kind = "matrix"\ncorpora = ["a", "b"]\nlayers = 1\n': "cell 1 (matrix) has unknown key 'layers' (did you mean 'layer'?",
    'kind = "finetune"\ncorpus = "ravdess"\nepoch = 2\n': "cell 1 (finetune) has unknown key 'epoch' (did you mean 'epochs'?",
    'kind = "neighbors"\ncorpora = ["a"]\nK = 5\n': "cell 1 (neighbors) has unknown key 'K' (did you mean 'k'?",
    'kind = "evaluate"\nmodel_dir = "m"\ncorpus = "a"\nmap = {calm = "neutral"}\n':
        "cell 1 (evaluate) has unknown key 'map' (did you mean 'maps'?",
    'corpus = "ravdess"\nclass_weigth = "balanced"\n': "cell 1 has unknown key 'class_weigth' (did you mean 'class_weight'?",
    'kind = "knn"\ncorpus = "ravdess"\n': 'cell 1 kind = "knn": expected one of ' + ", ".join(KINDS),
    'corpus = "ravdess"\ntarget = "arousal"\nseeds = 2\n': 'target = "arousal" runs a regressor on one training set: '
                                                           "leave out seeds",
    'kind = "neighbors"\ncorpora = ["a"]\nprotocol = "luna5"\n': 'protocol is fixed by ser neighbors at "loso"',
    'kind = "finetune"\ncorpus = "ravdess"\nlr = -1.0\n': "cell 1 (finetune): ",
}


@pytest.mark.parametrize("text", list(BAD_KEYS))
def test_a_wrong_key_is_one_line_naming_the_closest_key(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text("[[cells]]\n" + text, encoding="utf-8")
    line = one_error_line(cli("study", "run", path, "--db", tmp_path / "x.db", ok=False))
    assert f"error: {path}: " in line and BAD_KEYS[text] in line, line
    assert not (tmp_path / "x.db").exists()


def test_dask_executors_refuse_other_kinds_in_one_line(tmp_path):
    pytest.importorskip("distributed")
    path = tmp_path / "s.toml"
    path.write_text('[[cells]]\nkind = "neighbors"\ncorpora = ["ravdess"]\n', encoding="utf-8")
    line = one_error_line(cli("study", "run", path, "--db", tmp_path / "x.db", "--executor", "local:2", ok=False))
    assert "cell 1 (neighbors" in line and "--executor local" in line


def test_a_failing_cell_is_named_and_the_cells_before_it_stay_registered(study, tmp_path):
    path = tmp_path / "fails.toml"
    path.write_text(f'[study]\nname = "fails"\ncache = "{study["cache"]}"\ndb = "{tmp_path / "f.db"}"\n'
                    f'[[cells]]\nkind = "neighbors"\ncorpora = ["emodb"]\nlayers = "0"\nmodel = "{MODEL}"\n'
                    f'[[cells]]\nkind = "evaluate"\nmodel_dir = "{tmp_path / "nowhere"}"\ncorpus = "emodb"\n',
                    encoding="utf-8")
    r = cli("study", "run", path, "--report", tmp_path / "f.html", ok=False)
    assert r.exit_code == 2 and ": ran, run" in r.output                     # the first cell ran ...
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("error:")]  # ... then one line for the second
    assert f"error: {path}: cell 2 (evaluate {tmp_path / 'nowhere'} on emodb): " in line
    assert [r["kind"] for r in Registry(tmp_path / "f.db").runs()] == ["neighbors"]


def test_dry_run_lists_the_cells_of_other_kinds(study):
    out = flat(cli("study", "run", study["path"], "--dry-run").output)
    assert "1 cell task(s), 6 cell(s) of other kinds" in out, out
    assert "cell 3 (matrix): matrix logreg, toy/model: ravdess × emodb, layer 1 (in this process)" in out


def test_target_emotion_is_the_categorical_probe_and_study_defaults_reach_only_their_kinds(tmp_path):
    from classifiers.runs.study import read_study

    path = tmp_path / "s.toml"
    path.write_text('[study]\nseeds = 3\nk = 5\nepochs = 2.0\nlayers = "1"\n'
                    '[[cells]]\ncorpus = "ravdess"\ntarget = "emotion"\n'
                    '[[cells]]\nkind = "neighbors"\ncorpora = "ravdess,emodb"\n'
                    '[[cells]]\nkind = "finetune"\ncorpus = "ravdess"\ntrain = "ravdess,emodb"\n'
                    '[[cells]]\ncorpus = "ravdess"\ntarget = "valence"\n', encoding="utf-8")
    with pytest.warns(UserWarning, match='seeds = 3 is deprecated: write seed = "0-2"'):   # the old key, read once
        _, (probe, nb, ft, dims) = read_study(path)
    assert "target" not in probe.options and probe.options["seed"] == "0-2" and probe.classifier == "logreg"
    assert nb.options == dict(corpora=["ravdess", "emodb"], k=5, layers="1")       # no seeds, no epochs
    assert ft.options == dict(corpus="ravdess", train=["emodb"], epochs=2.0)          # train: the extra corpora
    assert dims.dimensional and dims.classifier == "ridge" and "seeds" not in dims.options


def test_force_trains_a_finetune_cell_afresh_in_a_new_folder(study, tmp_path):
    before = next(r for r in study["runs"] if r["kind"] == "finetune")
    text = study["path"].read_text(encoding="utf-8")
    path = tmp_path / "ft.toml"
    path.write_text(text[:text.index("[[cells]]")].replace('"kinds"', '"ft"').replace(str(study["db"]),
                                                                                         str(tmp_path / "ft.db"))
                    + text[text.rindex("[[cells]]"):], encoding="utf-8")
    cli("study", "run", path, "--device", "cpu", "--db", study["db"], "--force")
    after = [r for r in Registry(study["db"]).runs(kind="finetune") if r["id"] != before["id"]]
    assert len(after) == 1 and Path(after[0]["out"]) == Path(before["out"]).with_name(Path(before["out"]).name + "-2")
    assert before["id"] in {r["id"] for r in Registry(study["db"]).runs(kind="finetune")}   # the first stays


def test_ser_report_shows_every_kind_of_a_registry(study, tmp_path):
    cli("report", "--db", study["db"], "--out", tmp_path / "all.html")
    page = (tmp_path / "all.html").read_text(encoding="utf-8")
    for r in study["runs"]:
        kind = f"{r['kind']} (arousal)" if r["config"].get("target") == "arousal" else r["kind"]
        assert f"run {r['id']} — {kind}," in page
