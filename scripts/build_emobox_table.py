"""Rebuild featstore/data/emobox.json.gz from EmoBox's published metadata.

Usage: python scripts/build_emobox_table.py ../shared/reference/emobox

The table keeps, per corpus, every file EmoBox lists (key, path inside the unpacked
archive, sample rate, frame count, corpus label) and the EmoBox test fold that holds it,
so folds and synthetic corpora need no network and no copy of the reference folder.
"""

import gzip
import json
import sys
from pathlib import Path


def build(reference: Path) -> dict:
    table = {}
    for jsonl in sorted(reference.glob("*.jsonl")):
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
            files.append([r["key"], r["wav"][len(prefix):], int(r["sample_rate"]),
                          int(round(r["num_frame"])), r["emo"], fold_of.get(r["key"], 0)])
        table[corpus] = {"label_map": folds["label_map"], "folds": fold_names, "files": files}
    return table


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/emobox")
    out = Path(__file__).resolve().parents[1] / "featstore" / "data" / "emobox.json.gz"
    data = json.dumps(build(src), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    out.write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
