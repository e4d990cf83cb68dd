"""A registered run read back: its results and predictions files, and the fingerprints of the
stores a run reads (what the registry keys it by).

Low-level: the probe driver, the kNN analysis, the dimensional probes, `ser evaluate` and the study
runner all use these; this module imports none of them, so none of them needs `classifiers.runs.study`
(which imports them all) and the import graph keeps no cycle through it."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featstore.errors import SerError


@dataclass
class Registered:
    """One probe configuration: its registry row, its results, and whether it was re-used."""

    run: dict
    results: object
    reused: bool
    files: list[Path] = field(default_factory=list)
    adopted: bool = False   # computed by an earlier, interrupted study run; registered now without computing


def command_line() -> str:
    return shlex.join(["ser", *sys.argv[1:]])


def _needed(corpus: str | None, train: Sequence[str], test: str | None) -> list[str]:
    sets = [c for t in (train or [corpus]) for c in t.split(",") if c]
    return list(dict.fromkeys(sets + [c for c in (test or corpus or "").split(",") if c]))


def fingerprints(cache, model: str, corpora: Sequence[str]) -> list[dict]:
    """`store_fingerprint` of each corpus' store for `model`."""
    from classifiers.results.registry import store_fingerprint
    from classifiers.runs.runpaths import store_for
    from featstore.store import open_store

    return [store_fingerprint(open_store(store_for(cache, model, c))) for c in corpora]


def registered_files(run: dict) -> bool:
    """Whether a registered run's results file is still there (a deleted one is run again)."""
    return _results_json(run).exists()


def _results_json(run: dict) -> Path:
    return Path(run["out"]) / {"finetune": "finetune.json", "evaluate": "evaluate.json",
                             "neighbors": "knn.json"}.get(run["kind"], "probe.json")  # neighbors: its kNN records


def load_registered(run: dict):
    """The `ProbeResults` of a registered run, read back from its files (predictions included)."""
    from classifiers.results.predictions import read_predictions
    from classifiers.results.records import read_results

    json_path = _results_json(run)
    if not json_path.exists():
        raise SerError(f"run {run['id']}: {json_path} is gone; re-run its command: {run['command']}")
    results = read_results(json_path)
    if run.get("predictions"):
        if not Path(run["predictions"]).exists():
            raise SerError(f"run {run['id']}: its predictions {run['predictions']} are gone (the scores and their "
                           f"intervals need them); re-run its command: {run['command']}")
        cols = read_predictions(run["predictions"], sha256=run.get("predictions_sha256") or None)
        results.predictions = [{k: v.tolist() for k, v in cols.items()}]
    return results
