"""User configuration, default values and corpus roots.

The config file is TOML, at ``$SER_CONFIG`` if set, else ``$XDG_CONFIG_HOME/ser/config.toml``
(``~/.config/ser/config.toml`` when XDG_CONFIG_HOME is unset)::

    model  = "facebook/wav2vec2-base"   # default backbone
    cache  = "/big/disk/ser-cache"      # feature store directory
    device = "cuda:0"                   # auto, cpu, cuda or cuda:N
    data   = "/big/disk/ser-data"       # where `ser download` puts corpora
    corpus = "ravdess"                  # default corpus when --corpus is not given

    [corpora.ravdess]
    root     = "/data/RAVDESS"          # where this corpus is unpacked
    protocol = "luna5"                  # default fold protocol for this corpus

Precedence, highest first (a command-line flag beats all of these):

==========  ================================================================================
model       config ``model``, else `featstore.backbones.DEFAULT_MODEL`
cache       ``$SER_CACHE``, else config ``cache``, else ``cache`` (relative to the working dir)
device      config ``device``, else ``auto``
data dir    ``$SER_DATA``, else config ``data``, else ``~/ser-data``
corpus      config ``corpus``, else none (the command asks for --corpus)
db          ``$SER_DB``, else config ``db``, else ``$XDG_DATA_HOME/ser/ser.db`` (``~/.local/share/ser``):
            one registry per user, whatever the working directory
results     ``$SER_RESULTS``, else config ``results``, else ``$XDG_DATA_HOME/ser/results``: where a run
            without --out writes its folder (probe, matrix, neighbors, evaluate, finetune, compare)
threads     ``$SER_THREADS``, else config ``threads``, else ``$OMP_NUM_THREADS``, else the CPUs the
            process may use (`featstore.cpus.available_cpus`: affinity and cgroup quota)
protocol    config ``corpora.<name>.protocol``, else `featstore.folds.standard_protocol`
corpus      explicit --root, else config ``corpora.<name>.root``, else ``$SER_DATA/<name>``,
root        else ``<data dir>/<name>``: the first that exists (`resolve_root`)
==========  ================================================================================

Environment variables beat the file for the two directories because they are how a job on a
shared machine (CI, a cluster node) points ser at its scratch disk without editing a file.

The file is validated whenever it is read (`load_config`): unknown keys, values of the wrong
type, devices and protocols that do not exist are one-line `SerError`s naming the file, the key
and the command that fixes it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from featstore.cpus import ThreadsError, available_cpus, check_threads
from featstore.device import DEVICE_HELP, check_device
from featstore.errors import CorpusError, SerError

#: Top-level keys and what they hold (listed by `ser config` and in the unknown-key error).
KEYS: dict[str, str] = {
    "model": "default model id or directory (e.g. facebook/wav2vec2-base)",
    "cache": "feature store directory",
    "device": f"default device: {DEVICE_HELP}",
    "data": "default data directory; `ser download` puts corpora in <data>/<corpus>",
    "corpus": "default corpus for commands run without --corpus",
    "threads": "CPU threads of compute commands (default: the CPUs this process may use; --threads N beats it)",
    "db": "the run registry (SQLite) every command registers in and finds runs from (default: one per user, "
          "$XDG_DATA_HOME/ser/ser.db)",
    "results": "where runs without --out write their folders (default: one per user, $XDG_DATA_HOME/ser/results)",
}
#: Per-corpus keys, written ``corpora.<corpus>.<key>``.
CORPUS_KEYS: dict[str, str] = {
    "root": "directory of the unpacked corpus",
    "protocol": "default fold protocol (luna5, emobox, loso, loso-session, speaker-kfold:K, standard)",
}
_PATH_KEYS = {"cache", "data", "root", "db", "results"}
DEFAULT_DATA = "~/ser-data"
DEFAULT_CACHE = "cache"
DEFAULT_DEVICE = "auto"

SOURCE_FILE = "config file"
SOURCE_DEFAULT = "default"


# -- the file ---------------------------------------------------------------------------------

def config_path() -> Path:
    """Where the config file is (it need not exist)."""
    if os.environ.get("SER_CONFIG"):
        return Path(os.environ["SER_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "ser" / "config.toml"


def _read() -> dict:
    """The config file parsed as TOML, not validated (so `set`/`unset` can repair it); {} if absent."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as e:
        raise SerError(f"the config file {path} is not UTF-8 text (byte {e.start} is not): is it the right "
                       f"file? Delete it and set values again with `ser config set KEY VALUE`") from e
    except OSError as e:
        raise SerError(f"cannot read the config file {path}: {e.strerror}; fix its permissions or "
                       f"point $SER_CONFIG at another file") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SerError(f"the config file {path} is not valid TOML ({e}); fix it by hand or delete it "
                       f"and set values again with `ser config set KEY VALUE`") from e


def load_config() -> dict:
    """The config file's contents as nested dicts, validated; {} when there is no file."""
    data = _read()
    for key, value in _flatten(data):
        try:
            parts = _split_key(key)
            if not isinstance(value, str):
                raise SerError(f"{key} must be a string, not {type(value).__name__} {value!r}")
            _check_value(key, parts[-1], value)
        except SerError as e:
            raise SerError(f"the config file {config_path()}: {e}; fix it with `ser config set {key} VALUE` "
                           f"or `ser config unset {key}`") from e
    return data


def get(key: str, default: Any = None) -> Any:
    """The config file's value for a dotted key (``corpora.ravdess.root``), else `default`.

    Only the file is read here; `default_cache`, `data_dir`, ... add environment and defaults.
    """
    node: Any = load_config()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def valid_keys() -> list[str]:
    """Every key `set_value` accepts, per-corpus keys written with ``<corpus>``."""
    return list(KEYS) + [f"corpora.<corpus>.{k}" for k in CORPUS_KEYS]


def _check_corpus(name: str, what: str) -> str:
    from featstore.corpora import CORPORA, unknown_corpus

    if name.lower() not in CORPORA:
        raise SerError(f"{what}: {unknown_corpus(name)}")
    return name.lower()


def _split_key(key: str) -> tuple[str, ...]:
    """Validate `key`; returns its path in the TOML tree, e.g. ("corpora", "ravdess", "root")."""
    parts = tuple(key.strip().split("."))
    if len(parts) == 1 and parts[0] in KEYS:
        return parts
    if len(parts) == 3 and parts[0] == "corpora" and parts[2] in CORPUS_KEYS:
        return ("corpora", _check_corpus(parts[1], f"key {key!r}"), parts[2])
    raise SerError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())} "
                   f"(e.g. `ser config set corpora.ravdess.root /data/RAVDESS`)")


def _check_value(key: str, leaf: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise SerError(f"empty value for {key}; to remove it run `ser config unset {key}`")
    if leaf in _PATH_KEYS:
        # Stored absolute: the file is global, read from any working directory.
        return str(Path(text).expanduser().absolute())
    if leaf == "device":
        try:
            return check_device(text)
        except SerError as e:
            raise SerError(f"bad device {text!r} for {key}; use {DEVICE_HELP}") from e
    if leaf == "protocol":
        from featstore.folds import check_protocol

        try:
            return check_protocol(text)
        except SerError as e:
            raise SerError(f"{key}: {e}") from e
    if leaf == "corpus":
        return _check_corpus(text, key)
    if leaf == "threads":
        try:
            return str(check_threads(text))
        except ThreadsError as e:
            raise SerError(f"{key} {text!r}: {e}") from e
    return text


def set_value(key: str, value: Any) -> Path:
    """Validate and write ``key = value`` into the config file; returns the file's path.

    Paths (``cache``, ``data``, ``corpora.<c>.root``) are stored absolute. Raises SerError for
    an unknown key, an unknown corpus name or a malformed value; nothing is written then.
    """
    parts = _split_key(key)
    text = _check_value(key, parts[-1], value)
    data = _read()
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = text
    return _write(data)


def unset_value(key: str) -> bool:
    """Remove `key` from the config file; True if it was set. Empty tables are dropped."""
    parts = tuple(key.strip().split("."))
    data = _read()
    trail = [data]
    for part in parts[:-1]:
        child = trail[-1].get(part)
        if not isinstance(child, dict):
            return False
        trail.append(child)
    if parts[-1] not in trail[-1]:
        return False
    del trail[-1][parts[-1]]
    for parent, part, child in reversed(list(zip(trail[:-1], parts[:-1], trail[1:]))):
        if not child:
            del parent[part]
    _write(data)
    return True


def _write(data: dict) -> Path:
    """Write `data` as TOML atomically (temp file in the same folder, then rename)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(dumps_toml(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SerError(f"cannot write the config file {path}: {e.strerror}; fix the folder's permissions "
                       f"or point $SER_CONFIG at another file") from e
    return path


# -- a small TOML writer (tomllib only reads) ------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def dumps_toml(data: dict) -> str:
    """Nested dicts of strings, numbers, booleans and lists -> TOML text (tables after scalars)."""
    lines = ["# ser configuration; change it with `ser config set KEY VALUE` (comments are not kept)"]

    def table(node: dict, prefix: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in node.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in tables.items():
            table(v, prefix + (k,))

    table(data, ())
    return "\n".join(lines) + "\n"


# -- defaults ---------------------------------------------------------------------------------

def default_model() -> str:
    """Config ``model``, else featstore.backbones.DEFAULT_MODEL."""
    model = get("model")
    if model:
        return str(model)
    from featstore.backbones import DEFAULT_MODEL  # no torch: `ser config show` answers at once

    return DEFAULT_MODEL


def default_cache() -> Path:
    """``$SER_CACHE``, else config ``cache``, else ``cache`` (relative to the working directory)."""
    return Path(os.environ.get("SER_CACHE") or get("cache") or DEFAULT_CACHE).expanduser()


def default_device() -> str:
    """Config ``device``, else ``auto``."""
    return str(get("device") or DEFAULT_DEVICE)


def data_dir() -> Path:
    """``$SER_DATA``, else config ``data``, else ``~/ser-data``: where downloaded corpora go."""
    return Path(os.environ.get("SER_DATA") or get("data") or DEFAULT_DATA).expanduser()


def data_home() -> Path:
    """``$XDG_DATA_HOME/ser`` (``~/.local/share/ser`` when XDG_DATA_HOME is unset): the user's own ser files."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser() / "ser"


def default_db() -> Path:
    """``$SER_DB``, else config ``db``, else `data_home()`/ser.db: the run registry, one per user, so a
    run registered from one directory is found from any other (never ./results/ser.db)."""
    return Path(os.environ.get("SER_DB") or get("db") or data_home() / "ser.db").expanduser()


def results_root() -> Path:
    """``$SER_RESULTS``, else config ``results``, else `data_home()`/results: the one place a run
    without --out writes its folder, whatever the working directory (next to the registry)."""
    return Path(os.environ.get("SER_RESULTS") or get("results") or data_home() / "results").expanduser()


def default_threads() -> tuple[int, str]:
    """(count, where it comes from) without --threads: $SER_THREADS, config `threads`,
    $OMP_NUM_THREADS, else `available_cpus()`. A bad value is a one-line ThreadsError.

    A settings resolution like `default_cache`, so it lives here; `featstore.threads` applies the
    count (and re-exports this function)."""
    env = os.environ.get("SER_THREADS", "").strip()
    if env:
        try:
            return check_threads(env), "env $SER_THREADS"
        except ThreadsError as e:
            raise ThreadsError(f"$SER_THREADS={env!r}: {e}; fix or unset it") from None
    configured = get("threads")
    if configured:
        return check_threads(configured), "config file"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "env $OMP_NUM_THREADS"
    return available_cpus(), "default (CPUs usable: affinity, cgroup quota)"


def default_corpus() -> str | None:
    """Config ``corpus``, else None."""
    corpus = get("corpus")
    return str(corpus) if corpus else None


def default_protocol(corpus: str) -> str:
    """Config ``corpora.<corpus>.protocol``, else featstore.folds.standard_protocol(corpus)."""
    protocol = get(f"corpora.{corpus.lower()}.protocol")
    if protocol:
        return str(protocol)
    from featstore.folds import standard_protocol

    return standard_protocol(corpus)


def show() -> list[tuple[str, str | None, str]]:
    """Every effective setting as (key, value, source); source is config file / env $X / default."""
    cfg = load_config()
    env_data, env_cache = os.environ.get("SER_DATA"), os.environ.get("SER_CACHE")

    def source(key: str, env: str | None = None, env_name: str = "") -> str:
        if env:
            return f"env ${env_name}"
        return SOURCE_FILE if cfg.get(key) else SOURCE_DEFAULT

    rows: list[tuple[str, str | None, str]] = [
        ("model", default_model(), source("model")),
        ("cache", str(default_cache()), source("cache", env_cache, "SER_CACHE")),
        ("device", default_device(), source("device")),
        ("data", str(data_dir()), source("data", env_data, "SER_DATA")),
        ("corpus", default_corpus(), source("corpus")),
        _threads_row(),
        ("db", str(default_db()), source("db", os.environ.get("SER_DB"), "SER_DB")),
        ("results", str(results_root()), source("results", os.environ.get("SER_RESULTS"), "SER_RESULTS")),
    ]
    known = set(KEYS)
    for key, value in _flatten(cfg):
        if key not in known:
            rows.append((key, str(value), SOURCE_FILE))
    return rows


def _threads_row() -> tuple[str, str, str]:
    """("threads", count, source): $SER_THREADS, config, $OMP_NUM_THREADS or the CPUs usable here."""
    n, source = default_threads()
    return "threads", str(n), SOURCE_FILE if source == "config file" else source


def _flatten(node: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


# -- corpus roots -----------------------------------------------------------------------------

def candidate_roots(corpus: str) -> list[tuple[str, Path | None]]:
    """Where `resolve_root` looks for `corpus`, in order: (description, path or None if unset)."""
    name = corpus.lower()
    configured = get(f"corpora.{name}.root")
    env = os.environ.get("SER_DATA")
    places: list[tuple[str, Path | None]] = [
        (f"config corpora.{name}.root", Path(str(configured)).expanduser() if configured else None),
        (f"$SER_DATA/{name}", Path(env).expanduser() / name if env else None),
    ]
    if not env:  # with SER_DATA set, the data dir *is* $SER_DATA: no need to look twice
        places.append((f"data dir ({'config data' if get('data') else 'default'})", data_dir() / name))
    return places


def resolve_root(corpus: str, root: str | Path | None = None) -> Path:
    """The directory to read `corpus` from.

    Order: explicit `root` (returned as is, even if missing: the loader says what is wrong),
    config ``corpora.<corpus>.root``, ``$SER_DATA/<corpus>``, ``<data dir>/<corpus>``; the first
    that exists wins. Raises CorpusError listing every place looked at, with the commands that
    fix it (``ser download <corpus>`` or ``ser config set corpora.<corpus>.root ...``).
    """
    if root is not None:
        return Path(root).expanduser()
    name = corpus.lower()
    places = candidate_roots(name)
    for _, path in places:
        if path is not None and path.exists():
            return path
    looked = "\n".join(f"  - {what}: {path if path is not None else '(not set)'}"
                       + (" (missing)" if path is not None else "") for what, path in places)
    from featstore.corpora import get_corpus

    fix = "\n".join(f"  {line}" for line in get_corpus(name).how_to_get(data_dir() / name))
    raise CorpusError(
        f"{name}: corpus not found. Looked in:\n{looked}\n"
        f"Fix:\n{fix}\n"
        f"  or, if you already have it elsewhere: ser config set corpora.{name}.root /path/to/{name}\n"
        f"  (or pass --root DIR once)"
    )
