"""load_audio / audio_info: formats, mix-down, resampling, and one typed error per failure."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from featstore.audio import audio_info, load_audio
from featstore.errors import AudioError, EmptyAudio, NonFiniteAudio, TooShortAudio, TruncatedAudio, UnreadableAudio


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = sine(220, 16000, 0.5), sine(330, 16000, 0.5, amp=0.25)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    stored, _ = sf.read(path, dtype="float32")          # what the file holds after 16-bit rounding
    x = load_audio(path)
    assert x.dtype == np.float32 and x.shape == (8000,)
    np.testing.assert_allclose(x, stored.mean(axis=1), atol=1e-7)
    assert not np.allclose(x, stored[:, 0], atol=1e-3)  # not just the first channel


def test_8bit_unsigned_is_centred_and_scaled(tmp_path):
    path = tmp_path / "u8.wav"
    ref = sine(200, 16000, 0.25)
    sf.write(path, ref, 16000, subtype="PCM_U8")
    x = load_audio(path)
    assert x.shape == ref.shape
    assert abs(float(x.mean())) < 0.01                   # unsigned offset removed
    np.testing.assert_allclose(x, ref, atol=1.5 / 128)   # 8-bit quantisation


def test_96k_24bit_is_resampled_with_its_frequency_kept(tmp_path):
    path = tmp_path / "hi.wav"
    sf.write(path, sine(440, 96000, 1.0), 96000, subtype="PCM_24")
    x = load_audio(path, 16000)
    assert x.shape == (16000,)
    assert abs(peak_frequency(x, 16000) - 440) < 2
    assert 0.3 < np.sqrt(2 * np.mean(x[1000:-1000] ** 2)) < 0.6   # amplitude 0.5 survives resampling


def test_target_rate_none_keeps_the_file_rate(tmp_path):
    path = tmp_path / "22k.wav"
    sf.write(path, sine(1000, 22050, 0.2), 22050)
    assert load_audio(path, None).shape == (4410,)
    assert load_audio(path, 8000).shape == (1600,)


def test_float_wav_and_flac(tmp_path):
    sf.write(tmp_path / "f.wav", sine(300, 16000, 0.1, amp=1.5), 16000, subtype="FLOAT")
    x = load_audio(tmp_path / "f.wav")
    assert x.max() > 1.4                                   # float files are not clipped
    sf.write(tmp_path / "s.flac", np.stack([sine(500, 44100, 0.5)] * 2, axis=1), 44100, format="FLAC")
    y = load_audio(tmp_path / "s.flac")
    assert y.shape == (8000,) and abs(peak_frequency(y, 16000) - 500) < 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    path = tmp_path / "nan.wav"
    data = sine(300, 16000, 0.1).astype(np.float32)
    data[17] = bad
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudio, match="nan.wav"):
        load_audio(path)


def test_zero_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1)), 16000)
    with pytest.raises(EmptyAudio, match="empty.wav"):
        load_audio(path)


def test_unreadable_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, sine(300, 16000, 0.1), 16000)
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:30])   # header cut mid-fmt chunk
    (tmp_path / "garbage.wav").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "notes.txt").write_text("not audio at all\n")
    (tmp_path / "zero.wav").write_bytes(b"")
    for name in ["truncated.wav", "garbage.wav", "notes.txt", "zero.wav", "missing.wav"]:
        with pytest.raises(UnreadableAudio) as info:
            load_audio(tmp_path / name)
        assert name in str(info.value) and info.value.path == str(tmp_path / name)
        assert isinstance(info.value, AudioError)
    with pytest.raises(UnreadableAudio, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(UnreadableAudio, match="directory"):
        load_audio(tmp_path)


def test_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions cannot deny root a read")
    path = tmp_path / "locked.wav"
    sf.write(path, sine(300, 16000, 0.1), 16000)
    path.chmod(0)
    try:
        with pytest.raises(UnreadableAudio, match="permission denied"):
            load_audio(path)
    finally:
        path.chmod(0o644)


def test_too_short_names_file_count_and_minimum(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, np.full(300, 0.1), 16000)
    with pytest.raises(TooShortAudio) as info:
        load_audio(path)
    message = str(info.value)
    assert "blip.wav" in message and "300 samples" in message and "400" in message
    # counted after resampling: 1000 samples at 48 kHz are 333 at 16 kHz
    sf.write(tmp_path / "b48.wav", np.full(1000, 0.1), 48000)
    with pytest.raises(TooShortAudio, match="333 samples"):
        load_audio(tmp_path / "b48.wav")
    sf.write(tmp_path / "ok48.wav", np.full(1300, 0.1), 48000)
    assert load_audio(tmp_path / "ok48.wav").shape == (433,)
    assert load_audio(path, min_samples=1).shape == (300,)


def test_audio_info_reads_the_header(tmp_path):
    path = tmp_path / "st.wav"
    sf.write(path, np.zeros((1234, 2)), 44100)
    assert audio_info(path) == (1234, 44100, 2)
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(UnreadableAudio, match="t.txt"):
        audio_info(tmp_path / "t.txt")


def test_zero_byte_file_says_empty_file(tmp_path):
    """A 0-byte file is named as such, not as a broken header, by both readers."""
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    for read in (load_audio, audio_info):
        with pytest.raises(UnreadableAudio) as info:
            read(path)
        assert info.value.reason.startswith("empty file (0 bytes)") and "header" not in info.value.reason


def cut_tail(path, keep: float) -> None:
    """Keep the first `keep` of the file's bytes: what an interrupted copy or download leaves."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_truncated_wav_is_refused_not_read_short(tmp_path, subtype):
    path = tmp_path / "cut.wav"
    sf.write(path, sine(300, 16000, 1.0), 16000, subtype=subtype)
    cut_tail(path, 0.6)
    assert sf.info(str(path)).frames < 10000  # libsndfile alone reads the rest as a 0.6 s clip
    for read in (load_audio, audio_info):
        with pytest.raises(TruncatedAudio) as info:
            read(path)
        reason = info.value.reason
        assert isinstance(info.value, UnreadableAudio)  # manifests and extraction list it as unreadable
        assert reason.startswith("truncated") and "1.00 s" in reason and "re-download" in reason
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(TruncatedAudio):  # a segment of a cut file too
        load_audio(path, start=0.1, end=0.3)


def test_truncated_flac_is_refused_with_where_decoding_stops(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, sine(300, 16000, 3.0), 16000, format="FLAC")
    cut_tail(path, 0.5)
    with pytest.raises(TruncatedAudio, match=r"declares 3\.00 s but decoding stops at") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


def test_wav_length_slack_and_streamed_headers_are_not_truncation(tmp_path):
    path = tmp_path / "few_bytes.wav"
    sf.write(path, sine(300, 16000, 1.0), 16000, subtype="PCM_16")
    cut_tail(path, 1 - 20 / path.stat().st_size)  # 10 samples (0.6 ms) short: within the 20 ms slack
    assert load_audio(path).shape == (15990,)
    streamed = tmp_path / "streamed.wav"  # a writer that never filled in the sizes (0xFFFFFFFF)
    sf.write(streamed, sine(300, 16000, 0.5), 16000, subtype="PCM_16")
    data = bytearray(streamed.read_bytes())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"
    assert data[36:40] == b"data"
    streamed.write_bytes(bytes(data))
    assert load_audio(streamed).shape == (8000,)
