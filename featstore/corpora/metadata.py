"""Reading the metadata tables some corpora keep beside their audio (MELD, MER2023, EMNS,
Emozionalmente: labels and speakers are not in the file names).

One helper per concern: `find_tables` finds a corpus' tables under its root, `read_table`
parses one (delimiter `,`, `|`, `;` or tab, read from the header line; UTF-8 with or without
BOM), `index` maps each row to its audio file's key. Indexes are cached per root until
`clear_cache()` (each corpus' `find_files` calls it, so every load reads the tables afresh).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from featstore.errors import CorpusError

_DELIMITERS = ",|;\t"


def find_tables(root: Path, pattern: str, corpus: str, hint: str) -> list[Path]:
    """Every file under `root` matching the glob `pattern`, sorted; CorpusError (naming `hint`) if none."""
    tables = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not tables:
        raise CorpusError(f"{corpus}: no {pattern} under {root}; the labels live there ({hint}), "
                          f"unpack the full release")
    return tables


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of one metadata table, as dicts keyed by its (stripped) header names."""
    stat = path.stat()
    return _read(str(path), (stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=16)
def index(root: Path, pattern: str, corpus: str, hint: str,
          key_of: Callable[[Path, dict], str | None]) -> dict[str, dict[str, str]]:
    """key -> row over every table `pattern` under `root`; `key_of(table, row)` names the row's file
    (None: a row that names none). The first row of a key wins."""
    rows: dict[str, dict[str, str]] = {}
    for table in find_tables(root, pattern, corpus, hint):
        for row in read_table(table):
            key = key_of(table, row)
            if key is not None:
                rows.setdefault(key, row)
    return rows


def clear_cache() -> None:
    _read.cache_clear()
    index.cache_clear()


@lru_cache(maxsize=64)
def _read(path: str, stamp: tuple[int, int]) -> list[dict[str, str]]:
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    header = text.split("\n", 1)[0]
    delimiter = max(_DELIMITERS, key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
