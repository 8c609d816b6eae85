"""Reusable pieces of the MNIST pipeline; the DVC stages in `stages/` are thin commands over them."""
