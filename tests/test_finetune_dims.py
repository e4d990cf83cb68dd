"""Fine-tuning on emotion dimensions (issue 25, item 5): `ser finetune --target avd` regresses arousal,
valence and dominance with the CCC loss, selects its checkpoint by the validation speakers' mean CCC,
writes true/predicted values and CCC with speaker CIs, exports a model `ser predict` reads; `--multitask`
trains the classes beside. A tiny random wav2vec2 on a synthetic MSP-Podcast tree (planted ratings)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from classifiers.estimators.regression import ccc, ccc_interval
from classifiers.finetuning.finetune import FinetuneConfig, FinetuneError, finetune
from classifiers.finetuning.heads import EmotionClassifier, build_classifier, masked_ccc_loss
from featstore.corpora import get_corpus
from featstore.folds import make_folds
from featstore.synth import synthesize
from tests.helpers import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_modules_cache")

DIMS = ["arousal", "valence", "dominance"]
FAST = ["--epochs", "2", "--lr", "3e-3", "--batch-size", "8", "--freeze", "none", "--fold", "0", "--no-progress",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftdims")
    model = build_tiny_model(root / "tiny", "group")
    synthesize("msppodcast", root / "msp", n=64, max_duration=0.5, sample_rate=16000)
    utterances = get_corpus("msppodcast").load(root / "msp").utterances
    return root, model, utterances


@pytest.fixture(scope="module")
def cli_run(corpus):
    """`ser finetune --target avd`, 2 epochs, through the CLI (registered in its own registry)."""
    from typer.testing import CliRunner

    from cli import app

    root, model, _ = corpus
    out, db = root / "run", root / "ser.db"
    res = CliRunner().invoke(app, ["finetune", "--corpus", "msppodcast", "--root", str(root / "msp"), "--model",
                                   str(model), "--target", "avd", *FAST, "--out", str(out), "--db", str(db)])
    assert res.exit_code == 0, res.output
    return out, db, res.output


def _fold_dir(out: Path) -> Path:
    [fold] = [p for p in out.iterdir() if (p / "fold_result.json").is_file()]
    return fold


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_avd_run_writes_predictions_whose_ccc_is_the_fold_score(cli_run):
    out, db, output = cli_run
    fold = _fold_dir(out)
    rows = _read_csv(fold / "predictions.csv")
    assert list(rows[0]) == ["id", "corpus", "speaker", "label", "true_arousal", "pred_arousal", "true_valence",
                             "pred_valence", "true_dominance", "pred_dominance"]   # no class columns: no classes
    result = json.loads((fold / "fold_result.json").read_text())["result"]
    assert result["dimensions"] == DIMS and result["n_test"] == len(rows)
    for d in DIMS:
        y = np.array([float(r[f"true_{d}"]) for r in rows])
        p = np.array([float(r[f"pred_{d}"]) for r in rows])
        assert np.all(np.abs(y) <= 1)                  # ratings mapped onto [-1, 1]
        assert result["metrics"][f"ccc_{d}"] == pytest.approx(ccc(y, p), abs=1e-6)
    assert result["metrics"]["ccc"] == pytest.approx(np.mean([result["metrics"][f"ccc_{d}"] for d in DIMS]))
    # the run's summary: each dimension's CCC pooled over the folds with its speaker jackknife interval
    data = json.loads((out / "finetune.json").read_text())
    assert data["meta"]["target"] == "avd" and data["meta"]["dimensions"] == DIMS
    speakers = [r["speaker"] for r in rows]
    for row in data["summary"]:
        d = row["dimension"]
        y = np.array([[float(r[f"true_{d}"])] for r in rows])
        p = np.array([[float(r[f"pred_{d}"])] for r in rows])
        iv = ccc_interval(y, p, speakers)
        assert row["ccc"] == pytest.approx(iv.value) and row["ci_low"] == pytest.approx(iv.low)
    assert [r["dimension"] for r in data["summary"]] == DIMS
    [record] = data["records"]
    assert record["ccc_valence"] == result["metrics"]["ccc_valence"] and "uar" not in record
    # the registry holds the dimensional metrics (ser results lists them)
    from classifiers.results.registry import Registry

    registry = Registry(db)
    [run] = registry.runs()
    metrics = {s["metric"]: s["value"] for s in registry.scores(run["id"])}
    assert metrics["ccc_arousal"] == pytest.approx(result["metrics"]["ccc_arousal"]) and "ccc" in metrics
    from typer.testing import CliRunner

    from cli import app

    shown = CliRunner().invoke(app, ["results", "show", run["id"], "--db", str(db)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "CCC [95% CI]" in shown.output and f"{result['metrics']['ccc_valence']:.3f}" in shown.output
    assert "target avd" in output and "CCC arousal" in output
    card = (fold / "model" / "README.md").read_text()
    assert "Target: avd" in card and "| CCC valence |" in card


def test_best_checkpoint_is_chosen_by_validation_ccc(cli_run):
    out, _, _ = cli_run
    fold = _fold_dir(out)
    result = json.loads((fold / "fold_result.json").read_text())["result"]
    evals = [(h["step"], h["eval_ccc"]) for h in result["log_history"] if "eval_ccc" in h]
    assert len(evals) == 2 and all("eval_uar" not in h for h in result["log_history"])
    step, best = max(evals, key=lambda e: e[1])
    assert result["best_val_ccc"] == pytest.approx(best) and result["best_val_uar"] is None
    assert result["best_checkpoint"].endswith(f"checkpoint-{step}")
    # the exported model is that checkpoint's
    saved = EmotionClassifier.from_pretrained(fold / "model").state_dict()
    chosen = EmotionClassifier.from_pretrained(result["best_checkpoint"]).state_dict()
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)


def test_ccc_loss_is_one_minus_ccc_per_output():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)

    def lin(y, p):     # Lin (1989), population moments, written out
        my, mp = y.mean(), p.mean()
        return 2 * ((y - my) * (p - mp)).mean() / (((y - my) ** 2).mean() + ((p - mp) ** 2).mean() + (my - mp) ** 2)

    expected = np.mean([1 - lin(target[:, t].double().numpy(), pred[:, t].double().numpy()) for t in range(3)])
    assert float(masked_ccc_loss(pred, target)) == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(np.mean(1 - ccc(target.numpy(), pred.numpy())), abs=1e-6)
    # unrated rows (NaN) are left out of their dimension's term only
    holed = target.clone()
    holed[:5, 1] = float("nan")
    per = [1 - lin(target[:, 0].numpy(), pred[:, 0].numpy()), 1 - lin(target[5:, 1].numpy(), pred[5:, 1].numpy()),
           1 - lin(target[:, 2].numpy(), pred[:, 2].numpy())]
    assert float(masked_ccc_loss(pred, holed)) == pytest.approx(np.mean(per), abs=1e-5)
    # perfect predictions: loss 0; anti-correlated (negated, same spread): loss 2
    assert float(masked_ccc_loss(target, target)) == pytest.approx(0, abs=1e-6)
    centred = target - target.mean(0)
    assert float(masked_ccc_loss(-centred, centred)) == pytest.approx(2, abs=1e-5)


def test_multitask_loss_weights_cross_entropy_and_ccc(corpus):
    _, model, _ = corpus
    clf = build_classifier(str(model), ["sad", "happy"], dimensions=DIMS, multitask=0.25, freeze="none").eval()
    x = torch.randn(4, 8000, generator=torch.Generator().manual_seed(1))
    labels, dims = torch.tensor([0, 1, 1, 0]), torch.rand(4, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        out = clf(x, labels=labels, dimensions=dims)
    classes, values = clf.split_outputs(out.logits)
    assert classes.shape == (4, 2) and values.shape == (4, 3)
    expected = 0.75 * torch.nn.functional.cross_entropy(classes, labels) + 0.25 * masked_ccc_loss(values, dims)
    assert float(out.loss) == pytest.approx(float(expected), abs=1e-6)


def test_predict_prints_the_models_values(cli_run, corpus, tmp_path):
    from typer.testing import CliRunner

    from classifiers.finetuning.finetune import clip_inputs, collate
    from cli import app
    from featstore.audio import load_audio
    from featstore.backbones.runtime import normalize_waveform

    out, _, _ = cli_run
    _, _, utterances = corpus
    model_dir = _fold_dir(out) / "model"
    clips = [u.path for u in utterances[:3]]
    res = CliRunner().invoke(app, ["predict", *clips, "--trained", str(model_dir), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.output)
    model = EmotionClassifier.from_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["dimensions"] == DIMS and config["dimension_scale"] == [-1.0, 1.0] and config["labels"] == []
    for clip, rec in zip(clips, records):
        wave = normalize_waveform(load_audio(clip, 16000))
        with torch.no_grad():
            _, values = model.split_outputs(model(**collate([clip_inputs(wave)])).logits)
        assert [rec[d] for d in DIMS] == pytest.approx(values[0].tolist(), abs=1e-5)
        assert "predicted" not in rec and not any(k.startswith("p_") for k in rec)
    csv_out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", *clips, "--trained", str(model_dir), "--out", str(csv_out),
                                   "--device", "cpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert all(d in res.output for d in DIMS)
    rows = _read_csv(csv_out)
    assert list(rows[0]) == ["file", *DIMS, "model"]
    assert float(rows[0]["valence"]) == pytest.approx(records[0]["valence"])


def test_evaluate_scores_ccc_per_dimension(cli_run, corpus, tmp_path):
    """`ser evaluate` of the export on its own fold's test speakers gives the fold's test CCC again."""
    from typer.testing import CliRunner

    from classifiers.results.registry import Registry
    from cli import app

    out, _, _ = cli_run
    root, _, _ = corpus
    fold = _fold_dir(out)
    result = json.loads((fold / "fold_result.json").read_text())["result"]
    db = tmp_path / "ev.db"
    args = ["evaluate", "--trained", str(fold / "model"), "--corpus", "msppodcast", "--root", str(root / "msp"),
            "--device", "cpu", "--fold", result["fold"], "--db", str(db)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ev")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "CCC [95% CI]" in res.output and all(d in res.output for d in DIMS)
    data = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    for row in data["summary"]:
        assert row["ccc"] == pytest.approx(result["metrics"][f"ccc_{row['dimension']}"], abs=1e-5)
        assert row["n"] == result["n_test"] and row["ci_low"] < row["ccc"] < row["ci_high"]
    registry = Registry(db)
    [run] = registry.runs()
    metrics = {s["metric"]: s["value"] for s in registry.scores(run["id"])}
    assert metrics["ccc_dominance"] == pytest.approx(result["metrics"]["ccc_dominance"], abs=1e-5)
    shown = CliRunner().invoke(app, ["results", "show", run["id"], "--db", str(db)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and f"{result['metrics']['ccc_dominance']:.3f}" in shown.output, shown.output
    again = CliRunner().invoke(app, args)              # identical: the registered run, nothing computed
    assert again.exit_code == 0 and "identical configuration" in again.output and "CCC [95% CI]" in again.output
    # class relabelling means nothing to a dimensions-only model: one line
    res = CliRunner().invoke(app, [*args, "--map", "calm=neutral", "--force"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "has no classes" in res.output


def test_resume_with_another_target_is_refused(cli_run, corpus, tmp_path):
    out, _, _ = cli_run
    root, model, utterances = corpus
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    fold = _fold_dir(copy)
    shutil.rmtree(fold / "model")                      # unfinished: checkpoints only
    (fold / "fold_result.json").unlink()
    config = FinetuneConfig(model=str(model), target="arousal", epochs=2, lr=3e-3, batch_size=8, freeze="none",
                            fold=0, progress=False, device="cpu")
    with pytest.raises(FinetuneError) as e:
        finetune(utterances, "official", config, out_dir=copy)
    assert "target: 'avd' -> 'arousal'" in str(e.value) and "\n" not in str(e.value)


def test_target_on_a_corpus_without_dimensions_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    synthesize("ravdess", tmp_path / "ravdess", n=16, max_duration=0.3, sample_rate=16000)
    build_tiny_model(tmp_path / "tiny", "group")
    res = CliRunner().invoke(app, ["finetune", "--corpus", "ravdess", "--root", str(tmp_path / "ravdess"), "--model",
                                   str(tmp_path / "tiny"), "--target", "avd", "--device", "cpu", "--out",
                                   str(tmp_path / "run")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.startswith("error:")]    # beside the tiny tree's warning
    assert "--target avd" in line and "ravdess" in line and "arousal/valence/dominance" in line


@pytest.mark.parametrize("settings, fragment", [
    (dict(target="pleasure"), "--target 'pleasure': choose one of emotion, arousal"),
    (dict(multitask=0.5), "--multitask 0.5: weights a CCC loss"),
    (dict(target="avd", multitask=1.0), "--multitask 1.0: must lie in [0, 1)"),
    (dict(target="valence", labels="sad,happy"), "without --multitask learns the dimensions only"),
])
def test_settings_that_make_no_sense_are_refused(settings, fragment):
    with pytest.raises(FinetuneError) as e:
        FinetuneConfig(model="m", **settings)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_multitask_trains_both_heads(corpus, tmp_path):
    root, model, utterances = corpus
    config = FinetuneConfig(model=str(model), target="avd", multitask=0.5, epochs=1, lr=3e-3, batch_size=8,
                            freeze="none", fold=0, progress=False, device="cpu")
    run = finetune(utterances, make_folds(utterances, "official"), config, out_dir=tmp_path / "mt")
    [f] = run.folds
    assert run.labels and f.metrics.keys() >= {"uar", "wa", "macro_f1", "ccc", "ccc_arousal", "rmse_dominance"}
    rows = _read_csv(Path(f.model_dir).parent / "predictions.csv")
    assert {"prediction", f"p_{run.labels[0]}", "true_arousal", "pred_dominance"} <= set(rows[0])
    before = build_classifier(str(model), run.labels, dimensions=DIMS, multitask=0.5, freeze="none",
                              seed=0).classifier.weight.detach()
    after = EmotionClassifier.from_pretrained(f.model_dir)
    assert after.labels == run.labels and after.dimensions == DIMS and after.config.multitask == 0.5
    w = after.classifier.weight.detach()
    c = len(run.labels)
    assert not torch.allclose(w[:c], before[:c]) and not torch.allclose(w[c:], before[c:])   # both heads learnt
    from classifiers.finetuning.finetune import to_probe_results

    [record] = to_probe_results(run).records
    assert record["uar"] == f.metrics["uar"] and record["ccc_valence"] == f.metrics["ccc_valence"]


@pytest.mark.parametrize("pooling, labels", [("mean", []), ("attention", ["sad", "happy"])])
def test_exports_load_in_transformers_with_the_dimension_outputs(corpus, tmp_path, pooling, labels):
    """A dimensions-only mean-pooling export is transformers' own sequence classifier (problem_type
    regression, outputs named); a multitask attention export loads through modeling_ser.py, whose loss
    is the cross-entropy of the class logits only."""
    from transformers import AutoModelForAudioClassification

    _, model, _ = corpus
    clf = build_classifier(str(model), labels, dimensions=DIMS, multitask=0.5 if labels else None, pooling=pooling,
                           freeze="none", seed=3).eval()
    clf.save_pretrained(tmp_path / "export")
    hf = AutoModelForAudioClassification.from_pretrained(tmp_path / "export", trust_remote_code=True).eval()
    assert [hf.config.id2label[i] for i in range(len(labels) + 3)] == labels + DIMS
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, theirs = clf(x).logits, hf(x).logits
        assert torch.allclose(ours, theirs, atol=1e-5)
        if labels:
            y = torch.tensor([0, 1])
            expected = torch.nn.functional.cross_entropy(theirs[:, :2], y)
            assert float(hf(x, labels=y).loss) == pytest.approx(float(expected), abs=1e-6)
        else:
            assert hf.config.problem_type == "regression"


def test_run_folder_names_the_target_and_keeps_categorical_folders():
    """A --target run gets a folder of its own (named, hashed); a categorical run's folder is the one it
    had before --target existed (its settings hash leaves the two default fields out)."""
    from classifiers.finetuning.finetune import default_run_dir
    from classifiers.results.records import settings_tag
    from featstore import serialize

    emotion = default_run_dir("msppodcast", "official", FinetuneConfig(model="m"))
    avd = default_run_dir("msppodcast", "official", FinetuneConfig(model="m", target="avd"))
    both = default_run_dir("msppodcast", "official", FinetuneConfig(model="m", target="avd", multitask=0.5))
    assert "-avd-" in avd.name and "-avd-multitask-" in both.name and len({emotion, avd, both}) == 3
    config = FinetuneConfig(model="m")
    old = {k: v for k, v in serialize.plain(config.plan([])).items()
           if k not in ("labels", "augment", "target", "multitask", "adapter", "epochs", "max_steps",
                        "logging_steps", "report_to", "num_workers", "device")}
    old.update(labels=None, augment="none", corpora="msppodcast", protocol="official")
    assert emotion.name.endswith(settings_tag(old))


def test_report_shows_a_dimensions_only_finetune(cli_run, tmp_path):
    """`ser report` (and a study's report, through study.load_run) over a fine-tune on dimensions only:
    its section gives CCC per dimension with the CI of its finetune.json, never 'record 0 is damaged'."""
    from typer.testing import CliRunner

    from classifiers.results.registry import Registry
    from classifiers.runs.study import load_run
    from cli import app

    out, db, _ = cli_run
    [run] = Registry(db).runs(kind="finetune")
    scores = load_run(run)
    summary = json.loads((out / "finetune.json").read_text())["meta"]["dimension_summary"]
    assert set(scores.rows) == set(DIMS) and scores.rows["arousal"]["ccc"] == summary["arousal"]["ccc"]
    page = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", run["id"], "--db", str(db), "--out", str(page)])
    assert res.exit_code == 0, res.output
    html_text = page.read_text(encoding="utf-8")
    a = summary["arousal"]
    assert f"{a['ccc']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]" in html_text and "finetune (avd)" in html_text


def test_compare_a_dimension_finetune_with_the_ridge_probe(cli_run, corpus, tmp_path, monkeypatch):
    """The research diary's question on dimensions: a fine-tune against the frozen model's best
    layer on the same test clips (official partitions), CCC difference with CI and p."""
    from typer.testing import CliRunner

    from classifiers.results.registry import Registry
    from cli import app

    out, db, _ = cli_run
    root, model, _ = corpus
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ex = runner.invoke(app, ["extract", "--corpus", "msppodcast", "--root", str(root / "msp"), "--model", str(model),
                             "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert ex.exit_code == 0, ex.output
    pr = runner.invoke(app, ["probe", "--corpus", "msppodcast", "--target", "avd", "--model", str(model), "--cache",
                             str(tmp_path / "cache"), "--db", str(db), "--out", str(tmp_path / "probe")])
    assert pr.exit_code == 0, pr.output
    ft = next(r for r in Registry(db).runs(kind="finetune"))
    probe = next(r for r in Registry(db).runs(kind="probe"))
    res = runner.invoke(app, ["results", "compare", ft["id"], probe["id"], "--metric", "ccc", "--db", str(db),
                              "--out", str(tmp_path / "cmp.png")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"Δ CCC vs {ft['id']}" in text and "fine-tuned" in text and "ridge, layer" in text
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_evaluate_target_scores_a_chosen_subset_or_a_multitask_models_dimensions(cli_run, corpus, tmp_path):
    """ser evaluate --target: a dimension of a dimensions-only model (the same CCC as in the full
    evaluation), the dimensions of a multitask model (its fold's test CCC again), and a target the
    model does not predict is one line."""
    from typer.testing import CliRunner

    from cli import app

    out, _, _ = cli_run
    root, model, utterances = corpus
    fold = _fold_dir(out)
    result = json.loads((fold / "fold_result.json").read_text())["result"]
    base = ["evaluate", "--corpus", "msppodcast", "--root", str(root / "msp"), "--device", "cpu", "--fold",
            result["fold"], "--db", str(tmp_path / "ev.db")]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--trained", str(fold / "model"), "--target", "valence", "--out",
                              str(tmp_path / "v")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    [row] = json.loads((tmp_path / "v" / "evaluate.json").read_text())["summary"]
    assert row["dimension"] == "valence" and row["ccc"] == pytest.approx(result["metrics"]["ccc_valence"], abs=1e-5)
    res = runner.invoke(app, [*base, "--trained", str(fold / "model"), "--target", "emotion"])
    assert res.exit_code != 0 and "has no classes: use --target avd" in " ".join(res.output.split())

    config = FinetuneConfig(model=str(model), target="avd", multitask=0.5, epochs=1, lr=3e-3, batch_size=8,
                            freeze="none", fold=0, progress=False, device="cpu")
    [f] = finetune(utterances, make_folds(utterances, "official"), config, out_dir=tmp_path / "mt").folds
    args = ["evaluate", "--corpus", "msppodcast", "--root", str(root / "msp"), "--device", "cpu", "--fold", f.fold,
            "--db", str(tmp_path / "ev.db"), "--trained", str(f.model_dir)]
    res = runner.invoke(app, [*args, "--target", "avd", "--out", str(tmp_path / "mt-avd")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = {r["dimension"]: r for r in json.loads((tmp_path / "mt-avd" / "evaluate.json").read_text())["summary"]}
    assert set(rows) == set(DIMS)
    assert rows["arousal"]["ccc"] == pytest.approx(f.metrics["ccc_arousal"], abs=1e-5)
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "mt-classes")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and (tmp_path / "mt-classes" / "predictions.parquet").exists()   # default: classes


def test_predict_target_keeps_the_outputs_named(cli_run, corpus):
    """ser predict --target valence prints that dimension only (the same value as without --target);
    --target emotion on a model without classes is one line, before any audio is read."""
    from typer.testing import CliRunner

    from cli import app

    out, _, _ = cli_run
    _, _, utterances = corpus
    model_dir = _fold_dir(out) / "model"
    clips = [u.path for u in utterances[:2]]
    runner = CliRunner()
    every = json.loads(runner.invoke(app, ["predict", *clips, "--trained", str(model_dir), "--json",
                                           "--device", "cpu"]).output)
    res = runner.invoke(app, ["predict", *clips, "--trained", str(model_dir), "--json", "--device", "cpu",
                              "--target", "valence"])
    assert res.exit_code == 0, res.output
    one = json.loads(res.output)
    assert [set(r) - {"file", "model"} for r in one] == [{"valence"}] * 2
    assert [r["valence"] for r in one] == pytest.approx([r["valence"] for r in every])
    res = runner.invoke(app, ["predict", "missing.wav", "--trained", str(model_dir), "--target", "emotion"])
    assert res.exit_code == 2 and "has no classes" in " ".join(res.output.split())


def test_a_study_finetune_cell_on_dimensions_runs_and_is_reused(corpus, tmp_path, monkeypatch):
    """A [[cells]] kind = "finetune" with target = "avd" (study.registered_finetune): trained,
    registered, its headline the mean CCC; the same cell again re-uses the registered run."""
    from classifiers.results.registry import Registry
    from classifiers.runs.study import headline, registered_finetune
    from featstore import config

    root, model, _ = corpus
    monkeypatch.setenv("SER_CONFIG", str(tmp_path / "config.toml"))
    config.set_value("corpora.msppodcast.root", str(root / "msp"))
    registry = Registry(tmp_path / "ser.db")
    options = dict(target="avd", epochs=1, lr=3e-3, batch_size=8, freeze="none", fold=0, device="cpu")
    first = registered_finetune("msppodcast", model=str(model), registry=registry, out=tmp_path / "ft", **options)
    assert not first.reused and set(first.results.rows) == set(DIMS)
    assert headline(first).startswith("mean CCC ")
    again = registered_finetune("msppodcast", model=str(model), registry=registry, **options)
    assert again.reused and again.run["id"] == first.run["id"]
