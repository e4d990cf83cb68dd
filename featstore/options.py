"""Typed run options, one home for the machinery every run kind's configuration uses.

`option()` declares a configuration field with its one help text, its CLI flag and the check run
on construction and at parse time (`cli._config_options` turns the fields of any such dataclass
into a command's options); `RunConfig` gives every configuration `given()`, `options()` and the
keys a study cell may use. `ExtractConfig` is `ser extract`'s configuration; the classifiers' run
kinds live in `classifiers.runs.configs`. Light on import (no numpy or torch): the CLI builds its
options from these before any heavy import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

from featstore.errors import SerError


class ConfigError(SerError):
    """A run configuration that cannot run (the message names the option and the fix)."""


# -- parse-time checks: value -> the problem, or None. The CLI runs them as option callbacks (one line
#    before any work); the dataclasses run them on construction (study files, notebooks).

_LAYER_SPEC = re.compile(r"\s*(all|\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*)\s*")


def layer_spec_problem(v) -> str | None:
    """all, 12, 3-9 or 6,12: layers count from 0 (hidden_states[0]); the model's depth is checked when it is read."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not (isinstance(v, str) and _LAYER_SPEC.fullmatch(v)):
        return "use a layer number (0 or more), all, or layers like 6,12 or 3-9"
    return _reversed_range(v)


def _reversed_range(v: str) -> str | None:
    """The problem of a spec's first range that runs downwards ("9-3"), or None."""
    for a, _, b in (p.strip().partition("-") for p in v.split(",")):
        if b and int(b) < int(a):
            return reversed_range_problem(a, b)
    return None


def reversed_range_problem(a, b) -> str:
    """The one wording of a range written high-low, for layers, frames and seeds alike."""
    return f"the range {int(a)}-{int(b)} runs downwards: write {int(b)}-{int(a)}"


def parse_seeds(spec) -> list[int]:
    """A seed spec as seeds: 3 -> [3], "0-4" -> [0, 1, 2, 3, 4], "0,2,5" -> [0, 2, 5] (sorted, each once);
    a list of ints passes through. The grammar of a layer spec, without "all"."""
    if isinstance(spec, list | tuple):
        return sorted({int(x) for x in spec})
    out: set[int] = set()
    for part in str(spec).split(","):
        a, _, b = part.strip().partition("-")
        out.update(range(int(a), int(b) + 1) if b else [int(a)])
    return sorted(out)


def seed_spec_problem(v) -> str | None:
    """0, 3, 0-4 or 0,2,5: seeds of one run each, never negative; a range runs upwards."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not _LAYER_SPEC.fullmatch(v) or v.strip() == "all":
        return "use a seed (0 or more), seeds like 0,2,5, or a range like 0-4"
    return _reversed_range(v)


def seeds_spec(seeds: list[int]) -> str:
    """The shortest spec of `seeds`: "0-4" for a run of consecutive seeds, else "0,2,5"."""
    seeds = sorted(set(seeds))
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def layers_spec(v: str) -> str:
    """One spelling per set of layers, as for seeds: "2,2" -> "2", "1,2" and "2,1" -> "1-2", " 6, 12" -> "6,12";
    "all" stays, and so does a spec `layer_spec_problem` refuses (its check gives the one-line error)."""
    v = str(v).strip()
    if v == "all" or layer_spec_problem(v):
        return v
    return seeds_spec(parse_seeds(v))


def one_layer_problem(v) -> str | None:
    """One layer number (a matrix is one layer)."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    return None if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v) else "use one layer number, e.g. 12"


def positive_problem(v) -> str | None:
    return None if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else \
        "must be a finite number above 0"


def at_least_one_problem(v) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "must be at least 1"


def names_problem(v) -> str | None:
    parts = [p.strip() for p in str(v).split(",")]
    return None if all(parts) else "use names separated by commas, e.g. ravdess,emodb (no empty names)"


def choice(names: Callable[[], Sequence[str]]) -> Callable[[object], str | None]:
    def check(v) -> str | None:
        return None if v in names() else f"choose one of {', '.join(names())}"
    return check


def option(default, help: str | Callable[[], str], *, flag: str | None = None, short: str | None = None,
           check: Callable[[object], str | None] | None = None, many: bool = False, cli: bool = True):
    """A config field: its default, its one help text (the CLI's and the study file's), the CLI
    flag when it is not the field's name dashed (`--layer` for `layers`), a short flag, the check
    run on construction and at parse time, `many` for a repeatable option (a list), and whether
    the CLI offers it (`model` comes from the command's own --model, resolved by `ser config`)."""
    meta = dict(help=help, flag=flag, short=short, check=check, many=many, cli=cli)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def help_text(f) -> str:
    """A config field's help: its text, or what its callable says (a help naming a registry's choices
    is built from the registry when the CLI is built, never hand-listed)."""
    h = f.metadata["help"]
    return h() if callable(h) else h


def check_value(name: str, value, check, flag: str | None = None) -> None:
    """`check(value)`'s problem as one ConfigError naming the option."""
    if value is None or check is None:
        return
    for v in value if isinstance(value, list | tuple) else [value]:
        problem = check(v)
        if problem:
            raise ConfigError(f"{flag or '--' + name.replace('_', '-')} {v!r}: {problem}")


class RunConfig:
    """What every kind's configuration shares: checks on construction, `given()`, `options()`."""

    kind: ClassVar[str]

    def _check_fields(self) -> None:
        for f in fields(self):
            check_value(f.name, getattr(self, f.name), f.metadata.get("check"), f.metadata.get("flag"))

    def given(self) -> dict:
        """The fields that differ from their defaults (what a user said)."""
        out = {}
        for f in fields(self):
            default = f.default if f.default is not MISSING else f.default_factory()
            if getattr(self, f.name) != default and f.name != "model":
                out[f.name] = getattr(self, f.name)
        return out

    def options(self) -> dict:
        """The fields as the kind's library function takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def flag(cls, name: str) -> str:
        """The CLI flag of field `name` (`--layer` for `layers`)."""
        f = next(f for f in fields(cls) if f.name == name)
        return f.metadata.get("flag") or "--" + name.replace("_", "-")

    #: the fields a dimensional target refuses (categorical classifiers' options)
    CATEGORICAL_ONLY: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def cell_keys(cls, *, dimensional: bool = False) -> list[str]:
        """The keys a study file's [[cells]] entry of this kind may use: the field names (those a
        dimensional target takes, with `dimensional`)."""
        return [f.name for f in fields(cls) if not (dimensional and f.name in cls.CATEGORICAL_ONLY)]

    #: registry-key entries that are not fields (fixed settings the key records)
    FIXED_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_key(cls, key: dict):
        """The configuration a registered run's key (its `config` block) was made from: `key()`'s inverse."""
        d = {k: v for k, v in key.items() if k not in cls.FIXED_KEYS}
        d.update(d.pop("params", None) or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"a registered {cls.kind} configuration with {', '.join(unknown)}, which this version's "
                              f"{cls.__name__} has no field for: re-run its command instead")
        return cls(**d)

    def needed(self) -> list[str]:
        """The corpora whose stores the run reads (their fingerprints are part of its key)."""
        return list(getattr(self, "corpora", None) or [])

    def _resolve_model(self) -> None:
        if not self.model:
            from featstore.config import default_model

            self.model = default_model()
        self.model = str(self.model)


def refuse(flags: Sequence[str], why: str) -> None:
    """One ConfigError naming every option given that the mode does not take."""
    if flags:
        raise ConfigError(f"{why}: leave out {', '.join(flags)}")


def frames_problem(v) -> str | None:
    """--frames: none, all, or layers like 6,12 / 3-9."""
    return None if str(v).strip() == "none" else layer_spec_problem(v)


def not_negative_problem(v) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be 0 or more"


def seconds_problem(v) -> str | None:
    return None if positive_problem(v) is None else "must be a finite number of seconds above 0"


#: the pooled statistics a store serves (`FeatureStore.pooled`): mean, std, or both side by side
STATS = ("mean", "std", "mean+std")

#: the compute dtypes of extraction (`featstore.extract.DTYPES` maps them to torch's)
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class ExtractConfig(RunConfig):
    """How `ser extract` computes a store: the numbers (dtype, windows) and the work split (batches,
    shards). `featstore.extract.extract_manifest` takes these fields as its keyword options."""

    kind: ClassVar[str] = "extract"

    dtype: str = option("float32", lambda: f"Model compute: {', '.join(COMPUTE_DTYPES)}.",
                        check=choice(lambda: COMPUTE_DTYPES))
    frames: str = option("none", "Layers whose frames to keep: none, all, or 6,12 / 3-9.", check=frames_problem)
    max_seconds: float = option(30.0, "Longer clips are cut into windows of at most this.", check=seconds_problem)
    batch_size: int | None = option(None, "Utterances per batch (CPU default 1).", check=at_least_one_problem)
    batch_seconds: float | None = option(None, "GPU: padded audio seconds per batch (default 200).",
                                         check=seconds_problem)
    shards: int = option(1, "Split the corpus into N shards (one process each).", check=at_least_one_problem)
    shard: int = option(0, "Which shard this process extracts.", check=not_negative_problem)

    def __post_init__(self):
        self._check_fields()
        if self.shard >= self.shards:
            raise ConfigError(f"--shard {self.shard}: shards are numbered 0..{self.shards - 1} (--shards {self.shards})")
