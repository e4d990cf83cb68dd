"""One typed configuration per run kind: probe, matrix, neighbors (fine-tuning: `FinetuneConfig`).

Each dataclass is the one home of its kind's options: its fields are the keyword options of the
library function that runs it (`registered_probe` / `registered_dimensional`, `registered_matrix` /
`registered_dimensional_matrix`, `registered_neighbors`; tests/test_configs.py holds them equal),
the command line's options (`cli._config_options` generates them from the fields: flag, help and
the parse-time check below), the keys a study file's `[[cells]]` entry of that kind may use
(`classifiers.runs.study.kind_keys`), and, through `key()`, the configuration the run registry keys the
run by and every results JSON records. Values are checked on construction; an option that means
nothing for the mode chosen (a penalty C for a rating, seeds for a transfer matrix) is refused
in one line there, never ignored.

Light on import (no numpy, torch or sklearn): the CLI builds its options from these classes before
any heavy import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from featstore.errors import SerError
from featstore.options import (  # noqa: F401 - re-exported: the CLI and the study read them from here
    ConfigError,
    RunConfig,
    at_least_one_problem,
    check_value,
    layer_spec_problem,
    layers_spec,
    names_problem,
    one_layer_problem,
    option,
    parse_seeds,
    positive_problem,
    seed_spec_problem,
    seeds_spec,
)
from featstore.options import choice as _choice
from featstore.options import refuse as _refuse


def _stats() -> tuple[str, ...]:
    from featstore.options import STATS

    return STATS


def _targets() -> list[str]:
    from classifiers.runs.targets import TARGETS

    return list(TARGETS)


def _classifiers() -> list[str]:
    from classifiers.runs.crossval import CLASSIFIERS
    from classifiers.runs.targets import dimensional_probes

    return list(dict.fromkeys([*CLASSIFIERS, *dimensional_probes()]))


def _policies() -> tuple[str, ...]:
    from classifiers.results.records import CLASS_POLICIES

    return CLASS_POLICIES


def _protocols() -> str:
    from featstore.folds import PROTOCOLS

    return ", ".join(p for p in PROTOCOLS if p != "standard")


def protocol_problem(v) -> str | None:
    """A protocol `featstore.folds.make_folds` knows (luna5, loso, speaker-kfold:5, ...)."""
    from featstore.folds import check_protocol

    try:
        check_protocol(v)
    except SerError as e:
        return str(e).splitlines()[0]
    return None


#: the probe options of a categorical probe that go to the classifier (`classifiers.runs.crossval.PROBE_OPTIONS`),
#: with their defaults: a field at its default is left out of the registry key (as runs registered before it)
PARAM_DEFAULTS = {"class_weight": None, "speaker_norm": False, "early_stopping": True}


# fields several kinds share: one definition each (a factory, since a dataclass owns its Field objects)
def _classifier_help() -> str:
    from classifiers.runs.crossval import CLASSIFIERS, FRAME_CLASSIFIERS
    from classifiers.runs.targets import dimensional_probes

    return (f"Classifier: {', '.join(CLASSIFIERS)} (default logreg; frame-level: {', '.join(FRAME_CLASSIFIERS)}); "
            f"with a dimensional --target a regressor: {', '.join(dimensional_probes())} (default ridge).")


def _classifier_option():
    return option(None, _classifier_help, check=_choice(_classifiers))


def _layers_option():
    return option("all", "Layers: 12, all, 3-9 or 6,12.", flag="--layer", short="-l", check=layer_spec_problem)


def _stat_option():
    return option("mean", lambda: f"Pooled statistic: {', '.join(_stats())}.", check=_choice(_stats))


def _c_option():
    return option(None, "Fix logreg's C (default: chosen by inner speaker CV).", check=positive_problem)


def _target_option():
    return option("emotion", lambda: f"What to predict: {', '.join(_targets())} (emotion: classes, scored by UAR; "
                                     f"the others: ratings on [-1, 1], scored by CCC).", check=_choice(_targets))


def _alpha_option():
    return option(None, "Dimensional targets: fix ridge's alpha (default: chosen by inner speaker CV).",
                  check=positive_problem)


def _model_option():
    return option(None, "Hub id or local directory of the backbone whose stores are read.", cli=False)


class _FeatureRun(RunConfig):
    """A run over cached features: its stores are the `model`'s stores of `needed()` corpora."""

    def current_stores(self, cache, root=None) -> list[dict]:
        """The fingerprints of the stores the run reads, as they are now (`ser results rerun` compares them)."""
        from classifiers.results.runfiles import fingerprints

        return fingerprints(cache, self.model, self.needed())


def _regressor(target: str, classifier: str | None) -> str:
    """The regressor of a dimensional `target`: `classifier` (ridge for none or the emotion default
    logreg), refused in one line when it has no regressor."""
    from classifiers.runs.targets import dimensional_probes

    regressor = "ridge" if classifier in (None, "logreg") else classifier
    if regressor not in dimensional_probes():
        raise ConfigError(f"--target {target} predicts values: --classifier {regressor} has no regressor; choose "
                          f"one of {', '.join(dimensional_probes())} (default ridge)")
    return regressor


def _numbers(config) -> None:
    """The spelling every targeted configuration normalises: target lower-case, C and alpha floats."""
    config.target = str(config.target).strip().lower()
    if config.C is not None:
        config.C = float(config.C)
    if config.alpha is not None:
        config.alpha = float(config.alpha)


@dataclass
class ProbeConfig(_FeatureRun):
    """A probe run: a layer sweep on one corpus' folds, multi-corpus training (`train`), or
    cross-corpus transfer (`train` -> `test`); a categorical classifier scored by UAR, or, with a
    dimensional `target`, a regressor scored by CCC."""

    kind: ClassVar[str] = "probe"
    CATEGORICAL_ONLY: ClassVar[tuple[str, ...]] = ("seed", "C", "classes", "shuffle_labels", "class_weight",
                                                   "speaker_norm", "early_stopping")

    corpus: str | None = option(None, "Corpus to test on (its folds); default: every corpus cached for the model.",
                                short="-c")
    train: list[str] = option([], "Training corpora, e.g. ravdess,emodb (repeat to compare training sets).",
                              many=True, check=names_problem)
    test: str | None = option(None, "Cross-corpus: test corpora, e.g. cremad.", check=names_problem)
    layers: str = _layers_option()
    classifier: str | None = _classifier_option()
    protocol: str | None = option(None, lambda: f"Fold protocol: {_protocols()}; default: the corpus' standard one.",
                                  short="-p", check=protocol_problem)
    stat: str = _stat_option()
    seed: str = option("0", "Random seed(s), one run each: 0 (default), 3, 0-4 or 0,2,5 (--layer's spec).",
                       check=seed_spec_problem)
    C: float | None = _c_option()
    classes: str | None = option(None, "Training and test corpora differ: shared (train on and predict among the "
                                       "classes both declare; default cross-corpus) or all (every test row).",
                                 check=_choice(_policies))
    shuffle_labels: bool = option(False, "Control: train on labels shuffled within each training speaker "
                                         "(the chance level this pipeline reaches).")
    class_weight: str | None = option(None, "balanced: weight classes by inverse frequency in each fold's training "
                                            "rows.", check=_choice(lambda: ("balanced",)))
    speaker_norm: bool = option(False, "Standardise each speaker's features with their own utterances (unlabelled).")
    early_stopping: bool = option(True, "XGBoost: stop early on training speakers' validation split (--no-early-"
                                        "stopping trains every tree).")
    target: str = _target_option()
    alpha: float | None = _alpha_option()
    model: str | None = _model_option()

    def __post_init__(self):
        if isinstance(self.train, str):
            self.train = [self.train]
        self.train = [str(t) for t in (self.train or []) if str(t).strip()]
        self.corpus = self.corpus.strip().lower() if self.corpus else None
        if isinstance(self.seed, list | tuple):
            self.seed = seeds_spec(list(self.seed))
        self.seed = str(self.seed).replace(" ", "")
        if isinstance(self.layers, int | list):
            self.layers = ",".join(map(str, self.layers)) if isinstance(self.layers, list) else str(self.layers)
        _numbers(self)
        self._check_fields()
        self.seed = seeds_spec(parse_seeds(self.seed))      # one spelling per set of seeds: "0-2", "0,2,5"
        self.layers = layers_spec(self.layers)              # and of layers: --layer 2,2 is --layer 2
        if self.dimensional:
            self._check_dimensional()
        else:
            self.classifier = self.classifier or "logreg"
            self._check_categorical()
        self._resolve_model()

    @property
    def dimensional(self) -> bool:
        """A dimensional target (arousal, valence, dominance, avd): a regressor scored by CCC."""
        return self.target != "emotion"

    def _check_dimensional(self) -> None:
        self.classifier = _regressor(self.target, self.classifier)   # `--target avd` alone: ridge
        given = self.given()
        bad = [self.flag(k) for k in ("classes", "seed", "C", "class_weight", "speaker_norm", "shuffle_labels")
               if k in given]
        bad += ["--no-early-stopping"] if not self.early_stopping else []
        bad += ["several --train sets"] if len(self.train) > 1 else []
        _refuse(bad, f"--target {self.target} runs a regressor (ridge: alpha by inner speaker CV, or --alpha) on "
                     f"one training set")

    def _check_categorical(self) -> None:
        from classifiers.runs.crossval import check_classifier, check_params

        if self.alpha is not None:
            raise ConfigError("--alpha is ridge's penalty for a dimensional --target (arousal, valence, dominance, "
                              "avd); the emotion probe's penalty is --C")
        if self.classifier == "ridge":
            raise ConfigError("--classifier ridge is the regressor of a dimensional --target (arousal, valence, "
                              "dominance, avd); for emotion classes use logreg")
        check_params(check_classifier(self.classifier), self.params)

    @property
    def seeds(self) -> list[int]:
        """The seeds `seed` names (one run each)."""
        return parse_seeds(self.seed)

    @classmethod
    def from_key(cls, key: dict) -> ProbeConfig:
        """As `RunConfig.from_key`; a key's `seeds` (a count N for seeds 0..N-1, else the list) is `seed`."""
        key = dict(key)
        if "seeds" in key:
            n = key.pop("seeds")
            key["seed"] = seeds_spec(list(range(n)) if isinstance(n, int) else list(n))
        return super().from_key(key)

    @property
    def params(self) -> dict:
        """The classifier options set away from their defaults (`run_probe`'s `params`)."""
        return {k: getattr(self, k) for k, d in PARAM_DEFAULTS.items() if getattr(self, k) != d}

    def check_savable(self, save_probe=True, *, matrix: bool = False) -> None:
        """`--save-probe` fits one logistic-regression probe (what `ser predict` loads) at one layer on
        one training set: anything else is refused here, before the sweep runs (nothing to check
        when `save_probe` is not given)."""
        if not save_probe:
            return
        why = "--save-probe saves one logistic-regression probe at one layer on one training set"
        _refuse(["--matrix"] if matrix else [], why)
        _refuse([f"--target {self.target}"] if self.dimensional else [], why)
        _refuse([f"--classifier {self.classifier}"] if self.classifier != "logreg" else [], why)
        _refuse([f for f, on in (("--class-weight", self.class_weight), ("--speaker-norm", self.speaker_norm),
                                 ("--shuffle-labels", self.shuffle_labels)) if on], why)
        if not re.fullmatch(r"\s*\d+\s*", self.layers):
            raise ConfigError(f"{why}: give one layer (e.g. --layer 12, not {self.layers!r})")
        if len(self.train) > 1:
            raise ConfigError(f"{why}, but {len(self.train)} --train sets were given; keep one (corpora joined by "
                              f"commas train together, e.g. --train ravdess,emodb)")

    def needed(self) -> list[str]:
        from classifiers.results.runfiles import _needed

        return _needed(self.corpus, self.train, self.test)

    def for_corpus(self, corpus: str | None) -> ProbeConfig:
        return replace(self, corpus=corpus)

    def key(self) -> dict:
        """The configuration the registry keys this run by (and results JSON record)."""
        if self.dimensional:
            from classifiers.runs.dimensional import dimensional_config

            return dimensional_config(self.corpus, target=self.target, model=self.model, train=self.train,
                                      test=self.test, layers=self.layers, protocol=self.protocol, stat=self.stat,
                                      alpha=self.alpha, regressor=self.classifier)
        from classifiers.runs.probe import probe_config

        return probe_config(self.corpus, model=self.model, train=self.train, test=self.test, layers=self.layers,
                            classifier=self.classifier, protocol=self.protocol, stat=self.stat, seeds=self.seeds,
                            C=self.C, classes=self.classes, shuffle_labels=self.shuffle_labels, params=self.params)

    def run(self, *, cache, registry, force: bool = False, out=None, overwrite: bool = False,
            device: str | None = None, progress: bool = False, command: str = ""):
        """Run through the registry (`registered_probe` or `registered_dimensional`): a
        `classifiers.results.runfiles.Registered` (reused=True when an identical run was registered)."""
        common = dict(model=self.model, cache=cache, registry=registry, force=force, out=out, overwrite=overwrite,
                      progress=progress, command=command)
        o = {k: v for k, v in self.options().items() if k != "model"}
        if self.dimensional:
            from classifiers.results.runfiles import Registered
            from classifiers.runs.dimensional import registered_dimensional

            for k in ("seed", "C", "classes", "shuffle_labels", *PARAM_DEFAULTS):
                o.pop(k)
            d = registered_dimensional(o.pop("corpus"), **common, **o)
            return Registered(d.run, d.result, reused=d.reused, files=list(d.result.files))
        from classifiers.runs.probe import registered_probe

        for k in ("target", "alpha", "seed", *PARAM_DEFAULTS):
            o.pop(k)
        return registered_probe(o.pop("corpus"), device=device, params=self.params or None, seeds=self.seeds,
                                **common, **o)


@dataclass
class MatrixConfig(_FeatureRun):
    """A transfer matrix: every corpus trained on and tested against every other at one layer (the
    diagonal: each corpus' own folds), UAR per cell or, with a dimensional `target`, CCC."""

    kind: ClassVar[str] = "matrix"
    CATEGORICAL_ONLY: ClassVar[tuple[str, ...]] = ("C", "classes")

    corpora: list[str] = option([], "Corpora, rows and columns in this order, e.g. ravdess,emodb,emovo.",
                                flag="--matrix", check=names_problem)
    layer: str = option("12", "The one layer, e.g. 12.", short="-l", check=one_layer_problem)
    classifier: str | None = _classifier_option()
    protocol: str | None = option(None, lambda: f"Fold protocol of the diagonal: {_protocols()}; default: each "
                                                f"corpus' standard one.", short="-p", check=protocol_problem)
    stat: str = _stat_option()
    C: float | None = _c_option()
    classes: str | None = option(None, "Off the diagonal: shared (default: train on and predict among the classes "
                                       "both declare) or all.", check=_choice(_policies))
    target: str = _target_option()
    alpha: float | None = _alpha_option()
    model: str | None = _model_option()

    def __post_init__(self):
        if isinstance(self.corpora, str):
            self.corpora = self.corpora.split(",")
        self.corpora = [c.strip().lower() for x in self.corpora for c in str(x).split(",") if c.strip()]
        self.layer = str(self.layer).strip()
        _numbers(self)
        self._check_fields()
        if len(self.corpora) < 2:
            raise ConfigError(f"--matrix {','.join(self.corpora)!r}: a transfer matrix needs two or more corpora, "
                              f"e.g. --matrix ravdess,emodb")
        if self.dimensional:
            self.classifier = _regressor(self.target, self.classifier)
            _refuse([self.flag(k) for k in ("C", "classes") if k in self.given()],
                    f"--target {self.target} runs a regressor (ridge: alpha by inner speaker CV, or --alpha)")
        else:
            from classifiers.runs.crossval import check_classifier

            self.classifier = check_classifier(self.classifier or "logreg")
            if self.alpha is not None:
                raise ConfigError("--alpha is ridge's penalty for a dimensional --target; the emotion probe's "
                                  "penalty is --C")
        self._resolve_model()

    dimensional = ProbeConfig.dimensional

    @classmethod
    def from_probe(cls, probe: ProbeConfig, corpora) -> MatrixConfig:
        """`ser probe --matrix`: the probe options a matrix takes; any other option given is refused."""
        shared = {f.name for f in fields(cls)}
        given = probe.given()
        if probe.dimensional and probe.classifier == "ridge":
            given.pop("classifier", None)
        extra = [ProbeConfig.flag(k) for k in given if k not in shared and k != "layers"]
        extra += ["--no-early-stopping"] if not probe.early_stopping else []
        _refuse([f for f in extra if f != "--early-stopping"],
                "--matrix runs every corpus against every other at one seed (or run `ser probe --train A --test B` "
                "per cell)")
        if one_layer_problem(probe.layers):
            raise ConfigError(f"--matrix needs one layer (e.g. --layer 12), not {probe.layers!r}")
        o = {k: getattr(probe, k) for k in shared if k not in ("corpora", "layer")}
        return cls(corpora=corpora, layer=probe.layers, **o)

    def key(self) -> dict:
        if self.dimensional:
            return dict(corpora=list(self.corpora), layer=self.layer, target=self.target, classifier=self.classifier,
                        stat=self.stat, alpha=self.alpha, protocol=self.protocol, model=self.model)
        from classifiers.runs.probe import matrix_config

        return matrix_config(self.corpora, layer=self.layer, model=self.model, classifier=self.classifier,
                             stat=self.stat, C=self.C, classes=self.classes, protocol=self.protocol)

    def run(self, *, cache, registry, force: bool = False, out=None, overwrite: bool = False,
            device: str | None = None, progress: bool = False, command: str = ""):
        """Run through the registry: (`Registered`, the cells' details or None for a dimensional matrix)."""
        from classifiers.results.runfiles import Registered

        common = dict(model=self.model, cache=cache, registry=registry, force=force, out=out, overwrite=overwrite,
                      progress=progress, command=command, layer=self.layer, protocol=self.protocol, stat=self.stat,
                      classifier=self.classifier)
        if self.dimensional:
            from classifiers.runs.dimensional import registered_dimensional_matrix

            run, m, reused = registered_dimensional_matrix(self.corpora, target=self.target, alpha=self.alpha,
                                                           **common)
            return Registered(run, m, reused=reused, files=list(m.files)), None
        from classifiers.runs.probe import registered_matrix

        return registered_matrix(self.corpora, C=self.C, classes=self.classes, device=device, **common)


@dataclass
class NeighborsConfig(_FeatureRun):
    """A neighbours analysis: neighbour purity per layer, leave-one-speaker-out kNN, cross-corpus
    retrieval (exact faiss search)."""

    kind: ClassVar[str] = "neighbors"
    FIXED_KEYS: ClassVar[tuple[str, ...]] = ("protocol", "weighting", "center")

    corpora: list[str] = option([], "Corpora, e.g. ravdess,emodb (default: every corpus cached for the model).",
                                flag="--corpus", short="-c", check=names_problem)
    layers: str = _layers_option()
    k: int = option(10, "Neighbours per query.", check=at_least_one_problem)
    stat: str = _stat_option()
    model: str | None = _model_option()

    def __post_init__(self):
        if isinstance(self.corpora, str):
            self.corpora = self.corpora.split(",")
        self.corpora = [c.strip().lower() for x in self.corpora or [] for c in str(x).split(",") if c.strip()]
        if isinstance(self.layers, int | list):
            self.layers = ",".join(map(str, self.layers)) if isinstance(self.layers, list) else str(self.layers)
        self._check_fields()
        self.layers = layers_spec(self.layers)
        self._resolve_model()

    def key(self) -> dict:
        from classifiers.runs.neighbors import neighbors_config

        return neighbors_config(self.corpora, layers=self.layers, k=self.k, stat=self.stat, model=self.model)

    def run(self, *, cache, registry, force: bool = False, out=None, overwrite: bool = False,
            progress: bool = False, command: str = ""):
        from classifiers.runs.neighbors import registered_neighbors

        return registered_neighbors(self.corpora, layers=self.layers, k=self.k, stat=self.stat, model=self.model,
                                    cache=cache, registry=registry, force=force, out=out, overwrite=overwrite,
                                    progress=progress, command=command)


#: kind -> its configuration class (fine-tuning: `classifiers.finetuning.finetune.FinetuneConfig`)
CONFIGS = {"probe": ProbeConfig, "matrix": MatrixConfig, "neighbors": NeighborsConfig}


@dataclass
class EvaluateConfig(RunConfig):
    """Scoring a trained model (a saved probe or a fine-tuned model directory) on a corpus, or on
    one fold's test speakers; `--map/--drop` relabel the test truth and the model's classes."""

    kind: ClassVar[str] = "evaluate"
    FIXED_KEYS: ClassVar[tuple[str, ...]] = ("model_sha256",)

    model_dir: str | None = option(None, "A fine-tuned model directory or a saved probe (--save-probe).", cli=False)
    corpus: str | None = option(None, "The corpus to score on.", cli=False)
    fold: str | None = option(None, "Only this fold's test speakers (e.g. luna-0).")
    protocol: str | None = option(None, lambda: f"Fold protocol of --fold: {_protocols()} (default: the corpus' "
                                                f"standard).", short="-p", check=protocol_problem)
    maps: list[str] = option([], "Relabel a class in the test labels and the model's predictions, e.g. calm=neutral "
                                 "(repeatable).", flag="--map", many=True)
    drop: list[str] = option([], "Leave out a class: its test utterances and the model's predictions of it (argmax "
                                 "over the rest; repeatable).", many=True)
    target: str | None = option(None, lambda: f"What to score: {', '.join(_targets())} (default: what the model "
                                              f"predicts; a multitask model's dimensions need --target).",
                                check=_choice(_targets))
    backbone: str | None = option(None, "The backbone of a saved probe or adapter export where it is now (not part "
                                        "of the run's identity).", cli=False)

    def __post_init__(self):
        from classifiers.runs.evaluate import parse_maps

        if isinstance(self.maps, dict):
            self.maps = [f"{k}={v}" for k, v in self.maps.items()]
        self.maps = list(self.maps or [])
        parse_maps(self.maps)
        self.drop = [self.drop] if isinstance(self.drop, str) else list(self.drop or [])
        self.fold = None if self.fold is None else str(self.fold)
        self._check_fields()
        if not self.model_dir or not self.corpus:
            raise ConfigError("an evaluation needs the trained model (--trained) and the corpus to score on (--corpus)")
        self.model_dir = str(self.model_dir)

    @property
    def model(self) -> str:            # what `ser results` shows as a run's model
        return self.model_dir

    def mapping(self) -> dict[str, str]:
        from classifiers.runs.evaluate import parse_maps

        return parse_maps(self.maps)

    def key(self) -> dict:
        from classifiers.runs.evaluate import evaluate_key

        return evaluate_key(self.model_dir, self.corpus, fold=self.fold, protocol=self.protocol, maps=self.mapping(),
                            drop=self.drop, target=self.target)

    def current_stores(self, cache, root=None) -> list[dict]:
        from classifiers.runs.evaluate import evaluate_stores

        return evaluate_stores(self.model_dir, self.corpus, cache, root, self.backbone, self.target)

    def run(self, *, cache, registry=None, force: bool = False, out=None, device: str = "auto", root=None,
            command: str = "", progress: bool = False):
        """`classifiers.runs.evaluate.evaluate_model` with these options (an `Evaluation`)."""
        from classifiers.runs.evaluate import evaluate_model

        return evaluate_model(self.model_dir, self.corpus, cache=cache, root=root, fold=self.fold,
                              protocol=self.protocol, maps=self.mapping(), drop=self.drop, out=out, device=device or
                              "auto", registry=registry, command=command, backbone=self.backbone, force=force,
                              target=self.target)


CONFIGS["evaluate"] = EvaluateConfig
