"""What XGBProbe and XGBRegressorProbe share (classifiers/estimators/boosting.py): one list of hyper-parameter
constraints, constructors that store their arguments unchanged, and one assembly of the booster's
arguments; each probe equals the XGBoost estimator built by hand with those arguments, bit for bit."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import xgboost

from classifiers.estimators.boosting import XGBProbe, XGBRegressorProbe

SHARED = dict(n_estimators=25, max_depth=3, learning_rate=0.2, subsample=0.7, colsample_bytree=0.6,
              random_state=5, n_jobs=1)


def data(seed=0, n=90, d=5):
    """X (n, d) float32, labels of 3 classes and 2 targets that depend on X, speaker groups of 9 rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.array(["a", "b", "c"])[np.digitize(X[:, 0] + 0.3 * rng.normal(size=n), [-0.4, 0.4])]
    Y = np.stack([X[:, 1] - X[:, 2], X[:, 0] * X[:, 3]], 1) + 0.1 * rng.normal(size=(n, 2))
    return X, y, Y, np.repeat([f"s{i}" for i in range(n // 9)], 9)


@pytest.mark.parametrize("cls, own", [(XGBProbe, {"class_weight": {"a": 2.0}}),
                                      (XGBRegressorProbe, {"multi_strategy": "multi_output_tree",
                                                           "val_fraction": 0.3})])
def test_constructor_stores_every_argument_and_validates_them_all(cls, own):
    params = dict(SHARED, early_stopping_rounds=4, device="cpu", **own)
    est = cls(**params)
    assert est.get_params() == params and all(getattr(est, k) is v for k, v in params.items())
    # every parameter of the signature has a constraint and the other way round: none is forgotten
    assert set(cls._parameter_constraints) == set(inspect.signature(cls).parameters)
    with pytest.raises(ValueError, match="max_depth"):
        cls(max_depth=0).fit(*data()[:2])


def test_classifier_is_the_xgboost_classifier_with_the_shared_arguments():
    X, y, _, _ = data()
    codes = np.unique(y, return_inverse=True)[1]
    probe = XGBProbe(**SHARED, early_stopping_rounds=3).fit(X[:60], y[:60], eval_set=(X[60:], y[60:]))
    want = xgboost.XGBClassifier(**SHARED, tree_method="hist", device="cpu", early_stopping_rounds=3)
    want.fit(X[:60], codes[:60], eval_set=[(X[60:], codes[60:])], verbose=False)
    assert np.array_equal(probe.predict_proba(X), want.predict_proba(X))
    assert probe.model_.get_params()["early_stopping_rounds"] == 3 and probe.model_.best_iteration < 24
    # no validation set: no early stopping; two classes: the binary objective
    plain = XGBProbe(**SHARED, early_stopping_rounds=3).fit(X, y == "a")
    assert plain.model_.get_params()["early_stopping_rounds"] is None
    assert plain.model_.get_params()["objective"] == "binary:logistic"
    assert plain.model_.get_booster().num_boosted_rounds() == 25


def test_regressor_is_the_xgboost_regressor_with_the_shared_arguments():
    X, _, Y, g = data()
    probe = XGBRegressorProbe(**SHARED, early_stopping_rounds=2, val_fraction=0.3).fit(X, Y, groups=g)
    assert len(probe.val_rows_) and probe.model_.get_params()["early_stopping_rounds"] == 2
    want = xgboost.XGBRegressor(**SHARED, tree_method="hist", device="cpu", early_stopping_rounds=2,
                                objective="reg:squarederror", multi_strategy="one_output_per_tree")
    want.fit(X[probe.fit_rows_], Y[probe.fit_rows_], eval_set=[(X[probe.val_rows_], Y[probe.val_rows_])],
             verbose=False)
    assert np.array_equal(probe.predict(X), want.predict(X).astype(np.float64))
    assert probe.best_iteration_ == want.best_iteration
    plain = XGBRegressorProbe(**SHARED, early_stopping_rounds=2).fit(X, Y[:, 0])
    assert plain.model_.get_params()["early_stopping_rounds"] is None and plain.best_iteration_ is None
    assert plain.model_.get_params()["device"] == "cpu" and plain.predict(X).shape == (len(X),)
