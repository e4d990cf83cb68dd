"""The run registry: every run's configuration, store fingerprints, scores and predictions in one
SQLite file (`results/ser.db` by default), so results are found, compared and never re-computed.

One row per run in `runs` (command line, full configuration as JSON, store fingerprints — model
id, weights hash, corpus, utterance count, digest of the ids —, code version, time, output
directory, predictions file) and one row per (setting, layer, classifier, fold, seed, metric) in
`scores`. A run's `key` hashes its kind, configuration and store fingerprints: the same key
means the same computation over the same data, so `find` returns the registered run.

Concurrent writers are safe: WAL journal, a busy timeout, and each registration one
`BEGIN IMMEDIATE` transaction (all of a run's rows or none). A damaged or locked database is a
`RegistryError` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import SerError
from featstore.serialize import dumps

DEFAULT_DB = Path("results") / "ser.db"
METRICS = ("wa", "uar", "macro_f1")
RUN_COLUMNS = ("id", "key", "kind", "created", "corpus", "model", "classifier", "command", "config", "stores",
               "code_version", "out", "predictions")
SCORE_COLUMNS = ("run_id", "train_set", "test_set", "layer", "classifier", "fold", "seed", "metric", "value")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, created TEXT NOT NULL, corpus TEXT, model TEXT,
    classifier TEXT, command TEXT, config TEXT NOT NULL, stores TEXT NOT NULL, code_version TEXT, out TEXT,
    predictions TEXT);
CREATE INDEX IF NOT EXISTS runs_key ON runs(key);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(id), train_set TEXT, test_set TEXT, layer TEXT, classifier TEXT,
    fold TEXT, seed INTEGER, metric TEXT, value REAL);
CREATE INDEX IF NOT EXISTS scores_run ON scores(run_id);
"""


class RegistryError(SerError):
    """A registry that cannot be opened, read or written (the message names the file and the fix)."""


def run_key(kind: str, config: dict, stores: Sequence[dict]) -> str:
    """16 hex digits naming (kind, configuration, store fingerprints): same key, same computation."""
    return hashlib.sha256(dumps(dict(kind=kind, config=config, stores=list(stores)), sort_keys=True).encode()
                          ).hexdigest()[:16]


def store_fingerprint(store) -> dict:
    """What identifies a `FeatureStore`'s data: model id, weights hash, corpora, utterance count and
    a digest of its utterance ids (a grown or re-extracted corpus gets another fingerprint)."""
    cfg = store.config
    return dict(model_id=cfg.get("model_id"), weights_sha256=cfg.get("weights_sha256"),
                corpus=",".join(store.corpora), utterances=len(store),
                ids_sha256=hashlib.sha256("\n".join(sorted(store.ids)).encode()).hexdigest()[:16])


def code_version() -> str:
    import featstore

    return featstore.__version__


class Registry:
    """The SQLite run registry at `path` (created with its directory on first write)."""

    def __init__(self, path: str | Path = DEFAULT_DB, *, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection (WAL, busy timeout); every sqlite error becomes one RegistryError line."""
        if not write and not self.path.exists():
            raise RegistryError(f"no run registry at {self.path}: run `ser probe` (or pass --db the registry file)")
        conn = None
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if write:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
            yield conn
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise RegistryError(f"{self.path} is locked by another process ({e}); wait for it to finish, "
                                    f"or pass --db another registry file") from e
            raise RegistryError(f"{self.path}: {e}; check the file (or pass --db another registry file)") from e
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{self.path} is not a readable run registry ({e}); move it away (a new one is "
                                f"created) or pass --db another registry file") from e
        finally:
            if conn is not None:
                conn.close()

    def register(self, *, kind: str, config: dict, stores: Sequence[dict], results, command: str = "",
                 out: str | Path | None = None, predictions: str | Path | None = None) -> str:
        """Add one run and its scores (one transaction); return the new run id.

        results: `ProbeResults` (its records give the scores); config: the run's full settings;
        stores: `store_fingerprint`s of the data it read.
        """
        key = run_key(kind, config, stores)
        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run_id = hashlib.sha256(f"{key}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:10]
        first = results.records[0] if results.records else {}
        meta = results.meta
        row = dict(id=run_id, key=key, kind=kind, created=created, corpus=meta.get("corpus") or first.get("test_set", ""),
                   model=meta.get("model", ""), classifier=meta.get("classifier") or first.get("classifier", ""),
                   command=command, config=dumps(config, sort_keys=True), stores=dumps(list(stores), sort_keys=True),
                   code_version=code_version(), out=str(out or ""), predictions=str(predictions or ""))
        scores = [(run_id, r.get("train_set", ""), r.get("test_set", ""), str(r["layer"]), r.get("classifier", ""),
                   str(r["fold"]), int(r.get("seed", 0)), m, None if r[m] != r[m] else float(r[m]))
                  for r in results.records for m in METRICS if m in r]
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                             [row[c] for c in RUN_COLUMNS])
                conn.executemany(f"INSERT INTO scores VALUES ({', '.join('?' * len(SCORE_COLUMNS))})", scores)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return run_id

    def find(self, kind: str, config: dict, stores: Sequence[dict]) -> dict | None:
        """The latest run with this exact configuration over these exact stores, or None."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE key = ? ORDER BY created DESC, rowid DESC LIMIT 1",
                               (run_key(kind, config, stores),)).fetchone()
        return _run_dict(row) if row else None

    def runs(self, *, corpus: str | None = None, model: str | None = None, classifier: str | None = None,
             kind: str | None = None) -> list[dict]:
        """Registered runs, oldest first, filtered by corpus / model / classifier / kind (substring)."""
        where, args = [], []
        for col, value in (("corpus", corpus), ("model", model), ("classifier", classifier), ("kind", kind)):
            if value:
                where.append(f"{col} LIKE ?")
                args.append(f"%{value}%")
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
                                + " ORDER BY created, rowid", args).fetchall()
        return [_run_dict(r) for r in rows]

    def run(self, run_id: str) -> dict:
        """The run whose id starts with `run_id` (a unique prefix is enough)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE id LIKE ?", (f"{run_id}%",)).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise RegistryError(f"{what} in {self.path} with id {run_id!r}; see `ser results ls`"
                                + (" and give more of the id" if rows else ""))
        return _run_dict(rows[0])

    def scores(self, run_id: str) -> list[dict]:
        """The run's score rows (train_set, test_set, layer, classifier, fold, seed, metric, value)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM scores WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def best_mean(self, run_id: str, metric: str = "uar") -> float | None:
        """The run's highest mean `metric` over folds and seeds, among its settings and layers."""
        with self._connect() as conn:
            row = conn.execute("SELECT MAX(m) FROM (SELECT AVG(value) AS m FROM scores WHERE run_id = ? AND metric = ? "
                               "GROUP BY train_set, test_set, classifier, layer)", (run_id, metric)).fetchone()
        return row[0]

    def export(self, out: str | Path) -> Path:
        """Every score row joined with its run (kind, corpus, model, created, code version) as CSV."""
        with self._connect() as conn:
            rows = conn.execute("SELECT s.*, r.kind, r.corpus, r.model, r.created, r.code_version, r.predictions "
                                "FROM scores s JOIN runs r ON r.id = s.run_id ORDER BY r.created, s.rowid").fetchall()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([*SCORE_COLUMNS, "kind", "corpus", "model", "created", "code_version", "predictions"])
            w.writerows(tuple(r) for r in rows)
        return out

    def check(self) -> str:
        """SQLite's own integrity check: "ok" for an intact database."""
        with self._connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _run_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"], d["stores"] = json.loads(d["config"]), json.loads(d["stores"])
    return d
