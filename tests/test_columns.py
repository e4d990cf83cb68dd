"""Readable at 80 columns (issue 24): every table-printing command, run at COLUMNS=80 on small
synthetic inputs, keeps each word of every value it put into a table whole, and no line is wider
than the terminal; tables too wide for it are `key: value` blocks. Help shows no `<bool>` and
reflows docstrings."""

from __future__ import annotations

import json
import re

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from cli import app, reflow_help
from tests.test_runs import MODEL, toy_store

WIDTH = 80
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("columns-cache")
    for i, c in enumerate(("ravdess", "emodb")):
        toy_store(root, c, seed=i)
    return root


@pytest.fixture
def tables(monkeypatch):
    """Every table a command builds through classifiers.results.records.table, recorded."""
    import classifiers.results.records as results

    made = []
    build = results.table

    def recording(*columns, **kw):
        t = build(*columns, **kw)
        made.append(t)
        return t

    monkeypatch.setattr(results, "table", recording)
    return made


def _plain(x) -> str:
    return getattr(x, "plain", x) if isinstance(getattr(x, "plain", x), str) else ""


def table_words(t) -> list[str]:
    """The words of the title, headers and cells of a table."""
    texts = [_plain(t.title or "")]
    for c in t.columns:
        texts += [_plain(c.header), *(_plain(x) for x in c.cells)]
    return [w for text in texts for w in text.split()]


def run80(*args, tables=None, ok: bool = True):
    r = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert "Traceback" not in r.output, r.output
    if ok:
        assert r.exit_code == 0, r.output
    return r


def check_readable(output: str, made: list, *, at_least: int = 1) -> None:
    """No line of several words wider than WIDTH; each word of each recorded table (that fits in a line) appears
    whole in one output token (box-drawing characters are not part of words)."""
    assert len(made) >= at_least, output
    lines = output.splitlines()
    # a single word wider than the terminal (a path printed whole, soft-wrapped) is the one exception
    wide = [line for line in lines if cell_len(line) > WIDTH and len(line.split()) > 1]
    assert not wide, "\n".join(wide)
    tokens = [tok for line in lines for tok in re.split(r"[\s│┃]+", line) if tok]
    joined = "\n".join(tokens)
    broken = sorted({w for t in made for w in table_words(t)
                     if cell_len(w) <= WIDTH - 4 and w not in joined})
    assert not broken, f"words split or cut at {WIDTH} columns: {broken}\n{output}"


def test_corpora_is_compact_by_default_and_long_keeps_every_word(tables):
    from featstore.corpora import REGISTRY

    short = run80("corpora")
    check_readable(short.output, tables)
    assert len(short.output.splitlines()) <= len(REGISTRY) + 8       # one line per corpus
    assert "--long" in short.output
    tables.clear()
    long = run80("corpora", "--long")
    check_readable(long.output, tables)
    for c in REGISTRY:                                             # sources and notes are all there
        assert c.source.licence.split()[0] in long.output and c.protocol.name in long.output
    assert "utterances: 1440" in long.output                        # too wide for 80: key: value blocks
    tables.clear()
    check_readable(run80("corpora", "--labels").output, tables)


def test_model_free_listings_at_80_columns(tables, tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    for args in (("models",), ("config", "show"), ("download", "--list")):
        tables.clear()
        check_readable(run80(*args).output, tables)


def test_corpus_manifest_and_folds_at_80_columns(tables, tmp_path):
    from featstore.synth import synthesize

    root = tmp_path / "ravdess"
    synthesize("ravdess", root, n=24, max_duration=0.2, sample_rate=16000)
    check_readable(run80("manifest", "--corpus", "ravdess", "--root", root).output, tables)
    tables.clear()
    check_readable(run80("folds", "--corpus", "ravdess", "--root", root, "--protocol", "luna5").output, tables)


def test_stores_probes_neighbours_and_results_at_80_columns(cache, tables, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ser.db"
    common = ("--model", MODEL, "--cache", cache)
    check_readable(run80("store", "ls", "--cache", cache).output, tables)
    tables.clear()
    check_readable(run80("store", "info", cache / "toy--model" / "ravdess.h5").output, tables)
    tables.clear()
    probe = run80("probe", "--corpus", "ravdess", "--protocol", "speaker-kfold:4", "--layer", "all", "--C", "1",
                  "--train", "ravdess", "--train", "ravdess,emodb", *common, "--db", db)
    check_readable(probe.output, tables, at_least=2)
    tables.clear()
    check_readable(run80("probe", "--corpus", "ravdess", "--protocol", "speaker-kfold:4", "--layer", "1", "--C", "1",
                         *common, "--db", db, "--save-probe", tmp_path / "probe").output, tables)
    tables.clear()
    check_readable(run80("probe", "--matrix", "ravdess,emodb", "--layer", "1", "--C", "1", "--protocol",
                         "speaker-kfold:4", *common).output,
                   tables, at_least=2)
    tables.clear()
    check_readable(run80("neighbors", "--corpus", "ravdess,emodb", "--layer", "all", "--k", "3", *common).output,
                   tables, at_least=2)
    tables.clear()
    check_readable(run80("evaluate", "--trained", tmp_path / "probe", "--corpus", "emodb", "--cache", cache,
                         "--db", db).output, tables)
    from classifiers.results.registry import Registry

    ids = [r["id"] for r in Registry(db).runs()]
    for args in (("results", "ls"), ("results", "show", ids[0])):
        tables.clear()
        check_readable(run80(*args, "--db", db).output, tables)


def test_predict_fits_80_columns_with_long_paths_and_many_classes(tables, tmp_path, monkeypatch):
    import classifiers.finetuning.inference as predict

    labels = ["neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise"]
    monkeypatch.chdir(tmp_path)              # paths that fit in 80 columns (a longer one can only fold)
    files = [f"recordings/speaker-{k:02d}/session-two-take-{k}-of-a-long-afternoon.wav" for k in range(3)]
    rows = [(f, {c: (i + k + 1) / 100 for i, c in enumerate(labels)}) for k, f in enumerate(files)]
    monkeypatch.setattr(predict, "predict", lambda *a, **kw: rows)
    (tmp_path / "m").mkdir()
    out = run80("predict", *files, "--trained", tmp_path / "m", "--device", "cpu").output
    check_readable(out, tables)
    for f in files:
        assert f in out
    assert "predicted: surprise" in out                             # 10 columns do not fit 80: key: value


def test_the_narrow_layout_is_key_value_blocks_and_wide_terminals_keep_the_table():
    """The switch itself, on a table whose words cannot all fit 60 columns."""
    from rich.console import Console

    from classifiers.results.records import table

    t = table("utterance", "emotion", "a rather long explanation", title="t")
    t.add_row("ravdess-03-01-05-01-02-01-18", "angry", "the speaker raises their voice " * 4)
    t.add_row("emodb-03a01Wa", "sadness-and-something-longer", "short", style="bold")

    def render(width):
        c = Console(width=width, record=True, file=open("/dev/null", "w"))
        c.print(t)
        return c.export_text()

    narrow = render(50).splitlines()
    assert "utterance: ravdess-03-01-05-01-02-01-18" in narrow and "  emotion: angry" in narrow
    assert "  emotion: sadness-and-something-longer" in narrow
    assert "" in narrow                                             # blocks separated by a blank line
    assert max(cell_len(line) for line in narrow) <= 50
    wide = render(200)
    assert "┃ utterance" in wide and "utterance:" not in wide


def test_help_has_no_bool_metavars_and_reflows_docstrings():
    out = run80("probe", "--help").output
    assert "<bool>" not in out and "--overwrite" in out and "<str>" in out
    assert "differences against the first" in " ".join(out.split())  # two source lines joined, wrapped by rich
    for args in (("--help",), ("download", "--help"), ("corpora", "--help"), ("store", "ls", "--help")):
        assert "<bool>" not in run80(*args).output
    doc = """First line.

    A paragraph hard-wrapped
    in the source.
    Example: ser x
    Examples:
      ser a
      ser b
    """
    assert reflow_help(doc) == ("First line.\n\nA paragraph hard-wrapped in the source.\nExample: ser x\n"
                                "Examples:\n  ser a\n  ser b")


def test_align_show_at_80_columns(tables, tmp_path):
    path = tmp_path / "cache" / "some--ctc" / "ravdess.align.jsonl"
    path.parent.mkdir(parents=True)
    words = [{"word": w, "start": 0.1 * i, "end": 0.1 * i + 0.08, "score": 0.9}
             for i, w in enumerate("KIDS ARE TALKING BY THE DOOR".split())]
    path.write_text(json.dumps({"format": "ser-alignments/1", "model": "some/ctc", "weights_sha256": "x",
                                "corpus": "ravdess"}) + "\n"
                    + json.dumps({"id": "ravdess-03-01-05-01-01-01-01", "text": "Kids are talking by the door",
                                  "words": words}) + "\n")
    out = run80("align", "--show", "ravdess-03-01-05-01-01-01-01", "--cache", tmp_path / "cache").output
    check_readable(out, tables)
    assert "TALKING" in out
