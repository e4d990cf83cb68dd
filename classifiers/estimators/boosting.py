"""XGBoost probe: gradient-boosted trees (`hist`) on pooled features, on the GPU when there is one.

`XGBProbe` classifies emotions; `XGBRegressorProbe` regresses dimensions (arousal, valence,
dominance), both stopping early on held-out training speakers."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.estimators.linear import ProbeInputError
from featstore.device import check_device

_TREE_CONSTRAINTS: dict = {
    "n_estimators": [Interval(Integral, 1, None, closed="left")],
    "max_depth": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "subsample": [Interval(Real, 0, 1, closed="right")],
    "colsample_bytree": [Interval(Real, 0, 1, closed="right")],
    "early_stopping_rounds": [Interval(Integral, 1, None, closed="left")],
    "random_state": [Interval(Integral, 0, None, closed="left")],
    "n_jobs": [Integral, None],
    "device": [str, None],
}
"""The hyper-parameters both probes share, as scikit-learn's `_parameter_constraints` (one list, one meaning)."""


def _keep_arguments(est, arguments: dict) -> None:
    """Store a constructor's arguments (its `locals()`) as attributes of the same names, unchanged:
    scikit-learn's rule (validation waits for `fit`), without one `self.x = x` line per parameter
    in each probe."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(est, name, value)


def _booster_params(est, early_stopping: bool, **extra) -> dict:
    """Keyword arguments of the XGBoost estimator for probe `est`: its shared hyper-parameters, `hist`
    trees on its device with its thread count, `early_stopping_rounds` only when there is a validation
    set to stop on (`early_stopping`), and `extra` (objective, multi_strategy, ...)."""
    kw = dict(n_estimators=est.n_estimators, max_depth=est.max_depth, learning_rate=est.learning_rate,
              subsample=est.subsample, colsample_bytree=est.colsample_bytree, tree_method="hist",
              device=est._device(), random_state=est.random_state, n_jobs=est._n_jobs(), **extra)
    if early_stopping:
        kw["early_stopping_rounds"] = est.early_stopping_rounds
    return kw


def _predict_on_cpu(model) -> None:
    """Predictions come from numpy: a CUDA booster would copy them into a DMatrix and warn each process,
    so a booster trained on a GPU predicts on the CPU."""
    if model.get_params()["device"] != "cpu":
        model.set_params(device="cpu")


class XGBProbe(ClassifierMixin, BaseEstimator):
    """sklearn-compatible XGBoost classifier with defaults for small SER data sets.

    fit(X (n, D), y (n,), eval_set=(X_val, y_val) optional) — with a validation set drawn from
    training speakers, training stops early on its log-loss (`early_stopping_rounds`); validation
    rows of classes absent from y are left out.

    Parameters (keyword-only, stored as given, validated by `fit`): n_estimators, max_depth,
    learning_rate, subsample, colsample_bytree, early_stopping_rounds (as XGBoost's),
    random_state (int), class_weight (None, "balanced": rows weighted n / (K n_k), or {class: weight},
    as scikit-learn's), n_jobs (None: `featstore.threads.threads()`, i.e. ``--threads``, $SER_THREADS,
    config `threads` or the CPUs this process may use), device ("auto"/None, "cpu", "cuda", ...).

    Fitted attributes: classes_ (K,), n_features_in_, model_ (the fitted `xgboost.XGBClassifier`).
    """

    _parameter_constraints: dict = {**_TREE_CONSTRAINTS, "class_weight": [StrOptions({"balanced"}), dict, None]}

    def __init__(self, *, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.1,
                 subsample: float = 0.8, colsample_bytree: float = 0.5, early_stopping_rounds: int = 20,
                 random_state: int = 0, class_weight: str | dict | None = None, n_jobs: int | None = None,
                 device: str | None = None):
        _keep_arguments(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _device(self) -> str:
        from featstore.device import resolve_device

        return str(resolve_device(self.device))

    def _n_jobs(self) -> int:
        from featstore.threads import threads

        return self.n_jobs if self.n_jobs is not None else threads()

    def fit(self, X, y, eval_set=None) -> XGBProbe:
        """Fit on X (n, D) and labels y (n,); eval_set: (X_val, y_val) for early stopping."""
        from xgboost import XGBClassifier

        self._validate_params()
        check_device(self.device)
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ProbeInputError(f"y holds one class only ({self.classes_[0]!r}); a classifier needs at least two")
        kw = _booster_params(self, eval_set is not None,
                             **({"objective": "binary:logistic"} if len(self.classes_) == 2 else {}))
        fit_kw = {}
        if eval_set is not None:
            Xv, yv = eval_set
            Xv = validate_data(self, Xv, dtype=np.float32, reset=False)
            index = {c: i for i, c in enumerate(self.classes_)}
            keep = np.array([v in index for v in yv])
            fit_kw = dict(eval_set=[(Xv[keep], np.array([index[v] for v in np.asarray(yv)[keep]]))], verbose=False)
        if self.class_weight is not None:
            from sklearn.utils.class_weight import compute_sample_weight

            cw = self.class_weight if isinstance(self.class_weight, str) else {
                i: float(self.class_weight.get(c, 1.0)) for i, c in enumerate(self.classes_.tolist())}
            fit_kw["sample_weight"] = compute_sample_weight(cw, yi)
        self.model_ = XGBClassifier(**kw)
        self.model_.fit(X, yi, **fit_kw)
        _predict_on_cpu(self.model_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, K) class probabilities, columns in `classes_` order."""
        check_is_fitted(self)
        return self.model_.predict_proba(validate_data(self, X, dtype=np.float32, reset=False))

    def predict(self, X) -> np.ndarray:
        """(n,) predicted labels, values of `classes_`."""
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class XGBRegressorProbe(RegressorMixin, BaseEstimator):
    """sklearn-compatible XGBoost regressor (`reg:squarederror`, `hist`) for dimensional targets
    (arousal, valence, dominance; issue 25), with early stopping on held-out training speakers.

    fit(X (n, D), y (n,) or (n, T), groups=speakers (n,), eval_set=(X_val, y_val)): with `eval_set`
    training stops early on its RMSE (mean over targets), as `XGBProbe`; else with `groups` whole
    speakers of the training rows (`val_fraction` of them, at least one, drawn by
    `classifiers.estimators.regression.speaker_validation`) are held out for early stopping and the trees are
    grown on the other speakers only, so no validation row shares a speaker with a training row
    and no test speaker is ever seen; with neither (or one speaker), every tree is grown on every
    row. Several targets are fitted together by XGBoost's multi-output trees, one output per tree
    (`multi_strategy="one_output_per_tree"`, the default) or one tree for all outputs
    ("multi_output_tree").

    Parameters (keyword-only, stored as given, validated by `fit`): n_estimators, max_depth,
    learning_rate, subsample, colsample_bytree, early_stopping_rounds (as XGBoost's),
    multi_strategy, val_fraction, random_state (int), n_jobs (None: `featstore.threads.threads()`),
    device ("auto"/None, "cpu", "cuda", ...).

    Fitted attributes: n_features_in_, n_outputs_, model_ (the fitted `xgboost.XGBRegressor`),
    best_iteration_ (None without early stopping), val_groups_ (the held-out speakers drawn from
    `groups`, sorted; [] when none were drawn) and fit_rows_ / val_rows_ (row indices of X the
    trees were grown on / stopped on; val_rows_ is empty without a drawn validation set).
    """

    _parameter_constraints: dict = {
        **_TREE_CONSTRAINTS,
        "multi_strategy": [StrOptions({"one_output_per_tree", "multi_output_tree"})],
        "val_fraction": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, *, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.1,
                 subsample: float = 0.8, colsample_bytree: float = 0.5, early_stopping_rounds: int = 20,
                 multi_strategy: str = "one_output_per_tree", val_fraction: float = 0.15, random_state: int = 0,
                 n_jobs: int | None = None, device: str | None = None):
        _keep_arguments(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags

    _device = XGBProbe._device
    _n_jobs = XGBProbe._n_jobs

    def fit(self, X, y, groups=None, eval_set=None) -> XGBRegressorProbe:
        """Fit on X (n, D) and targets y (n,) or (n, T); groups (n,): the speaker of each row, for
        the early-stopping speakers; eval_set: (X_val, y_val) instead of drawing them."""
        from xgboost import XGBRegressor

        from classifiers.estimators.regression import RegressionError, speaker_validation

        self._validate_params()
        check_device(self.device)
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True)
        one_d = y.ndim == 1
        Y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
        self.n_outputs_ = Y.shape[1]
        self._one_d = one_d
        rows, val, fit_kw = np.arange(len(Y)), np.arange(0), {}
        self.val_groups_ = []
        if eval_set is not None:
            Xv, yv = eval_set
            Xv = validate_data(self, Xv, dtype=np.float32, reset=False)
            Yv = np.asarray(yv, dtype=np.float32).reshape(len(Xv), -1)
            if Yv.shape[1] != Y.shape[1]:
                raise RegressionError(f"eval_set has {Yv.shape[1]} target(s), the training rows {Y.shape[1]}")
            fit_kw = dict(eval_set=[(Xv, Yv if not one_d else Yv[:, 0])])
        elif groups is not None:
            split = speaker_validation(groups, len(Y), self.val_fraction, self.random_state)
            if split is not None:
                rows, val = split
                self.val_groups_ = sorted({str(g) for g in np.asarray(groups, dtype=object)[val]})
                fit_kw = dict(eval_set=[(X[val], Y[val, 0] if one_d else Y[val])])
        self.fit_rows_, self.val_rows_ = rows, val
        self.model_ = XGBRegressor(**_booster_params(self, bool(fit_kw), objective="reg:squarederror",
                                                     multi_strategy=self.multi_strategy))
        self.model_.fit(X[rows], Y[rows, 0] if one_d else Y[rows], verbose=False, **fit_kw)
        self.best_iteration_ = int(self.model_.best_iteration) if fit_kw else None
        _predict_on_cpu(self.model_)
        return self

    def predict(self, X) -> np.ndarray:
        """(n,) or (n, T) predictions, as the training targets' shape."""
        check_is_fitted(self)
        p = np.asarray(self.model_.predict(validate_data(self, X, dtype=np.float32, reset=False)), dtype=np.float64)
        return p.reshape(len(p)) if self._one_d else p.reshape(len(p), self.n_outputs_)
