"""Run a stage that dies at a chosen point, the same way every time: `python -m tests.crash POINT stages.NAME ...`.

The stage runs as `python -m stages.NAME ...` would, in this child process only, with one function wrapped
so that the process ends with os._exit(CRASHED) (no cleanup, no `finally`, like a power cut) at POINT:

  mid-write      the first Path.write_bytes/write_text has written half of its bytes
  before-rename  the first os.replace is about to run (temporaries are complete, nothing is in place)
  after-rename   the first os.replace has run (one output is in place, the rest are not)
  epoch          the checkpoint after the first epoch has been saved (train)
"""

from __future__ import annotations

import os
import pathlib
import runpy
import sys
from collections.abc import Callable
from typing import Any

CRASHED = 86
POINTS = ("mid-write", "before-rename", "after-rename", "epoch")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(CRASHED)


def crash_before(function: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args, **kwargs: die()


def crash_after(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        function(*args, **kwargs)
        die()

    return wrapper


def half_written(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(path: pathlib.Path, data: Any, *args: Any, **kwargs: Any) -> Any:
        function(path, data[: len(data) // 2], *args, **kwargs)
        die()

    return wrapper


def arm(point: str) -> None:
    """Wrap the function where `point` is."""
    if point == "mid-write":
        pathlib.Path.write_bytes = half_written(pathlib.Path.write_bytes)
        pathlib.Path.write_text = half_written(pathlib.Path.write_text)
    elif point == "before-rename":
        os.replace = crash_before(os.replace)
    elif point == "after-rename":
        os.replace = crash_after(os.replace)
    elif point == "epoch":
        import pipeline.train.checkpoint

        pipeline.train.checkpoint.save_torch = crash_after(pipeline.train.checkpoint.save_torch)
    else:
        raise SystemExit(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    point, module, *arguments = sys.argv[1:]
    arm(point)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
