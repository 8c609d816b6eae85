"""The one exception type that stages turn into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """A user-facing failure: bad input, bad params, a file that fails verification."""


class ParamError(PipelineError):
    """A value of the params file that cannot work here (an absent device, too few steps for a schedule): the
    command that read the file names it in front of the message."""
