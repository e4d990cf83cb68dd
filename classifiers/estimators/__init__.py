"""Estimators: scikit-learn-style probes over stored features (logistic regression, XGBoost, kNN search, attention pooling, ridge and the other regressors), no I/O."""
