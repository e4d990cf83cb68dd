"""The canonical emotion set every corpus label is mapped onto.

Each corpus module holds its own `labels` table (corpus code -> canonical name); `mapping_table()`
gathers them into one documented table (`ser corpora --labels` prints it). Raw codes are always
kept beside the canonical label (`Utterance.label_raw`), so no mapping decision is irreversible.
"""

from __future__ import annotations

from featstore.errors import SerWarning

NEUTRAL, CALM, HAPPY, SAD, ANGRY = "neutral", "calm", "happy", "sad", "angry"
FEAR, DISGUST, SURPRISE, BOREDOM = "fear", "disgust", "surprise", "boredom"
FRUSTRATED, OTHER = "frustrated", "other"

# Classes the later EmoBox corpora bring. The rule: a class EmoBox keeps apart stays its own
# class here, named as EmoBox names it (lowercased); nothing is merged that EmoBox does not
# merge. So "excited" (EMNS, JL-Corpus, ASVP-ESD) is not happy (IEMOCAP's 4-class set alone
# merges exc into happy, by that benchmark's convention); "anxious" and "worried" are not fear;
# "amused" is not happy; "poker" (PAVOQUE's poker face, suppressed expression) is not neutral.
# Merges EmoBox makes and we follow: ASED "S" -> sad, Polish "s" (strach) -> fear. ASVP-ESD's
# two-word names shorten to their first word ("pain, groan" -> pain, "disappointment,
# disapproval" -> disappointment), and its "UnKnown" is other.
EXCITED, SARCASTIC, AMUSED, SLEEPY, POKER = "excited", "sarcastic", "amused", "sleepy", "poker"
WORRIED, ANXIOUS, CONCERNED, APOLOGETIC = "worried", "anxious", "concerned", "apologetic"
ASSERTIVE, ENCOURAGING, ENTHUSIASTIC = "assertive", "encouraging", "enthusiastic"
PLEASURE, PAIN, DISAPPOINTMENT, BREATH = "pleasure", "pain", "disappointment", "breath"
CONTEMPT = "contempt"  # MEAD and M3ED's class; of the corpora here only MSP-Podcast has it (code C)

#: Canonical emotions, in the order tables and confusion matrices use.
CANONICAL: tuple[str, ...] = (
    NEUTRAL, CALM, HAPPY, SAD, ANGRY, FEAR, DISGUST, SURPRISE, BOREDOM, FRUSTRATED,
    EXCITED, AMUSED, ENTHUSIASTIC, PLEASURE, SARCASTIC, CONTEMPT, SLEEPY, POKER, WORRIED, ANXIOUS,
    CONCERNED, APOLOGETIC, ASSERTIVE, ENCOURAGING, PAIN, DISAPPOINTMENT, BREATH, OTHER,
)

#: EmoBox's label names -> ours (EmoBox capitalises and says "Fear", "Surprise", "Angry").
EMOBOX_TO_CANONICAL = {
    "Neutral": NEUTRAL, "Calm": CALM, "Happy": HAPPY, "Sad": SAD, "Angry": ANGRY,
    "Fear": FEAR, "Disgust": DISGUST, "Surprise": SURPRISE, "Boredom": BOREDOM,
    "Excited": EXCITED, "Amused": AMUSED, "Enthusiastic": ENTHUSIASTIC, "pleasure": PLEASURE,
    "Sarcastic": SARCASTIC, "Sleepy": SLEEPY, "Poker": POKER, "Worried": WORRIED, "Anxious": ANXIOUS,
    "Concerned": CONCERNED, "Apologetic": APOLOGETIC, "Assertive": ASSERTIVE, "Encouraging": ENCOURAGING,
    "pain, groan": PAIN, "disappointment, disapproval": DISAPPOINTMENT, "breath": BREATH, "UnKnown": OTHER,
}


# Label spellings that name a canonical emotion, for corpora whose labels are free text (CSV
# corpora). Keys are lowercased, with "_" and runs of spaces read as one space. The codes are the
# ones real releases use, checked against EmoBox's metadata (featstore/data/emobox.json.gz) and the
# corpora's own documentation:
# - IEMOCAP's and CREMA-D's three-letter codes (ang hap sad neu fea dis sur exc fru oth; CREMA-D
#   writes them upper-case). IEMOCAP's exc is happy, as EmoBox and ser's own IEMOCAP loader read
#   it (hap+exc, the benchmark's convention); the word "excited" stays excited (EMNS, JL-Corpus,
#   ASVP-ESD keep it apart), so write "excited" in the CSV to keep IEMOCAP's exc apart.
# - EmoBox's label names in every case (Angry, Fearful, Surprised, "pain, groan", UnKnown, ...) and
#   the raw names its corpora use: anger/sadness/happiness (MESD, RESD), joy (MELD, Emozionalmente),
#   neutrality (Emozionalmente), boredem (EMO-DB's spelling in EmoBox), enthusiasm (RESD), ps
#   (TESS's "pleasant surprise"), fearful/surprised (ShEMO, RAVDESS).
# - Common adjective/noun spellings: angry, happiness, fearful, disgusted, surprised, bored, ...
# One- and two-letter codes (a, s, sa, ...) are not aliases: they mean different classes in
# different corpora (s is sad in AESDD, fear in the Polish corpus, surprise in Oreau).
ALIASES: dict[str, str] = {
    **{name: name for name in CANONICAL},
    **{name.lower(): canonical for name, canonical in EMOBOX_TO_CANONICAL.items()},
    # IEMOCAP (and CREMA-D, upper-case) codes
    "neu": NEUTRAL, "hap": HAPPY, "sad": SAD, "ang": ANGRY, "fea": FEAR, "dis": DISGUST, "sur": SURPRISE,
    "exc": HAPPY, "fru": FRUSTRATED, "oth": OTHER,
    # spellings of each canonical emotion
    "neutrality": NEUTRAL, "calmness": CALM,
    "happiness": HAPPY, "joy": HAPPY, "joyful": HAPPY, "sadness": SAD, "anger": ANGRY,
    "fearful": FEAR, "afraid": FEAR, "scared": FEAR, "disgusted": DISGUST, "surprised": SURPRISE,
    "pleasant surprise": SURPRISE, "ps": SURPRISE, "bored": BOREDOM, "boredem": BOREDOM,
    "frustration": FRUSTRATED, "excitation": EXCITED, "amusement": AMUSED, "enthusiasm": ENTHUSIASTIC,
    "sarcasm": SARCASTIC, "sleepiness": SLEEPY, "worry": WORRIED, "anxiety": ANXIOUS, "concern": CONCERNED,
    "contemptuous": CONTEMPT, "disappointed": DISAPPOINTMENT, "disappointment": DISAPPOINTMENT,
    "unknown": OTHER, "others": OTHER,
}

#: Codes that say an utterance has no agreed emotion (IEMOCAP's xxx: no majority among the raters).
#: A CSV row with one is left out and listed as a problem, as the IEMOCAP loader leaves them out.
NO_LABEL: dict[str, str] = {"xxx": "IEMOCAP's code for no majority among the raters"}


def alias_key(text: str) -> str:
    """How `text` is looked up in ALIASES: lowercased, "_" and runs of whitespace as one space."""
    return " ".join(text.replace("_", " ").split()).lower()


def canonical_name(text: str) -> str | None:
    """The canonical emotion `text` names (an alias or the name itself, any case), else None."""
    return ALIASES.get(alias_key(text))


def unknown_labels(labels) -> dict[str, int]:
    """{label: count} of the labels in `labels` that are not canonical emotions, most frequent first."""
    from collections import Counter

    known = set(CANONICAL)
    return dict(Counter(label for label in labels if label not in known).most_common())


class LabelWarning(SerWarning):
    """Labels that are no canonical emotion, or a --map/--drop that changes nothing (one `warning:` line)."""


def canonical_order(labels) -> list[str]:
    """Sort label names canonically (unknown names last, alphabetically)."""
    rank = {name: i for i, name in enumerate(CANONICAL)}
    return sorted(set(labels), key=lambda name: (rank.get(name, len(rank)), name))


def mapping_table() -> list[tuple[str, str, str]]:
    """(corpus, raw code, canonical label) for every registered corpus."""
    from featstore.corpora import REGISTRY

    return [(corpus.name, raw, canonical) for corpus in REGISTRY for raw, canonical in corpus.labels.items()]
