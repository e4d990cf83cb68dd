"""Synthetic corpora: real layout, rates and durations; determinism; balance; learnable emotions."""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from featstore.corpora import get_corpus
from featstore.corpora.iemocap import parse_emo_evaluation
from featstore.errors import CorpusError, SerError
from featstore.labels import EMOBOX_TO_CANONICAL
from featstore.reference import reference
from featstore.synth import MARKER, SynthError, balanced_subset, make_voice, synth_corpora, synthesize


def wavs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))


# -- layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("corpus", ["ravdess", "subesco", "shemo", "cafe"])
def test_real_relpaths_rates_and_capped_durations(tmp_path, corpus):
    res = synthesize(corpus, tmp_path, n=12, seed=3, max_duration=0.25)
    table = {f.relpath: f for f in reference(corpus).files}
    assert res.n_files == 12 and wavs(tmp_path) == sorted(res.relpaths)
    for rel in res.relpaths:
        ref = table[rel]                                   # KeyError: a path EmoBox does not list
        info = sf.info(str(tmp_path / rel))
        assert info.samplerate == ref.sample_rate and info.channels == 1 and info.subtype == "PCM_16"
        assert info.frames == round(min(ref.duration, 0.25) * ref.sample_rate)


def test_real_durations_without_cap_and_rate_override(tmp_path):
    res = synthesize("emodb", tmp_path / "real", n=6, seed=0)
    table = {f.relpath: f for f in reference("emodb").files}
    for rel in res.relpaths:
        assert sf.info(str(tmp_path / "real" / rel)).frames == table[rel].num_frames
    assert res.seconds == pytest.approx(sum(table[r].duration for r in res.relpaths))

    res = synthesize("tess", tmp_path / "low", n=10, seed=0, max_duration=0.3, sample_rate=8000)
    for rel in res.relpaths:
        info = sf.info(str(tmp_path / "low" / rel))
        assert info.samplerate == 8000 and info.frames == round(min(table_dur("tess", rel), 0.3) * 8000)


def table_dur(corpus: str, rel: str) -> float:
    return next(f.duration for f in reference(corpus).files if f.relpath == rel)


def test_loader_reads_the_tree_as_synthesized(tmp_path):
    res = synthesize("ravdess", tmp_path, n=240, seed=0, max_duration=0.05, sample_rate=8000)
    m = get_corpus("ravdess").load(tmp_path)
    assert not m.problems and len(m) == 240
    assert {u.id for u in m} == {f.key for f in res.files}
    # balanced: all 24 actors x 10, all 8 emotions x 30
    assert sorted(m.speaker_counts().values()) == [10] * 24
    assert sorted(m.label_counts().values()) == [30] * 8
    assert sorted(res.label_counts().values()) == [30] * 8 and len(res.speakers()) == 24
    text = res.summary()
    assert "240 synthetic ravdess files" in text and "24 speakers" in text and "calm 30" in text


def test_balanced_subset_spreads_speakers_then_labels():
    speakers = ["a"] * 50 + ["b"] * 5 + ["c"] * 5
    labels = (["x", "y"] * 30)
    pick = balanced_subset(speakers, labels, 12, seed=1)
    assert len(set(pick)) == 12 and pick == sorted(pick)
    assert Counter(speakers[i] for i in pick) == {"a": 4, "b": 4, "c": 4}
    assert Counter(labels[i] for i in pick) == {"x": 6, "y": 6}
    assert balanced_subset(speakers, labels, 100) == list(range(60))


def test_iemocap_writes_loadable_evaluation_files(tmp_path):
    res = synthesize("iemocap", tmp_path, n=40, seed=0, max_duration=0.3, sample_rate=8000)
    emobox = {f.key: f for f in reference("iemocap").files}
    evaluations = sorted(tmp_path.glob("Session*/dialog/EmoEvaluation/*.txt"))
    assert evaluations and sorted(res.annotations) == [p.relative_to(tmp_path).as_posix() for p in evaluations]
    turns = {}
    for path in evaluations:
        dialog_turns = parse_emo_evaluation(path.read_text(encoding="utf-8"))
        for before, after in zip(dialog_turns, dialog_turns[1:]):
            assert after.start > before.end                 # consecutive, not overlapping
        for t in dialog_turns:
            wav = path.parents[2] / "sentences" / "wav" / path.stem / f"{t.utterance}.wav"
            assert t.end - t.start == pytest.approx(sf.info(str(wav)).duration, abs=1e-3)
            turns[t.utterance] = t.label
    assert turns == {key.removeprefix("iemocap-"): emobox[key].label_raw for key in (f.key for f in res.files)}

    m = get_corpus("iemocap").load(tmp_path)
    assert not m.problems and len(m) == 40
    label_map = reference("iemocap").label_map
    for u in m:
        assert u.label == EMOBOX_TO_CANONICAL[label_map[emobox[u.id].label_raw]]
    assert len(m.speaker_counts()) == 10 and sorted(m.label_counts().values()) == [10] * 4


def test_cremad_gender_comes_from_the_demographics_file(tmp_path):
    res = synthesize("cremad", tmp_path, n=20, seed=0, max_duration=0.2, sample_rate=8000)
    assert (tmp_path / "VideoDemographics.csv").exists() and "VideoDemographics.csv" in res.annotations
    m = get_corpus("cremad").load(tmp_path)
    assert {u.gender for u in m} == {"male", "female"}
    assert {u.id: u.gender for u in m} == {f.key: f.gender for f in res.files}


def test_every_emobox_corpus_synthesizes_and_loads(tmp_path):
    for corpus in synth_corpora():
        res = synthesize(corpus, tmp_path / corpus, n=8, seed=0, max_duration=0.1, sample_rate=8000)
        m = get_corpus(corpus).load(tmp_path / corpus)
        assert not m.problems, (corpus, m.problems[:2])
        assert {u.id: (u.label, u.speaker) for u in m} == {
            f.key: (f.label, f"{corpus}-{f.speaker}") for f in res.files}


# -- determinism and safety -----------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def run(name, seed, n=None):
        synthesize("urdu", tmp_path / name, n=n, seed=seed, max_duration=0.05, sample_rate=4000)
        return {rel: (tmp_path / name / rel).read_bytes() for rel in wavs(tmp_path / name)}

    a, b, c = run("a", 0), run("b", 0), run("c", 1)       # every urdu file: same paths each time
    assert len(a) == 400 and a == b
    assert set(a) == set(c) and all(a[k] != c[k] for k in a)
    assert set(run("d", 0, n=40)) != set(run("e", 1, n=40))   # the subset depends on the seed too


def test_rerun_replaces_its_own_files_and_refuses_foreign_dirs(tmp_path):
    synthesize("ravdess", tmp_path / "s", n=24, seed=0, max_duration=0.1, sample_rate=8000)
    before = wavs(tmp_path / "s")
    with pytest.raises(SynthError, match="pass --overwrite"):       # even a corpus synth wrote itself
        synthesize("ravdess", tmp_path / "s", n=8, seed=0, max_duration=0.1, sample_rate=8000)
    assert wavs(tmp_path / "s") == before
    (tmp_path / "s" / "notes.txt").write_text("mine")
    synthesize("ravdess", tmp_path / "s", n=8, seed=0, max_duration=0.1, sample_rate=8000, overwrite=True)
    assert len(wavs(tmp_path / "s")) == 8 and (tmp_path / "s" / MARKER).exists()
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"     # not listed in the marker: kept
    assert json.loads((tmp_path / "s" / MARKER).read_text())["complete"] is True
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "mine.wav").write_bytes(b"x")
    with pytest.raises(SerError, match="not empty"):
        synthesize("ravdess", tmp_path / "real", n=8)
    assert (tmp_path / "real" / "mine.wav").read_bytes() == b"x"
    with pytest.raises(CorpusError, match="ravdess"):
        synthesize("nosuchcorpus", tmp_path / "x")


# -- the signal -------------------------------------------------------------------------------------
def prosodic_features(x: np.ndarray, sr: int) -> list[float]:
    """Ten utterance-level prosodic descriptors, the kind openSMILE-style baselines use."""
    hop = sr // 100
    frames = np.lib.stride_tricks.sliding_window_view(x, 4 * hop)[::hop]          # 40 ms / 10 ms
    energy = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    active = energy > energy.max() - 30
    fa = frames[active] - frames[active].mean(axis=1, keepdims=True)
    n = fa.shape[1]
    power = np.abs(np.fft.rfft(fa * np.hanning(n), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / sr)
    centroid = (power * freqs).sum(1) / (power.sum(1) + 1e-12)
    tilt = np.log((power[:, freqs < 1000].sum(1) + 1e-12) / (power[:, freqs >= 1000].sum(1) + 1e-12))
    zcr = np.mean(np.abs(np.diff(np.sign(fa), axis=1)) > 0, axis=1)
    ac = np.fft.irfft(np.abs(np.fft.rfft(fa, 2 * n, axis=1)) ** 2, axis=1)[:, :n]
    ac = ac / (n - np.arange(n)) / (ac[:, :1] / n + 1e-12)                      # unbiased, normalised
    lag = sr // 500 + np.argmax(ac[:, sr // 500: sr // 60], axis=1)
    voiced = ac[np.arange(len(ac)), lag] > 0.6
    semitones = 12 * np.log2(sr / lag[voiced]) if voiced.sum() > 2 else np.zeros(3)
    times = np.flatnonzero(active)[voiced] / 100 if voiced.sum() > 2 else np.arange(3.0)
    envelope = np.where(active, energy, energy[active].min())
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean(), 1024))
    mod_freqs = np.fft.rfftfreq(1024, 0.01)
    band = (mod_freqs > 1.5) & (mod_freqs < 10)
    return [energy[active].mean(), energy[active].std(), np.log(centroid.mean()), tilt.mean(), zcr.mean(),
            np.median(semitones), np.percentile(semitones, 90) - np.percentile(semitones, 10),
            np.polyfit(times, semitones, 1)[0],
            (modulation[band] * mod_freqs[band]).sum() / modulation[band].sum(), voiced.mean()]


@pytest.fixture(scope="module")
def ravdess_features(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess")
    res = synthesize("ravdess", root, n=480, seed=0, max_duration=1.5, sample_rate=8000)
    X = np.array([prosodic_features(sf.read(str(root / f.relpath))[0], f.sample_rate) for f in res.files])
    return X, np.array([f.label for f in res.files]), np.array([f.speaker for f in res.files]), res


def test_emotions_are_separable_by_prosody_across_speakers(ravdess_features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, speakers, _ = ravdess_features
    Xn = X.copy()
    for s in np.unique(speakers):                      # per-speaker normalisation, as in SER practice
        rows = speakers == s
        Xn[rows] = (X[rows] - X[rows].mean(0)) / (X[rows].std(0) + 1e-9)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = cross_val_score(model, Xn, y, groups=speakers, cv=GroupKFold(4)).mean()
    shuffled = cross_val_score(model, Xn, np.random.default_rng(0).permutation(y), groups=speakers,
                               cv=GroupKFold(4)).mean()
    assert acc > 0.6, f"8-class speaker-independent accuracy {acc:.2f}"   # chance 0.125
    assert shuffled < 0.25                                                   # the features, not leakage


def test_gender_sets_the_pitch_register(ravdess_features):
    X, _, speakers, res = ravdess_features
    gender = {f.speaker: f.gender for f in res.files}
    pitch = {s: np.median(X[speakers == s, 5]) for s in np.unique(speakers)}        # semitones re 1 Hz
    male = [pitch[s] for s in pitch if gender[s] == "male"]
    female = [pitch[s] for s in pitch if gender[s] == "female"]
    assert len(male) == len(female) == 12
    assert max(male) < min(female)                     # ~115 Hz vs ~205 Hz registers


def test_voices_are_deterministic_and_distinct():
    assert make_voice("ravdess-01", "male", 0) == make_voice("ravdess-01", "male", 0)
    assert make_voice("ravdess-01", "male", 0) != make_voice("ravdess-03", "male", 0)
    assert make_voice("ravdess-01", "male", 0) != make_voice("ravdess-01", "male", 1)
    female = [make_voice(f"f{i}", "female", 0) for i in range(20)]
    male = [make_voice(f"m{i}", "male", 0) for i in range(20)]
    assert np.mean([v.f0 for v in female]) > 1.5 * np.mean([v.f0 for v in male])
    assert np.mean([v.formant_scale for v in female]) > 1.1 * np.mean([v.formant_scale for v in male])


def test_containers_and_segment_files_are_written_as_the_real_corpora_are(tmp_path):
    from featstore.audio import audio_info, load_audio
    from featstore.reference import track2

    meld = synthesize("meld", tmp_path / "meld", n=6, max_duration=0.4)
    assert all(rel.endswith(".mp4") for rel in meld.relpaths)
    assert sorted(meld.annotations) and all(a.endswith("_sent_emo.csv") for a in meld.annotations)
    for f in meld.files:
        frames, rate, _ = audio_info(tmp_path / "meld" / f.relpath)
        assert rate == 48000 and abs(frames - f.num_frames) <= 2048  # AAC frames of 1024 samples
    pavoque = synthesize("pavoque", tmp_path / "pavoque", n=10, max_duration=0.4, sample_rate=16000)
    assert len(pavoque.relpaths) < len(pavoque.files)  # several segments per recording
    m = get_corpus("pavoque").load(tmp_path / "pavoque")
    assert not m.problems and {u.id for u in m} == {f.key for f in pavoque.files}
    for u in m:  # each segment is exactly the utterance rendered for it, silence around it
        seg = load_audio(u.path, None, start=u.start, end=u.end)
        before = load_audio(u.path, None, start=max(0.0, u.start - 0.1), end=u.start)
        assert np.abs(seg).max() > 10 * max(np.abs(before).max(), 1e-4)
    keys = [key for key, _label, _speaker in track2("savee")][:5]
    assert sorted(f.key for f in synthesize("savee", tmp_path / "savee", keys=keys, max_duration=0.1).files) \
        == sorted(keys)


# -- the target directory: nothing outside it is ever deleted ------------------------------------
runner = CliRunner()
KW = dict(n=2, max_duration=0.05, sample_rate=8000)


def one_error_line(output: str) -> str:
    """The single `error:` line of a CLI run, whitespace normalised (rich may wrap)."""
    text = " ".join(output.split())
    assert text.count("error:") == 1 and "Traceback" not in output, output
    return text


def test_cli_repro_marker_listing_a_path_outside_deletes_nothing(tmp_path, monkeypatch):
    """Issue 28: `ser synth --out t` deleted ../victim.txt because t/.ser-synth.json listed it."""
    from cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "victim.txt").write_text("x")
    (tmp_path / "t" / "mine.wav").write_text("listed, inside")
    (tmp_path / "t" / MARKER).write_text('{"files":["mine.wav", "../victim.txt"]}')
    args = ["synth", "--like", "ravdess", "--out", "t", "--n", "2", "--max-duration", "0.05"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "pass --overwrite" in one_error_line(r.output)
    r = runner.invoke(app, [*args, "--overwrite"], env={"COLUMNS": "200"})
    line = one_error_line(r.output)
    assert r.exit_code == 2 and "'../victim.txt', which leads outside" in line and "nothing was deleted" in line
    assert (tmp_path / "victim.txt").read_text() == "x"                       # before: gone, exit 0
    assert (tmp_path / "t" / "mine.wav").read_text() == "listed, inside"     # checked before any deletion


@pytest.mark.parametrize("entry", ["../victim.txt", "ABSOLUTE", "sub/../../victim.txt", "link.txt", "linkdir/victim.txt",
                                   "../t2/x.wav"])
def test_marker_entries_leaving_the_directory_are_refused(tmp_path, entry):
    out = tmp_path / "t"
    out.mkdir()
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / "x.wav").write_text("x")
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    (out / "link.txt").symlink_to(victim)             # a link inside the directory, pointing out of it
    (out / "linkdir").symlink_to(tmp_path)
    entry = str(victim) if entry == "ABSOLUTE" else entry
    (out / MARKER).write_text(json.dumps({"files": [entry]}))
    with pytest.raises(SynthError, match="leads outside .*nothing was deleted"):
        synthesize("ravdess", out, overwrite=True, **KW)
    assert victim.read_text() == "x" and (tmp_path / "t2" / "x.wav").read_text() == "x"
    assert (out / "link.txt").is_symlink() and not list(out.rglob("*.wav"))   # nothing synthesized either


def test_only_listed_regular_files_inside_are_deleted(tmp_path):
    out = tmp_path / "t"
    synthesize("ravdess", out, **KW)
    (out / "keep.txt").write_text("k")
    (out / "link.wav").symlink_to(out / "keep.txt")     # a listed link is not followed, nor removed
    (out / "adir").mkdir()
    (out / "adir" / "f").write_text("f")                # a listed directory is not removed
    marker = json.loads((out / MARKER).read_text())
    marker["files"] += ["link.wav", "adir", ".", "missing.wav"]
    (out / MARKER).write_text(json.dumps(marker))
    synthesize("ravdess", out, overwrite=True, seed=1, **KW)
    assert (out / "keep.txt").read_text() == "k" and (out / "adir" / "f").read_text() == "f"
    assert (out / "link.wav").is_symlink() and len(wavs(out)) == 2 + 1     # 2 new files and the link


@pytest.mark.parametrize("text", ["not json", '{"files": "a.wav"}', '{"files": [3]}', "[1]"])
def test_a_damaged_marker_is_one_line_and_deletes_nothing(tmp_path, text):
    out = tmp_path / "t"
    out.mkdir()
    (out / "a.wav").write_text("a")
    (out / MARKER).write_text(text)
    with pytest.raises(SynthError, match="nothing was deleted"):
        synthesize("ravdess", out, overwrite=True, **KW)
    assert (out / "a.wav").read_text() == "a"


def test_target_must_be_a_directory_not_a_system_path(tmp_path):
    (tmp_path / "f").write_text("f")
    with pytest.raises(SynthError, match="not a directory"):
        synthesize("ravdess", tmp_path / "f", **KW)
    with pytest.raises(SynthError, match="system path"):
        synthesize("ravdess", "/proc/self/ser-synth", **KW)


def test_full_disk_is_one_line_and_leaves_no_half_file(tmp_path, monkeypatch):
    """ENOSPC on the third audio file (as tests/test_store_writers.py simulates it): earlier files are
    whole, no temporary file is left, and a re-run with --overwrite completes."""
    import builtins

    real_open = builtins.open
    opened = []

    def full_disk_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        if "w" in mode and ".tmp-" in str(file) and str(file).endswith(".wav"):
            opened.append(file)
            if len(opened) >= 3:
                def fail(data):
                    raise OSError(errno.ENOSPC, "No space left on device")
                fh.write = fail
        return fh

    out = tmp_path / "t"
    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(SynthError, match=r"disk full .* re-run with --overwrite"):
        synthesize("ravdess", out, n=6, max_duration=0.05, sample_rate=8000)
    monkeypatch.undo()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    done = wavs(out)
    assert len(done) == 2 and all(sf.info(str(out / rel)).frames == 400 for rel in done)
    assert json.loads((out / MARKER).read_text())["complete"] is False
    synthesize("ravdess", out, n=6, max_duration=0.05, sample_rate=8000, overwrite=True)
    assert len(wavs(out)) == 6 and not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert os.path.exists(out / MARKER)


def test_synthesized_tells_a_finished_corpus_from_an_interrupted_one(tmp_path, monkeypatch):
    from featstore import synth

    assert synth.synthesized(tmp_path / "none") is None
    synthesize("ravdess", tmp_path / "done", **KW)
    assert synth.synthesized(tmp_path / "done")["n"] == 2

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_audio", stop)
    with pytest.raises(KeyboardInterrupt):
        synthesize("ravdess", tmp_path / "cut", **KW)
    assert synth.synthesized(tmp_path / "cut") is None and not temp_files_in(tmp_path / "cut")


def temp_files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]
