"""Corpus registry: one module per corpus, listed once in `REGISTRY` (`ser corpora` prints it).

Adding a corpus: write `featstore/corpora/<name>.py` (a `Corpus` subclass with its layout,
labels, `Source` and standard `Protocol`), add an instance to `REGISTRY`, and test it.
`ser corpora`, `ser download --list`, `featstore.folds.standard_protocol` and the label table
are generated from the registry.
"""

from __future__ import annotations

import difflib
from types import MappingProxyType

from featstore.corpora.aesdd import AesddCorpus
from featstore.corpora.ased import AsedCorpus
from featstore.corpora.asvpesd import AsvpesdCorpus
from featstore.corpora.base import (
    DIMENSIONS,
    UTTERANCE_FIELDS,
    Archive,
    Corpus,
    Manifest,
    ParsedFile,
    Problem,
    Protocol,
    Source,
    Utterance,
    dimension_array,
)
from featstore.corpora.cafe import CafeCorpus
from featstore.corpora.casia import CasiaCorpus
from featstore.corpora.cremad import CremadCorpus
from featstore.corpora.csvcorpus import CsvCorpus
from featstore.corpora.emns import EmnsCorpus
from featstore.corpora.emodb import EmodbCorpus
from featstore.corpora.emovdb import EmovdbCorpus
from featstore.corpora.emovo import EmovoCorpus
from featstore.corpora.emozionalmente import EmozionalmenteCorpus
from featstore.corpora.enterface import EnterfaceCorpus
from featstore.corpora.esd import EsdCorpus
from featstore.corpora.iemocap import IemocapCorpus
from featstore.corpora.jlcorpus import JlcorpusCorpus
from featstore.corpora.meld import MeldCorpus
from featstore.corpora.mer2023 import Mer2023Corpus
from featstore.corpora.mesd import MesdCorpus
from featstore.corpora.mspimprov import MspImprovCorpus
from featstore.corpora.msppodcast import MspPodcastCorpus
from featstore.corpora.oreau import OreauCorpus
from featstore.corpora.pavoque import PavoqueCorpus
from featstore.corpora.polish import PolishCorpus
from featstore.corpora.ravdess import RavdessCorpus
from featstore.corpora.resd import ResdCorpus
from featstore.corpora.savee import SaveeCorpus
from featstore.corpora.shemo import ShemoCorpus
from featstore.corpora.subesco import SubescoCorpus
from featstore.corpora.tess import TessCorpus
from featstore.corpora.turevdb import TurevdbCorpus
from featstore.corpora.urdu import UrduCorpus
from featstore.errors import CorpusError

#: Every supported corpus, in the order `ser corpora` lists them (the EmoBox corpora first, then the
#: corpora with dimensional labels EmoBox does not cover, then your own CSV corpora).
REGISTRY: tuple[Corpus, ...] = (
    RavdessCorpus(), CremadCorpus(), EmodbCorpus(), EmovoCorpus(), IemocapCorpus(), TessCorpus(),
    SaveeCorpus(), CafeCorpus(), AesddCorpus(), MesdCorpus(), ShemoCorpus(), SubescoCorpus(), UrduCorpus(),
    AsedCorpus(), AsvpesdCorpus(), CasiaCorpus(), EmnsCorpus(), EmovdbCorpus(), EmozionalmenteCorpus(),
    EnterfaceCorpus(), EsdCorpus(), JlcorpusCorpus(), MeldCorpus(), Mer2023Corpus(), OreauCorpus(),
    PavoqueCorpus(), PolishCorpus(), ResdCorpus(), TurevdbCorpus(),
    MspPodcastCorpus(), MspImprovCorpus(),
    CsvCorpus(),
)

#: name -> corpus, read-only (the registry is `REGISTRY`).
CORPORA: MappingProxyType[str, Corpus] = MappingProxyType({c.name: c for c in REGISTRY})

# Close enough to a registered name to be a typo of it (ravdes/ravdess 0.92, emodbb/emodb 0.91).
_TYPO_CUTOFF = 0.8


def closest_corpus(name: str) -> str | None:
    """The registered corpus name `name` is most likely a misspelling of, or None."""
    match = difflib.get_close_matches(name.lower(), CORPORA, n=1, cutoff=_TYPO_CUTOFF)
    return match[0] if match else None


def unknown_corpus(name: str) -> CorpusError:
    """The one-line error for a corpus name that is not registered (with a suggestion when one is close)."""
    guess = closest_corpus(name)
    if guess:
        return CorpusError(f"unknown corpus {name!r} - did you mean {guess}? (see `ser corpora`)")
    return CorpusError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)} (see `ser corpora`)")


def get_corpus(name: str) -> Corpus:
    """The registered corpus called `name` (case-insensitive); CorpusError naming the closest one else."""
    corpus = CORPORA.get(name.lower())
    if corpus is None:
        raise unknown_corpus(name)
    return corpus


def check_custom_name(name: str) -> str:
    """`name` lowercased, for a corpus that may be your own (a CSV corpus is named after its file).

    Registered names pass; so does any name not close to one. A near miss ("ravdes") raises
    CorpusError: it is far likelier a typo than a CSV file called ravdes.csv.
    """
    key = name.lower()
    if key not in CORPORA and closest_corpus(key):
        raise CorpusError(f"{unknown_corpus(name)}; if it is your own CSV corpus of that name, "
                          f"pass --protocol explicitly")
    return key


def load_manifest(name: str, root, **kwargs) -> Manifest:
    return get_corpus(name).load(root, **kwargs)


__all__ = ["CORPORA", "REGISTRY", "Archive", "Corpus", "CorpusError", "Manifest", "ParsedFile", "Problem",
           "Protocol", "Source", "Utterance", "UTTERANCE_FIELDS", "DIMENSIONS", "check_custom_name", "closest_corpus",
           "dimension_array", "get_corpus", "load_manifest", "unknown_corpus"]
