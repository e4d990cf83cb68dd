"""Units shown to people: one size formatter for the whole project."""

from __future__ import annotations


def human_size(n_bytes: int | float) -> str:
    """Bytes as `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB` or `2.0 TiB` (1024-based, labelled so)."""
    n = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
