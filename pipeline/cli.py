"""What every stage command shares: logging set-up and turning failures into one line and exit 1."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from pipeline.errors import PipelineError


def setup_logging(stage: str) -> None:
    """Log INFO lines to stderr, prefixed with the stage name."""
    logging.basicConfig(level=logging.INFO, format=f"[{stage}] %(message)s", force=True)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PipelineError and OS errors (disk full, permissions) into a one-line click error."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None

    return wrapper
