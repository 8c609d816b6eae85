"""What a training run starts from: its device, its data on that device, the network and its optimizer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.common.errors import ParamError, PipelineError
from pipeline.data.prepared import Normalization, PreparedData, Split, load_split
from pipeline.model.networks import build_model, uses_channels_last
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import ProcessInfo
from pipeline.train.memory import check_fits
from pipeline.train.muon import MuonAdamW, muon_parameters
from pipeline.train.selection import total_steps
from pipeline.train.weight_average import WeightAverage

# OneCycleLR's warm-up phase ends at pct_start * steps - 1; with fewer steps it is empty (a division by zero)
ONECYCLE_MIN_STEPS = 5


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda, else cpu; asking for an absent device is an error.

    `auto` never picks Apple's MPS: it has no deterministic mode and is untested here, while the CPU path
    is bit-reproducible. `device: mps` asks for it explicitly.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ParamError("'device' is cuda but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise ParamError("'device' is mps but MPS is not available (use auto or cpu)")
    return torch.device(name)


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits a run trains and validates on, the training set's normalization, and the drawn
    non-digits (None when the run uses none)."""

    train: Split
    val: Split
    normalization: Normalization
    non_digits: Split | None = None

    @classmethod
    def of(cls, prepared: PreparedData, non_digits: Path | None = None) -> TrainingData:
        """The training and validation splits of the prepared data, and the draw stage's non-digits from the file
        `non_digits` (None: none)."""
        return cls(prepared.split("train"), prepared.split("val"), prepared.normalization,
                   load_split(non_digits) if non_digits is not None else None)


def device_tensors(split: Split, normalization: Normalization, device: torch.device,
                   channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a split to the device once and normalize it once: float N x 1 x 28 x 28 and labels."""
    images = split.images.to(device).unsqueeze(1).float().div_(255).sub_(normalization.mean).div_(normalization.std)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, split.labels.to(device)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam, AdamW, or Muon with AdamW for `model`'s parameters."""
    if cfg.optimizer == "muon":
        return MuonAdamW(*muon_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = list(model.parameters())
    # fused on CPU and CUDA: one kernel per step for all parameters instead of a dozen small ones per tensor
    fused = params[0].device.type in ("cpu", "cuda")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, fused=fused)
    optimizer = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch schedule over the whole run: one-cycle, cosine, or none."""
    if cfg.scheduler == "onecycle":
        if total_steps < ONECYCLE_MIN_STEPS:
            raise ParamError(f"'scheduler' onecycle needs at least {ONECYCLE_MIN_STEPS} optimizer "
                             f"steps, but 'epochs' {cfg.epochs} at 'batch_size' {cfg.batch_size} make "
                             f"{total_steps}; raise epochs, lower batch_size or use another scheduler")
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=0.25, cycle_momentum=False)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


@dataclass
class Run:
    """What one training run works on: the network and its optimizer state, and the data on the device."""

    cfg: TrainConfig
    info: ProcessInfo
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    ema: WeightAverage | None
    images: torch.Tensor
    labels: torch.Tensor
    normalization: Normalization
    local_batch: int
    image_losses: torch.Tensor  # selective backprop: each training image's loss at its last visit (else empty)
    # drawn non-digits, normalized as the images (empty when the run uses none)
    non_digits: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 1, 28, 28))

    @property
    def background(self) -> float:
        """A blank pixel, normalized."""
        return -self.normalization.mean / self.normalization.std

    @property
    def kept(self) -> nn.Module:
        """The network that is validated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dicts(self) -> dict[str, Any]:
        """Model, optimizer, schedule and average: what a checkpoint stores of the run itself."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "ema": self.ema.state_dict() if self.ema is not None else {}, "image_losses": self.image_losses}

    def load_state_dicts(self, saved: dict[str, Any]) -> None:
        """Continue from `state_dicts()` as a checkpoint stored them."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.image_losses.copy_(saved["image_losses"])


def start_run(cfg: TrainConfig, data: TrainingData, info: ProcessInfo, device: torch.device) -> Run:
    """A freshly initialised run on `device`, checked to fit in its memory."""
    train, normalization = data.train, data.normalization
    channels_last = uses_channels_last(cfg.model)
    local_batch = max(1, cfg.batch_size // info.world_size)
    per_rank = len(train) // info.world_size
    if per_rank == 0:
        raise PipelineError(f"training set of {len(train)} images is smaller than {info.world_size} processes")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width, cfg.standardize)
    uses_non_digits = cfg.non_digits > 0 and data.non_digits is not None
    digits = min(local_batch, per_rank)
    check_fits(model, digits + (round(cfg.non_digits * digits) if uses_non_digits else 0), cfg, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, labels = device_tensors(train, normalization, device, channels_last)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, total_steps(cfg, per_rank, local_batch))
    # the averaged weights (and BatchNorm statistics) are what is validated and kept
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    # unseen images count as the hardest (every image is seen in the full epochs before selection starts)
    image_losses = torch.full((len(train) if cfg.select_fraction else 0,), math.inf, device=device)
    non_digits = (device_tensors(data.non_digits, normalization, device, channels_last)[0]
                  if uses_non_digits else images[:0])
    return Run(cfg, info, model, optimizer, scheduler, ema, images, labels, normalization, local_batch, image_losses,
               non_digits)
