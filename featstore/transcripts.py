"""What each utterance says, where its corpus fixes it: the sentences from each corpus' own documentation.

`transcript(utterance)` gives the spoken text of one utterance or None. Fixed sentences:

- RAVDESS: statement 01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
  (`Utterance.text` already holds the statement);
- CREMA-D: the 12 sentence codes of the release's README (IEO "It's eleven o'clock", ...;
  `Utterance.text` holds the sentence);
- EMO-DB: the 10 German text codes a01 … b10 of the corpus documentation (`Utterance.text`
  holds the code, `EMODB_TEXTS` the sentence);
- TESS: the carrier phrase "Say the word <word>" (`Utterance.text` holds the word).

SAVEE's per-emotion TIMIT sentence lists are not reproduced: the file names carry only an index
within each emotion's list, and the lists could not be checked against the corpus' own pages here,
so SAVEE has no transcripts. IEMOCAP's transcriptions mark laughter and noise in brackets and
are left out. A corpus without fixed sentences has none, except that a CSV corpus
whose rows carry a `text` column gives each row's text.
"""

from __future__ import annotations

from collections.abc import Callable

from featstore.corpora.base import Utterance

#: EMO-DB text code -> sentence (emodb.bilderbar.info, "Texte")
EMODB_TEXTS: dict[str, str] = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}


def _stored_text(u: Utterance) -> str | None:
    return u.text or None


def _emodb(u: Utterance) -> str | None:
    return EMODB_TEXTS.get(u.text or "")


def _tess(u: Utterance) -> str | None:
    return f"Say the word {u.text.replace('_', ' ')}" if u.text else None


#: corpus -> how its utterances' spoken text is found
FIXED_SENTENCES: dict[str, Callable[[Utterance], str | None]] = {
    "ravdess": _stored_text,
    "cremad": _stored_text,
    "emodb": _emodb,
    "tess": _tess,
}

#: registered corpora whose `Utterance.text` is an id or label, not what is said
_NOT_SPOKEN_TEXT = frozenset({"aesdd", "cafe", "emovo", "iemocap", "mesd", "savee", "shemo", "subesco", "urdu"})


def transcript(u: Utterance) -> str | None:
    """The words spoken in `u`, or None when its corpus has no known transcript."""
    rule = FIXED_SENTENCES.get(u.corpus)
    if rule is not None:
        return rule(u)
    if u.corpus in _NOT_SPOKEN_TEXT:
        return None
    return u.text or None  # a CSV corpus: its optional `text` column


def has_transcripts(corpus: str) -> bool:
    """Whether `corpus` has fixed sentences (a CSV corpus may still give texts per row)."""
    return corpus in FIXED_SENTENCES
