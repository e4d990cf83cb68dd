"""Per-utterance predictions of every run, so any score can be re-computed, resampled and tested.

One row per (test utterance, layer, fold, seed, classifier, training set): id (the EmoBox key),
corpus, speaker, fold, seed, layer, classifier, train_set, test_set, true label, predicted label,
and `p_<class>` probabilities (NaN for a class the model was not trained on, or for kNN, whose
votes are not probabilities). Written as Parquet (zstd): `pandas.read_parquet(path)` loads it.

Runners append `block(...)`s to `ProbeResults.predictions`; `write_predictions` concatenates them.

Integrity: each file is written whole (temporary file, fsync, rename) with a sidecar
`<file>.sha256` (`sha256sum` format) holding the digest of its bytes; the registry records the
same digest. `read_predictions` verifies the file against its sidecar (and against a registered
digest when given) before parsing it, and checks every required column: one changed byte or a
missing `predicted` column is one `PredictionsError` line naming the file, never other numbers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featstore.errors import SerError

KEYS = ("id", "corpus", "speaker", "fold", "seed", "layer", "classifier", "train_set", "test_set", "label",
        "predicted")
SIDECAR = ".sha256"
_SIDECAR_LINE = re.compile(r"([0-9a-f]{64})  ([^\n]+)\n")


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
    """Write the blocks to one Parquet file (`path`, zstd-compressed) and its `<path>.sha256`
    sidecar, each whole or not at all; return the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featstore.outputs import atomic_output, check_output, write_text

    path = Path(path)
    check_output(path, suffixes=(".parquet",))
    cols = concat(blocks)
    table = pa.table({k: (pa.array(v.tolist(), pa.string()) if v.dtype == object else pa.array(v))
                      for k, v in cols.items()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        write_text(sidecar(path), f"{file_sha256(tmp)}  {path.name}\n")
    return path


def sidecar(path: str | Path) -> Path:
    """The checksum file beside a predictions file: `<path>.sha256`."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_sha256(path: str | Path) -> str:
    """The digest the sidecar of `path` records (PredictionsError when it is missing or damaged)."""
    path, side = Path(path), sidecar(path)
    try:
        text = side.read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise PredictionsError(f"{path}: its checksum file {side.name} is missing, so the predictions cannot be "
                               f"verified; re-run the command that wrote them") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PredictionsError(f"{side}: unreadable checksum file ({e}); re-run the command that wrote "
                               f"{path.name}") from e
    m = _SIDECAR_LINE.fullmatch(text)
    if m is None or m.group(2) != path.name:
        raise PredictionsError(f"{side}: damaged checksum file (expected '<sha256>  {path.name}'); re-run the "
                               f"command that wrote {path.name}")
    return m.group(1)


def verify_predictions(path: str | Path, sha256: str | None = None) -> str:
    """The file's sha256, once it equals its sidecar's (and `sha256`, the registered digest, when
    given); a PredictionsError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: the predictions file is gone; re-run the command that wrote it")
    recorded = recorded_sha256(path)
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise PredictionsError(f"{path}: cannot read the predictions ({e.strerror}); check the file") from e
    if actual != recorded:
        raise PredictionsError(f"{path}: checksum mismatch (changed since it was written: damaged or edited); "
                               f"re-run the command that wrote it")
    if sha256 is not None and actual != sha256:
        raise PredictionsError(f"{path} is not the predictions file registered (its sha256 differs from the "
                               f"registry's); re-run the command that wrote it")
    return actual


def read_predictions(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """A predictions file as {column: (n,) array} (strings as object arrays), verified first
    (`verify_predictions`; `sha256`: the digest the registry holds) and its columns checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    verify_predictions(path, sha256)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        why = " ".join(str(e).split())             # pyarrow's messages span lines; ours is one
        raise PredictionsError(f"{path}: cannot read the predictions ({why}); re-run the command that wrote it") from e
    missing = [k for k in KEYS if k not in table.column_names]
    if missing:
        raise PredictionsError(f"{path}: column(s) {', '.join(missing)} missing; re-run the command that wrote it")
    for name, col in zip(table.column_names, table.columns):
        if name == "seed":
            ok = pa.types.is_integer(col.type)
        elif name in KEYS:
            ok = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
        elif name.startswith("p_"):
            ok = pa.types.is_floating(col.type)
        else:
            continue
        if not ok or (name in KEYS and col.null_count):
            raise PredictionsError(f"{path}: column {name!r} is {col.type}{' with missing values' * bool(col.null_count)}"
                                   f", not what ser writes; re-run the command that wrote it")
    return {name: (np.asarray(col.to_pylist(), dtype=object) if name in KEYS and name != "seed" else col.to_numpy())
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
