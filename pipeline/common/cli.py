"""What every command shares (the stages, predict, serve, report): logging set-up, failures as one line and
exit 1 (`reports_errors`, the one way a command reports an error), and a quick exit (`run`).

Only a Ctrl-C that comes before a command has started, while torch imports, is caught elsewhere: by the
hook `stages/__init__.py` arms when a command runs as `python -m stages.<name>`."""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.common.errors import ParamError, PipelineError


def setup_logging(stage: str) -> None:
    """Our INFO lines (libraries' warnings only) to stderr, prefixed with the stage name."""
    logging.basicConfig(level=logging.WARNING, format=f"[{stage}] %(message)s", force=True)
    for name in (stage.split()[0], "pipeline"):
        logging.getLogger(name).setLevel(logging.INFO)


DEBUG_VARIABLE = "PIPELINE_DEBUG"


def save_traceback(stage: str) -> str:
    """Keep the traceback being handled in a new file of its own (two processes of a torchrun never share one);
    where it went, or why it could not be kept, for the one line the user sees."""
    try:
        handle, name = tempfile.mkstemp(prefix=f"mnist-pipeline-{stage}-", suffix="-traceback.txt")
        with os.fdopen(handle, "w") as file:
            file.write(traceback.format_exc())
    except OSError as exc:
        return f"the traceback could not be saved ({exc.strerror or exc})"
    return f"the traceback is in {name}"


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PipelineError and OS errors (disk full, permissions) into a one-line click error, Ctrl-C into exit 130.

    Anything else is a bug: one line naming it and the file holding its traceback (PIPELINE_DEBUG=1 raises it).
    """
    # run as `python -m stages.<name>`, the module is __main__: the stage is the file's name
    stage = Path(sys.argv[0]).stem if command.__module__ == "__main__" else command.__module__.rsplit(".", 1)[-1]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(f"[{stage}] interrupted; outputs are written whole or not at all, so nothing is half-written",
                       err=True)
            sys.exit(130)
        except ParamError as exc:  # named with the params file this command read (`--params`)
            raise click.ClickException(f"{kwargs.get('params_file', 'params.yaml')}: {exc}") from None
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            cause = str(exc).splitlines()[0][:200] if str(exc) else "no message"
            raise click.ClickException(f"unexpected {type(exc).__name__}: {cause} (a bug: {save_traceback(stage)}; "
                                       f"{DEBUG_VARIABLE}=1 prints it)") from None

    return wrapper


def run(command: click.Command) -> None:
    """Run a stage command as a program (`python -m stages.<stage>`), and end the process as soon as it returns.

    By then every output is written, closed and renamed into place; what an interpreter's normal exit would add
    is the teardown of the modules torch.export and the ONNX exporter load (0.3 s of the export stage's exit).
    So the streams are flushed and the process ends at once, with the command's exit status.
    """
    try:
        command()
        status: int | str | None = 0
    except SystemExit as exc:  # click ends every command this way, whatever its outcome
        status = exc.code
    if isinstance(status, str):  # sys.exit("message"): the message, and a failure
        print(status, file=sys.stderr)
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)
