"""Audio inside containers (.mp4/.avi/.webm, PyAV) and segments of long files (PAVOQUE).

Containers are written here with PyAV (`featstore.synth.write_container`) from a known waveform
and must decode back to it; a segment read must equal the slice of the whole file and read only
that span; bad inputs are one-line problems and skips, and extraction runs and resumes over
synthetic MELD (containers) and PAVOQUE (segments) trees.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from featstore.audio import audio_info, load_audio
from featstore.corpora import Manifest, get_corpus
from featstore.errors import TruncatedAudio, UnreadableAudio
from featstore.synth import synthesize, write_container

RATE = 16000


def source_wave(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("suffix,codec,tolerance", [(".mp4", "alac", 1e-4), (".avi", None, 1e-4),
                                                     (".webm", None, 0.05)])
def test_container_decodes_to_the_source(tmp_path, suffix, codec, tolerance):
    wave = source_wave()
    path = tmp_path / f"clip{suffix}"
    write_container(path, wave, RATE, codec=codec)
    frames, rate, channels = audio_info(path)
    decoded_rate = 48000 if suffix == ".webm" else RATE  # Opus always decodes at 48 kHz
    assert (rate, channels) == (decoded_rate, 1)
    # header durations may count the codec's last padded frame (Opus: 20 ms)
    assert abs(frames * RATE / rate - len(wave)) <= 0.03 * RATE
    got = load_audio(path, RATE)
    assert abs(len(got) - len(wave)) <= 0.01 * len(wave)
    n = min(len(got), len(wave))
    assert np.abs(got[:n] - wave[:n]).max() < tolerance  # lossless codecs exact to 16 bits, Opus close
    assert np.corrcoef(got[:n], wave[:n])[0, 1] > 0.99


def test_aac_mp4_as_meld_decodes_and_resamples(tmp_path):
    wave = source_wave(rate=48000)
    path = tmp_path / "dia0_utt0.mp4"
    write_container(path, wave, 48000)  # AAC, like MELD's clips
    got = load_audio(path, RATE)
    ref = soxr.resample(wave, 48000, RATE)
    # AAC's encoder delay shifts the decoded signal by up to one frame (1024 samples at 48 kHz)
    best = max(np.corrcoef(got[lag:lag + 12000], ref[:12000])[0, 1] for lag in range(0, 400, 1))
    assert best > 0.98 and abs(len(got) - len(ref)) <= 400


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_segment_read_equals_the_slice_of_the_whole_file(tmp_path, fmt):
    wave = source_wave(3.0, 44100)
    path = tmp_path / f"long.{fmt.lower()}"
    sf.write(path, wave, 44100, format=fmt, subtype="PCM_16")
    whole = load_audio(path, None)
    a, b = int(round(0.5 * 44100)), int(round(1.25 * 44100))
    np.testing.assert_array_equal(load_audio(path, None, start=0.5, end=1.25), whole[a:b])
    np.testing.assert_array_equal(load_audio(path, RATE, start=0.5, end=1.25),
                                  soxr.resample(whole[a:b], 44100, RATE, quality="HQ"))


def test_segment_of_a_container_equals_its_slice(tmp_path):
    path = tmp_path / "clip.avi"
    write_container(path, source_wave(2.0), RATE)
    whole = load_audio(path, None)
    np.testing.assert_array_equal(load_audio(path, None, start=0.25, end=1.0), whole[4000:16000])


def test_segment_reading_memory_does_not_grow_with_the_file(tmp_path):
    peaks = []
    for seconds in (2, 240):  # 240 s at 16 kHz: a whole-file read would take 15 MB
        path = tmp_path / f"rec{seconds}.flac"
        sf.write(path, np.zeros(seconds * RATE, dtype=np.int16), RATE, format="FLAC", subtype="PCM_16")
        tracemalloc.start()
        load_audio(path, RATE, start=1.0, end=1.9)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1_000_000 and peaks[1] < 2 * peaks[0] + 200_000, peaks


def test_bad_containers_and_segments_are_one_line_errors(tmp_path):
    video_only = tmp_path / "video_only.mp4"
    write_container(video_only, np.zeros(10, dtype=np.float32), RATE, audio=False)
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"\x1aE\xdf\xa3 not really a webm" * 20)
    short = tmp_path / "short.flac"
    sf.write(short, np.zeros(RATE, dtype=np.int16), RATE, format="FLAC")
    cases = [(video_only, {}, "no audio track"), (garbage, {}, "not a readable audio file"),
             (short, dict(start=0.5, end=3.0), "outside the file"), (short, dict(start=2.0, end=3.0), "outside")]
    for path, kw, words in cases:
        with pytest.raises(UnreadableAudio, match=words) as info:
            load_audio(path, RATE, **kw)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.fixture(scope="module")
def bad_trees(tmp_path_factory):
    """Synthetic MELD and PAVOQUE trees, each with bad inputs added beside good ones."""
    root = tmp_path_factory.mktemp("bad")
    meld = synthesize("meld", root / "meld", n=6, max_duration=0.6).out
    split_dir = meld / "train" / "train_splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    write_container(split_dir / "dia9000_utt0.mp4", np.zeros(10, dtype=np.float32), RATE, audio=False)
    (split_dir / "dia9000_utt1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken" * 10)
    write_container(split_dir / "dia9000_utt2.mp4", source_wave(0.5), RATE)
    with (meld / "train_sent_emo.csv").open("a", encoding="utf-8") as f:
        for utt, label in ((0, "neutral"), (1, "joy"), (2, "contempt")):
            f.write(f'90{utt},"",Ross,{label},neutral,9000,{utt},1,1,"00:00:00,000","00:00:01,000"\n')
    pavoque = synthesize("pavoque", root / "pavoque", n=5, max_duration=0.6).out
    yaml_path = next(pavoque.glob("*.yaml"))
    with yaml_path.open("a", encoding="utf-8") as f:
        f.write("- {prompt: x9999, start: 500.0, end: 501.5}\n")
    return meld, pavoque


def test_bad_inputs_are_problems_and_the_rest_loads(bad_trees):
    meld_root, pavoque_root = bad_trees
    meld = get_corpus("meld").load(meld_root)
    assert len(meld) == 6
    reasons = {Path(p.path).name: p.reason for p in meld.problems}
    assert set(reasons) == {"dia9000_utt0.mp4", "dia9000_utt1.mp4", "dia9000_utt2.mp4"}
    assert "no audio track" in reasons["dia9000_utt0.mp4"]
    assert "unreadable audio" in reasons["dia9000_utt1.mp4"]
    assert "unknown label code 'contempt'" in reasons["dia9000_utt2.mp4"]
    pavoque = get_corpus("pavoque").load(pavoque_root)
    assert len(pavoque) == 5
    [problem] = pavoque.problems
    assert "x9999" in problem.reason and "past the end of the file" in problem.reason
    assert all("\n" not in p.reason for p in [*meld.problems, *pavoque.problems])


@pytest.mark.parametrize("corpus", ["meld", "pavoque"])
def test_extract_runs_and_resumes_over_containers_and_segments(corpus, bad_trees, tiny_models, tmp_path,
                                                               one_torch_thread):
    from featstore.extract import extract_manifest
    from featstore.store import open_store

    root = bad_trees[0] if corpus == "meld" else bad_trees[1]
    manifest = get_corpus(corpus).load(root)
    kw = dict(model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu", progress=False)
    part = Manifest(manifest.corpus, manifest.root, manifest.utterances[:3], manifest.problems)
    assert extract_manifest(part, **kw).extracted == 3
    first = extract_manifest(manifest, **kw)  # resumes: only the utterances not yet in the store
    assert first.extracted == len(manifest) - 3 and first.already == 3
    again = extract_manifest(manifest, **kw)
    assert again.up_to_date and again.extracted == 0
    fs = open_store(first.store)
    stored_by_id = {u.id: u for u in fs.utterances}
    assert sorted(stored_by_id) == sorted(u.id for u in manifest)
    assert len(fs.skipped) == len(manifest.problems) > 0
    import h5py

    with h5py.File(first.store, "r") as f:
        n_samples = dict(zip((i.decode() for i in f["utterances/id"][()]), f["utterances/n_samples"][()]))
    for u in manifest:
        stored = stored_by_id[u.id]
        assert (stored.start, stored.end) == (u.start, u.end) and stored.path == u.path
        # the model saw the utterance's span (segments: not the whole recording), at 16 kHz
        assert abs(int(n_samples[u.id]) - u.duration * RATE) <= 0.01 * RATE + 0.025 * u.duration * RATE
    assert np.isfinite(fs.pooled(1)).all()


@pytest.mark.parametrize("codec", ["pcm_u8", "pcm_s32le"])
def test_integer_pcm_tracks_scale_to_the_source(tmp_path, codec):
    wave = source_wave(0.5)
    path = tmp_path / "clip.avi"
    write_container(path, wave, RATE, codec=codec)
    got = load_audio(path, None)
    n = min(len(got), len(wave))
    assert np.abs(got[:n] - wave[:n]).max() < (0.01 if codec == "pcm_u8" else 1e-4)  # u8: 1/128 steps


def cut_tail(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("suffix,keep", [(".webm", 0.6), (".webm", 0.95), (".mp4", 0.6), (".avi", 0.6)])
def test_truncated_container_is_refused_not_read_short(tmp_path, suffix, keep):
    import av

    path = tmp_path / f"cut{suffix}"
    write_container(path, source_wave(2.0), RATE)
    cut_tail(path, keep)
    if suffix == ".webm":  # what made this silent: ffmpeg decodes the rest without a word
        with av.open(str(path)) as c:
            assert 0 < sum(f.samples for f in c.decode(c.streams.audio[0])) < 0.99 * 2 * 48000
    for read in (load_audio, audio_info):
        with pytest.raises(TruncatedAudio) as info:
            read(path)
        reason = info.value.reason
        assert reason.startswith("truncated") and "bytes" in reason and "re-download" in reason, reason
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_container_cut_mid_data_with_the_index_first_is_truncated(tmp_path):
    """An MP4 with its index (moov) before the samples: the cut file opens, then decoding fails part-way."""
    import av

    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(source_wave(2.0)[None], format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert load_audio(path, RATE).shape[0] > 2 * RATE
    cut_tail(path, 0.6)
    with pytest.raises(TruncatedAudio, match="truncated") as info:
        load_audio(path, RATE)
    assert "\n" not in str(info.value)


def test_intact_containers_are_not_called_truncated(tmp_path):
    """The normal slack between header durations and decoded samples (Opus pre-skip, AAC priming, the last
    codec frame) over rates and lengths, measured on PyAV-written files."""
    rng = np.random.default_rng(1)
    for suffix in (".webm", ".mp4", ".avi", ".mov"):
        for rate in (8000, 22050, 48000):
            for seconds in (0.3, 1.37):
                path = tmp_path / f"ok{rate}{suffix}"
                write_container(path, (0.1 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate)
                frames, sr, _ = audio_info(path)  # raises TruncatedAudio if the slack were too tight
                # AAC decodes its priming and padding too: up to two 1024-sample frames more
                assert seconds - 0.03 <= frames / sr <= seconds + 2048 / rate + 0.03, (suffix, rate, seconds)


def lie_about_duration(path: Path, seconds: float) -> None:
    """Patch an MP4's header durations (mvhd, tkhd, mdhd, the edit list, the sample-time table) to `seconds`.

    Only the tables change: every sample is still there, so the file decodes as before.
    """
    data = bytearray(path.read_bytes())

    def box(tag: bytes) -> int:
        return data.index(tag) - 4  # where the box starts (its size comes first)

    mvhd, mdhd, tkhd, elst, stts = box(b"mvhd"), box(b"mdhd"), box(b"tkhd"), box(b"elst"), box(b"stts")
    movie_scale = struct.unpack(">I", data[mvhd + 20:mvhd + 24])[0]
    media_scale = struct.unpack(">I", data[mdhd + 20:mdhd + 24])[0]
    assert data[mvhd + 8] == data[mdhd + 8] == data[tkhd + 8] == data[elst + 8] == 0  # version-0 boxes
    data[mvhd + 24:mvhd + 28] = struct.pack(">I", int(seconds * movie_scale))
    data[tkhd + 28:tkhd + 32] = struct.pack(">I", int(seconds * movie_scale))
    data[mdhd + 24:mdhd + 28] = struct.pack(">I", int(seconds * media_scale))
    data[elst + 16:elst + 20] = struct.pack(">I", int(seconds * movie_scale))
    count = struct.unpack(">I", data[stts + 16:stts + 20])[0]
    data[stts + 16:stts + 24] = struct.pack(">II", count, int(seconds * media_scale / count))
    path.write_bytes(bytes(data))


def test_mp4_claiming_37_hours_is_stored_with_its_decoded_duration(tmp_path, tiny_models, one_torch_thread):
    import av

    from featstore.extract import extract_manifest
    from featstore.store import open_store

    meld = synthesize("meld", tmp_path / "meld", n=3, max_duration=0.6).out
    liar = meld / "train" / "train_splits" / "dia9001_utt0.mp4"
    write_container(liar, source_wave(2.0), RATE, codec="alac")
    lie_about_duration(liar, 37 * 3600)
    with av.open(str(liar)) as c:  # the lie took: PyAV reports 37 h
        assert c.duration / av.time_base > 36 * 3600
    with (meld / "train_sent_emo.csv").open("a", encoding="utf-8") as f:
        f.write('9100,"",Ross,joy,neutral,9001,0,1,1,"00:00:00,000","00:00:02,000"\n')
    frames, rate, _ = audio_info(liar)
    assert abs(frames / rate - 2.0) < 0.01
    manifest = get_corpus("meld").load(meld)
    [u] = [u for u in manifest if u.path == str(liar)]
    assert abs(u.duration - 2.0) < 0.01
    result = extract_manifest(manifest, model=str(tiny_models["group"]), cache=tmp_path / "cache", device="cpu",
                              progress=False)
    fs = open_store(result.store)
    [stored] = [s for s in fs.utterances if s.id == u.id]
    assert abs(stored.duration - 2.0) < 0.01 and not fs.skipped
    assert abs(result.audio_seconds - sum(x.duration for x in manifest)) < 0.1
