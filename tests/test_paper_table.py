"""From a study to a paper table (issue 24, item 5): `ser study run` ends with the pivot the study
asks for, each cell the registered run's pooled UAR and speaker CI, Holm-significant differences
marked; Markdown, LaTeX (booktabs) and CSV beside the report; the report leads with it and folds
the runs; `classifiers.results.records.to_frame` gives DataFrames. Toy stores: one training corpus without
any class signal (clearly worse), two with the same signal (alike)."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from featstore.corpora.base import Utterance

MODEL = "toy/model_v2"          # an underscore, for the LaTeX escaping
LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
#: corpus -> (class signal weight per layer, seed): savee's features carry no class at all
STORES = {"ravdess": ((0.2, 1.2, 0.6), 0), "cremad": ((0.2, 1.2, 0.6), 1), "emodb": ((0.2, 1.2, 0.6), 2),
          "savee": ((0.0, 0.0, 0.0), 3)}
STUDY = f'''[study]
name = "paper_t"
models = ["{MODEL}"]
layers = "all"
C = 1.0
classes = "all"
{{table}}
[[cells]]
train = ["cremad", "emodb", "savee"]
test = "ravdess"
[[cells]]
train = ["cremad", "savee"]
test = "emodb"
'''
runner = CliRunner()


def paper_store(cache: Path, corpus: str, weights, seed: int, *, speakers: int = 8, per_class: int = 3,
                dim: int = 12) -> Path:
    """A finished store of `corpus` for MODEL: class means shared by every corpus, scaled per layer
    by `weights`, plus a speaker offset and noise."""
    from featstore.backbones.runtime import model_slug
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(len(LABELS), dim))
    utts, X = [], []
    for s in range(speakers):
        offset = rng.normal(scale=0.8, size=dim)
        for k, label in enumerate(LABELS):
            for r in range(per_class):
                utts.append(Utterance(id=f"{corpus}-{s:02d}-{label}-{r}", path="", corpus=corpus, language="en",
                                      speaker=f"{corpus}-{s:02d}", gender=None, label=label, label_raw=label))
                X.append(np.stack([means[k] * w + offset + rng.normal(scale=1.0, size=dim) for w in weights]))
    X = np.asarray(X, dtype=np.float32)
    n = len(utts)
    batch = Batch(utts, X, np.abs(X), np.full(n, 16000), np.full(n, 50))
    config = {"model_id": MODEL, "frame_layers": [], "num_layers": len(weights), "hidden_size": dim,
              "weights_sha256": "cd" * 32}
    path = store_path(cache, model_slug(MODEL), corpus)
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", batch, config)
    assemble(path, config, corpus=corpus)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study run once through the CLI: (work dir, its output, the registry, the study file)."""
    work = tmp_path_factory.mktemp("paper")
    cache = work / "cache"
    for corpus, (weights, seed) in STORES.items():
        paper_store(cache, corpus, weights, seed)
    path = work / "study.toml"
    path.write_text(STUDY.format(table=""))
    db = work / "ser.db"
    r = study_run(work, path, cache, db)
    return dict(work=work, output=r.output, db=db, cache=cache, path=path)


def study_run(work: Path, path: Path, cache: Path, db: Path, ok: bool = True, columns: str = "200"):
    import os

    old = Path.cwd()
    os.chdir(work)
    try:
        r = runner.invoke(app, ["study", "run", str(path), "--cache", str(cache), "--db", str(db)],
                          env={"COLUMNS": columns})
    finally:
        os.chdir(old)
    assert "Traceback" not in r.output, r.output
    if ok:
        assert r.exit_code == 0, r.output
    return r


def registered_cells(db: Path) -> dict:
    """{(train, test, layer): summary row} of every registered run, read back from the registry."""
    from classifiers.results.registry import Registry
    from classifiers.runs.study import load_registered

    out = {}
    for run in Registry(db).runs():
        for row in load_registered(run).summary():
            out[(row["train_set"], row["test_set"], str(row["layer"]))] = row
    return out


def ci(row: dict) -> str:
    return f"{row['pooled']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first pipe table in Markdown `text`."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], split[2:]


def test_study_writes_the_table_as_markdown_latex_and_csv(study):
    results = study["work"] / "results"
    files = {s: results / f"study-paper_t{s}" for s in (".html", ".md", ".tex", ".csv")}
    assert all(f.is_file() for f in files.values())
    assert all(str(f) in " ".join(study["output"].split()) for f in files.values())   # listed after "wrote:"
    cells = registered_cells(study["db"])
    # Markdown: rows are the training sets, columns the test corpora (the default: two test corpora)
    head, rows = md_table(files[".md"].read_text())
    assert head == ["train", "ravdess", "emodb"]
    assert [r[0] for r in rows] == ["cremad", "emodb", "savee"]
    with files[".csv"].open(newline="") as fh:
        long = list(csv.DictReader(fh))
    assert {(r["train"], r["test"]) for r in long} == {("cremad", "ravdess"), ("emodb", "ravdess"),
                                                       ("savee", "ravdess"), ("cremad", "emodb"), ("savee", "emodb")}
    for r in long:
        reg = cells[(r["train"], r["test"], r["layer"])]
        # the CSV holds the registered run's pooled score and CI exactly, at the cell's best layer
        assert float(r["pooled"]) == pytest.approx(reg["pooled"], abs=1e-12)
        assert float(r["ci_low"]) == pytest.approx(reg["ci_low"], abs=1e-12)
        assert float(r["ci_high"]) == pytest.approx(reg["ci_high"], abs=1e-12)
        same = [v for (t, s, _), v in cells.items() if (t, s) == (r["train"], r["test"])]
        assert reg["pooled"] == max(v["pooled"] for v in same)
        text = rows[[x[0] for x in rows].index(r["train"])][head.index(r["test"])]
        assert text.replace("†", "").startswith(ci(reg)), text
    assert rows[1][2] == "–"                          # emodb was not a training set for the emodb column
    # LaTeX: booktabs, the same numbers, names escaped
    tex = files[".tex"].read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}", r"\end{table}"):
        assert tex.count(rule) == 1, rule
    assert r"toy/model\_v2" in tex and "model_v2" not in tex.replace(r"model\_v2", "")
    assert r"\label{tab:paper-t}" in tex and "p $<$ 0.05" in tex and not re.search(r"(?<!\\)%", tex.split("\n", 1)[1])
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    assert body.count(r"\\") == 3 and ci(cells[("cremad", "ravdess", long[0]["layer"])]) in body
    # printed at the end of the run, through the word-wrapping table
    assert "study paper_t: UAR [95% speaker CI]" in study["output"] and "savee" in study["output"]


def test_a_holm_significant_difference_is_marked_and_a_small_one_is_not(study):
    with (study["work"] / "results" / "study-paper_t.csv").open(newline="") as fh:
        long = {(r["train"], r["test"]): r for r in csv.DictReader(fh)}
    noise, alike = long[("savee", "ravdess")], long[("emodb", "ravdess")]
    assert noise["reference"] == alike["reference"] == "cremad"
    assert float(noise["diff"]) < -0.3 and float(noise["p_holm"]) < 0.05 and noise["significant"] == "True"
    assert abs(float(alike["diff"])) < 0.1 and float(alike["p_holm"]) >= 0.05 and alike["significant"] == "False"
    assert long[("cremad", "ravdess")]["reference"] == "" and long[("cremad", "ravdess")]["p"] == ""
    # Holm over the 3 comparisons: p_holm is at least p, and the largest p_holm is the largest p adjusted
    compared = [r for r in long.values() if r["p"]]
    assert len(compared) == 3 and all(float(r["p_holm"]) >= float(r["p"]) for r in compared)
    head, rows = md_table((study["work"] / "results" / "study-paper_t.md").read_text())
    by_train = {r[0]: r for r in rows}
    assert re.match(r"0\.\d{3}† \[", by_train["savee"][1]) and "†" not in by_train["emodb"][1]
    assert "†" not in by_train["cremad"][1]
    md = (study["work"] / "results" / "study-paper_t.md").read_text()
    assert "† p < 0.05 after Holm over 3 comparisons" in md and "cremad" in md.split("†")[-1]
    tex = (study["work"] / "results" / "study-paper_t.tex").read_text()
    assert re.search(r"\nsavee & 0\.\d{3}\$\^\\dagger\$ \[", tex) and not re.search(r"\nemodb & [^\n]*dagger", tex)


def test_the_report_leads_with_the_table_and_folds_the_runs(study):
    page = (study["work"] / "results" / "study-paper_t.html").read_text()
    body = page[page.index("<body>"):]
    first_h2 = body.index("<h2>")
    assert body.index('<table class="paper">') > first_h2 and \
        body[first_h2:].startswith("<h2>the study&#x27;s table: UAR [95% speaker CI]</h2><table class=\"paper\">")
    assert body.index('<table class="paper">') < body.index("<details")
    assert body.count('<details class="run">') == 2 and "<details class=\"run\" open" not in body
    # every run's heading is its folded summary line; nothing of a run sits outside its <details>
    outside = re.sub(r"<details.*?</details>", "", body, flags=re.S)
    assert "<h2>run " not in outside and "<h3>" not in outside
    assert outside.count("data:image/png") == 1 and '<img alt="transfer matrix"' in outside   # across runs: open
    assert re.search(r"<summary><h2>run \w+ — probe", body)
    assert '<span class="sig" title="' in body and "against cremad" in body


def test_the_study_chooses_the_pivot(study):
    """table = {columns = "layer", rows = [...]}: rows that leave out a varying test corpus are one
    line, after which no cell is computed again; a fixed layer fills every cell at it."""
    work, path = study["work"], study["path"]
    path.write_text(STUDY.format(table='table = {columns = "layer", rows = ["train"]}'))
    r = study_run(work, path, study["cache"], study["db"], ok=False)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and text.count("error:") == 1
    assert 'rows = ["train"] leave out test, which varies across the cells (emodb, ravdess); add "test"' in text
    assert "running the study again re-computes nothing" in text
    path.write_text(STUDY.format(table='table = {columns = "layer", rows = ["test", "train"]}'))
    r = study_run(work, path, study["cache"], study["db"])
    assert r.output.count("registered already") == 2
    head, rows = md_table((work / "results" / "study-paper_t.md").read_text())
    assert head == ["test", "train", "layer 0", "layer 1", "layer 2"]
    assert [r[:2] for r in rows] == [["ravdess", "cremad"], ["ravdess", "emodb"], ["ravdess", "savee"],
                                     ["emodb", "cremad"], ["emodb", "savee"]]
    cells = registered_cells(study["db"])
    for row in rows:
        for k in range(3):
            assert row[2 + k].replace("†", "").startswith(ci(cells[(row[1], row[0], str(k))]))
    assert "†" in rows[2][3] and "†" not in rows[1][3]            # layer 1: savee marked, emodb not
    assert "†" not in rows[0][3] and "†" not in rows[3][3]        # the references (first train of each test)
    path.write_text(STUDY.format(table="table = {layer = 2}"))
    study_run(work, path, study["cache"], study["db"])
    md = (work / "results" / "study-paper_t.md").read_text()
    head, rows = md_table(md)
    assert "Layer 2 in every cell." in md and "(L" not in " ".join(map(" ".join, rows))
    assert rows[0][1].startswith(ci(cells[("cremad", "ravdess", "2")]))
    path.write_text(STUDY.format(table="table = {layer = 7}"))
    r = study_run(work, path, study["cache"], study["db"], ok=False)
    assert "layer = 7: no run of the study has layer 7 (they have 0, 1, 2)" in " ".join(r.output.split())


@pytest.mark.parametrize("value, says", [
    ('"test"', 'table = "test": expected a table such as {rows = ["model", "train"], columns = "test"}'),
    ('{columns = "corpus"}', 'table columns = "corpus": expected "test" or "layer"'),
    ('{rows = ["speaker"]}', 'table rows = ["speaker"]: expected a list of distinct names among "model"'),
    ('{rows = ["train", "layer"], columns = "layer"}', 'table rows = ["train", "layer"]: "layer" is the columns; leave it out of rows'),
    ('{rows = ["test", "layer"]}', 'table rows = ["test", "layer"]: "test" or "layer" must be the columns; leave one out of rows'),
    ('{layer = -1}', 'table layer = -1: expected "best" or a layer number'),
    ('{colums = "test"}', "table has unknown key(s) colums; use rows, columns, layer"),
])
def test_a_bad_table_key_is_one_line_before_any_work(tmp_path, value, says):
    path = tmp_path / "s.toml"
    path.write_text(f'[study]\ntable = {value}\n[[cells]]\ncorpus = "ravdess"\n')
    r = runner.invoke(app, ["study", "run", str(path), "--db", str(tmp_path / "ser.db")], env={"COLUMNS": "200"})
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and text.count("error:") == 1 and f"{path}: [study] {says}" in text, text
    assert not (tmp_path / "ser.db").exists() or "ran" not in text


def test_to_frame_gives_dataframes(study, monkeypatch):
    import pandas as pd  # in the test extra: this test never skips

    from classifiers.results.records import SUMMARY_FIELDS, ResultsError, to_frame
    from classifiers.results.registry import Registry
    from classifiers.results.tables import CSV_FIELDS, study_table
    from classifiers.runs.study import load_registered

    runs = [(run, load_registered(run)) for run in Registry(study["db"]).runs()]
    results = runs[0][1]
    frame = to_frame(results)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(SUMMARY_FIELDS)
    summary = results.summary()
    assert len(frame) == len(summary)
    np.testing.assert_allclose(frame["pooled"], [r["pooled"] for r in summary])
    np.testing.assert_allclose(frame["ci_low"], [r["ci_low"] for r in summary])
    records = to_frame(results, "records")
    assert len(records) == len(results.records) and set(records["layer"]) == {0, 1, 2}
    preds = to_frame(results, "predictions")
    assert {"id", "speaker", "label", "predicted"} <= set(preds.columns) and len(preds) > len(records)
    paper = study_table(runs)
    cells = paper.frame()
    assert list(cells.columns) == list(CSV_FIELDS) and len(cells) == 5
    noise = cells[(cells["train"] == "savee") & (cells["test"] == "ravdess")].iloc[0]
    assert bool(noise["significant"]) and noise["p_holm"] < 0.05
    assert len(to_frame(Registry(study["db"]).runs())) == 2
    monkeypatch.setitem(sys.modules, "pandas", None)             # pandas missing: one line naming the fix
    with pytest.raises(ResultsError, match=r"^DataFrames need pandas, which is not installed: pip install pandas$"):
        to_frame(results)
