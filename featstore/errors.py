"""User-facing errors: each message names the file or value at fault and the fix.

`cli.py` catches `SerError` once and prints the message without a traceback.
"""

from __future__ import annotations


class SerError(Exception):
    """An error the user can fix; the message says how."""


class SerWarning(UserWarning):
    """Something the user should know that does not stop the run (printed as one `warning:` line)."""


class CorpusError(SerError):
    """A corpus root that cannot be read as the corpus it claims to be."""


class AudioError(SerError):
    """An audio file that cannot be used; `path` names it, `reason` is one short phrase."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnreadableAudio(AudioError):
    """Missing, unreadable (permissions), not audio, or a broken header."""


class EmptyAudio(AudioError):
    """A file with zero samples."""


class NonFiniteAudio(AudioError):
    """Samples that are NaN or infinite."""


class TooShortAudio(AudioError):
    """Fewer samples than the model's receptive field."""


class LayoutError(SerError):
    """A file whose name does not follow its corpus' naming grammar (the message says which part)."""


class LabelError(SerError):
    """A file whose name or annotation carries a label code the corpus does not define."""


class TruncatedAudio(UnreadableAudio):
    """A file that ends before the audio its header declares, or whose decoding stops part-way."""
