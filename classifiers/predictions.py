"""Per-utterance predictions of every run, so any score can be re-computed, resampled and tested.

One row per (test utterance, layer, fold, seed, classifier, training set): id (the EmoBox key),
corpus, speaker, fold, seed, layer, classifier, train_set, test_set, true label, predicted label,
and `p_<class>` probabilities (NaN for a class the model was not trained on, or for kNN, whose
votes are not probabilities). Written as Parquet (zstd): `pandas.read_parquet(path)` loads it.

Runners append `block(...)`s to `ProbeResults.predictions`; `write_predictions` concatenates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featstore.errors import SerError

KEYS = ("id", "corpus", "speaker", "fold", "seed", "layer", "classifier", "train_set", "test_set", "label",
        "predicted")


class PredictionsError(SerError):
    """A predictions file that cannot be read (the message names it)."""


def block(utterances: Sequence, rows: Sequence[int], predicted: Sequence[str], *, proba: np.ndarray | None = None,
          classes: Sequence[str] | None = None, labels: Sequence[str] | None = None, **keys) -> dict:
    """Predictions for test rows `rows` of `utterances` (records with id, corpus, speaker, label).

    predicted: (n,) labels; proba: (n, len(classes)) probabilities, columns in `classes` order;
    labels: (n,) true labels when they differ from the records' (the shuffled control, mapped
    labels). keys: fold, seed, layer, classifier, train_set, test_set.
    """
    rows = np.asarray(rows, dtype=np.int64)
    utts = [utterances[i] for i in rows]
    out = dict(id=[u.id for u in utts], corpus=[u.corpus for u in utts], speaker=[str(u.speaker) for u in utts],
               label=list(labels) if labels is not None else [u.label for u in utts],
               predicted=[str(p) for p in predicted])
    if len(out["predicted"]) != len(rows):
        raise ValueError(f"{len(out['predicted'])} predictions for {len(rows)} test rows")
    n = len(rows)
    for k in ("fold", "seed", "layer", "classifier", "train_set", "test_set"):
        value = keys.get(k, "")
        out[k] = [str(value) if k in ("layer", "fold") else value] * n
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float32)
        if proba.shape != (n, len(classes or ())):
            raise ValueError(f"proba must be (n={n}, {len(classes or ())}), got {proba.shape}")
        for j, c in enumerate(classes):
            out[f"p_{c}"] = proba[:, j]
    return out


def concat(blocks: Sequence[dict]) -> dict[str, np.ndarray]:
    """The blocks as one column dict; a `p_<class>` column missing from a block is NaN there."""
    prob_cols = sorted({k for b in blocks for k in b if k.startswith("p_")})
    cols: dict[str, list] = {k: [] for k in (*KEYS, *prob_cols)}
    for b in blocks:
        n = len(b["id"])
        for k in KEYS:
            cols[k].extend(b[k])
        for k in prob_cols:
            cols[k].extend(np.asarray(b[k], dtype=np.float32) if k in b else np.full(n, np.nan, np.float32))
    out = {k: np.asarray(v, dtype=object) for k, v in cols.items() if k in KEYS}
    out["seed"] = np.asarray(cols["seed"], dtype=np.int64)
    out.update({k: np.asarray(cols[k], dtype=np.float32) for k in prob_cols})
    return out


def write_predictions(blocks: Sequence[dict], path: str | Path) -> Path:
    """Write the blocks to one Parquet file (`path`, zstd-compressed); return the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = concat(blocks)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: (pa.array(v.tolist(), pa.string()) if v.dtype == object else pa.array(v))
                      for k, v in cols.items()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """A predictions file as {column: (n,) array} (strings as object arrays)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise PredictionsError(f"{path}: cannot read the predictions ({e}); re-run the command that wrote it") from e
    return {name: (np.asarray(col.to_pylist(), dtype=object) if col.type == "string" else col.to_numpy())
            for name, col in zip(table.column_names, table.columns)}


def select(cols: dict[str, np.ndarray], **where) -> dict[str, np.ndarray]:
    """The rows whose columns equal `where` (e.g. layer="12", classifier="logreg")."""
    keep = np.ones(len(cols["id"]), dtype=bool)
    for k, v in where.items():
        keep &= cols[k] == (str(v) if k in ("layer", "fold") else v)
    return {k: v[keep] for k, v in cols.items()}


def settings(cols: dict[str, np.ndarray]) -> list[tuple[str, str, str, str]]:
    """The distinct (train_set, test_set, classifier, layer) settings, in first-seen order."""
    keys = zip(cols["train_set"], cols["test_set"], cols["classifier"], cols["layer"])
    return list(dict.fromkeys(keys))


def layer_sort_key(layer: str):
    """Numeric layers in numeric order, then the others ("e2e", "5+7") by name."""
    return (0, int(layer), "") if str(layer).lstrip("-").isdigit() else (1, 0, str(layer))


def read_fold_csv(path: str | Path, **keys) -> dict:
    """A fine-tuning fold's predictions.csv (id, corpus, speaker, label, prediction, p_<class>) as a
    block; keys: fold, seed, layer, classifier, train_set, test_set."""
    import csv

    with Path(path).open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = len(rows)
    out = {k: [r[k] for r in rows] for k in ("id", "corpus", "speaker", "label")}
    out["predicted"] = [r["prediction"] for r in rows]
    for k in ("fold", "seed", "layer", "classifier", "train_set", "test_set"):
        out[k] = [str(keys[k]) if k in ("layer", "fold") else keys[k]] * n
    for c in (rows[0] if rows else {}):
        if c.startswith("p_"):
            out[c] = np.array([float(r[c]) for r in rows], dtype=np.float32)
    return out
