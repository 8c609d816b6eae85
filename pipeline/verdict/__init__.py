"""The verdict stage's work: how a run compares with the committed record."""
