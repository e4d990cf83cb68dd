"""What an extraction run has left to do, decided without torch: the utterances of this shard not in
the store yet, the problems not recorded, the labels that changed since extraction (categorical or
dimensional: a store extracted before a corpus had dimensions gets them on the next `ser extract`,
without re-extracting audio).

`featstore.extract` runs on this plan (with the store's lock held); `ser extract` asks
`quick_up_to_date` first, so a no-op re-run of a local waveform model answers in well under a
second instead of importing torch and transformers to learn that nothing is to be done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featstore.corpora import Manifest, Utterance
from featstore.store import Progress, Skipped, dimensions_of, read_progress


@dataclass
class Plan:
    """The work left for one shard of a store (`state`: what the store and its parts hold)."""

    state: Progress
    mine: list[Utterance]                                   # this shard's utterances, in id order
    todo: list[Utterance]                                   # not in the store, not skipped before unchanged
    problems: list[Skipped]                                 # manifest problems not recorded yet (shard 0)
    #: id -> the utterance as the corpus reads it now, where its label or dimensional labels differ from
    #: the store's (`featstore.store.relabel` takes it)
    relabel: dict[str, Utterance] = field(default_factory=dict)

    @property
    def already(self) -> int:
        return sum(u.id in self.state.done for u in self.mine)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def plan(manifest: Manifest, path: Path, config: dict, *, shard: int = 0, shards: int = 1) -> Plan:
    """The plan for `manifest` in the store at `path` (StoreError if it holds another configuration)."""
    state = read_progress(path, config)
    # labels read differently now (CSV codes through the alias table, dimensions a corpus has gained): relabel,
    # never keep the old task silently
    changed = {u.id: u for u in manifest.utterances if u.id in state.labels and (
        state.labels[u.id] != u.label or state.dimensions.get(u.id, (None,) * 4) != dimensions_of(u))}
    ordered = sorted(manifest.utterances, key=lambda u: u.id)
    mine = [u for i, u in enumerate(ordered) if i % shards == shard]
    # a file skipped before is tried again only if it changed since
    todo = [u for u in mine if u.id not in state.done and not (
        u.id in state.skipped and _mtime(u.path) <= state.mtime)]
    problems = [Skipped(p.path, p.path, p.reason) for p in manifest.problems
                if shard == 0 and p.path not in state.skipped]
    return Plan(state, mine, todo, problems, changed)


def quick_config(model_id: str, *, dtype: str, frames: str | Sequence[int] | None, max_seconds: float) -> dict | None:
    """The fingerprint part of the store config `featstore.extract.store_config` would build, read from
    the model's files without torch or transformers; None where that cannot be done exactly (a hub
    id while the hub may be asked for a newer revision, a log-mel or openSMILE model, a config.json
    that leaves a value to transformers' defaults): the caller then takes the full path."""
    from featstore.backbones import family_of, local_copy
    from featstore.modelfiles import is_local_id, weights_hash
    from featstore.store import FORMAT_VERSION, parse_layers

    if model_id.startswith("opensmile:") or not (is_local_id(model_id) or os.environ.get("HF_HUB_OFFLINE")):
        return None
    try:
        directory = local_copy(model_id)
        if directory is None:
            return None
        config = json.loads((directory / "config.json").read_text())
        pre = directory / "preprocessor_config.json"
        fe = json.loads(pre.read_text()) if pre.exists() else {}
        model_type, blocks = config["model_type"], config["num_hidden_layers"]
        family = family_of(model_type)
        if family is None or family.input_kind != "waveform" or not isinstance(blocks, int):
            return None
        layers = [] if frames in (None, "", "none") else parse_layers(frames, blocks + 1, option="--frames")
        return dict(weights_sha256=weights_hash(Path(directory).resolve()), model_type=model_type, dtype=dtype,
                    frame_layers=layers, max_seconds=float(max_seconds),
                    sample_rate=int(fe.get("sampling_rate", 16000)), do_normalize=bool(fe.get("do_normalize", True)),
                    format_version=FORMAT_VERSION)
    except Exception:  # anything unusual: the full path reads it properly and says what is wrong
        return None


def quick_up_to_date(manifest: Manifest, store: Path, config: dict | None, *, shard: int = 0,
                     shards: int = 1) -> int | None:
    """The number of utterances in `store` when a run with `config` (`quick_config`) would do nothing
    at all: no utterance, problem, frame layer or label left; else None (run the full path)."""
    from featstore.store import missing_frame_layers

    if config is None or not store.is_file():
        return None
    try:
        if missing_frame_layers(store, config):
            return None
        p = plan(manifest, store, config, shard=shard, shards=shards)
    except Exception:  # another configuration, a damaged store: the full path says it in one line
        return None
    if p.todo or p.problems or p.relabel or p.state.parts:
        return None
    return p.already
