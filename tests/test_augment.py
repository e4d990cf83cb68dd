"""Waveform augmentations: seeded, sample-preserving, exact SNR, exact speed factor; spec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.finetuning.augment import (
    AddNoise,
    AugmentError,
    ChunkPermute,
    Compose,
    SpeedPerturb,
    augment_rng,
    describe_augment,
    parse_augment,
)

SR = 16000


@pytest.fixture()
def wave() -> np.ndarray:
    t = np.arange(SR) / SR
    rng = np.random.default_rng(1)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(SR)).astype(np.float32)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


def test_same_seed_same_output_other_seed_differs(wave):
    aug = parse_augment("chunk-permute:5@1,noise:5-25@1,speed@1")
    a = aug(wave, augment_rng(3, 0, 7))
    b = aug(wave, augment_rng(3, 0, 7))
    np.testing.assert_array_equal(a, b)
    others = [aug(wave, augment_rng(s, e, 7)) for s, e in ((4, 0), (3, 1))]
    assert all(len(o) != len(a) or not np.array_equal(o, a) for o in others)


@pytest.mark.parametrize("chunks", [2, 3, 4, 7])
def test_chunk_permute_keeps_every_sample(wave, chunks):
    out = ChunkPermute(chunks, p=1.0)(wave, np.random.default_rng(0))
    assert out.dtype == wave.dtype and out.shape == wave.shape
    np.testing.assert_array_equal(np.sort(out), np.sort(wave))   # same multiset of samples
    assert not np.array_equal(out, wave)                          # and really reordered
    pieces = np.array_split(wave, chunks)                         # made of the original chunks
    pos = 0
    for _ in range(chunks):
        match = [p for p in pieces if np.array_equal(out[pos:pos + len(p)], p)]
        assert match
        pos += len(match[0])
    assert pos == len(wave)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0, 35.0])
def test_noise_hits_requested_snr(wave, snr):
    out = AddNoise(snr, p=1.0)(wave, np.random.default_rng(2))
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert abs(_snr_db(wave, out) - snr) < 0.5


def test_noise_range_draws_within_range(wave):
    aug = AddNoise((10.0, 20.0), p=1.0)
    snrs = [_snr_db(wave, aug(wave, np.random.default_rng(s))) for s in range(8)]
    assert all(9.5 < s < 20.5 for s in snrs)
    assert max(snrs) - min(snrs) > 1.0


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.25])
def test_speed_changes_length_by_factor(wave, factor):
    out = SpeedPerturb((factor,), p=1.0)(wave, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert abs(len(out) - len(wave) / factor) <= 1
    # tempo and pitch move together: the 220 Hz tone moves to 220 * factor Hz
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak = np.argmax(spectrum) * SR / len(out)
    assert abs(peak - 220 * factor) < 3


def test_probability_zero_is_identity_and_one_always_applies(wave):
    rng = np.random.default_rng(0)
    for t in (ChunkPermute(p=0.0), AddNoise(p=0.0), SpeedPerturb((1.1,), p=0.0)):
        assert t(wave, rng) is wave
    applied = [not np.array_equal(AddNoise(20.0, p=0.5)(wave, np.random.default_rng(s)), wave) for s in range(40)]
    assert 5 < sum(applied) < 35


def test_parse_specs():
    aug = parse_augment("chunk-permute,noise")
    assert isinstance(aug, Compose)
    assert [type(t) for t in aug.transforms] == [ChunkPermute, AddNoise]
    assert aug.transforms[0].chunks == 4 and aug.transforms[0].p == 0.5
    aug = parse_augment("chunk-permute:3@1, noise:15@0.2, speed:0.9/1.1")
    assert aug.transforms[0] == ChunkPermute(3, 1.0)
    assert aug.transforms[1] == AddNoise(15.0, 0.2)
    assert aug.transforms[2] == SpeedPerturb((0.9, 1.1), 0.5)
    assert describe_augment(aug) == "chunk-permute:3@1,noise:15@0.2,speed:0.9/1.1@0.5"
    assert parse_augment(describe_augment(aug)) == aug
    for empty in (None, "", "none"):
        assert not parse_augment(empty)
        assert describe_augment(parse_augment(empty)) == "none"


@pytest.mark.parametrize("bad", ["reverb", "chunk-permute:1", "chunk-permute:x", "noise:loud", "speed:-1",
                                 "noise@2", "noise:30-10"])
def test_bad_specs_raise_with_a_message(bad):
    with pytest.raises(AugmentError):
        parse_augment(bad)
