"""Commands that touch no model answer without importing torch or transformers (issue 24: start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_runs import toy_store

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sklearn", "matplotlib", "xgboost")
CODE = ("import sys, cli\n"
        "try:\n    cli.app(sys.argv[1:], prog_name='ser')\nexcept SystemExit as e:\n    code = e.code\n"
        f"print('HEAVY', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
COMMANDS = (("--help",), ("config", "show"), ("models",), ("corpora",), ("store", "ls"), ("store", "info", "{store}"),
            ("results", "ls"), ("probe", "--help"), ("extract", "--help"), ("finetune", "--help"), ("neighbors", "--help"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from classifiers.results.registry import Registry

    tmp = tmp_path_factory.mktemp("startup")
    Registry(tmp / "ser.db")._create()   # an empty registry, as the first `ser probe` makes it
    return tmp, toy_store(tmp / "cache", "ravdess")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_model_free_commands_import_no_torch(home, command):
    tmp, store = home
    env = dict(os.environ, PYTHONPATH=str(REPO), SER_CONFIG=str(tmp / "ser.toml"), SER_CACHE=str(tmp / "cache"),
               SER_DB=str(tmp / "ser.db"), HF_HUB_OFFLINE="1", COLUMNS="120")
    args = [a.format(store=store) for a in command]
    r = subprocess.run([sys.executable, "-c", CODE, *args], cwd=tmp, env=env, capture_output=True, text=True,
                       timeout=120)
    heavy = next(line for line in r.stderr.splitlines() if line.startswith("HEAVY")).split()[1:]
    assert "Traceback" not in r.stderr and r.stdout.strip(), r.stderr
    assert heavy == [], f"ser {' '.join(args)} imported {heavy}"
