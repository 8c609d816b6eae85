"""The robustness suite: common corruptions, generated once and scored on the exported model."""
