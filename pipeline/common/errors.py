"""The one exception type that stages turn into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing failure: bad input, bad params, a file that fails verification."""
