"""PAVOQUE — a German single-speaker expressive speech corpus (one long recording per style).

Layout (the pavoque-data release): `pavoque-<style>.flac`, one long 44.1 kHz recording per
style (angry, happy, neutral, poker, sad, and `outtakes` mixing all), each with its segment
annotation `pavoque-<style>.yaml` beside it: a list of utterances
    - {prompt: obadiah0082, start: 945.62, end: 949.56, style: sad, text: "..."}
(`style` may be left out: the file's style; U: field names of the release's annotation, not
checked against it). Every utterance is a segment (path, start, end) of its file: only that
span is read (`featstore.audio.load_audio(..., start=, end=)`); a segment ending past the end
of its file is reported. 7334 segments in EmoBox's list; outtakes overlap each other in places.
Styles angry, happy, neutral, sad and poker (poker face: suppressed expression, its own class).

Speaker: one male speaker, so no split can be speaker-independent.
Utterance id = "pavoque-<prompt>-<style>", as in EmoBox.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from featstore import labels as L
from featstore.corpora.base import Corpus, ParsedFile, Protocol, Source
from featstore.errors import LabelError, LayoutError

_NAME = re.compile(r"pavoque-([a-z]+)")
_PROMPT = re.compile(r"\w+")


@lru_cache(maxsize=16)
def _segments(path: str, stamp: tuple[int, int]) -> list[dict]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster on hours of segments
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader) or []
    if not isinstance(data, list):
        raise LabelError(f"{Path(path).name} is not a list of segments (prompt, start, end)")
    return data


def read_segments(annotation: Path) -> list[dict]:
    """The segment entries of one `pavoque-<style>.yaml`; LabelError if it is missing or malformed."""
    if not annotation.is_file():
        raise LabelError(f"no segment annotation {annotation.name} beside {annotation.with_suffix('.flac').name}")
    stat = annotation.stat()
    try:
        return _segments(str(annotation), (stat.st_mtime_ns, stat.st_size))
    except LabelError:
        raise
    except Exception as e:  # yaml.YAMLError
        raise LabelError(f"{annotation.name} is not readable YAML: {str(e).splitlines()[0]}") from e


def format_segments(entries) -> str:
    """`pavoque-<style>.yaml` text for `(prompt, start, end, style)` entries."""
    return "".join(f"- {{prompt: {p}, start: {s:.3f}, end: {e:.3f}, style: {st}}}\n" for p, s, e, st in entries)


class PavoqueCorpus(Corpus):
    name = "pavoque"
    title = "PAVOQUE (German, one speaker, segments of long recordings)"
    language = "de"
    expected_count = 7334
    n_speakers = 1
    labels = {"angry": L.ANGRY, "happy": L.HAPPY, "neutral": L.NEUTRAL, "poker": L.POKER, "sad": L.SAD}
    layout_hint = "pavoque-<style>.flac with its segments in pavoque-<style>.yaml"
    audio_suffixes = (".flac",)
    source = Source(
        "manual", "https://github.com/marytts/pavoque-data", "CC BY-NC-SA 4.0 (U)",
        steps=("Download the pavoque-data release (the .flac recordings and their .yaml annotations) from "
               "https://github.com/marytts/pavoque-data/releases (U).",),
        verified="(U) release page not opened",
    )
    speaker_note = ("PAVOQUE has one speaker: every split has the same voice in train and test")
    protocol = Protocol("emobox", "one speaker: no speaker-independent split exists; EmoBox's single split")

    def find_files(self, root: Path) -> list[Path]:
        _segments.cache_clear()
        return super().find_files(root)

    def parse(self, path: Path, root: Path) -> list[ParsedFile]:
        m = _NAME.fullmatch(path.stem)
        if not m:
            raise LayoutError(f"{path.name} is not pavoque-<style>.flac")
        file_style = m.group(1)
        parsed = []
        for i, entry in enumerate(read_segments(path.with_suffix(".yaml"))):
            try:
                prompt, start, end = str(entry["prompt"]), float(entry["start"]), float(entry["end"])
            except (KeyError, TypeError, ValueError) as e:
                raise LabelError(f"{path.with_suffix('.yaml').name}: entry {i + 1} lacks prompt/start/end") from e
            style = str(entry.get("style") or file_style)
            if not _PROMPT.fullmatch(prompt) or not 0 <= start < end:
                raise LabelError(f"{path.with_suffix('.yaml').name}: entry {i + 1} ({prompt} {start}-{end}) "
                                 f"is not a prompt name with 0 <= start < end")
            parsed.append(ParsedFile(id=f"pavoque-{prompt}-{style}", speaker="1", label_raw=style, gender="male",
                                     text=entry.get("text"), session=file_style, start=start, end=end))
        return parsed
