"""Fine-tuning every backbone family on the CPU: exactness and the cost of each family's input.

Models: randomly initialised, all the same size (hidden 256, 4 blocks, 4 heads, feed-forward 1024),
saved once into the work folder with the family's own feature extractor:

    wav2vec2            base-style (GroupNorm CNN feature encoder, standard 7 layers of 512 channels)
    wav2vec2-conformer  the same CNN, conformer blocks with relative positions
    wav2vec2-bert       w2v-BERT 2.0's layout (fbank stacked by 2 -> feature projection -> conformer)
    whisper             a Whisper encoder (80 mel bins, every clip padded to 30 s)

Clips: noise-like waveforms of random lengths in [0.5, --max-duration] s (seeded). For each family,
one thread, `EmotionClassifier` with the mean head, nothing frozen:

    inputs ms/clip    computing one clip's model inputs (`classifiers.finetuning.finetune.clip_inputs`): per-clip
                      normalisation, or the family's log-mel / fbank front-end
    batched vs alone  max |logits(padded batch) - logits(each clip alone)| (eval mode)
    step s, steps/s   one optimiser step (forward, backward, AdamW) on a batch of --batch clips,
                      the median of --steps steps after one warm-up step

    python bench/finetune_families.py [--batch 8] [--steps 5] [--max-duration 4] [--work /tmp/ser-bench-families]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

SIZE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


def build(family: str, directory: Path) -> Path:
    """A random model of `family` at SIZE, saved with save_pretrained beside its feature extractor."""
    import torch
    import transformers as tf

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(0)
    wave_fe = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=family != "wav2vec2")
    if family == "wav2vec2":
        model, fe = tf.Wav2Vec2Model(tf.Wav2Vec2Config(**SIZE, layerdrop=0.0)), wave_fe
    elif family == "wav2vec2-conformer":
        model = tf.Wav2Vec2ConformerModel(tf.Wav2Vec2ConformerConfig(**SIZE, layerdrop=0.0,
                                                                     position_embeddings_type="relative"))
        fe = wave_fe
    elif family == "wav2vec2-bert":
        model = tf.Wav2Vec2BertModel(tf.Wav2Vec2BertConfig(**SIZE, output_hidden_size=256, layerdrop=0.0))
        fe = tf.SeamlessM4TFeatureExtractor()
    elif family == "whisper":
        model = tf.WhisperModel(tf.WhisperConfig(
            d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024, decoder_layers=1,
            decoder_attention_heads=4, decoder_ffn_dim=256, num_mel_bins=80, vocab_size=64, max_target_positions=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))
        fe = tf.WhisperFeatureExtractor(feature_size=80)
    else:
        raise ValueError(family)
    model.eval().save_pretrained(directory)
    fe.save_pretrained(directory)
    return directory


def measure(family: str, directory: Path, batch: int, steps: int, max_duration: float) -> dict:
    import numpy as np
    import torch

    from classifiers.finetuning.finetune import clip_inputs, collate
    from classifiers.finetuning.heads import build_classifier
    from featstore.backbones.runtime import normalize_waveform

    rng = np.random.default_rng(0)
    lengths = rng.integers(8000, int(max_duration * 16000), size=batch)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    clf = build_classifier(str(directory), ["a", "b", "c", "d"], pooling="mean", freeze="none", seed=0)
    started = time.perf_counter()
    items = [clip_inputs(normalize_waveform(w) if clf.config.do_normalize else w, clf.front_end) for w in waves]
    inputs_ms = 1000 * (time.perf_counter() - started) / batch
    clf.eval()
    with torch.no_grad():
        together = clf(**collate(items)).logits
        alone = torch.cat([clf(**collate([it])).logits for it in items])
    diff = float((together - alone).abs().max())
    clf.train()
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-4)
    batch_inputs = {**collate(items), "labels": torch.tensor(rng.integers(0, 4, size=batch))}
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = clf(**batch_inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    return {"family": family, "inputs_ms_per_clip": inputs_ms, "batched_vs_alone": diff, "step_s": step,
            "steps_per_s": 1 / step, "audio_s": float(lengths.sum() / 16000)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--max-duration", type=float, default=4.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ser-bench-families"))
    ap.add_argument("--families", default="wav2vec2,wav2vec2-conformer,wav2vec2-bert,whisper")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"batch {args.batch} clips of 0.5-{args.max_duration:g} s, 1 thread, hidden 256 x 4 blocks, mean head")
    print(f"{'family':20s} {'inputs ms/clip':>14s} {'batched vs alone':>17s} {'step s':>8s} {'steps/s':>8s}")
    for family in args.families.split(","):
        r = measure(family, build(family, args.work / family), args.batch, args.steps, args.max_duration)
        print(f"{family:20s} {r['inputs_ms_per_clip']:14.1f} {r['batched_vs_alone']:17.1e} {r['step_s']:8.2f} "
              f"{r['steps_per_s']:8.2f}")


if __name__ == "__main__":
    main()
