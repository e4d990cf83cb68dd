"""What a run predicts: the `--target` values (the emotion classes, or arousal / valence /
dominance) and the names of the regressors that predict dimensions.

Low-level and free of heavy imports: the CLI's help, the fine-tuning config, the regressor registry
and the dimensional probe driver all read these, and this module imports none of them."""

from __future__ import annotations

from featstore.errors import SerError

#: `--target` values: the categorical task, one dimension, or all three at once
TARGETS: dict[str, tuple[str, ...]] = {
    "emotion": (),
    "arousal": ("arousal",),
    "valence": ("valence",),
    "dominance": ("dominance",),
    "avd": ("arousal", "valence", "dominance"),
}

#: the regressor registry's names and where each scikit-learn estimator lives ("module:Class"),
#: imported only when used (`classifiers.estimators.regression.REGRESSORS`); kept here, free of heavy imports,
#: so the CLI's help lists them without loading scikit-learn
REGRESSOR_CLASSES: dict[str, str] = {
    "ridge": "classifiers.estimators.regression:RidgeProbe",
    "xgboost": "classifiers.estimators.boosting:XGBRegressorProbe",
    "knn": "classifiers.estimators.regression:KNNRegressorProbe",
    "attention": "classifiers.estimators.attention:AttentionRegressorProbe",
}
#: regressors that can read frame-level features (clips) instead of pooled ones
FRAME_REGRESSORS = ("attention",)


def dimensional_probes() -> tuple[str, ...]:
    """Regressors `ser probe --target` runs: every one of the registry (the frame-level ones over the
    stored frames of their layers, the others over pooled features)."""
    return tuple(REGRESSOR_CLASSES)


class TargetError(SerError, ValueError):
    """An unknown --target, or a target the corpus has no annotations for."""


def target_dimensions(target: str) -> tuple[str, ...]:
    """The dimensions `target` names (() for the categorical task); one line for an unknown name."""
    key = str(target).strip().lower()
    if key not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[key]
