"""`ser demo` end to end at a small size: corpus, store, probe over every layer, neighbours, registry, report;
read at 80 columns; and its re-run, which shows the registered runs and writes nothing."""

from __future__ import annotations

import json

from rich.cells import cell_len
from typer.testing import CliRunner

from cli import app


def _mtimes(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_runs_end_to_end_and_a_rerun_writes_nothing(tmp_path):
    """The first run reads whole at 80 columns: no line wider, no heading or cell cut short with an ellipsis."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "48"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert "…" not in r.output and max(cell_len(line) for line in r.output.splitlines()) <= 80, r.output
    assert "identical configuration" not in r.output
    probe = json.loads((out / "results" / "probe" / "probe.json").read_text())
    layers = {rec["layer"] for rec in probe["records"]}
    folds = {rec["fold"] for rec in probe["records"]}
    assert folds == {f"luna-{i}" for i in range(5)}, folds
    assert len(layers) >= 2 and min(layers) == 0
    assert all(0 <= rec["uar"] <= 1 for rec in probe["records"])
    page = (out / "results" / "report.html").read_text(encoding="utf-8")
    assert "<img" in page and "probe" in page
    from classifiers.results.registry import Registry

    runs = Registry(out / "results" / "ser.db").runs()
    assert sorted(r["kind"] for r in runs) == ["neighbors", "probe"]
    assert all(f"registered run {run['id']}" in r.output for run in runs)

    before = _mtimes(out)
    second = CliRunner().invoke(app, args, env={"COLUMNS": "200"})    # wide: the paths below stay on one line
    assert second.exit_code == 0, second.output
    assert second.output.count("(identical configuration over identical stores; --force runs it again)") == 2
    assert _mtimes(out) == before                                  # no file written, not even the report
    assert "results and plots:" in second.output and str(out / "results" / "report.html") in second.output
    assert Registry(out / "results" / "ser.db").runs() == runs
    assert all(f"registered run {run['id']} of " in second.output for run in runs)
