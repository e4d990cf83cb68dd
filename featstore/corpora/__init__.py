"""Corpus registry: one module per corpus, registered in `CORPORA` (the CLI lists this table)."""

from __future__ import annotations

from featstore.corpora.base import UTTERANCE_FIELDS, Corpus, Manifest, ParsedFile, Problem, Utterance
from featstore.errors import CorpusError

CORPORA: dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
    CORPORA[corpus.name] = corpus
    return corpus


def get_corpus(name: str) -> Corpus:
    """The registered corpus called `name` (case-insensitive)."""
    key = name.lower()
    if key not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))} (see `ser corpora`)")
    return CORPORA[key]


def load_manifest(name: str, root, **kwargs) -> Manifest:
    return get_corpus(name).load(root, **kwargs)


def _register_all() -> None:
    # Imported for their side effect: each module calls `register(...)` once.
    from featstore.corpora import (  # noqa: F401
        aesdd,
        cafe,
        cremad,
        csvcorpus,
        emodb,
        emovo,
        iemocap,
        mesd,
        ravdess,
        savee,
        shemo,
        subesco,
        tess,
        urdu,
    )


_register_all()

__all__ = ["CORPORA", "Corpus", "CorpusError", "Manifest", "ParsedFile", "Problem", "Utterance",
           "UTTERANCE_FIELDS", "get_corpus", "load_manifest", "register"]
