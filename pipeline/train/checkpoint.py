"""Checkpoints: one file per run, written after every epoch, resumed only by the very run that wrote it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.common.atomic import save_torch
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import from_main
from pipeline.train.setup import Run

log = logging.getLogger("train")


@dataclass
class TrainState:
    """The run's progress: with the run's state dicts, all a checkpoint holds, so that a resumed run ends
    exactly where an uninterrupted one would."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0


def fingerprint(cfg: TrainConfig, data_files: list[Path], world_size: int, code: str,
                platform: dict[str, str | int]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: params, data, code, torch version, process count and the
    platform it trains on (`describe_platform`: a CUDA checkpoint never resumes on the CPU).

    `code` is a digest of the training code (the train stage passes `code_digest` of its import closure).
    """
    data = hashlib.sha256()
    for path in data_files:
        data.update(hashlib.md5(path.read_bytes(), usedforsecurity=False).digest())
    return {"params": hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest(),
            "data": data.hexdigest(), "code": code, "torch": str(torch.__version__), "processes": str(world_size),
            "platform": json.dumps(platform, sort_keys=True)}


@dataclass(frozen=True)
class Checkpoint:
    """Where a run checkpoints, and the fingerprint a checkpoint must carry to be resumed.

    The file holds {"fingerprint", "state": TrainState as a dict, and `Run.state_dicts()`}.
    """

    path: Path
    fingerprint: dict[str, str]

    def save(self, run: Run, state: TrainState) -> None:
        """Write the run as it stands after `state.epoch` epochs (atomically: a crash leaves the previous one)."""
        save_torch(self.path, {"fingerprint": self.fingerprint, "state": asdict(state), **run.state_dicts()})

    def read(self) -> tuple[dict[str, Any] | None, str]:
        """The checkpoint file if it belongs to this very run, else None and why it does not."""
        if not self.path.exists():
            return None, "there is none"
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a checkpoint we cannot read is simply not resumed
            return None, f"it is unreadable ({type(exc).__name__})"
        found = saved.get("fingerprint") if isinstance(saved, dict) else None
        if not isinstance(found, dict):
            return None, "it has no fingerprint of this pipeline's kind"
        differing = [key for key in self.fingerprint if found.get(key) != self.fingerprint[key]]
        if differing:
            return None, f"it is from a run with other {', '.join(differing)}"
        return saved, ""

    def resume(self, run: Run, on_epoch: Callable[[dict[str, float]], None]) -> TrainState:
        """The state to continue from: a matching checkpoint's (loaded into `run`, its epochs replayed to
        `on_epoch`), else a fresh one. Rank 0 decides, so ranks never start from different epochs."""
        info = run.info
        saved, why_not = self.read() if info.is_main else (None, "")
        if info.is_main and saved is None and self.path.exists():
            log.info("%s not resumed: %s; training starts afresh", self.path, why_not)
        saved = from_main(saved, info)
        if saved is None:
            return TrainState()
        run.load_state_dicts(saved)
        state = TrainState(**saved["state"])
        log.info("resuming from %s after epoch %d", self.path, state.epoch)
        for record in state.history:
            on_epoch(record)
        return state
