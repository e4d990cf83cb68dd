"""The canonical emotion set every corpus label is mapped onto.

Each corpus module holds its own `labels` table (corpus code -> canonical name); `mapping_table()`
gathers them into one documented table (`ser corpora --labels` prints it). Raw codes are always
kept beside the canonical label (`Utterance.label_raw`), so no mapping decision is irreversible.
"""

from __future__ import annotations

NEUTRAL, CALM, HAPPY, SAD, ANGRY = "neutral", "calm", "happy", "sad", "angry"
FEAR, DISGUST, SURPRISE, BOREDOM = "fear", "disgust", "surprise", "boredom"
FRUSTRATED, OTHER = "frustrated", "other"

#: Canonical emotions, in the order tables and confusion matrices use.
CANONICAL: tuple[str, ...] = (
    NEUTRAL, CALM, HAPPY, SAD, ANGRY, FEAR, DISGUST, SURPRISE, BOREDOM, FRUSTRATED, OTHER,
)

#: EmoBox's label names -> ours (EmoBox capitalises and says "Fear", "Surprise", "Angry").
EMOBOX_TO_CANONICAL = {
    "Neutral": NEUTRAL, "Calm": CALM, "Happy": HAPPY, "Sad": SAD, "Angry": ANGRY,
    "Fear": FEAR, "Disgust": DISGUST, "Surprise": SURPRISE, "Boredom": BOREDOM,
}


def canonical_order(labels) -> list[str]:
    """Sort label names canonically (unknown names last, alphabetically)."""
    rank = {name: i for i, name in enumerate(CANONICAL)}
    return sorted(set(labels), key=lambda name: (rank.get(name, len(rank)), name))


def mapping_table() -> list[tuple[str, str, str]]:
    """(corpus, raw code, canonical label) for every registered corpus."""
    from featstore.corpora import REGISTRY

    return [(corpus.name, raw, canonical) for corpus in REGISTRY for raw, canonical in corpus.labels.items()]
