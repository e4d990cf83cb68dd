"""classifiers: probes and heads over features read through the featstore API."""
