"""XGBoost probe: gradient-boosted trees (`hist`) on pooled features, on the GPU when there is one."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class XGBProbe(ClassifierMixin, BaseEstimator):
    """sklearn-compatible XGBoost classifier with defaults for small SER data sets.

    fit(X (n, D), y (n,), eval_set=(X_val, y_val) optional) — with a validation set drawn from
    training speakers, training stops early on its log-loss.
    """

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.1,
                 subsample: float = 0.8, colsample_bytree: float = 0.5, early_stopping_rounds: int = 20,
                 random_state: int = 0, n_jobs: int | None = None, device: str | None = None):
        self.n_estimators, self.max_depth, self.learning_rate = n_estimators, max_depth, learning_rate
        self.subsample, self.colsample_bytree = subsample, colsample_bytree
        self.early_stopping_rounds, self.random_state, self.n_jobs, self.device = (
            early_stopping_rounds, random_state, n_jobs, device)

    def _device(self) -> str:
        from featstore.device import resolve_device

        return str(resolve_device(self.device))

    def fit(self, X, y, eval_set=None):
        from xgboost import XGBClassifier

        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        kw = dict(n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
                  subsample=self.subsample, colsample_bytree=self.colsample_bytree, tree_method="hist",
                  device=self._device(), random_state=self.random_state, n_jobs=self.n_jobs)
        fit_kw = {}
        if eval_set is not None:
            Xv, yv = eval_set
            index = {c: i for i, c in enumerate(self.classes_)}
            keep = np.array([v in index for v in yv])
            kw["early_stopping_rounds"] = self.early_stopping_rounds
            fit_kw = dict(eval_set=[(np.asarray(Xv)[keep], np.array([index[v] for v in np.asarray(yv)[keep]]))],
                          verbose=False)
        if len(self.classes_) == 2:
            kw["objective"] = "binary:logistic"
        self.model_ = XGBClassifier(**kw)
        self.model_.fit(np.asarray(X, dtype=np.float32), yi, **fit_kw)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
