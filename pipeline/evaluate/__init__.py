"""The evaluate stage's work: test metrics, per-class report and figures."""
