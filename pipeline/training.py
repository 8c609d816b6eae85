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

from pipeline.atomic import save_torch
from pipeline.augmentation import random_affine, random_shift
from pipeline.distributed import ProcessInfo, all_sum, from_main, sync_buffers
from pipeline.errors import PipelineError
from pipeline.models import build_model, uses_channels_last
from pipeline.prepared import Split
from pipeline.train_config import TrainConfig
from pipeline.weight_average import WeightAverage

log = logging.getLogger("train")
EVAL_BATCH = 2000


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
    """`auto` -> cuda, else mps, else cpu; asking for an absent device is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError("params.yaml: 'device' is cuda but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise PipelineError("params.yaml: 'device' is mps but MPS is not available (use auto or cpu)")
    return torch.device(name)


def device_tensors(split: Split, mean: float, std: float, device: torch.device,
                   channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a split to the device once and normalize it once: float N x 1 x 28 x 28 and labels."""
    images = split.images.to(device).unsqueeze(1).float().div_(255).sub_(mean).div_(std)
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
    loss = torch.zeros((), device=images.device, dtype=torch.float64)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model(images[start:start + EVAL_BATCH]).float()
        target = labels[start:start + EVAL_BATCH]
        loss += F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing).double()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return loss.item() / len(labels), correct.item() / len(labels)


def augment(batch: torch.Tensor, cfg: TrainConfig, background: float) -> torch.Tensor:
    """The training batch as the model sees it: rotated and scaled, then shifted, as the params ask."""
    if cfg.rotate_deg or cfg.zoom:
        batch = random_affine(batch, background, cfg.rotate_deg, cfg.zoom)
    return random_shift(batch, background) if cfg.augment else batch


def train_one_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                    batch_size: int, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None, ema: WeightAverage | None,
                    cfg: TrainConfig, background: float, progress: tqdm | None) -> torch.Tensor:
    """One pass over `order` in slices; returns [loss sum, correct, count] (on the device)."""
    model.train()
    loss_sum = torch.zeros((), device=images.device, dtype=torch.float64)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if images.device.type == "cuda"
                else contextlib.nullcontext())
    order = order.to(images.device)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch, target = augment(images[index], cfg, background), labels[index]
        with autocast:
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update()
        with torch.no_grad():
            loss_sum += loss.detach().double() * len(target)
            correct += (logits.argmax(1) == target).sum()
        if progress is not None:
            progress.update(len(target))
    return torch.stack([loss_sum, correct.double(), torch.tensor(float(len(order)), device=images.device,
                                                                  dtype=torch.float64)])


def fingerprint(cfg: TrainConfig, data_files: list[Path], world_size: int, code: str) -> dict[str, str]:
    """What a checkpoint must match to be resumed: params, data, code, torch version and process count.

    `code` is a digest of the training code (the train stage passes `code_digest` of its import closure).
    """
    data = hashlib.sha256()
    for path in data_files:
        data.update(hashlib.md5(path.read_bytes(), usedforsecurity=False).digest())
    return {"params": hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest(),
            "data": data.hexdigest(), "code": code, "torch": str(torch.__version__), "processes": str(world_size)}


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


@dataclass
class FitResult:
    """The best model's weights and the run's record."""

    model: nn.Module
    state: TrainState
    train_seconds: float
    samples_seen: int
    resumed_from: int


def fit(cfg: TrainConfig, train: Split, val: Split, mean: float, std: float, info: ProcessInfo,
        checkpoint_path: Path, run_id: dict[str, str], on_epoch: Callable[[dict[str, float]], None] = lambda r: None,
        show_progress: bool = False) -> FitResult:
    """Train `cfg.model`, checkpointing after every epoch and resuming a matching checkpoint."""
    device = resolve_device(cfg.device, info.local_rank)
    if device.type == "cpu":
        # = use_deterministic_algorithms(True) without its import of the unused Inductor compiler (2.4 s)
        torch.set_deterministic_debug_mode("error")
    channels_last = uses_channels_last(cfg.model)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_train, y_train = device_tensors(train, mean, std, device, channels_last)
    x_val, y_val = device_tensors(val, mean, std, device, channels_last)
    background = -mean / std

    local_batch = max(1, cfg.batch_size // info.world_size)
    per_rank = len(train) // info.world_size
    if per_rank == 0:
        raise PipelineError(f"training set of {len(train)} images is smaller than {info.world_size} processes")
    steps_per_epoch = math.ceil(per_rank / local_batch)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, cfg.epochs * steps_per_epoch)
    # the averaged weights (and BatchNorm statistics) are what is validated and kept
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    kept = ema.module if ema is not None else model
    state = TrainState()

    checkpoint, why_not = load_checkpoint(checkpoint_path, run_id) if info.is_main else (None, "")
    if info.is_main and checkpoint is None and checkpoint_path.exists():
        log.info("%s not resumed: %s; training starts afresh", checkpoint_path, why_not)
    checkpoint = from_main(checkpoint, info)  # rank 0 decides, so ranks can never start from different epochs
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        state = TrainState(**checkpoint["state"])
        log.info("resuming from %s after epoch %d", checkpoint_path, state.epoch)
        for record in state.history:
            on_epoch(record)
    resumed_from = state.epoch

    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.distributed else model
    stopped = cfg.patience > 0 and state.bad_epochs >= cfg.patience
    while state.epoch < cfg.epochs and not stopped:
        epoch = state.epoch
        # augmentation: resumable per epoch, and each rank draws its own (rank 0 alone draws what one process would)
        torch.manual_seed(cfg.seed * 1_000_003 + info.rank * 1_000 + epoch)
        order = epoch_order(len(train), cfg.seed, epoch, info)
        bar = tqdm(total=len(order), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img", leave=False) \
            if show_progress and info.is_main else None
        started = time.perf_counter()
        totals = train_one_epoch(ddp, x_train, y_train, order, local_batch, optimizer, scheduler, ema, cfg,
                                 background, bar)
        totals = all_sum(totals, info)
        for module in (model,) if kept is model else (model, kept):
            sync_buffers(module, info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        val_loss, val_acc = evaluate(kept, x_val, y_val, cfg.label_smoothing)
        loss_sum, correct, count = totals.tolist()
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_acc": correct / count,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds}
        check_finite(record, cfg.lr)
        state.epoch, state.history = epoch + 1, [*state.history, record]
        if val_loss < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, epoch + 1, 0
            state.best_state = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
        else:
            state.bad_epochs += 1
        stopped = from_main(cfg.patience > 0 and state.bad_epochs >= cfg.patience, info)
        if info.is_main:
            save_torch(checkpoint_path, {
                "fingerprint": run_id, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "ema": ema.state_dict() if ema is not None else {}, "state": asdict(state)})
        on_epoch(record)

    kept.load_state_dict(state.best_state)
    train_seconds = sum(r["seconds"] for r in state.history)
    return FitResult(kept.cpu().eval(), state, train_seconds, len(state.history) * per_rank * info.world_size,
                     resumed_from)
