"""featstore: audio -> cached wav2vec2-family hidden states, per corpus and layer.

Knows nothing of classifiers; `classifiers/` reads features only through `featstore.store`.
"""

__version__ = "0.1.0"
