"""The canonical emotion set every corpus label is mapped onto.

Each corpus module holds its own `labels` table (corpus code -> canonical name); `mapping_table()`
gathers them into one documented table (`ser corpora --labels` prints it). Raw codes are always
kept beside the canonical label (`Utterance.label_raw`), so no mapping decision is irreversible.
"""

from __future__ import annotations

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
CONTEMPT = "contempt"  # MEAD and M3ED's class; none of the 29 corpora here has it

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


def canonical_order(labels) -> list[str]:
    """Sort label names canonically (unknown names last, alphabetically)."""
    rank = {name: i for i, name in enumerate(CANONICAL)}
    return sorted(set(labels), key=lambda name: (rank.get(name, len(rank)), name))


def mapping_table() -> list[tuple[str, str, str]]:
    """(corpus, raw code, canonical label) for every registered corpus."""
    from featstore.corpora import REGISTRY

    return [(corpus.name, raw, canonical) for corpus in REGISTRY for raw, canonical in corpus.labels.items()]
