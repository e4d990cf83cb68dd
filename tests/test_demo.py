"""`ser demo` end to end at a small size: corpus, store, probe over every layer, neighbours, registry, report."""

from __future__ import annotations

import json

from rich.cells import cell_len
from typer.testing import CliRunner

from cli import app


def test_demo_runs_end_to_end(tmp_path):
    """...and reads whole at 80 columns: no line wider, no heading or cell cut short with an ellipsis."""
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--n", "48"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert "…" not in r.output and max(cell_len(line) for line in r.output.splitlines()) <= 80, r.output
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
    assert "registered" in r.output or runs[0]["id"] in r.output
