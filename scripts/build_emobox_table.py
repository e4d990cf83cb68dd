"""Rebuild featstore/data/emobox.json.gz from EmoBox's published metadata.

Usage: python scripts/build_emobox_table.py ../shared/reference/emobox

The table keeps, per corpus, every file EmoBox lists (key, path inside the unpacked
archive, sample rate, frame count, corpus label, the EmoBox test fold that holds it, and for
segment corpora (PAVOQUE) the segment's start and end in seconds), so folds and synthetic
corpora need no network and no copy of the reference folder. It also keeps EmoBox's
cross-corpus track (`track2/`): per corpus, the EmoBox keys of its 240 balanced utterances.
"""

import gzip
import json
import sys
from pathlib import Path

# track2 file name -> EmoBox key, per corpus (MELD's names lack the split: resolved below)
TRACK2_KEYS = {
    "iemocap": lambda name, speaker: f"iemocap-{Path(name).stem}",
    "ravdess": lambda name, speaker: f"ravdess-{Path(name).stem}",
    "savee": lambda name, speaker: f"savee-{Path(name).parent.name}-{Path(name).stem}",
}
# MELD's track2 names say `dia933_utt6` (or `final_videos_testdia100_utt5` for the test split), not
# the split; where train, dev and test all have that name, the one with track2's label is taken,
# train first.
MELD_SPLIT_PREFERENCE = ("train", "dev", "test")
MELD_TRACK2_LABEL = {"neutral": "neutral", "joy": "happy", "anger": "angry", "sadness": "sad"}


def meld_key(name: str, label: str, emo_of: dict) -> str | None:
    stem = Path(name).stem
    splits = MELD_SPLIT_PREFERENCE
    if stem.startswith("final_videos_test"):
        stem, splits = stem[len("final_videos_test"):], ("test",)
    candidates = [k for s in splits if (k := f"meld-{stem}-{s}") in emo_of]
    matching = [k for k in candidates if MELD_TRACK2_LABEL.get(emo_of[k]) == label]
    return (matching or [None])[0]


def build_corpus(reference: Path, jsonl: Path) -> dict:
    corpus = jsonl.name.split(".")[0]
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line]
    folds = json.loads((reference / f"{corpus}.folds.json").read_text(encoding="utf-8"))
    fold_names = sorted(folds["test_keys_by_fold"], key=lambda s: int(s.split("_")[-1]))
    fold_of = {}
    for i, name in enumerate(fold_names, start=1):
        for key in folds["test_keys_by_fold"][name]:
            if key in fold_of:
                raise ValueError(f"{corpus}: key {key} is in two test folds")
            fold_of[key] = i
    keys = {r["key"] for r in rows}
    missing = set(fold_of) - keys
    if missing:
        raise ValueError(f"{corpus}: {len(missing)} fold keys are not in {jsonl.name}")
    prefix = f"downloads/{corpus}/"
    files = []
    for r in rows:
        if not r["wav"].startswith(prefix):
            raise ValueError(f"{corpus}: unexpected path {r['wav']}")
        row = [r["key"], r["wav"][len(prefix):], int(r["sample_rate"]), int(round(r["num_frame"])), r["emo"],
               fold_of.get(r["key"], 0)]
        if "start_time" in r:
            row += [float(r["start_time"]), float(r["end_time"])]
        files.append(row)
    return {"label_map": folds["label_map"], "folds": fold_names, "files": files}


def build_track2(folder: Path, corpora: dict) -> dict:
    track2 = {}
    for jsonl in sorted(folder.glob("*.jsonl")):
        corpus = jsonl.stem
        rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line]
        emo_of = {f[0]: f[4] for f in corpora[corpus]["files"]}
        keys = []
        for r in rows:
            if corpus == "meld":
                key = meld_key(r["wav_filename"], r["label"], emo_of)
            else:
                key = TRACK2_KEYS[corpus](r["wav_filename"], r["speaker"])
            if key not in emo_of:
                raise ValueError(f"track2 {corpus}: {r['wav_filename']} is not an EmoBox {corpus} file")
            keys.append([key, r["label"], r["speaker"]])
        track2[corpus] = keys
    return track2


def build(reference: Path) -> dict:
    corpora = {jsonl.name.split(".")[0]: build_corpus(reference, jsonl)
               for jsonl in sorted(reference.glob("*.jsonl"))}
    return {"corpora": corpora, "track2": build_track2(reference / "track2", corpora)}


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/emobox")
    out = Path(__file__).resolve().parents[1] / "featstore" / "data" / "emobox.json.gz"
    data = json.dumps(build(src), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    out.write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
