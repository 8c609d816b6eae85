"""How a pipeline run compares with the committed record: the same bits, an experiment, or a retrain elsewhere.

Bit-identity holds per platform (`platform_info`), never across platforms: a retrain of the committed params
on another machine lands near the committed accuracy, not on it. The verdict says how near, against the
spread that the training seed alone causes.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RESTORE = "git checkout HEAD -- dvc.lock metrics && dvc pull -r storage train export evaluate"


@dataclass(frozen=True)
class Record:
    """One side of the comparison: params, the training platform and the test metrics."""

    params: dict[str, Any]
    platform: dict[str, Any]
    accuracy: float
    errors: int


def read_record(params: dict[str, Any], train_metrics: str, eval_metrics: str) -> Record:
    """A record from params.yaml's mapping and the texts of metrics/train.json and metrics/eval.json.

    The params are read as strictly as the stages read them, but against no schema: a committed record may hold
    keys this code no longer knows, and the verdict's job is then to name them as params that differ.
    """
    train, evaluation = json.loads(train_metrics), json.loads(eval_metrics)
    return Record(params, train.get("platform", {}), evaluation["accuracy"], evaluation["errors"])


def committed_text(repo: Path, path: str) -> str:
    """`path` as committed at HEAD."""
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def changed_files(repo: Path) -> list[str]:
    """Files of the record (dvc.lock, metrics/) that differ from HEAD."""
    listed = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", "dvc.lock", "metrics"], cwd=repo,
                            capture_output=True, text=True, check=True, timeout=30).stdout
    return listed.split()


def seed_tolerance(results: Path) -> tuple[float, str]:
    """The tolerance in test accuracy: the range that training seeds alone span (`bench.preset`'s file)."""
    report = json.loads(results.read_text())
    accuracies = [run["test_accuracy"] for run in report["runs"].values()]
    return round(max(accuracies) - min(accuracies), 6), f"{len(accuracies)} seeds in {results}"


def describe(platform: dict[str, Any]) -> str:
    """A platform as one phrase."""
    if not platform:
        return "an unrecorded platform"
    parts = [f"{platform.get('device')} {platform.get('device_name', '')}".strip()]
    if "cpu_capability" in platform:
        threads = platform["threads"]
        parts.append(f"{platform['cpu_capability']}, {threads} thread{'' if threads == 1 else 's'}")
    parts.append(f"torch {platform.get('torch')}")
    return ", ".join(parts)


ABSENT = object()


def differing_params(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each param that differs, as `key old -> new`; a key only one side has shows `(none)` on the other."""
    def shown(value: Any) -> str:
        return "(none)" if value is ABSENT else repr(value)

    keys = sorted(set(committed) | set(current))
    return [f"{key} {shown(committed.get(key, ABSENT))} -> {shown(current.get(key, ABSENT))}" for key in keys
            if committed.get(key, ABSENT) != current.get(key, ABSENT)]


def verdict(committed: Record, current: Record, tolerance: tuple[float, str], changed: list[str]) -> list[str]:
    """The lines that end a pipeline run: how it compares with the committed record."""
    params = differing_params(committed.params, current.params)
    if params:
        return [f"an experiment, not a reproduction: params differ from the committed record "
                f"({'; '.join(params)}); compare with `dvc metrics diff` or `make compare`"]
    same_platform = committed.platform == current.platform
    same_result = (committed.accuracy, committed.errors) == (current.accuracy, current.errors)
    if same_platform and same_result:
        return [f"reproduced the committed record on its own platform ({describe(current.platform)}): "
                f"test accuracy {current.accuracy:.4f} as committed"]
    limit, source = tolerance
    apart = round(abs(current.accuracy - committed.accuracy), 6)
    where = "on another platform" if not same_platform else "on the committed record's platform, with other code"
    lines = [
        f"this run trained {where} than the committed record:",
        f"  committed: {describe(committed.platform)}",
        f"  this run:  {describe(current.platform)}",
        f"  test accuracy: committed {committed.accuracy:.4f} ({committed.errors} errors), reproduced "
        f"{current.accuracy:.4f} ({current.errors} errors): {apart:.4f} apart",
    ]
    if apart <= limit:
        lines.append(f"  within the tolerance of {limit:.4f}: the spread of test accuracy that training seeds alone "
                     f"give ({source})")
    else:
        lines.append(f"  OUTSIDE the tolerance of {limit:.4f} ({source}): more than training seeds alone move the "
                     f"result; report it with both platform lines")
    lines.append(f"  changed files of the record ({len(changed)}): {', '.join(changed) if changed else 'none'}")
    lines.append(f"  to restore the committed record: {RESTORE}")
    return lines


def declared_keys(pipeline_text: str) -> list[str]:
    """The params.yaml keys that the stages of a dvc.yaml declare they read (a stage that declares the whole
    file, as verdict does, names none)."""
    keys: set[str] = set()
    for stage in (yaml.safe_load(pipeline_text) or {}).get("stages", {}).values():
        for entry in stage.get("params", []):
            if isinstance(entry, str):
                keys.add(entry)
            else:
                keys.update(key for listed in entry.values() for key in (listed or []))
    return sorted(keys)
