"""Evaluation folds: which utterances train, which validate, which test.

Pure functions in the scikit-learn style: they take a sequence of `Utterance` records (length
N) and return `Fold`s whose `train`/`val`/`test` are sorted, disjoint int64 index arrays into
that sequence. Nothing here reads audio or writes files; the only I/O is the packaged EmoBox
table (`featstore.reference`).

Protocols (`make_folds(utterances, protocol)`):

==================  ===========================================================================
``luna5``           RAVDESS only; the 5 actor folds of Luna-Jiménez et al. 2022 (Appl. Sci.
                    12(1):327): test actors F0 {2,5,14,15,16}, F1 {3,6,7,13,18},
                    F2 {10,11,12,19,20}, F3 {8,17,21,23,24}, F4 {1,4,9,22}.
``emobox``          EmoBox's published test splits, exactly (one corpus at a time). Train is every
                    other utterance EmoBox lists for the corpus. Utterances EmoBox does not list
                    are left out of every split with a `FoldWarning` (``strict=True`` raises
                    instead). Speaker-independent for RAVDESS, SAVEE, EMOVO, CaFE, IEMOCAP and
                    SUBESCO (5 folds x 4 speakers, checked against EmoBox's keys, although it is
                    often listed as random), CASIA, ESD, JL-Corpus and Polish; for the others
                    the folds are produced and `leakage_report` flags them. A corpus whose
                    speaker ids are not people (`Corpus.speaker_note`: MER2023, EMNS, PAVOQUE,
                    RESD, ASVP-ESD, MESD) gets a `SpeakerWarning` under every protocol.
``emobox-track2``   EmoBox's cross-corpus track, within one corpus: only the corpus' 240 balanced
                    utterances (IEMOCAP, MELD, RAVDESS or SAVEE; 4 classes: neutral, happy, sad,
                    angry), 4 folds grouped by speaker (SAVEE has 4 speakers); every other
                    utterance is in no split. Across corpora, `ser probe --protocol emobox-track2
                    --matrix iemocap,meld,ravdess,savee` trains on one subset and tests on another
                    (`track2_indices`).
``loso``            Leave one speaker out: one fold per speaker.
``loso-session``    Leave one session out (IEMOCAP): one fold per (corpus, session).
``speaker-kfold:K`` K folds grouped by speaker, stratified by label where possible
                    (`StratifiedGroupKFold(shuffle=True, random_state=seed)`).
``official``        A corpus' own published partitions, held in `Utterance.session` (MSP-Podcast's
                    Split_Set): train on Train, validate on Development, one fold per test
                    partition present (Test1, Test2, Test3), named after it; test partitions are
                    never pooled. Speaker-independent as far as the release's partitions are.
``standard``        `standard_protocol(corpus)` of the (single) corpus in the list.
==================  ===========================================================================

Standard speaker-independent protocol per corpus: each corpus class states its own, with the
reason (`Corpus.protocol`); `standard_protocol(name)` reads it, `standard_protocols()` lists them
all, and `ser corpora` / docs/CORPORA.md print the table. Corpora without one (your own CSV
corpora) get ``speaker-kfold:5``.

Beyond one corpus: `multi_corpus_folds` (a target corpus' folds, every fold's train set
enlarged by whole extra corpora) and `cross_corpus_folds` (train on some corpora, test on
others). `validation_split`/`with_validation` carve a validation set out of the training
*speakers*; `speaker_overlap`/`leakage_report` check speaker independence; `fold_summary`
returns plain rows for a table.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from featstore.corpora import CORPORA, REGISTRY, check_custom_name
from featstore.corpora.base import DEFAULT_PROTOCOL, Utterance
from featstore.errors import SerError
from featstore.labels import canonical_order

__all__ = [
    "Fold", "ProtocolError", "FoldWarning", "SpeakerWarning", "PROTOCOLS", "LUNA5_TEST_ACTORS",
    "make_folds", "check_protocol", "track2_indices", "TRACK2_CLASSES", "standard_protocol", "standard_protocols", "multi_corpus_folds", "cross_corpus_folds",
    "validation_split", "with_validation", "speaker_overlap", "leakage_report", "LeakageRow",
    "fold_summary",
]


class ProtocolError(SerError, ValueError):
    """A protocol name that does not exist, or one that cannot be applied to these utterances."""


class FoldWarning(UserWarning):
    """Folds were built, but something about them deserves attention (e.g. utterances left out)."""


class SpeakerWarning(UserWarning):
    """The corpus' speaker ids are not people (none, one voice, sources): fold independence is unproven."""


@dataclass(frozen=True)
class Fold:
    """One train/test split. Index arrays are sorted, disjoint, int64, into the utterance list.

    train: shape (n_train,); test: shape (n_test,); val: shape (n_val,) or None.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None

    def __repr__(self) -> str:
        val = "None" if self.val is None else str(len(self.val))
        return f"Fold({self.name!r}, train={len(self.train)}, val={val}, test={len(self.test)})"


#: Protocol names `make_folds` accepts (``speaker-kfold:K`` with an integer K >= 2).
PROTOCOLS: tuple[str, ...] = ("luna5", "emobox", "emobox-track2", "loso", "loso-session", "speaker-kfold:K",
                              "official", "standard")

#: `official`: the partition names a release uses for training, validation and testing (tests: "Test*")
OFFICIAL_TRAIN, OFFICIAL_VALIDATION, OFFICIAL_TEST_PREFIX = "Train", "Development", "Test"

#: The classes EmoBox's cross-corpus track shares between its 4 corpora.
TRACK2_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
# SAVEE, the smallest of the 4, has 4 speakers: the within-corpus track2 folds are 4 speaker folds.
_TRACK2_FOLDS = 4

#: Luna-Jiménez et al. 2022 RAVDESS test actors, fold 0..4.
LUNA5_TEST_ACTORS: tuple[frozenset[int], ...] = (
    frozenset({2, 5, 14, 15, 16}),
    frozenset({3, 6, 7, 13, 18}),
    frozenset({10, 11, 12, 19, 20}),
    frozenset({8, 17, 21, 23, 24}),
    frozenset({1, 4, 9, 22}),
)



def standard_protocol(corpus_name: str) -> str:
    """The standard speaker-independent protocol of `corpus_name` (its class' `protocol`).

    A name that is not registered is taken for your own CSV corpus (``speaker-kfold:5``), unless
    it is a near miss of a registered name ("ravdes"): that raises CorpusError with the suggestion.
    """
    corpus = CORPORA.get(check_custom_name(corpus_name))
    return (corpus.protocol if corpus is not None else DEFAULT_PROTOCOL).name


def standard_protocols() -> dict[str, tuple[str, str]]:
    """corpus name -> (standard protocol, why), for every registered corpus."""
    return {c.name: (c.protocol.name, c.protocol.why) for c in REGISTRY}


# -- helpers --------------------------------------------------------------------------------------

def _idx(values) -> np.ndarray:
    return np.asarray(sorted(values), dtype=np.int64).reshape(-1)


def _corpora(utterances: Sequence[Utterance]) -> list[str]:
    return sorted({u.corpus for u in utterances})


def _single_corpus(utterances: Sequence[Utterance], protocol: str) -> str:
    corpora = _corpora(utterances)
    if len(corpora) != 1:
        raise ProtocolError(
            f"protocol {protocol!r} works on one corpus at a time, got {len(corpora)}: "
            f"{', '.join(corpora) or '(no utterances)'}; use multi_corpus_folds(...) to add other "
            f"corpora to the training sets, or cross_corpus_folds(...)"
        )
    return corpora[0]


def _folds_from_groups(groups: Sequence[str], test_groups: Sequence[Sequence[str]], names: Sequence[str],
                       subset: np.ndarray | None = None) -> list[Fold]:
    """Folds where fold k tests on the utterances whose group is in test_groups[k]."""
    groups = np.asarray(groups, dtype=object)
    positions = np.arange(len(groups), dtype=np.int64) if subset is None else subset
    folds = []
    for name, tg in zip(names, test_groups):
        mask = np.isin(groups, list(tg))
        folds.append(Fold(name, _idx(positions[~mask]), _idx(positions[mask])))
    return folds


def _parse_kfold(protocol: str) -> int:
    m = re.fullmatch(r"speaker-kfold:(\d+)", protocol)
    if not m:
        raise ProtocolError(f"bad protocol {protocol!r}: write speaker-kfold:K with an integer K >= 2, e.g. speaker-kfold:5")
    k = int(m.group(1))
    if k < 2:
        raise ProtocolError(f"bad protocol {protocol!r}: K must be at least 2 (speaker-kfold:K, e.g. speaker-kfold:5)")
    return k


def _unknown_protocol(protocol: str) -> ProtocolError:
    return ProtocolError(f"unknown fold protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")


def check_protocol(protocol: str) -> str:
    """`protocol` stripped and lowercased if `make_folds` knows the name; ProtocolError else.

    Checks the spelling only (``speaker-kfold:K`` with K >= 2), not whether some utterances suit it.
    """
    name = str(protocol).strip().lower()
    if name.startswith("speaker-kfold"):
        _parse_kfold(name)
    elif name not in PROTOCOLS:
        raise _unknown_protocol(protocol)
    return name


# -- protocols ------------------------------------------------------------------------------------

def make_folds(utterances: Sequence[Utterance], protocol: str, *, seed: int = 0, strict: bool = False) -> list[Fold]:
    """Split `utterances` (length N) into folds by `protocol` (see the module docstring).

    Returns a list of `Fold`s with sorted int64 index arrays into `utterances`; `val` is None
    (add one with `with_validation`), except under ``official``, whose validation set is the
    release's own Development partition. `seed` only matters for ``speaker-kfold:K``; `strict` only
    for ``emobox`` (raise instead of warning about utterances EmoBox does not list).
    Raises `ProtocolError` for an unknown protocol or one these utterances cannot support.
    """
    if not isinstance(protocol, str):
        raise _unknown_protocol(protocol)
    protocol = protocol.strip().lower()
    if not utterances:
        raise ProtocolError(f"protocol {protocol!r}: no utterances to split")
    if protocol == "standard":
        return make_folds(utterances, standard_protocol(_single_corpus(utterances, protocol)), seed=seed, strict=strict)
    for corpus in _corpora(utterances):
        note = CORPORA[corpus].speaker_note if corpus in CORPORA else ""
        if note:
            warnings.warn(f"{corpus}: {note}", SpeakerWarning, stacklevel=2)
    if protocol == "luna5":
        return _luna5(utterances)
    if protocol == "emobox":
        return _emobox(utterances, strict=strict)
    if protocol == "emobox-track2":
        return _emobox_track2(utterances, seed)
    if protocol == "loso":
        return _loso(utterances)
    if protocol == "loso-session":
        return _loso_session(utterances)
    if protocol.startswith("speaker-kfold"):
        return _speaker_kfold(utterances, _parse_kfold(protocol), seed)
    if protocol == "official":
        return _official(utterances)
    raise _unknown_protocol(protocol)


def _luna5(utterances: Sequence[Utterance]) -> list[Fold]:
    others = sorted({u.corpus for u in utterances} - {"ravdess"})
    if others:
        raise ProtocolError(f"protocol 'luna5' is defined for RAVDESS only; these utterances include {', '.join(others)}")
    actors = []
    for u in utterances:
        m = re.search(r"(\d+)$", u.speaker)
        if not m or not 1 <= int(m.group(1)) <= 24:
            raise ProtocolError(f"protocol 'luna5': cannot read a RAVDESS actor 1-24 from speaker {u.speaker!r} (utterance {u.id})")
        actors.append(int(m.group(1)))
    folds = _folds_from_groups(actors, LUNA5_TEST_ACTORS, [f"luna-{k}" for k in range(5)])
    missing = sorted(set(range(1, 25)) - set(actors))
    if missing:
        warnings.warn(f"luna5: actors {missing} have no utterances; folds are not the published ones", FoldWarning, stacklevel=3)
    return folds


def _emobox(utterances: Sequence[Utterance], *, strict: bool) -> list[Fold]:
    from featstore.reference import reference

    corpus = _single_corpus(utterances, "emobox")
    try:
        ref = reference(corpus)
    except KeyError as e:
        from featstore.reference import reference_corpora

        raise ProtocolError(
            f"protocol 'emobox': EmoBox publishes no splits for corpus {corpus!r} "
            f"(it has: {', '.join(reference_corpora())}); use loso or speaker-kfold:K"
        ) from e
    fold_of = {f.key: f.test_fold for f in ref.files}
    known, unknown = [], []
    for i, u in enumerate(utterances):
        (known if u.id in fold_of else unknown).append(i)
    if unknown:
        examples = ", ".join(utterances[i].id for i in unknown[:5])
        msg = (f"emobox: {len(unknown)} of {len(utterances)} {corpus} utterances are not in EmoBox's "
               f"file list (e.g. {examples}); ")
        if strict:
            raise ProtocolError(msg + "remove them or use another protocol")
        warnings.warn(msg + "they are left out of every train and test split", FoldWarning, stacklevel=3)
    seen = {utterances[i].id for i in known}
    missing = [k for k in fold_of if k not in seen]
    if missing:
        msg = (f"emobox: {len(missing)} of the {len(fold_of)} {corpus} files EmoBox lists are missing "
               f"(e.g. {', '.join(missing[:5])}); results are not comparable with EmoBox's")
        if strict:
            raise ProtocolError(msg)
        warnings.warn(msg, FoldWarning, stacklevel=3)
    known_arr = np.asarray(known, dtype=np.int64)
    fold_arr = np.asarray([fold_of[utterances[i].id] for i in known], dtype=np.int64)
    folds = []
    for k, name in enumerate(ref.fold_names, start=1):
        mask = fold_arr == k
        folds.append(Fold(name, _idx(known_arr[~mask]), _idx(known_arr[mask])))
    return folds


def track2_indices(utterances: Sequence[Utterance], *, strict: bool = False) -> np.ndarray:
    """Sorted int64 indices `(n,)` of the utterances in EmoBox's cross-corpus subset of their corpus.

    ProtocolError for a corpus outside the track (or, with `strict`, when some of its 240 are missing).
    """
    from featstore.reference import track2, track2_corpora

    corpus = _single_corpus(utterances, "emobox-track2")
    if corpus not in track2_corpora():
        raise ProtocolError(f"protocol 'emobox-track2' covers {', '.join(track2_corpora())} only, not {corpus!r}")
    keys = {key for key, _label, _speaker in track2(corpus)}
    idx = [i for i, u in enumerate(utterances) if u.id in keys and u.label in TRACK2_CLASSES]
    if not idx or (strict and len(idx) < len(keys)):
        raise ProtocolError(f"emobox-track2: {len(idx)} of the {len(keys)} {corpus} utterances of EmoBox's "
                            f"cross-corpus track are here; extract the corpus with those files")
    return _idx(idx)


def _emobox_track2(utterances: Sequence[Utterance], seed: int) -> list[Fold]:
    subset = track2_indices(utterances)
    folds = _speaker_kfold([utterances[i] for i in subset], _TRACK2_FOLDS, seed)
    return [Fold(f"track2-{k}", _idx(subset[f.train]), _idx(subset[f.test])) for k, f in enumerate(folds)]


def _loso(utterances: Sequence[Utterance]) -> list[Fold]:
    speakers = [u.speaker for u in utterances]
    distinct = sorted(set(speakers))
    if len(distinct) < 2:
        raise ProtocolError(f"protocol 'loso' needs at least 2 speakers, got {len(distinct)} ({', '.join(distinct)})")
    return _folds_from_groups(speakers, [[s] for s in distinct], [f"loso-{s}" for s in distinct])


def _loso_session(utterances: Sequence[Utterance]) -> list[Fold]:
    without = [u.id for u in utterances if not u.session]
    if without:
        raise ProtocolError(
            f"protocol 'loso-session': {len(without)} utterances have no session (e.g. {', '.join(without[:3])}); "
            f"only corpora with recording sessions (IEMOCAP) support it; use loso or speaker-kfold:K"
        )
    multi = len(_corpora(utterances)) > 1
    groups = [f"{u.corpus}-{u.session}" if multi else u.session for u in utterances]
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ProtocolError(f"protocol 'loso-session' needs at least 2 sessions, got {distinct}")
    return _folds_from_groups(groups, [[g] for g in distinct], [f"session-{g}" for g in distinct])


def _official(utterances: Sequence[Utterance]) -> list[Fold]:
    """One fold per test partition: train Train, validate Development, test that partition."""
    corpus = _single_corpus(utterances, "official")
    parts = [u.session or "" for u in utterances]
    tests = sorted({p for p in parts if p.startswith(OFFICIAL_TEST_PREFIX)})
    if OFFICIAL_TRAIN not in parts or not tests:
        found = ", ".join(sorted(set(parts) - {""})) or "none"
        raise ProtocolError(f"protocol 'official' needs the corpus' published partitions ({OFFICIAL_TRAIN}, "
                            f"{OFFICIAL_VALIDATION}, {OFFICIAL_TEST_PREFIX}1, ...) in each utterance's session; "
                            f"{corpus} has: {found}; use its standard protocol or speaker-kfold:5")
    other = sorted({p for p in parts} - {OFFICIAL_TRAIN, OFFICIAL_VALIDATION, *tests})
    if other:
        warnings.warn(FoldWarning(f"protocol 'official': {sum(p in other for p in parts)} utterances of {corpus} are in "
                                  f"no known partition ({', '.join(repr(p) for p in other)}) and in no split"),
                      stacklevel=3)
    train = _idx([i for i, p in enumerate(parts) if p == OFFICIAL_TRAIN])
    val = _idx([i for i, p in enumerate(parts) if p == OFFICIAL_VALIDATION])
    return [Fold(name, train, _idx([i for i, p in enumerate(parts) if p == name]), val if len(val) else None)
            for name in tests]


def _speaker_kfold(utterances: Sequence[Utterance], k: int, seed: int) -> list[Fold]:
    from sklearn.model_selection import StratifiedGroupKFold

    speakers = np.asarray([u.speaker for u in utterances], dtype=object)
    n_speakers = len(set(speakers.tolist()))
    if n_speakers < k:
        raise ProtocolError(
            f"protocol 'speaker-kfold:{k}' needs at least {k} speakers, these utterances have {n_speakers}; "
            f"use a smaller K or loso"
        )
    labels = np.asarray([u.label for u in utterances], dtype=object)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():
        # "The least populated class in y has only n members": stratification is best effort.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(len(utterances)), labels, groups=speakers))
    for i, (train, test) in enumerate(splits):
        if len(test) == 0:  # pragma: no cover - sklearn gives every fold a group when groups >= K
            raise ProtocolError(f"speaker-kfold:{k}: fold {i} got no speakers; use a smaller K")
        folds.append(Fold(f"kfold-{i}", _idx(train), _idx(test)))
    return folds


# -- beyond one corpus ----------------------------------------------------------------------------

def multi_corpus_folds(utterances: Sequence[Utterance], target: str, protocol: str,
                       extra_train: Sequence[str], seed: int = 0, *, strict: bool = False) -> list[Fold]:
    """Folds of the `target` corpus by `protocol`, each train set enlarged by whole `extra_train` corpora.

    Indices point into the full `utterances` list (length N). Test sets hold only target-corpus
    utterances; utterances of corpora that are neither target nor extra are unused.
    """
    extra = list(dict.fromkeys(extra_train))
    present = set(_corpora(utterances))
    if target not in present:
        raise ProtocolError(f"target corpus {target!r} has no utterances here (corpora: {', '.join(sorted(present)) or 'none'})")
    if target in extra:
        raise ProtocolError(f"target corpus {target!r} is also listed as an extra training corpus")
    absent = [c for c in extra if c not in present]
    if absent:
        raise ProtocolError(f"extra training corpora {', '.join(absent)} have no utterances here (corpora: {', '.join(sorted(present))})")
    target_idx = np.asarray([i for i, u in enumerate(utterances) if u.corpus == target], dtype=np.int64)
    extra_idx = np.asarray([i for i, u in enumerate(utterances) if u.corpus in set(extra)], dtype=np.int64)
    sub = [utterances[i] for i in target_idx]
    folds = make_folds(sub, protocol, seed=seed, strict=strict)
    out = []
    for f in folds:
        train = np.concatenate([target_idx[f.train], extra_idx])
        val = None if f.val is None else _idx(target_idx[f.val])
        out.append(Fold(f.name, _idx(train), _idx(target_idx[f.test]), val))
    return out


def cross_corpus_folds(utterances: Sequence[Utterance], train_corpora: Sequence[str],
                       test_corpora: Sequence[str]) -> list[Fold]:
    """One fold: train on every utterance of `train_corpora`, test on every one of `test_corpora`."""
    train_c, test_c = set(train_corpora), set(test_corpora)
    if not train_c or not test_c:
        raise ProtocolError("cross-corpus folds need at least one training and one test corpus")
    both = train_c & test_c
    if both:
        raise ProtocolError(f"corpora {', '.join(sorted(both))} are both training and test corpora")
    present = set(_corpora(utterances))
    absent = sorted((train_c | test_c) - present)
    if absent:
        raise ProtocolError(f"corpora {', '.join(absent)} have no utterances here (corpora: {', '.join(sorted(present)) or 'none'})")
    train = [i for i, u in enumerate(utterances) if u.corpus in train_c]
    test = [i for i, u in enumerate(utterances) if u.corpus in test_c]
    name = f"train-{'+'.join(sorted(train_c))}-test-{'+'.join(sorted(test_c))}"
    return [Fold(name, _idx(train), _idx(test))]


# -- validation -----------------------------------------------------------------------------------

def validation_split(utterances: Sequence[Utterance], train_idx, *, fraction: float = 0.1,
                     n_speakers: int | None = None, seed: int = 0, n_candidates: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Move whole training speakers to a validation set.

    `train_idx`: shape (n_train,) indices into `utterances`. Takes `n_speakers` speakers, or else
    round(fraction * training speakers), at least 1 and leaving at least 1 for training. Among
    `n_candidates` random speaker sets (numpy Generator seeded by `seed`) picks the one whose label
    distribution is closest (L1) to the training set's, so validation is stratified where possible.
    Returns (train, val): sorted int64 arrays, shapes (n_train - n_val,) and (n_val,).
    """
    train_idx = _idx(np.asarray(train_idx, dtype=np.int64).reshape(-1))
    speakers = np.asarray([utterances[i].speaker for i in train_idx], dtype=object)
    labels = [utterances[i].label for i in train_idx]
    distinct = sorted(set(speakers.tolist()))
    if len(distinct) < 2:
        raise ProtocolError(
            f"a speaker-independent validation set needs at least 2 training speakers, this training set has "
            f"{len(distinct)} ({', '.join(distinct) or 'none'})"
        )
    if n_speakers is None:
        if not 0 < fraction < 1:
            raise ProtocolError(f"validation fraction must be between 0 and 1, got {fraction}")
        n_val = int(round(fraction * len(distinct)))
    else:
        n_val = int(n_speakers)
        if n_val < 1 or n_val >= len(distinct):
            raise ProtocolError(f"validation needs 1 to {len(distinct) - 1} speakers here, asked for {n_speakers}")
    n_val = min(max(n_val, 1), len(distinct) - 1)

    label_names = sorted(set(labels))
    lab_pos = {name: j for j, name in enumerate(label_names)}
    spk_pos = {s: j for j, s in enumerate(distinct)}
    counts = np.zeros((len(distinct), len(label_names)))
    for s, lab in zip(speakers, labels):
        counts[spk_pos[s], lab_pos[lab]] += 1
    overall = counts.sum(0) / counts.sum()

    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(max(1, n_candidates)):
        pick = np.sort(rng.choice(len(distinct), size=n_val, replace=False))
        c = counts[pick].sum(0)
        score = np.abs(c / c.sum() - overall).sum()
        if score < best_score - 1e-12:
            best, best_score = pick, score
    val_speakers = [distinct[j] for j in best]
    mask = np.isin(speakers, val_speakers)
    return _idx(train_idx[~mask]), _idx(train_idx[mask])


def with_validation(folds: Sequence[Fold], utterances: Sequence[Utterance], *, fraction: float = 0.1,
                    n_speakers: int | None = None, seed: int = 0) -> list[Fold]:
    """Each fold with `val` filled by `validation_split` of its train set (train shrinks accordingly)."""
    out = []
    for f in folds:
        train, val = validation_split(utterances, f.train, fraction=fraction, n_speakers=n_speakers, seed=seed)
        out.append(replace(f, train=train, val=val))
    return out


# -- checks and summaries -------------------------------------------------------------------------

def _speakers(utterances: Sequence[Utterance], idx) -> set[str]:
    if idx is None:
        return set()
    return {utterances[int(i)].speaker for i in idx}


def speaker_overlap(utterances: Sequence[Utterance], fold: Fold) -> set[str]:
    """Speakers heard in testing and also in training or validation (empty = speaker-independent)."""
    test = _speakers(utterances, fold.test)
    return test & (_speakers(utterances, fold.train) | _speakers(utterances, fold.val))


class LeakageRow(NamedTuple):
    fold: str
    n_speakers: int          # test speakers also in train/val
    examples: list[str]      # up to 5 of them, sorted


def leakage_report(utterances: Sequence[Utterance], folds: Sequence[Fold]) -> list[LeakageRow]:
    """One row per fold: (fold name, number of test speakers also in train/val, up to 5 examples)."""
    rows = []
    for f in folds:
        leaked = sorted(speaker_overlap(utterances, f))
        rows.append(LeakageRow(f.name, len(leaked), leaked[:5]))
    return rows


def fold_summary(utterances: Sequence[Utterance], folds: Sequence[Fold]) -> list[dict]:
    """Plain rows for a `ser folds` table, one dict per fold.

    Keys: fold, n_train, n_val (None without validation), n_test, n_train_speakers,
    n_test_speakers, test_speakers (sorted list), test_labels (label -> count, canonical order),
    leaked_speakers (test speakers also in train/val).
    """
    rows = []
    for f in folds:
        test_speakers = _speakers(utterances, f.test)
        labels = Counter(utterances[int(i)].label for i in f.test)
        rows.append({
            "fold": f.name,
            "n_train": int(len(f.train)),
            "n_val": None if f.val is None else int(len(f.val)),
            "n_test": int(len(f.test)),
            "n_train_speakers": len(_speakers(utterances, f.train)),
            "n_test_speakers": len(test_speakers),
            "test_speakers": sorted(test_speakers),
            "test_labels": {lab: labels[lab] for lab in canonical_order(labels)},
            "leaked_speakers": len(speaker_overlap(utterances, f)),
        })
    return rows
