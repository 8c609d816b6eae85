"""The commands, one module each, run as `python -m stages.<name>`: the DVC stages of dvc.yaml, and predict, serve
and report, which work on what the stages made."""

import sys
from pathlib import Path


def _one_line_interrupt(kind: type[BaseException], value: BaseException, traceback: object) -> None:
    """Ctrl-C before a stage's command starts (while torch imports, say) ends in one line, not a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"[{Path(sys.argv[0]).stem}] interrupted while starting; nothing was written", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)  # type: ignore[arg-type]


if sys.argv[:1] == ["-m"]:  # only when this package is run as `python -m stages.<name>`, never when imported
    sys.excepthook = _one_line_interrupt
