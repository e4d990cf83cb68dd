"""Benchmark `ser extract` against pure model forward and a naive per-file loop.

A RAVDESS-shaped synthetic corpus (real file names, 48 kHz, real durations; a balanced subset)
and a base-size wav2vec2 (`Wav2Vec2Config()` with random weights: the real compute). Measured in
one process, same audio, same model:

  (a) ser extract               audio-seconds per second, store writes and all
  (b) pure model forward        the same audio preloaded at 16 kHz, no I/O, batch 1
  (c) naive per-file loop       read, resample, forward, one .npy per utterance per layer

and, in child processes, the peak RSS of `ser extract` on N and on 10 x N utterances.
Also the speed at several batch sizes, of the forward alone and of `ser extract --batch-size`
(why CPU extraction uses batch 1 by default).

With `--families`, instead: `ser extract` speed of every backbone family on the same corpus,
each at base size (12 blocks x 768, random weights; Whisper = whisper-small's encoder), as
audio-seconds per second and as a ratio to wav2vec2-base measured in the same run; plus
Whisper on 30 s clips of the same audio, which shows what its 30 s padding costs short clips.

    python bench/extract.py --n 40 --scale 10 [--device cpu|cuda]
    python bench/extract.py --families --n 12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch


def build_base_model(directory: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(directory)
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    return directory


BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def build_family(family: str, directory: Path) -> Path:
    """A base-size model of `family` with random weights, saved with save_pretrained (model + feature extractor)."""
    import transformers as tf

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(0)
    waveform = dict(wav2vec2="Wav2Vec2", hubert="Hubert", wavlm="WavLM", unispeech="UniSpeech",
                    data2vec_audio="Data2VecAudio", unispeech_sat="UniSpeechSat", wav2vec2_conformer="Wav2Vec2Conformer")
    if family in waveform:
        name = waveform[family]
        model, fe = getattr(tf, f"{name}Model")(getattr(tf, f"{name}Config")(**BASE)), tf.Wav2Vec2FeatureExtractor()
    elif family == "w2v_bert":
        model = tf.Wav2Vec2BertModel(tf.Wav2Vec2BertConfig(**BASE, output_hidden_size=768))
        fe = tf.SeamlessM4TFeatureExtractor()
    elif family == "whisper":
        model = tf.WhisperModel(tf.WhisperConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12,
                                                 encoder_ffn_dim=3072, decoder_layers=1, decoder_attention_heads=12,
                                                 decoder_ffn_dim=768, vocab_size=64, max_target_positions=16,
                                                 pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                 decoder_start_token_id=1))
        fe = tf.WhisperFeatureExtractor()
    else:
        raise ValueError(family)
    model.save_pretrained(directory)
    fe.save_pretrained(directory)
    return directory


def family_throughput(work: Path, manifest, device: str) -> None:
    """`ser extract` audio-s/s per family on the same corpus, and Whisper on 30 s clips of the same audio."""
    from featstore.corpora import load_manifest

    families = ["wav2vec2", "hubert", "wavlm", "data2vec_audio", "unispeech", "unispeech_sat", "wav2vec2_conformer",
                "w2v_bert", "whisper", "opensmile:eGeMAPSv02", "opensmile:ComParE_2016"]
    models = {f: f if f.startswith("opensmile:") else str(build_family(f, work / "models" / f)) for f in families}
    warm = dataclasses.replace(manifest, utterances=manifest.utterances[:2])
    ser_extract(models["wav2vec2"], warm, device, work / "cache-families")  # warm-up: imports, first load
    speeds = {}
    # wav2vec2 first and last: the shared machine's drift over the run shows in the two
    for family in [*families, "wav2vec2"]:
        seconds, wall = ser_extract(models[family], manifest, device, work / "cache-families")
        speed = seconds / wall
        speeds[family] = (speeds[family] + speed) / 2 if family in speeds else speed
        print(f"{family:24s} {speed:7.1f} audio-s/s  ({seconds:.0f} s of audio in {wall:.1f} s)", flush=True)
    long_root = work / "long-clips"
    if not long_root.exists():
        _thirty_second_corpus(manifest, long_root)
    long = load_manifest("csv", long_root / "clips.csv")
    seconds, wall = ser_extract(str(work / "models" / "whisper"), long, device, work / "cache-families")
    whole = seconds / wall
    mean = sum(u.duration for u in manifest.utterances) / len(manifest)
    print(f"{'whisper, 30 s clips':24s} {whole:7.1f} audio-s/s  ({seconds:.0f} s of audio in {wall:.1f} s)")
    base = speeds["wav2vec2"]
    print("ratio to wav2vec2-base (mean of its first and last run): " + ", ".join(f"{f} {v / base:.2f}" for f, v in speeds.items()))
    print(f"whisper padding cost: {mean:.1f} s clips run at {speeds['whisper']:.1f} audio-s/s, 30 s clips at "
          f"{whole:.1f}: short clips are {whole / speeds['whisper']:.1f}x slower per audio second "
          f"(30 s / {mean:.1f} s = {30 / mean:.1f}x more frames computed than kept)")


def _thirty_second_corpus(manifest, root: Path) -> None:
    """The corpus' audio (at 16 kHz) concatenated into 30 s clips, as a `csv` corpus."""
    from featstore.audio import load_audio

    root.mkdir(parents=True)
    audio = np.concatenate([load_audio(u.path, 16000) for u in manifest.utterances])
    rows = ["path,label,speaker"]
    for i in range(len(audio) // 480000):
        sf.write(root / f"clip{i}.wav", audio[i * 480000:(i + 1) * 480000], 16000)
        rows.append(f"clip{i}.wav,neutral,s{i}")
    (root / "clips.csv").write_text("\n".join(rows) + "\n")


def corpus(root: Path, n: int):
    from featstore.corpora import load_manifest
    from featstore.synth import synthesize

    if not root.exists():
        synthesize("ravdess", root, n=n, seed=0)
    return load_manifest("ravdess", root)


def pure_forward(model_dir: Path, manifest, device: str, batch_size: int = 1) -> tuple[float, float]:
    """(audio seconds, wall seconds) of model forward only, audio preloaded and normalised."""
    from featstore.audio import load_audio
    from featstore.backbones.runtime import hidden_states, load_backbone

    bb = load_backbone(str(model_dir), device=device)
    waves = [load_audio(u.path, 16000) for u in manifest.utterances]
    waves.sort(key=len)
    hidden_states(bb, waves[:1], device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(0, len(waves), batch_size):
        states, _ = hidden_states(bb, waves[i:i + batch_size], device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return sum(len(w) for w in waves) / 16000, time.perf_counter() - t


def ser_extract(model_dir: Path, manifest, device: str, cache: Path, batch_size: int | None = None) -> tuple[float, float]:
    from featstore.extract import extract_manifest

    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    res = extract_manifest(manifest, model=str(model_dir), cache=cache, device=device, progress=False,
                           batch_size=batch_size)
    wall = time.perf_counter() - t
    return res.audio_seconds, wall


def naive_loop(model_dir: Path, manifest, device: str, out: Path) -> tuple[float, float]:
    """What a research script does: per file read, resample, forward, np.save every layer."""
    from transformers import AutoModel

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    model = AutoModel.from_pretrained(model_dir).eval().to(device)
    seconds = 0.0
    for u in manifest.utterances:
        wave, sr = sf.read(u.path, dtype="float32")
        wave = soxr.resample(wave, sr, 16000)
        wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        seconds += len(wave) / 16000
        with torch.no_grad():
            hs = model(torch.from_numpy(wave)[None].to(device), output_hidden_states=True).hidden_states
        for k, h in enumerate(hs):
            np.save(out / f"{u.id}_layer{k}.npy", h[0].cpu().numpy())
    return seconds, time.perf_counter() - t


def rss_child(args) -> None:
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest

    manifest = load_manifest("ravdess", args.root)
    extract_manifest(manifest, model=args.model, cache=args.cache, device=args.device, progress=False)
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "n": len(manifest)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40, help="utterances in the timed corpus")
    p.add_argument("--scale", type=int, default=10, help="RSS check: N vs scale x N utterances (0 = skip)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="1,4,8", help="forward speed at these batch sizes")
    p.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    p.add_argument("--families", action="store_true", help="ser extract speed of every backbone family instead")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args)

    work = args.work or Path(tempfile.mkdtemp(prefix="ser-bench-"))
    if args.families:
        manifest = corpus(work / f"ravdess-{args.n}", args.n)
        print(f"corpus: {len(manifest)} RAVDESS-shaped utterances, {sum(u.duration for u in manifest.utterances):.0f} s "
              f"at 48 kHz; base-size models (12 x 768, random weights); device {args.device}, torch threads "
              f"{torch.get_num_threads()}")
        family_throughput(work, manifest, args.device)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        return
    model_dir = build_base_model(work / "wav2vec2-base-random")
    manifest = corpus(work / f"ravdess-{args.n}", args.n)
    total = sum(u.duration for u in manifest.utterances)
    print(f"corpus: {len(manifest)} RAVDESS-shaped utterances, {total:.0f} s at 48 kHz; model: wav2vec2-base "
          f"config (95M params, random weights); device {args.device}, torch threads {torch.get_num_threads()}")

    sb, wb = pure_forward(model_dir, manifest, args.device)
    sa, wa = ser_extract(model_dir, manifest, args.device, work / "cache")
    sc, wc = naive_loop(model_dir, manifest, args.device, work / "naive")
    a, b, c = sa / wa, sb / wb, sc / wc
    print(f"(a) ser extract          {a:7.1f} audio-s/s  ({wa:.1f} s)")
    print(f"(b) pure model forward   {b:7.1f} audio-s/s  ({wb:.1f} s)")
    print(f"(c) naive per-file loop  {c:7.1f} audio-s/s  ({wc:.1f} s)")
    print(f"(a)/(b) = {a / b:.2f}   (target >= 0.9)")
    print(f"(a)/(c) = {a / c:.2f}   (target >= 1.0 on CPU, >= 5 on GPU)")
    store = next((work / "cache").glob("*/ravdess.h5"))
    naive_bytes = sum(f.stat().st_size for f in (work / "naive").iterdir())
    print(f"disk: store {store.stat().st_size / 1e6:.1f} MB (pooled mean+std, all layers) vs naive "
          f"{naive_bytes / 1e6:.1f} MB in {len(list((work / 'naive').iterdir()))} .npy files")

    for bs in [int(x) for x in args.batch_sizes.split(",") if x]:
        s, w = pure_forward(model_dir, manifest, args.device, batch_size=bs)
        se, we = ser_extract(model_dir, manifest, args.device, work / f"cache-b{bs}", batch_size=bs)
        print(f"batch {bs:2d}: forward (length-sorted) {s / w:7.1f} audio-s/s, "
              f"ser extract --batch-size {bs} {se / we:7.1f} audio-s/s")

    if args.scale:
        big = corpus(work / f"ravdess-{args.n * args.scale}", args.n * args.scale)
        rss = []
        for m in (manifest, big):
            cache = work / f"rss-cache-{len(m)}"
            shutil.rmtree(cache, ignore_errors=True)
            out = subprocess.run([sys.executable, __file__, "--rss-child", "--root", m.root, "--model",
                                  str(model_dir), "--cache", str(cache), "--device", args.device],
                                 capture_output=True, text=True, check=True)
            rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r0, r1 = rss
        print(f"peak RSS: {r0['n']} utts {r0['maxrss_mb']:.0f} MB, {r1['n']} utts {r1['maxrss_mb']:.0f} MB, "
              f"ratio {r1['maxrss_mb'] / r0['maxrss_mb']:.2f} (target <= 1.2)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
