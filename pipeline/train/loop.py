"""The training loop: device-resident tensors, seeded batch order, checkpoints, early stopping, DDP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.common.atomic import save_torch
from pipeline.common.errors import ParamError, PipelineError
from pipeline.data.prepared import Normalization, PreparedData, Split
from pipeline.model.networks import build_model, uses_channels_last
from pipeline.train.augmentation import random_affine, random_shift
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import ProcessInfo, all_sum, from_main, sync_buffers
from pipeline.train.memory import check_fits
from pipeline.train.platform_info import make_deterministic
from pipeline.train.weight_average import WeightAverage

log = logging.getLogger("train")
EVAL_BATCH = 2000
# OneCycleLR's warm-up phase ends at pct_start * steps - 1; with fewer steps it is empty (a division by zero)
ONECYCLE_MIN_STEPS = 5


@dataclass
class TrainState:
    """Everything a checkpoint holds, so that a resumed run ends exactly where an uninterrupted one would."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0


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


def device_tensors(split: Split, normalization: Normalization, device: torch.device,
                   channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a split to the device once and normalize it once: float N x 1 x 28 x 28 and labels."""
    images = split.images.to(device).unsqueeze(1).float().div_(255).sub_(normalization.mean).div_(normalization.std)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, split.labels.to(device)


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov), Adam or AdamW."""
    params = list(params)
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


def epoch_order(n: int, seed: int, epoch: int, info: ProcessInfo) -> torch.Tensor:
    """This process's shard of a permutation that depends only on (seed, epoch): resumable, same on all ranks."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    per_rank = n // info.world_size
    return order[info.rank::info.world_size][:per_rank]


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> tuple[float, float]:
    """Mean cross-entropy (with the training objective's smoothing) and accuracy, in eval mode."""
    was_training = model.training
    model.eval()
    losses, correct = [], torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model(images[start:start + EVAL_BATCH]).float()
        target = labels[start:start + EVAL_BATCH]
        losses.append(F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing))
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return host_sum(torch.stack(losses)) / len(labels), correct.item() / len(labels)


def host_sum(values: torch.Tensor, weights: list[int] | None = None) -> float:
    """The sum of float32 device values (times `weights`) in float64 on the host, in order.

    MPS has no float64, so sums never live on the training device; a Python float is an IEEE double, so
    this adds exactly as a float64 tensor would.
    """
    total = 0.0
    for i, value in enumerate(values.tolist()):
        total += value * (weights[i] if weights is not None else 1)
    return total


def augment(batch: torch.Tensor, cfg: TrainConfig, background: float) -> torch.Tensor:
    """The training batch as the model sees it: rotated and scaled, then shifted, as the params ask."""
    if cfg.rotate_deg or cfg.zoom:
        batch = random_affine(batch, background, cfg.rotate_deg, cfg.zoom)
    return random_shift(batch, background) if cfg.augment else batch


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
    background: float
    local_batch: int

    @property
    def kept(self) -> nn.Module:
        """The network that is validated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dicts(self) -> dict[str, Any]:
        """Model, optimizer, schedule and average: what a checkpoint stores besides TrainState."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "ema": self.ema.state_dict() if self.ema is not None else {}}

    def load_state_dicts(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])


def train_one_epoch(run: Run, network: nn.Module, order: torch.Tensor,
                    progress: tqdm | None) -> tuple[float, int, int]:
    """One pass of `network` (the model, or its DDP wrapper) over `order` in slices of the local batch.

    Returns the loss sum, the number correct and the number of images.
    """
    network.train()
    batch_size, cfg = run.local_batch, run.cfg
    sizes = [min(batch_size, len(order) - start) for start in range(0, len(order), batch_size)]
    # per-step losses stay on the device in float32 (no sync per step) and are summed on the host at the end
    losses = torch.zeros(len(sizes), device=run.images.device, dtype=torch.float32)
    correct = torch.zeros((), device=run.images.device, dtype=torch.int64)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if run.images.device.type == "cuda"
                else contextlib.nullcontext())
    order = order.to(run.images.device)
    for step, start in enumerate(range(0, len(order), batch_size)):
        index = order[start:start + batch_size]
        batch, target = augment(run.images[index], cfg, run.background), run.labels[index]
        with autocast:
            logits = network(batch)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        if run.ema is not None:
            run.ema.update()
        with torch.no_grad():
            losses[step] = loss.detach()
            correct += (logits.argmax(1) == target).sum()
        if progress is not None:
            progress.update(len(target))
    return host_sum(losses, sizes), int(correct.item()), len(order)


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


def load_checkpoint(path: Path, expected: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint at `path` if it belongs to this very run, else None and why it does not."""
    if not path.exists():
        return None, "there is none"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a checkpoint we cannot read is simply not resumed
        return None, f"it is unreadable ({type(exc).__name__})"
    found = checkpoint.get("fingerprint") if isinstance(checkpoint, dict) else None
    if not isinstance(found, dict):
        return None, "it has no fingerprint of this pipeline's kind"
    differing = [key for key in expected if found.get(key) != expected[key]]
    if differing:
        return None, f"it is from a run with other {', '.join(differing)}"
    return checkpoint, ""


def check_finite(record: dict[str, float], lr: float) -> None:
    """Stop with one line when the losses are no longer numbers."""
    for key in ("train_loss", "val_loss"):
        if not math.isfinite(record[key]):
            raise PipelineError(f"training diverged at epoch {record['epoch']}: {key.replace('_', ' ')} is "
                                f"{record[key]}; lower lr (now {lr:g})")


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits a run trains and validates on, and the training set's normalization."""

    train: Split
    val: Split
    normalization: Normalization

    @classmethod
    def of(cls, prepared: PreparedData) -> TrainingData:
        """The training and validation splits of the prepared data."""
        return cls(prepared.split("train"), prepared.split("val"), prepared.normalization)


@dataclass(frozen=True)
class Checkpoint:
    """Where a run checkpoints, and the fingerprint a checkpoint must carry to be resumed."""

    path: Path
    fingerprint: dict[str, str]


@dataclass
class FitResult:
    """The best model's weights and the run's record."""

    model: nn.Module
    state: TrainState
    train_seconds: float
    samples_seen: int
    resumed_from: int


def start_run(cfg: TrainConfig, train: Split, normalization: Normalization, info: ProcessInfo,
              device: torch.device) -> Run:
    """A freshly initialised run on `device`, checked to fit in its memory."""
    channels_last = uses_channels_last(cfg.model)
    local_batch = max(1, cfg.batch_size // info.world_size)
    per_rank = len(train) // info.world_size
    if per_rank == 0:
        raise PipelineError(f"training set of {len(train)} images is smaller than {info.world_size} processes")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width)
    check_fits(model, min(local_batch, per_rank), cfg, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, labels = device_tensors(train, normalization, device, channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, cfg.epochs * math.ceil(per_rank / local_batch))
    # the averaged weights (and BatchNorm statistics) are what is validated and kept
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    background = -normalization.mean / normalization.std  # a blank pixel, normalized
    return Run(cfg, info, model, optimizer, scheduler, ema, images, labels, background, local_batch)


def resume(run: Run, checkpoint_path: Path, run_id: dict[str, str],
           on_epoch: Callable[[dict[str, float]], None]) -> TrainState:
    """The state to continue from: a matching checkpoint's (loaded into `run`), else a fresh one."""
    info = run.info
    checkpoint, why_not = load_checkpoint(checkpoint_path, run_id) if info.is_main else (None, "")
    if info.is_main and checkpoint is None and checkpoint_path.exists():
        log.info("%s not resumed: %s; training starts afresh", checkpoint_path, why_not)
    checkpoint = from_main(checkpoint, info)  # rank 0 decides, so ranks can never start from different epochs
    if checkpoint is None:
        return TrainState()
    run.load_state_dicts(checkpoint)
    state = TrainState(**checkpoint["state"])
    log.info("resuming from %s after epoch %d", checkpoint_path, state.epoch)
    for record in state.history:
        on_epoch(record)
    return state


def fit(cfg: TrainConfig, data: TrainingData, info: ProcessInfo, checkpoint: Checkpoint,
        on_epoch: Callable[[dict[str, float]], None] = lambda r: None, show_progress: bool = False) -> FitResult:
    """Train `cfg.model`, checkpointing after every epoch and resuming a matching checkpoint."""
    device = resolve_device(cfg.device, info.local_rank)
    make_deterministic(device)
    run = start_run(cfg, data.train, data.normalization, info, device)
    x_val, y_val = device_tensors(data.val, data.normalization, device, uses_channels_last(cfg.model))
    state = resume(run, checkpoint.path, checkpoint.fingerprint, on_epoch)
    resumed_from = state.epoch
    network = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.distributed else run.model

    stopped = cfg.patience > 0 and state.bad_epochs >= cfg.patience
    while state.epoch < cfg.epochs and not stopped:
        epoch = state.epoch
        # augmentation: resumable per epoch, and each rank draws its own (rank 0 alone draws what one process would)
        torch.manual_seed(cfg.seed * 1_000_003 + info.rank * 1_000 + epoch)
        order = epoch_order(len(data.train), cfg.seed, epoch, info)
        bar = tqdm(total=len(order), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img", leave=False) \
            if show_progress and info.is_main else None
        started = time.perf_counter()
        loss_sum, correct, count = sum_over_processes(train_one_epoch(run, network, order, bar), device, info)
        for module in {id(m): m for m in (run.model, run.kept)}.values():
            sync_buffers(module, info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        val_loss, val_acc = evaluate(run.kept, x_val, y_val, cfg.label_smoothing)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_acc": correct / count,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": run.optimizer.param_groups[0]["lr"],
                  "seconds": seconds}
        check_finite(record, cfg.lr)
        state.epoch, state.history = epoch + 1, [*state.history, record]
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, epoch + 1, 0
            state.best_state = {k: v.detach().cpu().clone() for k, v in run.kept.state_dict().items()}
        else:
            state.bad_epochs += 1
        stopped = from_main(cfg.patience > 0 and state.bad_epochs >= cfg.patience, info)
        if info.is_main:
            save_torch(checkpoint.path, {"fingerprint": checkpoint.fingerprint, **run.state_dicts(),
                                         "state": asdict(state)})
        on_epoch(record)

    kept = run.kept
    kept.load_state_dict(state.best_state)
    train_seconds = sum(r["seconds"] for r in state.history)
    per_rank = len(data.train) // info.world_size
    return FitResult(kept.cpu().eval(), state, train_seconds, len(state.history) * per_rank * info.world_size,
                     resumed_from)


def sum_over_processes(totals: tuple[float, int, int], device: torch.device,
                       info: ProcessInfo) -> tuple[float, int, int]:
    """An epoch's (loss sum, correct, count) added up over all processes (as they are, for one process)."""
    if not info.distributed:
        return totals
    # gloo reduces host tensors; nccl only CUDA ones, which have float64 (MPS, which has not, has no DDP)
    where = device if device.type == "cuda" else torch.device("cpu")
    loss_sum, correct, count = all_sum(torch.tensor(totals, dtype=torch.float64, device=where), info).tolist()
    return loss_sum, int(correct), int(count)
