"""Results: what a run leaves and how it is read back: records, registry, predictions, metrics, statistics, comparisons, tables, plots and the HTML report."""
