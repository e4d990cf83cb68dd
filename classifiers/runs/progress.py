"""A progress bar on stderr for long loops (layers, folds, cells); imports nothing of `classifiers`."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True):
    """A rich bar on stderr over `total` units with elapsed time and ETA; yields advance(n=1)."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(bar_width=12), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        tid = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(tid, n)
