"""Where a model's files are and who they are, without torch: store directory names (`model_slug`),
local ids vs hub ids, the weights' sha256 (remembered per file identity) and the known locations of
local models. `featstore.backbones.runtime` builds on it; model-free commands (`ser store ls`, a no-op
`ser extract`) use it directly and answer without importing torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from featstore.errors import SerError

#: a model's input definition (its feature extractor's config), hashed with the weights for log-mel models
PREPROCESSOR = "preprocessor_config.json"


def model_slug(model_id: str) -> str:
    """A directory name for a model: `facebook/wav2vec2-base` -> `facebook--wav2vec2-base`; a local
    directory -> `local--<its name>`, also once it has moved (a store is found by the id it recorded)."""
    name = f"local--{Path(model_id).expanduser().name}" if is_local_id(model_id) else model_id
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/")).strip("-") or "model"


def is_local_id(model_id: str) -> bool:
    """Whether `model_id` names a local directory rather than a hub id: an existing path, an absolute or
    home-relative one, or one of more than two parts (a hub id is `name` or `owner/name`)."""
    path = Path(model_id).expanduser()
    return (path.exists() or path.is_absolute() or model_id.startswith((".", "~")) or "\\" in model_id
            or len([part for part in model_id.split("/") if part]) > 2)


def cache_home() -> Path:
    """$SER_CACHE_HOME, else $XDG_CACHE_HOME/ser (~/.cache/ser)."""
    return Path(os.environ.get("SER_CACHE_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ser")


def weights_hash(directory: Path, *, front_end: bool = False) -> str:
    """sha256 of the weight files (and, with `front_end`, of the preprocessor config defining the input).

    Remembered per file identity (path, size, mtime, inode) in `hash_memo_path()`, as git's index and
    DVC do: hashing 1.2 GB of XLS-R weights on every `ser extract` of every corpus took 1.4 s each time.
    """
    files = sorted(p for p in directory.iterdir()
                   if p.suffix in (".safetensors", ".bin") or p.name.endswith(".safetensors.index.json")
                   or (front_end and p.name == PREPROCESSOR))
    stamps = [(p.name, st.st_size, st.st_mtime_ns, st.st_ino) for p in files for st in [p.stat()]]
    key = hashlib.sha256(json.dumps([str(directory.resolve()), front_end, stamps]).encode()).hexdigest()
    memo = _read_hash_memo()
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    _remember_hash(key, digest.hexdigest())
    return digest.hexdigest()


def hash_memo_path() -> Path:
    """Where weight hashes are remembered: $SER_CACHE_HOME, else $XDG_CACHE_HOME/ser (~/.cache/ser)."""
    return cache_home() / "weights-sha256.json"


def _read_hash_memo() -> dict:
    try:
        memo = json.loads(hash_memo_path().read_text())
    except (OSError, ValueError):   # none yet, unreadable or torn: hash again
        return {}
    return memo if isinstance(memo, dict) else {}


def _remember_hash(key: str, digest: str, keep: int = 256) -> None:
    """Add one hash to the memo (atomically replaced; at most `keep` entries, newest kept). A memo that
    cannot be written (read-only home) only means hashing again next time."""
    path = hash_memo_path()
    memo = _read_hash_memo()
    memo.pop(key, None)
    memo[key] = digest
    memo = dict(list(memo.items())[-keep:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, path)
    except OSError:
        pass


def locations_path() -> Path:
    """Where the known locations of local models are kept (weights sha256 -> directories), beside the hash memo."""
    return cache_home() / "model-locations.json"


def known_locations(weights_sha256: str) -> list[str]:
    """Directories a local model with these weights was loaded from, most recent last (they may be gone)."""
    try:
        known = json.loads(locations_path().read_text())
    except (OSError, ValueError):   # none yet, unreadable or torn: nothing known
        return []
    paths = known.get(weights_sha256) if isinstance(known, dict) else None
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def remember_location(directory: str | Path, weights_sha256: str, *, keep: int = 8, models: int = 256) -> None:
    """Record that the local model with these weights is at `directory` (absolute; at most `keep` places per
    model, `models` models, newest kept), written whole through featstore.outputs. Called whenever a
    local model is resolved; a file that cannot be written (read-only home) only means no lookup by hash."""
    from featstore.outputs import write_text

    path, where = locations_path(), str(Path(directory).resolve())
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    before = known.get(weights_sha256)
    places = [p for p in (before if isinstance(before, list) else []) if p != where] + [where]
    if before == places:
        return      # nothing new: no write on every load
    known.pop(weights_sha256, None)
    known[weights_sha256] = places[-keep:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(dict(list(known.items())[-models:]), indent=1))
    except (OSError, SerError):
        pass
