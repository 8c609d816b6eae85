"""What every benchmark's report shares: the machine it ran on, and where it is written."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from pipeline.train.platform_info import cpu_name

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def write_report(name: str, report: dict[str, Any], update: bool, out: Path | None = None) -> Path:
    """Write `report` as JSON to `out`, else bench/results/NAME.json with `update` (the committed record), else
    bench/results/local/NAME.json (git-ignored); return the path."""
    out = out or (RESULTS if update else RESULTS / "local") / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out
