"""Model identity that survives a move (issue 23, item 7): stores and saved probes record a local
model's resolved absolute path and its weights hash; a moved model is found by hash (known locations)
or named with `--backbone DIR`; a gone directory is one line that never suggests a hub download;
`ser store ls` shows one id per weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from tests.helpers import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The issue's repro: a model named by a relative path (`demo/models/tiny`), a corpus extracted and a
    probe saved from the project directory; then the model directory is moved away (to `stash`)."""
    from classifiers.finetuning.inference import predict
    from classifiers.runs.probe import fit_and_save_probe
    from featstore.corpora import load_manifest
    from featstore.extract import extract_manifest
    from featstore.synth import synthesize

    base = tmp_path_factory.mktemp("identity")
    proj = base / "proj"
    proj.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(proj)
        mp.setenv("SER_CACHE_HOME", str(base / "ser-cache"))
        build_tiny_model(Path("demo/models/tiny"))
        synthesize("ravdess", Path("data/ravdess"), n=16, max_duration=1.0, sample_rate=16000)
        manifest = load_manifest("ravdess", Path("data/ravdess"))
        res = extract_manifest(manifest, model="demo/models/tiny", cache="cache", device="cpu")
        fit_and_save_probe("probe", ["ravdess"], layer="2", stat="mean", model="demo/models/tiny", cache="cache", C=1.0)
        clips = sorted(str(Path(u.path).resolve()) for u in manifest.utterances)[:3]
        reference = predict(clips, "probe", device="cpu")
        locations = json.loads((base / "ser-cache" / "model-locations.json").read_text())
    model = proj / "demo" / "models" / "tiny"
    stash = base / "stash" / "tiny"
    stash.parent.mkdir()
    shutil.move(str(model), str(stash))
    return dict(base=base, proj=proj, model=model, stash=stash, store=proj / res.store, probe=proj / "probe",
                clips=clips, reference=reference, locations=locations, data=proj / "data" / "ravdess",
                cache=proj / "cache")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from another directory, with a user cache that knows no model location yet."""
    monkeypatch.setenv("SER_CACHE_HOME", str(tmp_path / "ser-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    return tmp_path


def _moved_copy(project, where: Path) -> Path:
    """The model, now at `where` (a copy of the moved directory)."""
    shutil.copytree(project["stash"], where)
    return where


def _same(rows, reference):
    assert [f for f, _ in rows] == [f for f, _ in reference]
    for (_, p), (_, q) in zip(rows, reference):
        assert list(p) == list(q)
        np.testing.assert_allclose(list(p.values()), list(q.values()), atol=1e-6)


def test_store_and_probe_record_the_absolute_path_and_the_weights_hash(project):
    from featstore.store import open_store

    fs = open_store(project["store"])
    sha = fs.config["weights_sha256"]
    assert fs.config["model_id"] == str(project["model"].resolve())       # not "demo/models/tiny"
    assert project["store"].parent.name == "local--tiny"                   # the directory naming is unchanged
    probe = json.loads((project["probe"] / "probe.json").read_text())
    assert probe["backbone_id"] == fs.config["model_id"] and probe["weights_sha256"] == sha and len(sha) == 64
    assert project["locations"][sha] == [str(project["model"].resolve())]  # remembered when it was loaded


def test_a_gone_model_directory_is_one_line_naming_it_and_backbone_never_a_hub_download(project, elsewhere):
    code, out = cli("predict", project["clips"][0], "--trained", project["probe"], "--device", "cpu")
    assert code == 2
    line = out.strip()
    assert "\n" not in line and line.startswith("error:")
    assert str(project["model"].resolve()) in line and "is gone" in line and "--backbone DIR" in line
    assert "huggingface" not in line.lower() and "download" not in line.lower() and "HFValidationError" not in line
    # evaluate without a store must run the backbone: the same line
    code, out = cli("evaluate", "--trained", project["probe"], "--corpus", "ravdess", "--root", project["data"],
                    "--cache", elsewhere / "empty", "--device", "cpu", "--out", elsewhere / "ev")
    assert code == 2 and "is gone" in out and "--backbone DIR" in out and "huggingface" not in out.lower()


def test_a_gone_local_path_is_never_tried_on_the_hub(elsewhere, monkeypatch):
    import huggingface_hub

    from featstore.backbones.runtime import ModelLoadError, model_info

    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_hub(*a, **k):
        raise AssertionError("a local path was looked up on the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    for gone in ("demo/models/tiny", str(elsewhere / "gone" / "tiny")):
        with pytest.raises(ModelLoadError, match="does not exist") as e:
            model_info(gone)
        assert "huggingface-cli" not in str(e.value)


def test_backbone_names_where_the_model_is_now(project, elsewhere):
    from classifiers.finetuning.inference import predict

    moved = _moved_copy(project, elsewhere / "models" / "tiny-v2")
    code, out = cli("predict", *project["clips"], "--trained", project["probe"], "--backbone", moved, "--device", "cpu",
                    "--json")
    assert code == 0, out
    rows = [(r["file"], {k[2:]: v for k, v in r.items() if k.startswith("p_")}) for r in json.loads(out)]
    _same(rows, project["reference"])
    # a --backbone that is not a directory is refused at parse time
    code, out = cli("predict", project["clips"][0], "--trained", project["probe"], "--backbone", elsewhere / "nope")
    assert code == 2 and "--backbone" in out and "no such directory" in out
    # once used, the new place is known: the next run finds it by the weights hash alone
    _same(predict(project["clips"], project["probe"], device="cpu"), project["reference"])


def test_a_moved_model_is_found_by_its_weights_hash(project, elsewhere):
    from classifiers.finetuning.inference import predict
    from featstore.backbones.runtime import known_locations, model_info

    moved = _moved_copy(project, elsewhere / "models" / "tiny-renamed")
    sha = model_info(str(moved)).weights_sha256          # any use of the model at its new place records it
    assert known_locations(sha) == [str(moved.resolve())]
    _same(predict(project["clips"], project["probe"], device="cpu"), project["reference"])
    code, out = cli("evaluate", "--trained", project["probe"], "--corpus", "ravdess", "--root", project["data"],
                    "--cache", elsewhere / "empty", "--device", "cpu", "--out", elsewhere / "ev")
    assert code == 0, out
    assert json.loads((elsewhere / "ev" / "evaluate.json").read_text())["records"][0]["n_test"] == 16


def test_a_known_location_with_other_weights_is_not_used(project, elsewhere, tmp_path):
    from classifiers.finetuning.inference import PredictError, predict
    from featstore.backbones.runtime import ModelMovedError, remember_location

    sha = json.loads((project["probe"] / "probe.json").read_text())["weights_sha256"]
    other = build_tiny_model(tmp_path / "other", seed=5)                # same shape, other weights
    remember_location(other, sha)                                       # a stale entry claims them
    with pytest.raises((ModelMovedError, PredictError), match="is gone"):
        predict(project["clips"][:1], project["probe"], device="cpu")


def test_evaluate_reads_the_store_after_the_move_from_anywhere(project, elsewhere):
    """No backbone is needed when the store holds the features: found by the id the probe recorded."""
    code, out = cli("evaluate", "--trained", project["probe"], "--corpus", "ravdess", "--root", project["data"],
                    "--cache", project["cache"], "--device", "cpu", "--out", elsewhere / "from-store")
    assert code == 0, out
    from_store = json.loads((elsewhere / "from-store" / "evaluate.json").read_text())["records"][0]
    moved = _moved_copy(project, elsewhere / "models" / "tiny")
    code, out = cli("evaluate", "--trained", project["probe"], "--corpus", "ravdess", "--root", project["data"],
                    "--cache", elsewhere / "empty", "--device", "cpu", "--out", elsewhere / "from-audio",
                    "--backbone", moved)
    assert code == 0, out
    from_audio = json.loads((elsewhere / "from-audio" / "evaluate.json").read_text())["records"][0]
    assert from_store["n_test"] == from_audio["n_test"] == 16
    assert from_store["uar"] == pytest.approx(from_audio["uar"])


def test_an_old_probe_with_a_relative_backbone_id_still_works(project, elsewhere):
    """Probes saved before this change recorded `demo/models/tiny`: the store is found by it, the model by hash."""
    from classifiers.finetuning.inference import predict, seal_probe
    from featstore.backbones.runtime import model_info, model_slug

    old = elsewhere / "old-probe"
    shutil.copytree(project["probe"], old)
    config = json.loads((old / "probe.json").read_text())
    config["backbone_id"] = "demo/models/tiny"
    (old / "probe.json").write_text(json.dumps(config))
    seal_probe(old)
    assert model_slug("demo/models/tiny") == "local--tiny" == project["store"].parent.name
    assert model_slug("facebook/wav2vec2-base") == "facebook--wav2vec2-base"
    code, out = cli("evaluate", "--trained", old, "--corpus", "ravdess", "--root", project["data"],
                    "--cache", project["cache"], "--device", "cpu", "--out", elsewhere / "ev")
    assert code == 0, out
    code, out = cli("predict", project["clips"][0], "--trained", old, "--device", "cpu")
    assert code == 2 and "demo/models/tiny (a relative path, looked up from" in out and "--backbone DIR" in out
    model_info(str(_moved_copy(project, elsewhere / "m" / "tiny")))
    _same(predict(project["clips"], old, device="cpu"), project["reference"])


def _toy_store(cache: Path, model_id: str, slug: str, sha: str, corpus: str = "ravdess") -> Path:
    from featstore.corpora import Utterance
    from featstore.store import Batch, assemble, parts_dir, store_path, write_part

    utts = [Utterance(id=f"u{i}", path="", corpus=corpus, language="en", speaker=f"s{i}", gender=None,
                      label="happy", label_raw="happy") for i in range(2)]
    X = np.ones((2, 2, 3), dtype=np.float32)
    config = {"model_id": model_id, "frame_layers": [], "num_layers": 2, "hidden_size": 3, "weights_sha256": sha,
              "sample_rate": 16000}
    path = store_path(cache, slug, corpus)
    parts_dir(path).mkdir(parents=True, exist_ok=True)
    write_part(parts_dir(path) / "part-0-0.h5", Batch(utts, X, X, np.full(2, 16000), np.full(2, 5)), config)
    assemble(path, config, corpus=corpus)
    return path


def test_store_ls_shows_one_id_per_weights(tmp_path, monkeypatch):
    from featstore.store import list_stores

    monkeypatch.chdir(tmp_path)
    here = build_tiny_model(tmp_path / "models" / "tiny-v2")
    cache = tmp_path / "cache"
    _toy_store(cache, "demo/models/tiny", "local--tiny", "ab" * 32)                 # relative, as the demo recorded
    _toy_store(cache, str(here), "local--tiny-v2", "ab" * 32, corpus="cremad")      # same weights, moved
    _toy_store(cache, "facebook/wav2vec2-base", "facebook--wav2vec2-base", "cd" * 32)
    rows = list_stores(cache)
    assert {r["recorded"] for r in rows} == {"demo/models/tiny", str(here), "facebook/wav2vec2-base"}
    assert [(r["model"], r["corpus"]) for r in rows] == [(str(here), "cremad"), (str(here), "ravdess"),
                                                         ("facebook/wav2vec2-base", "ravdess")]
    monkeypatch.setenv("COLUMNS", "250")
    code, out = cli("store", "ls", "--cache", cache)
    assert code == 0, out
    assert "demo/models/tiny (same weights)" in out and f"{here}: also recorded as" in out
    table = [line for line in out.splitlines() if "ravdess" in line or "cremad" in line]
    assert len(table) == 3 and sum(str(here) in line for line in table) == 2
