"""Where a run reads and writes: the store of a (model, corpus) and a run's default output directory.

Low-level helpers shared by the probe driver, the kNN analysis, the study runner and the dimensional
probes; this module imports none of them, so they can all import it without an import cycle."""

from __future__ import annotations

from pathlib import Path


def store_for(cache: str | Path, model: str, corpus: str) -> Path:
    """Where `ser extract` put (model, corpus); a clear error naming the command when missing
    (or the corpus meant, when the name is a near miss of a registered one)."""
    from featstore.corpora import CORPORA, closest_corpus, unknown_corpus
    from featstore.store import StoreError, find_store

    try:
        return find_store(cache, model, corpus)
    except StoreError as e:
        if corpus.lower() not in CORPORA and closest_corpus(corpus.lower()):
            raise unknown_corpus(corpus) from e
        raise


def _layer_tag(layers) -> str:
    return "L" + (layers if isinstance(layers, str) else ",".join(map(str, layers))).replace(",", "_")


def default_out(kind: str, name: str, model: str, settings: dict) -> Path:
    """`<results root>/<kind>-<name>-<model>-<classifier>-L<layers>-<protocol>-<hash of the settings>`
    (the root: `featstore.config.results_root`, one per user, whatever the working directory): two
    runs with different settings never share a directory."""
    from classifiers.results.records import settings_tag
    from featstore.backbones.runtime import model_slug

    parts = [kind, name.replace(",", "+"), model_slug(model)]
    if settings.get("classifier"):
        parts.append(settings["classifier"])
    if "layers" in settings:
        parts.append(_layer_tag(settings["layers"]))
    if settings.get("protocol"):
        parts.append(str(settings["protocol"]).replace(":", ""))
    from featstore.config import results_root

    return results_root() / "-".join(parts + [settings_tag(settings)])


def frame_layers(fs, layers, layer_list: list[int], what: str) -> list[int]:
    """The layers a frame-level probe reads from store `fs`: `layer_list` (every stored frame layer for
    "all"); layers without stored frames are one SerError line naming the --frames to re-extract with.
    what: "the attention probe", "the attention regressor"."""
    from featstore.errors import SerError

    if layers == "all":
        layer_list = fs.frame_layers
    missing = [k for k in layer_list if k not in fs.frame_layers]
    if missing or not layer_list:
        raise SerError(f"{what} reads frame-level features; layers {missing or layer_list} have none in "
                       f"{', '.join(map(str, fs.paths))} (it has {fs.frame_layers or 'none'}): re-extract with "
                       f"--frames {','.join(map(str, missing or layer_list)) or 12}")
    return list(layer_list)
