"""docs/ARCHITECTURE.md cannot go stale: its module list names every module of the packages and the CLI,
and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listed() -> list[str]:
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([^`]+\.py)`: \S", section, flags=re.M)


def _modules(root: Path = REPO) -> list[str]:
    found = ["cli.py"]
    for package in ("featstore", "classifiers"):
        found += [p.relative_to(root).as_posix() for p in (root / package).rglob("*.py")]
    return sorted(found)


def test_architecture_lists_every_module_once():
    listed = _listed()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    missing = sorted(set(_modules()) - set(listed))
    gone = sorted(set(listed) - set(_modules()))
    assert not missing, f"modules not in docs/ARCHITECTURE.md's list: {missing}"
    assert not gone, f"docs/ARCHITECTURE.md lists modules that do not exist: {gone}"


def test_the_check_sees_nested_and_new_modules(tmp_path):
    """Discovery finds modules at any depth, so a module added anywhere without its line is caught."""
    for rel in ("featstore/a.py", "featstore/corpora/deep/b.py", "classifiers/c.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('"""x."""\n', encoding="utf-8")
    assert _modules(tmp_path) == ["classifiers/c.py", "cli.py", "featstore/a.py", "featstore/corpora/deep/b.py"]
