"""Every bad input of `bench/bad_inputs.py` (over every command) is refused: one `error:` line or
click's usage message, never a traceback, never accepted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bad_inputs", Path(__file__).resolve().parents[1] / "bench" / "bad_inputs.py")
bad_inputs = sys.modules.setdefault("bad_inputs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bad_inputs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return bad_inputs.build_world(tmp_path_factory.mktemp("bad-inputs"))


def test_the_cases_cover_every_command():
    from typer.main import get_command

    from cli import app

    group = get_command(app)
    names = set()
    for name, cmd in group.commands.items():
        names |= {f"{name} {sub}" for sub in getattr(cmd, "commands", {})} or {name}
    tried = {" ".join(line.split()[:2]) if line.split()[0] in ("config", "store", "results", "study")
             else line.split()[0] for line, _ in bad_inputs.CASES}
    assert names - tried <= {"models", "config show"}, names - tried  # no arguments to get wrong


def test_every_bad_input_is_refused_in_one_line(world, tmp_path):
    outcomes = bad_inputs.run_cases(world, tmp_path)
    wrong = [f"{o.outcome}: ser {o.line} ({o.why}): {o.output.strip()[-300:]}" for o in outcomes
             if o.outcome in ("traceback", "accepted")]
    assert not wrong, "\n".join(wrong)
    assert len(outcomes) == len(bad_inputs.CASES) >= 150


def test_classify_tells_the_outcomes_apart():
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    assert bad_inputs.classify(runner.invoke(app, ["probe", "--seeds", "0"])) == "one line"
    assert bad_inputs.classify(runner.invoke(app, ["probe", "--threads", "x"])) == "usage message"
    assert bad_inputs.classify(runner.invoke(app, ["corpora"])) == "accepted"

    class Crashed:
        output, exit_code, exception = "", 1, ValueError("boom")

    assert bad_inputs.classify(Crashed()) == "traceback"


def test_old_seeds_given_a_seed_range_names_the_new_option():
    """`--seeds 0-2` (a range given to the old count option) read as -2 through typer's int ("must be at least 1"
    about a number nobody typed); it is one line naming what was typed and the `--seed` that means it."""
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    for given, hint in (("0-2", "write --seed 0-2"), ("0", "write --seed 0"), ("x", None)):
        r = runner.invoke(app, ["probe", "--corpus", "ravdess", "--seeds", given], env={"COLUMNS": "250"})
        [line] = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2 and line.startswith(f"error: --seeds '{given}': a count of at least 1"), r.output
        assert (hint in line) if hint else ("write --seed" not in line), line


@pytest.mark.parametrize("args", [["demo", "--n", "0-5"], ["demo", "--threads", "0-2"], ["neighbors", "--k", "0-5"],
                                  ["extract", "--batch-size", "0-3"], ["folds", "--seed", "0-3"]])
def test_int_options_read_the_text_typed(args):
    """typer's int (a pydantic int) read "0-5" as -5, so `--n 0-5` was refused as `--n -5`; every int option now
    takes Python's int() of its text (cli._whole_number): a usage message quoting what was typed."""
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert r.exit_code == 2 and f"'{args[-1]}' is not a whole number" in r.output, r.output
    assert "Traceback" not in r.output
