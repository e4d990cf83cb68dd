"""One JSON encoder for every file ser writes (numpy scalars/arrays, paths, dataclasses, sets)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any


def jsonable(o: Any) -> Any:
    """`json.dumps(..., default=jsonable)`: plain Python for what json cannot encode itself."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def clean(obj: Any) -> Any:
    """Containers walked, numpy made plain, keys made strings, NaN/inf made None (valid JSON)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kw) -> str:
    """Strict JSON (no NaN tokens): what every ser file holds."""
    return json.dumps(clean(obj), default=jsonable, allow_nan=False, **kw)


def write_json(path: str | Path, obj: Any, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj, indent=1, **kw), encoding="utf-8")
    return path


def plain(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples -> lists, numpy -> Python): for comparing plans."""
    return json.loads(dumps(obj))
