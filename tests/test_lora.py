"""LoRA adapters (`ser finetune --adapter lora:...`, classifiers.finetuning.lora) on a tiny random wav2vec2:
only the adapters and the head train, the export holds only them and names its base by hash,
`ser predict` refuses another base in one line, runs resume, and a bad spec fails before any work."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.finetuning.finetune import FinetuneConfig, default_run_dir, finetune, plan_changes
from classifiers.finetuning.heads import EmotionClassifier, build_classifier, is_adapter_dir, is_classifier_dir
from classifiers.finetuning.lora import (
    AdapterError,
    LoraSpec,
    apply_lora,
    parse_adapter,
    target_pattern,
)
from featstore.corpora import get_corpus
from featstore.errors import SerError
from featstore.folds import make_folds
from featstore.synth import synthesize
from tests.helpers import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["happy", "sad", "angry"]
SETTINGS = dict(epochs=3, lr=3e-3, batch_size=8, fold=0, labels=CLASSES, seed=0, progress=False, plots=False,
                adapter="lora:r=4,alpha=8,targets=q,v")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model = build_tiny_model(root / "tiny", "group")
    synthesize("ravdess", root / "ravdess", n=96, max_duration=0.6, sample_rate=16000)
    utterances = get_corpus("ravdess").load(root / "ravdess").utterances
    return root, model, utterances, make_folds(utterances, "luna5")


@pytest.fixture(scope="module")
def run(corpus):
    root, model, utterances, folds = corpus
    return finetune(utterances, folds, FinetuneConfig(model=str(model), **SETTINGS), out_dir=root / "run")


def _initial(model: Path) -> EmotionClassifier:
    """The model as the LoRA run starts it: the same seed, head and adapter initialisation."""
    torch.manual_seed(0)
    clf = build_classifier(str(model), CLASSES, seed=0, extra={})
    return apply_lora(clf, SETTINGS["adapter"], seed=0)


# -- the spec ------------------------------------------------------------------------------------

def test_spec_parses_defaults_and_canonical_form():
    assert parse_adapter(None) is None and parse_adapter("none") is None
    assert parse_adapter("lora") == LoraSpec(r=8, alpha=16.0, dropout=0.0, targets=("q", "v"))
    spec = parse_adapter("LoRA:targets=v,q,o, r=4 ,alpha=0.5")
    assert spec == LoraSpec(r=4, alpha=0.5, targets=("q", "v", "o"))
    assert spec.describe() == "lora:r=4,alpha=0.5,dropout=0,targets=q,v,o"
    assert parse_adapter(spec.describe()) == spec
    assert FinetuneConfig(model="m", adapter="lora:alpha=16,r=8").adapter == "lora:r=8,alpha=16,dropout=0,targets=q,v"


@pytest.mark.parametrize("spec,match", [
    ("lora:rank=8", "unknown key 'rank'"), ("lora:r=0", "r=0 must be a positive integer"),
    ("lora:r=2.5", "r=2.5 must be a positive integer"), ("lora:alpha=-1", "alpha=-1 must be a positive"),
    ("lora:targets=q,x", "targets x are not attention projections"), ("lora:dropout=1", "dropout=1 must lie"),
    ("ia3", "unknown method 'ia3'"), ("lora:r=4,r=8", "r given twice"), ("lora:8", "'8' is not key=value")])
def test_bad_spec_is_one_line_naming_the_option(spec, match):
    with pytest.raises(AdapterError, match=match) as e:
        FinetuneConfig(model="m", adapter=spec)
    assert str(e.value).startswith(f"--adapter {spec!r}") and "\n" not in str(e.value)


def test_bad_spec_on_the_command_line_fails_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path / "absent"), "--model",
                                   "m", "--adapter", "lora:r=0", "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error:") and "--adapter 'lora:r=0'" in line
    assert not out.exists()          # the missing corpus root was never reached


def test_missing_peft_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(AdapterError, match=r"pip install 'ser\[lora\]'"):
        FinetuneConfig(model="m", adapter="lora")
    FinetuneConfig(model="m")        # full fine-tuning does not need it


def test_targets_map_to_each_familys_projection_names(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel, Wav2Vec2Model

    from tests.helpers import TINY

    spec = parse_adapter("lora:targets=q,k,v,o")
    assert target_pattern(Wav2Vec2Model(Wav2Vec2Config(**TINY)), spec) == \
        r"encoder\.layers\.\d+\.\w+\.(q_proj|k_proj|v_proj|out_proj)"
    assert target_pattern(Wav2Vec2ConformerModel(Wav2Vec2ConformerConfig(**TINY)), spec) == \
        r"encoder\.layers\.\d+\.\w+\.(linear_q|linear_k|linear_v|linear_out)"
    with pytest.raises(AdapterError, match="no encoder attention projection named q_proj or linear_q"):
        target_pattern(torch.nn.Sequential(torch.nn.Linear(2, 2)), spec)


def test_lora_is_below_heads_and_an_adapter_export_round_trips(tmp_path):
    """classifiers.finetuning.lora imports no classifiers module (issue 22, item 10: no heads <-> lora cycle); heads
    owns both export formats, so `EmotionClassifier.from_pretrained` (the model card's usage) loads an
    adapter export with nothing else imported, and gives the saved model's outputs."""
    from tests.test_import_graph import import_graph

    graph = import_graph()
    assert not {m for m in graph["classifiers.finetuning.lora"] if m.split(".")[0] == "classifiers"}
    assert "classifiers.finetuning.lora" in graph["classifiers.finetuning.heads"]
    base = build_tiny_model(tmp_path / "base", "group")
    clf = apply_lora(build_classifier(str(base), CLASSES, seed=0, freeze="none"), "lora:r=2,alpha=4", seed=0)
    with torch.no_grad():                 # a trained-looking adapter: lora_B away from its zero start
        for n, p in clf.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    clf.eval()
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(wave, dtype=torch.long)
    with torch.no_grad():
        before = clf(wave, attention_mask=mask).logits
    directory = clf.save_pretrained(tmp_path / "export")
    assert is_adapter_dir(directory) and not (directory / "model.safetensors").exists()
    loaded = EmotionClassifier.from_pretrained(directory)
    with torch.no_grad():
        after = loaded(wave, attention_mask=mask).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert not torch.equal(after, build_classifier(str(base), CLASSES, seed=0).eval()(wave, attention_mask=mask).logits)


# -- training ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_only_adapter_and_head_parameters_change(corpus, run):
    _, model, _, _ = corpus
    fold = run.folds[0]
    before = _initial(model).state_dict()
    after = EmotionClassifier.from_pretrained(fold.model_dir).state_dict()    # merged: the function
    trained = _trained_unmerged(fold.model_dir)
    assert set(trained) == set(before)
    changed = {k for k in before if not torch.equal(before[k], trained[k])}
    lora = {k for k in before if ".lora_A." in k or ".lora_B." in k}
    head = {k for k in before if not k.startswith("backbone.")}
    assert lora and changed <= lora | head                   # nothing else moved, parameter by parameter
    assert {k for k in lora if ".lora_B." in k} <= changed   # every B left its zero start
    assert {"classifier.weight", "classifier.bias"} <= changed
    # adapters only on the encoder's q and v projections, 4 layers x 2 x (A, B)
    assert len(lora) == 16 and all(".attention.q_proj." in k or ".attention.v_proj." in k for k in lora)
    # merged weights = base + B A alpha/r: the projections moved, the rest equals the base
    base = build_classifier(str(model), CLASSES, seed=0, extra={}).state_dict()
    moved = {k for k in base if k.startswith("backbone.") and not torch.equal(base[k], after[k])}
    assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved)
    assert fold.trainable_params == sum(v.numel() for k, v in before.items() if k in lora | head)
    assert fold.total_params > 20 * fold.trainable_params
    assert fold.peak_memory_kind == "rss" and fold.peak_memory_mib > 50


def _trained_unmerged(model_dir: str) -> dict:
    from classifiers.finetuning.heads import ClassifierConfig, load_adapter_export

    config = ClassifierConfig.from_json(json.loads((Path(model_dir) / "config.json").read_text()))
    return load_adapter_export(model_dir, config, merge=False).state_dict()


@pytest.mark.slow
def test_export_holds_adapter_and_head_and_names_its_base(corpus, run):
    _, model, _, _ = corpus
    from featstore.backbones.runtime import load_backbone

    model_dir = Path(run.folds[0].model_dir)
    assert is_classifier_dir(model_dir) and is_adapter_dir(model_dir)
    assert {p.name for p in model_dir.iterdir()} == {"config.json", "adapter_config.json", "adapter_model.safetensors",
                                                    "head.safetensors", "preprocessor_config.json", "README.md"}
    from safetensors import safe_open

    with safe_open(str(model_dir / "adapter_model.safetensors"), "pt") as f:
        assert f.keys() and all(".lora_A." in k or ".lora_B." in k for k in f.keys())
    with safe_open(str(model_dir / "head.safetensors"), "pt") as f:
        assert set(f.keys()) == {"classifier.weight", "classifier.bias"}
    adapter = json.loads((model_dir / "config.json").read_text())["adapter"]
    assert adapter["base_model"] == str(model.resolve())
    assert adapter["base_weights_sha256"] == load_backbone(str(model)).weights_sha256
    assert adapter["spec"] == "lora:r=4,alpha=8,dropout=0,targets=q,v"
    card = (model_dir / "README.md").read_text()
    assert "LoRA adapter" in card and adapter["base_weights_sha256"] in card and "library_name: peft" in card
    record = json.loads((run.out_dir / "finetune.json").read_text())["records"][0]
    assert record["trainable_params"] == run.folds[0].trainable_params and record["peak_memory_kind"] == "rss"


@pytest.mark.slow
def test_predict_equals_the_trained_model_and_refuses_another_base(corpus, run, tmp_path):
    from classifiers.finetuning.inference import PredictError, predict

    root, model, utterances, _ = corpus
    fold = run.folds[0]
    with open(Path(fold.model_dir).parent / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:6]
    paths = {u.id: u.path for u in utterances}
    got = predict([paths[r["id"]] for r in rows], fold.model_dir, device="cpu")
    for r, (_, p) in zip(rows, got):
        np.testing.assert_allclose([p[c] for c in CLASSES], [float(r[f"p_{c}"]) for c in CLASSES], atol=2e-6)
    other = build_tiny_model(tmp_path / "other", "group", seed=1)
    with pytest.raises(SerError) as e:
        predict([paths[rows[0]["id"]]], fold.model_dir, device="cpu", backbone=other)
    msg = str(e.value)
    adapter = json.loads((Path(fold.model_dir) / "config.json").read_text())["adapter"]
    assert "\n" not in msg and adapter["base_weights_sha256"] in msg and "--backbone DIR" in msg
    # the same weights elsewhere are fine (--backbone to a copy)
    copy = shutil.copytree(model, tmp_path / "copy")
    again = predict([paths[rows[0]["id"]]], fold.model_dir, device="cpu", backbone=copy)
    assert again[0][1] == pytest.approx(got[0][1], abs=1e-7)
    with pytest.raises(PredictError, match="--backbone is for saved probes and adapter exports"):
        predict([paths[rows[0]["id"]]], _full_export(tmp_path / "full", model), device="cpu", backbone=copy)


@pytest.mark.slow
def test_predict_cli_with_a_mismatched_base_is_one_line(corpus, run, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    _, _, utterances, _ = corpus
    other = build_tiny_model(tmp_path / "other", "group", seed=1)
    res = CliRunner().invoke(app, ["predict", utterances[0].path, "--trained", run.folds[0].model_dir,
                                   "--backbone", str(other), "--device", "cpu"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith("error:") and "weights sha256" in line and "--backbone DIR" in line


@pytest.mark.slow
def test_a_second_identical_run_finds_the_finished_fold(corpus, run):
    root, model, utterances, folds = corpus
    weights = Path(run.folds[0].model_dir) / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = finetune(utterances, folds, FinetuneConfig(model=str(model), **SETTINGS), out_dir=root / "run")
    assert again.folds[0] == run.folds[0] and weights.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_interrupted_lora_run_resumes_from_its_checkpoint(corpus, run, tmp_path):
    """Killed after epoch 1's checkpoint, the rerun starts there and ends where the uninterrupted run did."""
    from transformers import TrainerCallback

    root, model, utterances, folds = corpus
    first = run.folds[0].global_step // 3

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= first:
                raise KeyboardInterrupt("simulated interruption")

    out = tmp_path / "resumed"
    config = FinetuneConfig(model=str(model), **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        finetune(utterances, folds, config, out_dir=out, callbacks=[Interrupt()])
    assert not (out / "luna-0" / "model").exists()
    # another adapter is other settings: its checkpoints are refused, not resumed
    with pytest.raises(SerError, match="adapter"):
        finetune(utterances, folds, FinetuneConfig(model=str(model), **{**SETTINGS, "adapter": "lora:r=2"}),
                 out_dir=out)
    fold = finetune(utterances, folds, config, out_dir=out).folds[0]
    assert fold.resumed_from_step == first and fold.global_step == run.folds[0].global_step
    assert fold.y_pred == run.folds[0].y_pred               # same seed, same data order: the same model
    a, b = _trained_unmerged(fold.model_dir), _trained_unmerged(run.folds[0].model_dir)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_adapter_is_a_must_match_setting_and_keeps_full_runs_folders():
    full, lora = FinetuneConfig(model="m"), FinetuneConfig(model="m", adapter="lora")
    assert plan_changes(full.plan(CLASSES), lora.plan(CLASSES)) == ["adapter"]
    old = {k: v for k, v in full.plan(CLASSES).items() if k != "adapter"}     # a plan from before --adapter
    assert plan_changes(old, full.plan(CLASSES)) == [] and plan_changes(old, lora.plan(CLASSES)) == ["adapter"]
    assert default_run_dir("ravdess", "luna5", full).name.startswith("finetune-ravdess-m-mean-luna5-seed0-")
    assert default_run_dir("ravdess", "luna5", lora).name.startswith("finetune-ravdess-m-mean-lora-luna5-seed0-")
    assert default_run_dir("ravdess", "luna5", lora) != default_run_dir(
        "ravdess", "luna5", FinetuneConfig(model="m", adapter="lora:r=4"))


def _full_export(directory: Path, model: Path) -> str:
    build_classifier(str(model), CLASSES, seed=0).save_pretrained(directory)
    return str(directory)


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix == ".safetensors")


def test_export_is_under_five_percent_of_the_full_model(tmp_path):
    """On the test's tiny model (hidden 16) file headers outweigh the rank-8 adapters, so the
    ratio is measured on a small but proportioned one: hidden 256, 4 layers, 4 heads (12M
    parameters), LoRA r=8 on q and v, saved untrained (the sizes do not depend on training)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    base = tmp_path / "base"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=1024)).save_pretrained(base)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(base)
    _full_export(tmp_path / "full", base)
    clf = apply_lora(build_classifier(str(base), CLASSES, seed=0), "lora:r=8,alpha=16,targets=q,v")
    clf.save_pretrained(tmp_path / "adapter")            # an adapter model exports the adapters and the head
    assert is_adapter_dir(tmp_path / "adapter")
    full, adapter = _size(tmp_path / "full"), _size(tmp_path / "adapter")
    print(f"export: full {full / 2**20:.1f} MiB, adapter + head {adapter / 2**10:.1f} KiB "
          f"({100 * adapter / full:.2f}%)")
    assert adapter < 0.05 * full
    # the adapters hold what LoRA says: 4 layers x (q, v) x (A: 8x256, B: 256x8) float32, plus the head
    assert adapter == pytest.approx(4 * 2 * 2 * 8 * 256 * 4 + (256 * 3 + 3) * 4, rel=0.05)


@pytest.mark.slow
def test_evaluate_scores_an_adapter_export_and_refuses_another_base(corpus, run, tmp_path):
    from classifiers.runs.evaluate import evaluate_model

    root, model, _, _ = corpus
    fold = run.folds[0]
    ev = evaluate_model(fold.model_dir, "ravdess", root=root / "ravdess", fold="luna-0", protocol="luna5",
                        out=tmp_path / "ev", device="cpu")
    # the test speakers of the fold it was trained on, on its classes: the run's own test scores
    assert ev.scores["shared"].uar.value == pytest.approx(fold.metrics["uar"])
    other = build_tiny_model(tmp_path / "other", "group", seed=1)
    with pytest.raises(SerError, match="--backbone DIR"):
        evaluate_model(fold.model_dir, "ravdess", root=root / "ravdess", out=tmp_path / "ev2", device="cpu",
                       backbone=other)
