"""One configuration per run kind (issue 22, item 1): the dataclass is the library function's
options, the CLI's options, the study file's keys and the registry key, and refuses what does not
apply to the mode asked for."""

import inspect
from dataclasses import fields

import pytest
import typer

from classifiers.results.registry import run_key
from classifiers.runs.configs import CONFIGS, ConfigError, MatrixConfig, NeighborsConfig, ProbeConfig
from featstore.errors import SerError
from featstore.options import help_text

#: what a study or the CLI decides for a run, not what the run computes
RUNTIME = {"cache", "registry", "force", "out", "overwrite", "device", "progress", "command", "params", "root"}


def _options(fn) -> set[str]:
    return {k for k in inspect.signature(fn).parameters if k not in RUNTIME} - {"corpus", "corpora"} | (
        {"corpus"} if "corpus" in inspect.signature(fn).parameters else set()) | (
        {"corpora"} if "corpora" in inspect.signature(fn).parameters else set())


def test_each_config_is_its_library_functions_signature():
    from classifiers.runs.dimensional import registered_dimensional, registered_dimensional_matrix
    from classifiers.runs.neighbors import registered_neighbors
    from classifiers.runs.probe import registered_matrix
    from classifiers.runs.study import registered_probe

    probe = {f.name for f in fields(ProbeConfig)}
    categorical = set(ProbeConfig.cell_keys()) - {"target", "alpha"}
    # the spec `seed` reaches registered_probe as the list `seeds`; the classifier options as `params`
    assert _options(registered_probe) == categorical - {"class_weight", "speaker_norm", "early_stopping", "seed"} | {
        "seeds"}
    assert _options(registered_dimensional) == set(ProbeConfig.cell_keys(dimensional=True))
    assert set(ProbeConfig.cell_keys()) == probe
    assert _options(registered_matrix) == set(MatrixConfig.cell_keys()) - {"target", "alpha"}
    assert _options(registered_dimensional_matrix) == set(MatrixConfig.cell_keys(dimensional=True))
    assert _options(registered_neighbors) == {f.name for f in fields(NeighborsConfig)}
    from classifiers.runs.configs import EvaluateConfig
    from classifiers.runs.evaluate import evaluate_model

    assert _options(evaluate_model) == {f.name for f in fields(EvaluateConfig)}


def _command(name: str):
    from cli import app

    return typer.main.get_command(app).commands[name]


def _evaluate_config():
    from classifiers.runs.configs import EvaluateConfig

    return EvaluateConfig


@pytest.mark.parametrize("command, config", [("probe", ProbeConfig), ("neighbors", NeighborsConfig),
                                             ("evaluate", _evaluate_config())])
def test_cli_options_are_generated_from_the_config(command, config):
    params = {p.name: p for p in _command(command).params}
    for f in fields(config):
        if not f.metadata["cli"]:
            continue
        p = params[f.name]
        assert p.help == help_text(f)                              # one help text
        assert config.flag(f.name) in p.opts                       # --layer for layers
        assert (p.callback is not None) == (f.metadata["check"] is not None)   # the same check at parse time
    if config is ProbeConfig:   # drift 1: the CLI can say what a study file can
        assert "--shuffle-labels" in params["shuffle_labels"].opts


def test_study_cell_keys_are_the_config_fields():
    from classifiers.runs.study import MULTIPLIERS, kind_keys

    for kind, cls in CONFIGS.items():
        keys = kind_keys(kind)
        for name in cls.cell_keys():
            assert name in keys or MULTIPLIERS.get(name) in keys, (kind, name)
    assert {"class_weight", "speaker_norm", "early_stopping"} <= set(kind_keys("probe"))     # drift 1


def test_registry_keys_are_those_runs_were_registered_under():
    """The configs key runs exactly as before they existed: written-out dicts of the old format."""
    probe = ProbeConfig("ravdess", layers="all", protocol="luna5", model="m")
    assert probe.key() == dict(corpus="ravdess", train=[], test=None, classifier="logreg", layers="all",
                               protocol="luna5", stat="mean", seeds=1, C=None, classes=None, shuffle_labels=False,
                               model="m")
    weighted = ProbeConfig("ravdess", classifier="xgboost", class_weight="balanced", early_stopping=False, model="m")
    assert weighted.key()["params"] == {"class_weight": "balanced", "early_stopping": False}
    assert weighted.key()["protocol"] == "luna5"          # the corpus' standard protocol, resolved
    dims = ProbeConfig("iemocap", target="AVD", model="m")
    assert dims.key() == dict(corpus="iemocap", target="avd", model="m", train=[], test=None, layers="all",
                              protocol="loso-session", stat="mean", alpha=None, classifier="ridge")
    assert MatrixConfig(["ravdess", "emodb"], layer=3, C=1, model="m").key() == dict(
        corpora=["ravdess", "emodb"], layer="3", classifier="logreg", stat="mean", C=1.0, classes="shared",
        protocol=None, model="m")
    assert NeighborsConfig("ravdess,emodb", model="m").key() == dict(
        corpora=["ravdess", "emodb"], layers="all", k=10, stat="mean", model="m", protocol="loso",
        weighting="uniform", center="global")
    # spellings of one configuration are one run
    assert run_key("probe", ProbeConfig("RAVDESS", layers=[3, 5], C=1, model="m").key(), []) == \
        run_key("probe", ProbeConfig("ravdess", layers="3,5", C=1.0, model="m").key(), [])
    # --layer 2,2 was another run than --layer 2 (and 1,2 than 1-2): the same layers, registered twice
    for one, other in (("2,2", "2"), ("2,1", "1-2"), (" 6, 12 ", "12,6")):
        assert ProbeConfig("ravdess", layers=one, model="m").key() == ProbeConfig("ravdess", layers=other,
                                                                                   model="m").key()
        assert NeighborsConfig("ravdess", layers=one, model="m").key() == NeighborsConfig("ravdess", layers=other,
                                                                                           model="m").key()
    assert ProbeConfig("ravdess", layers="2,1", model="m").layers == "1-2"
    with pytest.raises(ConfigError, match="runs downwards: write 1-3"):   # refused on construction
        ProbeConfig("ravdess", layers="3-1", model="m").key()


@pytest.mark.parametrize("kwargs, words", [
    (dict(target="avd", C=1), "leave out --C"),
    (dict(target="avd", seed="0-1"), "leave out --seed"),
    (dict(target="avd", train=["a", "b"]), "several --train sets"),
    (dict(target="avd", classifier="svm"), "--classifier 'svm': choose one of"),
    (dict(alpha=1), "--alpha is ridge's penalty"),
    (dict(classifier="ridge"), "regressor of a dimensional --target"),
    (dict(classifier="knn", speaker_norm=True), "does not take --speaker-norm"),
    (dict(protocol="luna"), "unknown fold protocol 'luna'"),
    (dict(layers="3-"), "--layer '3-'"),
    (dict(seed="3-1"), "--seed '3-1': the range 3-1 runs downwards: write 1-3"),
    (dict(seed="all"), "--seed 'all': use a seed"),
    (dict(C=-1), "--C -1.0: must be a finite number above 0"),
    (dict(classes="some"), "choose one of shared, all"),
    (dict(stat="median"), "choose one of mean, std, mean+std"),
])
def test_options_that_do_not_apply_are_refused_on_construction(kwargs, words):
    with pytest.raises(SerError) as e:
        ProbeConfig("ravdess", model="m", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_matrix_from_probe_options_refuses_what_a_matrix_ignores():
    # drift 3: --seeds/--train/--test/--corpus with --matrix are refused (--force and --db are honoured)
    for kwargs, flag in [(dict(seed="1"), "--seed"), (dict(train=["a"]), "--train"), (dict(test="b"), "--test"),
                         (dict(corpus="ravdess"), "--corpus"), (dict(shuffle_labels=True), "--shuffle-labels"),
                         (dict(class_weight="balanced"), "--class-weight")]:
        with pytest.raises(ConfigError, match=f"leave out {flag}"):
            MatrixConfig.from_probe(ProbeConfig(layers="3", model="m", **kwargs), "ravdess,emodb")
    with pytest.raises(ConfigError, match="needs one layer"):
        MatrixConfig.from_probe(ProbeConfig(model="m"), "ravdess,emodb")
    m = MatrixConfig.from_probe(ProbeConfig(layers="3", C=0.5, classes="all", model="m"), "ravdess,emodb")
    assert (m.corpora, m.layer, m.C, m.classes) == (["ravdess", "emodb"], "3", 0.5, "all")
    d = MatrixConfig.from_probe(ProbeConfig(layers="3", target="arousal", alpha=2, model="m"), "a,b")
    assert d.dimensional and (d.classifier, d.alpha) == ("ridge", 2.0)
    with pytest.raises(ConfigError, match="two or more corpora"):
        MatrixConfig(["ravdess"], model="m")


def test_save_probe_refuses_what_it_cannot_save():
    # drift 4: --save-probe fitted a logistic regression whatever --classifier said
    for kwargs, words in [(dict(classifier="xgboost"), "--classifier xgboost"), (dict(layers="all"), "one layer"),
                          (dict(target="arousal"), "--target arousal"), (dict(train=["a", "b"]), "2 --train sets"),
                          (dict(speaker_norm=True), "--speaker-norm")]:
        with pytest.raises(ConfigError, match=words):
            ProbeConfig("ravdess", model="m", **{"layers": "3", **kwargs}).check_savable()
    ProbeConfig("ravdess", layers="3", model="m").check_savable()          # one logreg at one layer: fine
    with pytest.raises(ConfigError, match="--matrix"):
        ProbeConfig(layers="3", model="m").check_savable(matrix=True)


def test_demo_and_ser_probe_build_one_key(tmp_path):
    """drift 5: the demo keys its probe through ProbeConfig, as `ser probe --corpus ravdess --protocol luna5 --layer
    all` does, so an identical `ser probe` finds the demo's run."""
    import ast

    from classifiers.runs import demo

    tree = ast.parse(inspect.getsource(demo))
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"ProbeConfig", "NeighborsConfig"} <= called
    assert "registered_probe" not in called and "registered_neighbors" not in called


def test_cli_refuses_in_one_line_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    cache = tmp_path / "cache"
    for args, words in [(["--matrix", "a,b", "--layer", "3", "--seed", "0-1"], "leave out --seed"),
                        (["--corpus", "a", "--layer", "3", "--classifier", "xgboost", "--save-probe",
                          str(tmp_path / "p")], "--classifier xgboost"),
                        (["--corpus", "a", "--target", "avd", "--C", "1"], "leave out --C"),
                        (["--corpus", "a", "--layer", "x"], "--layer 'x'")]:
        r = CliRunner().invoke(app, ["probe", *args, "--cache", str(cache), "--model", "m"], env={"COLUMNS": "300"})
        assert r.exit_code == 2 and r.output.count("\n") == 1 and words in r.output, r.output
    assert not cache.exists()


def test_extract_config_is_extract_manifests_options_and_the_cli_s():
    from featstore.extract import extract_manifest
    from featstore.options import ExtractConfig

    names = {f.name for f in fields(ExtractConfig)}
    assert names <= set(inspect.signature(extract_manifest).parameters)
    params = {p.name: p for p in _command("extract").params}
    for f in fields(ExtractConfig):
        assert params[f.name].help == help_text(f) and ExtractConfig.flag(f.name) in params[f.name].opts
    with pytest.raises(SerError, match=r"--shard 2: shards are numbered 0\.\.1"):
        ExtractConfig(shards=2, shard=2)
    with pytest.raises(SerError, match="--dtype 'float64': choose one of float32, float16, bfloat16"):
        ExtractConfig(dtype="float64")
    with pytest.raises(SerError, match="--frames '3-': use a layer number"):
        ExtractConfig(frames="3-")


@pytest.mark.parametrize("config", [
    ProbeConfig("ravdess", layers="3,5", C=0.5, seed="0-1", classes="all", model="m"),
    ProbeConfig("ravdess", seed="5,0,2", model="m"),
    ProbeConfig("ravdess", classifier="xgboost", class_weight="balanced", early_stopping=False, model="m"),
    ProbeConfig(train=["ravdess,emodb"], test="cremad", target="valence", alpha=3, model="m"),
    MatrixConfig(["ravdess", "emodb"], layer="4", classes="all", model="m"),
    MatrixConfig(["ravdess", "emodb"], layer="4", target="avd", classifier="knn", model="m"),
    NeighborsConfig(["ravdess"], layers="2-4", k=5, stat="mean+std", model="m"),
])
def test_a_registered_key_reads_back_into_its_config(config):
    """`ser results rerun` rebuilds a run from its registered key: from_key is key's inverse."""
    again = type(config).from_key(config.key())
    assert again.key() == config.key()
    same = {k: v for k, v in config.options().items() if k != "protocol" or v is not None}   # the key resolves it
    assert {k: v for k, v in again.options().items() if k in same} == same
    with pytest.raises(SerError, match="no field for"):
        type(config).from_key({**config.key(), "momentum": 0.9})


def test_seed_takes_the_layer_spec_and_keys_runs_as_before():
    """Issue 22, item 8: `--seed` (a seed, or seeds: 0-4, 0,2,5) is ser probe's spelling as it is ser
    finetune's; seeds 0..N-1 are keyed as the count N, as runs registered with --seeds N were."""
    assert ProbeConfig("ravdess", seed="0-2", model="m").key()["seeds"] == 3
    assert ProbeConfig("ravdess", model="m").key()["seeds"] == 1
    assert ProbeConfig("ravdess", seed="5,0,2", model="m").key()["seeds"] == [0, 2, 5]
    assert ProbeConfig("ravdess", seed=[2, 1], model="m").seed == "1-2"
    assert ProbeConfig.from_key(ProbeConfig("ravdess", seed="0-3", model="m").key()).seed == "0-3"


def test_old_seeds_spelling_warns_once_and_means_seed_0_to_n_minus_1(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli as cli_module
    from cli import app

    seen = {}

    def stop(config, **kw):
        seen["seed"] = config.seed
        raise SerError("stopped here")

    monkeypatch.setattr(cli_module, "_probe_sweep", stop)
    args = ["probe", "--corpus", "ravdess", "--cache", str(tmp_path), "--model", "m"]
    r = CliRunner().invoke(app, [*args, "--seeds", "3"], env={"COLUMNS": "300"})
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and seen == {"seed": "0-2"}
    assert lines == ["warning: --seeds is deprecated for ser probe: use --seed 0-2 (the old spelling goes in the next "
                     "release)", "error: stopped here"]
    both = CliRunner().invoke(app, [*args, "--seeds", "3", "--seed", "1"], env={"COLUMNS": "300"})
    assert both.exit_code == 2 and both.output.count("\n") == 1 and "give --seed only" in both.output


def test_choices_in_help_come_from_the_registries():
    """The help of an option with choices lists the registry's names, never a hand-written list."""
    from classifiers.results.records import CLASS_POLICIES  # noqa: F401 - the registries the help is built from
    from classifiers.runs.crossval import CLASSIFIERS
    from classifiers.runs.targets import TARGETS, dimensional_probes
    from featstore.folds import PROTOCOLS
    from featstore.options import COMPUTE_DTYPES, ExtractConfig

    helps = {f.name: help_text(f) for f in fields(ProbeConfig)}
    assert all(name in helps["classifier"] for name in [*CLASSIFIERS, *dimensional_probes()])
    assert all(name in helps["target"] for name in TARGETS)
    assert all(p in helps["protocol"] for p in PROTOCOLS if p != "standard")
    assert all(d in help_text(next(f for f in fields(ExtractConfig) if f.name == "dtype")) for d in COMPUTE_DTYPES)


def test_frame_layers_names_the_frames_to_extract():
    """A frame-level probe or regressor over layers the store has no frames of: one line naming --frames."""
    from types import SimpleNamespace

    from classifiers.runs.runpaths import frame_layers

    fs = SimpleNamespace(frame_layers=[2, 4], paths=["cache/m/ravdess.h5"])
    assert frame_layers(fs, "all", [0, 1, 2, 3, 4], "the attention probe") == [2, 4]
    assert frame_layers(fs, "4", [4], "the attention probe") == [4]
    with pytest.raises(SerError, match=r"the attention regressor reads frame-level features; layers \[3\] have none in "
                                       r"cache/m/ravdess.h5 \(it has \[2, 4\]\): re-extract with --frames 3"):
        frame_layers(fs, "3-4", [3, 4], "the attention regressor")
