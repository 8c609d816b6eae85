"""Reading a JSON file another stage wrote: a missing or unreadable one is one line naming it and its maker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.common.errors import PipelineError


def read_json(path: Path, made_by: str) -> Any:
    """The JSON in `path`; a PipelineError when it is missing (naming `made_by`, what writes it) or not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run {made_by})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
