"""The run registry: every run's configuration, store fingerprints, scores and predictions in one
SQLite file (one per user by default: `default_db`), so results are found, compared and never re-computed.

One row per run in `runs` (command line, full configuration as JSON, store fingerprints — model
id, weights hash, corpus, utterance count, digest of the ids —, code version, time, output
directory, predictions file and its sha256) and one row per (setting, layer, classifier, fold,
seed, metric) in `scores`. A run's `key` hashes its kind, configuration and store fingerprints
exactly (floats by their bits; NaN and infinities refused): the same key means the same
computation over the same data, so `find` returns the registered run.

Paths: a run's folder and predictions file are registered as absolute paths and, relative to the
registry's directory, a second time: a results root moved together with its `ser.db` is found
again. A folder written over by a later run (`--overwrite`) is that run's; the earlier row is
marked superseded and never answers for it.

Safety: the database is created whole (schema built at a temporary name, renamed into place under
a lock), so a full disk never leaves a 0-byte `ser.db`; an empty or schema-less file is
re-initialised; a non-SQLite file, a damaged row or a locked database is one `RegistryError` line
naming the file. Concurrent writers are safe: WAL journal, a busy timeout, and each registration
one `BEGIN IMMEDIATE` transaction (all of a run's rows or none). Identical concurrent
computations run once: `find` claims the run key (a `filelock` lock file in `ser.db.locks/`)
until `register` of that key (or `release`), so a second identical process waits for the first
and then finds its run.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import SerError
from featstore.serialize import dumps


def default_db() -> Path:
    """The registry a command uses without --db: ``$SER_DB``, else config ``db``, else one per user
    (`featstore.config.default_db`: ``$XDG_DATA_HOME/ser/ser.db``), whatever the working directory."""
    from featstore.config import default_db as configured

    return configured()


def __getattr__(name: str):
    """``DEFAULT_DB``: `default_db()` read when asked for (it follows $SER_DB and the config file)."""
    if name == "DEFAULT_DB":
        return default_db()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: every kind of run the registry holds, the one list `ser results ls --kind` offers: `ser probe`
#: (sweeps, multi- and cross-corpus), `ser probe --matrix` (each train→test cell a setting),
#: `ser neighbors` (kNN per layer), `ser finetune` (each fold's test predictions, layer "e2e") and
#: `ser evaluate` (a saved model scored on a corpus)
KINDS = ("probe", "matrix", "neighbors", "finetune", "evaluate")
METRICS = ("wa", "uar", "macro_f1")
#: the scores of a dimensional run (`classifiers.runs.dimensional`): CCC, Pearson r and RMSE per
#: dimension and the CCC's mean over the run's dimensions
DIMENSIONAL_METRICS = ("ccc",) + tuple(f"{m}_{d}" for m in ("ccc", "pearson", "rmse")
                                       for d in ("arousal", "valence", "dominance"))
RUN_COLUMNS = ("id", "key", "kind", "created", "corpus", "model", "classifier", "command", "config", "stores",
               "code_version", "out", "predictions", "out_rel", "predictions_rel", "predictions_sha256")
#: columns added after the first release: older registries get them on their next write
ADDED_COLUMNS = ("out_rel", "predictions_rel", "predictions_sha256", "superseded_by")
SCORE_COLUMNS = ("run_id", "train_set", "test_set", "layer", "classifier", "fold", "seed", "metric", "value")
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, created TEXT NOT NULL, corpus TEXT, model TEXT,
    classifier TEXT, command TEXT, config TEXT NOT NULL, stores TEXT NOT NULL, code_version TEXT, out TEXT,
    predictions TEXT, out_rel TEXT, predictions_rel TEXT, predictions_sha256 TEXT, superseded_by TEXT)""",
    "CREATE INDEX IF NOT EXISTS runs_key ON runs(key)",
    """CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(id), train_set TEXT, test_set TEXT, layer TEXT, classifier TEXT,
    fold TEXT, seed INTEGER, metric TEXT, value REAL)""",
    "CREATE INDEX IF NOT EXISTS scores_run ON scores(run_id)",
)


class RegistryError(SerError):
    """A registry that cannot be opened, read or written (the message names the file and the fix)."""


def check_kind(kind: str) -> str:
    """`kind` when it is one of `KINDS`, else one RegistryError line naming the kinds."""
    if kind not in KINDS:
        raise RegistryError(f"unknown run kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def _exact(value, where: str):
    """`value` made plain for the key: floats as their exact bits (`float.hex`), NaN/inf refused."""
    import numpy as np  # here, not at import: `ser --help` reads KINDS without loading numpy

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RegistryError(f"{where} is {value}, not a finite number; give a finite value (a run with NaN or "
                                f"infinite settings cannot be registered or found again)")
        return {"$float": value.hex()}
    if isinstance(value, dict):
        return {str(k): _exact(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        return [_exact(v, f"{where}[{i}]") for i, v in enumerate(items)]
    return value  # paths and the like: dumps makes them strings


#: the file in every registered run's folder holding its registry record: id, kind, config, stores, command
RUN_RECORD = "run.json"


def _write_run_record(out: Path, record: dict) -> None:
    """`run.json` in the run's folder: the configuration the registry keys it by (`classifiers.runs.configs`'
    `key()`), the store fingerprints and the command, beside its results, so the folder says what it holds
    without the registry. A folder that cannot be written keeps its results, with one warning."""
    import warnings

    from featstore.outputs import write_text
    from featstore.serialize import dumps

    try:
        if out.is_dir():
            write_text(out / RUN_RECORD, dumps(record, indent=1, sort_keys=True) + "\n")
    except OSError as e:
        warnings.warn(f"run {record['id']}: its record {out / RUN_RECORD} could not be written ({e}); the run is "
                      f"registered all the same", stacklevel=3)


def run_key(kind: str, config: dict, stores: Sequence[dict]) -> str:
    """16 hex digits naming (kind, configuration, store fingerprints): same key, same computation.

    Exact: every float enters by its bits (0.1 and 0.1000001 differ, and neither equals a None
    default); a NaN or infinite value anywhere is a RegistryError (it would match nothing).
    """
    payload = dict(kind=kind, config=_exact(config, "config"), stores=_exact(list(stores), "stores"))
    return hashlib.sha256(dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: extraction settings that change a store's numbers: part of every fingerprint
EXTRACTION_KEYS = ("model_type", "revision", "dtype", "max_seconds", "sample_rate", "do_normalize", "layer_convention")


def store_fingerprint(store) -> dict:
    """What identifies a `FeatureStore`'s data: model id, weights hash, the extraction settings that
    change the numbers (dtype, max_seconds, ...), corpora, utterance count, a digest of its utterance
    ids and the content digest of its features (`FeatureStore.digest`): stores that differ in any
    feature value never share a fingerprint, so the registry never answers with another store's run."""
    cfg = store.config
    return dict(model_id=cfg.get("model_id"), weights_sha256=cfg.get("weights_sha256"),
                extraction={k: cfg.get(k) for k in EXTRACTION_KEYS},
                corpus=",".join(store.corpora), utterances=len(store),
                ids_sha256=hashlib.sha256("\n".join(sorted(store.ids)).encode()).hexdigest()[:16],
                features_sha256=store.digest)


def code_version() -> str:
    import featstore

    return featstore.__version__


#: key locks held by this process: (lock file, thread) -> FileLock (each thread its own descriptor,
#: so two threads of one process exclude each other as two processes do)
_HELD: dict[tuple[str, int], object] = {}
_HELD_GUARD = threading.Lock()


def _sqlite_full(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "full" in str(e).lower()


def _folder_ref(ref: str) -> Path | None:
    """The results folder a run reference names, when it is a path that exists (a folder, or a
    file in one); None for an id."""
    p = Path(ref).expanduser()
    if not p.exists():
        return None
    return p if p.is_dir() else p.parent


def _same_dir(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


class Registry:
    """The SQLite run registry at `path` (created with its directory on first write)."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_db()
        self.timeout = timeout

    # -- the file ------------------------------------------------------------------------------

    def _state(self) -> str:
        """"missing", "empty" (0 bytes), "sqlite" or "foreign" (anything else)."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except FileNotFoundError:
            return "missing"
        except IsADirectoryError:
            return "foreign"
        except OSError as e:
            raise RegistryError(f"cannot read the run registry {self.path} ({e.strerror}); check its permissions "
                                f"or pass --db another registry file") from e
        if not head:
            return "empty"
        return "sqlite" if head == SQLITE_MAGIC else "foreign"

    def _foreign(self) -> RegistryError:
        return RegistryError(f"{self.path} is not a SQLite run registry; move it away (a new registry is then "
                             f"created) or pass --db another registry file")

    @property
    def _dir(self) -> Path:
        return self.path.resolve().parent

    def _create(self) -> None:
        """A new registry: its schema built at a temporary name in one transaction, renamed into place
        under a lock (a full disk leaves nothing; a 0-byte or missing file is replaced)."""
        from filelock import FileLock

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RegistryError(f"cannot create the directory of the run registry {self.path} ({e.strerror}); "
                                f"pass --db a registry file in a directory of yours") from e
        with FileLock(str(self.path.with_name(self.path.name + ".lock")), timeout=self.timeout):
            state = self._state()
            if state in ("sqlite", "foreign"):
                return                        # another process made it meanwhile (or _connect names it)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                _build(tmp)
                if state == "empty":          # a half-made registry: nothing of it (or its journals) is kept
                    for side in ("-wal", "-shm", "-journal"):
                        self.path.with_name(self.path.name + side).unlink(missing_ok=True)
                os.replace(tmp, self.path)
            except (OSError, sqlite3.Error) as e:
                if _sqlite_full(e):
                    raise RegistryError(f"disk full creating the run registry {self.path}; free some space and "
                                        f"re-run (nothing was written)") from e
                raise RegistryError(f"cannot create the run registry {self.path} ({e}); check the directory or "
                                    f"pass --db another registry file") from e
            finally:
                for side in ("", "-journal", "-wal", "-shm"):
                    tmp.with_name(tmp.name + side).unlink(missing_ok=True)

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection (WAL, busy timeout); every sqlite error becomes one RegistryError line.

        Reading an empty or schema-less file reads an empty registry; writing one first builds it.
        """
        state = self._state()
        if state == "foreign":
            raise self._foreign()
        if not write and state == "missing":
            raise RegistryError(f"no run registry at {self.path}: run `ser probe` (or pass --db the registry file)")
        if write and state in ("missing", "empty"):
            self._create()
        conn = None
        try:
            if not write and state == "empty":
                conn = _empty_registry()
            else:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if write:
                    conn.execute("PRAGMA journal_mode = WAL")
                    _ensure_schema(conn)
                elif not _has_runs(conn):
                    conn.close()
                    conn = _empty_registry()
            conn.row_factory = sqlite3.Row
            yield conn
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise RegistryError(f"{self.path} is locked by another process ({e}); wait for it to finish, "
                                    f"or pass --db another registry file") from e
            if _sqlite_full(e):
                raise RegistryError(f"disk full writing the run registry {self.path}; free some space and re-run "
                                    f"(the registration was not made)") from e
            raise RegistryError(f"{self.path}: {e}; check the file (or pass --db another registry file)") from e
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{self.path} is not a readable run registry ({e}); move it away (a new one is "
                                f"created) or pass --db another registry file") from e
        finally:
            if conn is not None:
                conn.close()

    # -- claiming a computation ------------------------------------------------------------------

    def _lock_path(self, key: str) -> str:
        return os.path.abspath(self.path.with_name(self.path.name + ".locks") / f"{key}.lock")

    def _claim(self, key: str) -> None:
        """Hold the lock of run `key` (waits while another process or thread computes the same run)."""
        from filelock import FileLock

        path = self._lock_path(key)
        me = (path, threading.get_ident())
        with _HELD_GUARD:
            if me in _HELD:
                return                        # this thread holds it already (a retried find)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(path, thread_local=False)
            lock.acquire()
        except OSError:
            return                            # a registry directory we cannot write: nothing to serialise with
        with _HELD_GUARD:
            _HELD[me] = lock

    def release(self, key: str | None = None) -> None:
        """Release the claim on `key` (every claim of this thread on this registry when None)."""
        prefix = os.path.abspath(self.path.with_name(self.path.name + ".locks"))
        me = threading.get_ident()
        with _HELD_GUARD:
            mine = [k for k in _HELD if k[1] == me and (k[0] == self._lock_path(key) if key else
                                                        os.path.dirname(k[0]) == prefix)]
            locks = [_HELD.pop(k) for k in mine]
        for lock in locks:
            lock.release(force=True)

    # -- runs ------------------------------------------------------------------------------------

    def register(self, *, kind: str, config: dict, stores: Sequence[dict], results, command: str = "",
                 out: str | Path | None = None, predictions: str | Path | None = None) -> str:
        """Add one run and its scores (one transaction); return the new run id.

        results: `ProbeResults` (its records give the scores); config: the run's full settings;
        stores: `store_fingerprint`s of the data it read; out: the run's folder; predictions: its
        Parquet file (verified against its checksum; the digest is registered). Releases the claim
        `find` took on this run's key. An earlier run registered with the same folder is marked
        superseded (its files were written over).
        """
        key = run_key(check_kind(kind), config, stores)
        try:
            return self._register(key, kind, config, stores, results, command, out, predictions)
        finally:
            self.release(key)

    def _register(self, key, kind, config, stores, results, command, out, predictions) -> str:
        from classifiers.results.predictions import verify_predictions

        created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run_id = hashlib.sha256(f"{key}{time.time_ns()}{os.getpid()}{threading.get_ident()}".encode()
                                ).hexdigest()[:10]
        first = results.records[0] if results.records else {}
        meta = results.meta
        out_abs = str(Path(out).resolve()) if out else ""
        pred_abs = str(Path(predictions).resolve()) if predictions else ""
        digest = verify_predictions(pred_abs) if pred_abs else ""
        row = dict(id=run_id, key=key, kind=kind, created=created, corpus=meta.get("corpus") or first.get("test_set", ""),
                   model=meta.get("model", ""), classifier=meta.get("classifier") or first.get("classifier", ""),
                   command=command, config=dumps(config, sort_keys=True), stores=dumps(list(stores), sort_keys=True),
                   code_version=code_version(), out=out_abs, predictions=pred_abs,
                   out_rel=self._relative(out_abs), predictions_rel=self._relative(pred_abs),
                   predictions_sha256=digest)
        scores = [(run_id, r.get("train_set", ""), r.get("test_set", ""), str(r["layer"]), r.get("classifier", ""),
                   str(r["fold"]), int(r.get("seed", 0)), m, None if r[m] is None or r[m] != r[m] else float(r[m]))
                  for r in results.records for m in METRICS + DIMENSIONAL_METRICS if m in r]
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                             [row[c] for c in RUN_COLUMNS])
                conn.executemany(f"INSERT INTO scores VALUES ({', '.join('?' * len(SCORE_COLUMNS))})", scores)
                if out_abs:  # never two live runs in one folder: the earlier one's files were written over
                    conn.execute("UPDATE runs SET superseded_by = ? WHERE out = ? AND id != ? AND superseded_by IS NULL",
                                 (run_id, out_abs, run_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if out_abs:
            _write_run_record(Path(out_abs), dict(id=run_id, kind=kind, created=created, command=command,
                                                  code_version=row["code_version"], config=config, stores=list(stores)))
        return run_id

    def _relative(self, path: str) -> str:
        if not path:
            return ""
        try:
            return os.path.relpath(path, self._dir)
        except ValueError:                    # another drive (Windows): no relative form
            return ""

    def find(self, kind: str, config: dict, stores: Sequence[dict]) -> dict | None:
        """The latest live run with this exact configuration over these exact stores, or None.

        Claims the run's key first (waiting while another process computes the same run): when
        nothing usable is found the claim is kept, so the caller computes and `register`s (which
        releases it) while identical processes wait and then find that run. `release` gives it
        up without registering (it also ends with the process).
        """
        key = run_key(kind, config, stores)
        self._claim(key)
        try:
            if self._state() in ("missing", "empty"):
                return None
            with self._connect() as conn:
                row = conn.execute(f"SELECT * FROM runs WHERE key = ? AND {_live(conn)} "
                                   "ORDER BY created DESC, rowid DESC LIMIT 1", (key,)).fetchone()
            found = self._run_dict(row) if row else None
        except BaseException:
            self.release(key)
            raise
        if found is not None and found["out"] and Path(found["out"]).is_dir():
            self.release(key)                 # re-used as it is: nothing to compute
        return found

    def runs(self, *, corpus: str | None = None, model: str | None = None, classifier: str | None = None,
             kind: str | None = None) -> list[dict]:
        """Registered live runs, oldest first, filtered by corpus / model / classifier (substring) and
        kind (exactly one of `KINDS`)."""
        where, args = [], []
        for col, value in (("corpus", corpus), ("model", model), ("classifier", classifier)):
            if value:
                where.append(f"{col} LIKE ?")
                args.append(f"%{value}%")
        if kind:
            where.append("kind = ?")
            args.append(check_kind(kind))
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE " + " AND ".join([_live(conn), *where])
                                + " ORDER BY created, rowid", args).fetchall()
        return [self._run_dict(r) for r in rows]

    def run(self, run_id: str) -> dict:
        """The run whose id starts with `run_id` (a unique prefix is enough), or whose results
        folder `run_id` names (the folder, or a file in it: users have the directory in front of
        them), its predictions file checked against the digest registered with it."""
        folder = _folder_ref(run_id)
        if folder is not None:
            return self._run_in(folder, run_id)
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE id LIKE ?", (f"{run_id}%",)).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise RegistryError(f"{what} in {self.path} with id {run_id!r}; see `ser results ls`"
                                + (" and give more of the id" if rows else ""))
        run = self._run_dict(rows[0])
        if run.get("superseded_by"):
            raise RegistryError(f"run {run['id']}: its folder {run['out']} now holds run {run['superseded_by']} "
                                f"(written over); see `ser results show {run['superseded_by']}` or re-run: "
                                f"{run['command']}")
        self._check_predictions(run)
        return run

    def _run_in(self, folder: Path, ref: str) -> dict:
        """The run registered with its results in `folder` (the latest, where one was written over)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created").fetchall()
        found = [r for r in map(self._run_dict, rows) if r.get("out") and _same_dir(r["out"], folder)]
        live = [r for r in found if not r.get("superseded_by")] or found[-1:]
        if not live:
            raise RegistryError(f"no run in {self.path} has its results in {folder} ({ref!r}); the folder may "
                                f"belong to another registry (pass --db), or give a run id from `ser results ls`")
        return self.run(live[-1]["id"])

    def _check_predictions(self, run: dict) -> None:
        """A registered digest that differs from the one beside the predictions file: another run's file."""
        from classifiers.results.predictions import PredictionsError, recorded_sha256

        if not (run["predictions"] and run.get("predictions_sha256") and Path(run["predictions"]).is_file()):
            return
        try:
            recorded = recorded_sha256(run["predictions"])
        except PredictionsError:
            return                            # read_predictions names the damage when the file is read
        if recorded != run["predictions_sha256"]:
            raise RegistryError(f"run {run['id']}: {run['predictions']} is not the predictions file registered "
                                f"with it (its sha256 differs from {self.path}'s); re-run: {run['command']}")

    def scores(self, run_id: str) -> list[dict]:
        """The run's score rows (train_set, test_set, layer, classifier, fold, seed, metric, value)."""
        with self._connect() as conn:
            self._check_scores(conn, run_id)
            rows = conn.execute("SELECT * FROM scores WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def _check_scores(self, conn: sqlite3.Connection, run_id: str) -> None:
        bad = conn.execute("SELECT rowid, value, seed FROM scores WHERE run_id = ? AND (typeof(value) NOT IN "
                           "('real', 'integer', 'null') OR typeof(seed) NOT IN ('integer', 'null')) LIMIT 1",
                           (run_id,)).fetchone()
        if bad is not None:
            raise RegistryError(f"{self.path}: score row {bad[0]} of run {run_id} is damaged (value {bad[1]!r}, "
                                f"seed {bad[2]!r}); re-run the run's command (ser results show {run_id})")

    def best_mean(self, run_id: str, metric: str = "uar") -> float | None:
        """The run's highest mean `metric` over folds and seeds, among its settings and layers."""
        with self._connect() as conn:
            self._check_scores(conn, run_id)
            row = conn.execute("SELECT MAX(m) FROM (SELECT AVG(value) AS m FROM scores WHERE run_id = ? AND metric = ? "
                               "GROUP BY train_set, test_set, classifier, layer)", (run_id, metric)).fetchone()
        return row[0]

    def export(self, out: str | Path) -> Path:
        """Every score row joined with its run (kind, corpus, model, created, code version) as CSV,
        written whole or not at all (`out` checked before the registry is read)."""
        import csv

        from featstore.outputs import check_output, write_text

        check_output(out)
        with self._connect() as conn:
            rows = conn.execute("SELECT s.*, r.kind, r.corpus, r.model, r.created, r.code_version, r.predictions "
                                "FROM scores s JOIN runs r ON r.id = s.run_id ORDER BY r.created, s.rowid").fetchall()
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow([*SCORE_COLUMNS, "kind", "corpus", "model", "created", "code_version", "predictions"])
        w.writerows(tuple(r) for r in rows)
        write_text(out, buf.getvalue())
        return Path(out)

    def check(self) -> str:
        """SQLite's own integrity check: "ok" for an intact database."""
        with self._connect() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def _run_dict(self, row: sqlite3.Row) -> dict:
        """A `runs` row as a dict: config and stores parsed and checked, paths located (absolute,
        else relative to the registry's directory); a damaged row is one RegistryError line."""
        d = dict(row)
        run_id = d.get("id")

        def damaged(column: str, why: str) -> RegistryError:
            return RegistryError(f"{self.path}: run {run_id!r} is damaged ({column} {why}); delete the row "
                                 f"(sqlite3 {self.path} \"DELETE FROM runs WHERE id = '{run_id}'\") and re-run "
                                 f"its command")

        for column in ("id", "key", "kind", "created"):
            if not isinstance(d.get(column), str) or not d[column]:
                raise damaged(column, f"is {d.get(column)!r}, not text")
        for column in ("corpus", "model", "classifier", "command", "code_version", "out", "predictions", "out_rel",
                       "predictions_rel", "predictions_sha256", "superseded_by"):
            if d.get(column) is not None and not isinstance(d[column], str):
                raise damaged(column, f"is {d[column]!r}, not text")
            d.setdefault(column, None)
        for column, kind in (("config", dict), ("stores", list)):
            try:
                d[column] = json.loads(d[column]) if isinstance(d.get(column), str) else None
            except ValueError as e:
                raise damaged(column, f"is not valid JSON: {e}") from e
            if not isinstance(d[column], kind):
                raise damaged(column, f"is not a JSON {'object' if kind is dict else 'list'}")
        if not all(isinstance(s, dict) for s in d["stores"]):
            raise damaged("stores", "holds an entry that is not an object")
        base = self._dir
        d["out"] = _locate(d["out"], d["out_rel"], base)
        d["predictions"] = _locate(d["predictions"], d["predictions_rel"], base)
        return d


def _locate(recorded: str | None, relative: str | None, base: Path) -> str:
    """The recorded path when it exists, else the one relative to the registry's directory when that
    exists (a results root moved with its registry), else the recorded one ("" when none)."""
    if not recorded:
        return ""
    if Path(recorded).exists():
        return recorded
    if relative and (base / relative).exists():
        return str(base / relative)
    return recorded


def _build(path: Path) -> None:
    """A new registry at `path`: the whole schema in one transaction, synced to disk."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _has_runs(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is not None


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(runs)")}


def _live(conn: sqlite3.Connection) -> str:
    """The WHERE clause of runs not superseded (every run, in a registry older than that column)."""
    return "superseded_by IS NULL" if "superseded_by" in _columns(conn) else "1"


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """The tables (a schema-less file is re-initialised) and the columns added since, in one transaction."""
    if _has_runs(conn) and set(ADDED_COLUMNS) <= _columns(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            conn.execute(statement)
        for column in ADDED_COLUMNS:
            if column not in _columns(conn):
                conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _empty_registry() -> sqlite3.Connection:
    """An in-memory registry with no runs: what an empty or schema-less file reads as."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


# -- fine-tuning runs ------------------------------------------------------------------------------

def _recorded_base_sha256(model_dir: Path) -> str | None:
    """The base model's weights sha256 an exported fold model records (its config.json `extra`
    `backbone_weights_sha256`, or a LoRA export's `base_weights_sha256`), or None."""
    def find(node):
        if isinstance(node, dict):
            for key in ("backbone_weights_sha256", "base_weights_sha256"):
                if isinstance(node.get(key), str):
                    return node[key]
            return next((v for v in map(find, node.values()) if v), None)
        return None

    try:
        return find(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def finetune_stores(run, utterances: Sequence, folds: Sequence, model: str) -> list[dict]:
    """What a fine-tuning run read, fingerprinted for its registry key (the stores of a probe).

    - the model: its id and the base weights' sha256 the run trained from, as the exported fold
      models record it (`backbone_weights_sha256`); for a local model directory with no export yet,
      `featstore.modelfiles.weights_hash` of the directory; None for a hub id with no export.
    - the data, per corpus: the utterance count and a sha256 over every utterance's id, speaker,
      label, duration and sample rate (from the audio headers);
    - the folds: a sha256 over each fold's name and its training, validation and test ids.
    Not covered: the audio samples themselves (hashing them would read the whole corpus again): a
    file re-encoded in place with the same header and id is not told apart.
    """
    exported = [Path(f.model_dir) for f in getattr(run, "folds", []) if getattr(f, "model_dir", None)]
    sha = next((s for s in map(_recorded_base_sha256, exported) if s), None)
    if sha is None and Path(model).is_dir():
        from featstore.modelfiles import weights_hash

        try:
            sha = weights_hash(Path(model))
        except OSError:
            sha = None
    fingerprints = [dict(model_id=model, weights_sha256=sha)]
    for corpus in dict.fromkeys(u.corpus for u in utterances):
        lines = sorted(f"{u.id}\t{u.speaker}\t{u.label}\t{u.duration!r}\t{u.sample_rate}"
                       for u in utterances if u.corpus == corpus)
        fingerprints.append(dict(corpus=corpus, utterances=len(lines),
                                 utterances_sha256=hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]))
    h = hashlib.sha256()
    for fold in folds:
        h.update(str(fold.name).encode() + b"\0")
        for part in (fold.train, fold.val, fold.test):
            ids = [] if part is None else sorted(utterances[int(i)].id for i in part)
            h.update("\n".join(ids).encode() + b"\0")
    fingerprints.append(dict(folds=[str(f.name) for f in folds], folds_sha256=h.hexdigest()[:16]))
    return fingerprints


def finetune_config(config, *, corpus: str, train: Sequence[str] = (), protocol: str = "") -> dict:
    """A fine-tuning run's registered configuration: every `FinetuneConfig` field (its
    `dataclasses.asdict`) plus the test corpus, the extra training corpora and the protocol."""
    from dataclasses import asdict

    return dict(asdict(config), corpus=corpus, train=list(train), protocol=protocol, model=config.model)


def register_finetune(registry: Registry, run, utterances: Sequence, folds: Sequence, config, *, corpus: str,
                      train: Sequence[str] = (), protocol: str = "", command: str = "") -> str | None:
    """Register a finished `classifiers.finetuning.finetune.finetune` run (kind "finetune"): its folds' records
    (`to_probe_results`, layer "e2e") and every fold's test predictions (`predictions.parquet`), so a
    fine-tuned model gets the probes' speaker CIs and paired comparisons. Never looked up first: an
    identical run resumes on its own; registering a run folder again replaces its earlier row
    (`register` marks it superseded). Returns the run id, or None for a run with no fold scored."""
    from classifiers.finetuning.finetune import to_probe_results

    results = to_probe_results(run)
    if not results.records:
        return None
    results.meta = dict(results.meta, model=config.model, corpus=corpus)
    predictions = Path(run.out_dir) / "predictions.parquet"
    return registry.register(kind="finetune", config=finetune_config(config, corpus=corpus, train=train,
                                                                     protocol=protocol),
                             stores=finetune_stores(run, utterances, folds, config.model), results=results,
                             command=command, out=run.out_dir,
                             predictions=predictions if predictions.is_file() else None)
