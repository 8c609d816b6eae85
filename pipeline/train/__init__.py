"""The train stage's work: its params, the loop, augmentation, weight averaging, DDP and the record."""
