"""Shared plumbing: atomic writes, the stage command wrapper, params reading, errors, figures."""
