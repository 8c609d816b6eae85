"""The training loop: seeded batch order, one pass per epoch, validation, the best epoch kept, DDP.

Set-up is in `setup`, validation in `validation`, checkpoints in `checkpoint`; `fit` reads top to bottom.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.model.networks import uses_channels_last
from pipeline.train.augmentation import random_affine, random_corrupted, random_shift
from pipeline.train.checkpoint import Checkpoint, TrainState
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import ProcessInfo, all_sum, from_main, reduction_device, sync_buffers
from pipeline.train.platform_info import make_deterministic
from pipeline.train.selection import epoch_images, recalibrate_batchnorm, select, selective
from pipeline.train.setup import Run, TrainingData, device_tensors, resolve_device, start_run
from pipeline.train.validation import check_finite, host_sum, loss_and_accuracy

NON_DIGIT_WEIGHT = 0.5  # of the non-digits' loss beside the digits' (Hendrycks et al., outlier exposure)


@dataclass
class FitResult:
    """The best model's weights and the run's progress."""

    model: nn.Module
    state: TrainState
    train_seconds: float
    samples_seen: int
    resumed_from: int


def fit(cfg: TrainConfig, data: TrainingData, info: ProcessInfo, checkpoint: Checkpoint,
        on_epoch: Callable[[dict[str, float]], None] = lambda r: None, show_progress: bool = False,
        device: torch.device | None = None) -> FitResult:
    """Train `cfg.model` on `device` (None: `cfg.device` resolved), checkpointing after every epoch and resuming
    a matching checkpoint."""
    device = device if device is not None else resolve_device(cfg.device, info.local_rank)
    make_deterministic(device)
    run = start_run(cfg, data, info, device)
    x_val, y_val = device_tensors(data.val, data.normalization, device, uses_channels_last(cfg.model))
    state = checkpoint.resume(run, on_epoch)
    resumed_from = state.epoch
    network = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.distributed else run.model

    stopped = cfg.patience > 0 and state.bad_epochs >= cfg.patience
    while state.epoch < cfg.epochs and not stopped:
        epoch = state.epoch
        started = time.perf_counter()
        loss_sum, correct, count = train_one_epoch(run, network, epoch, show_progress)
        if cfg.select_fraction:  # part of the method, so part of the epoch's time
            recalibrate_batchnorm(run.kept, run.images, cfg.seed, run.local_batch)
        seconds = time.perf_counter() - started
        val_loss, val_acc = loss_and_accuracy(run.kept, x_val, y_val, cfg.label_smoothing)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_acc": correct / count,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": run.optimizer.param_groups[0]["lr"],
                  "selective": float(selective(cfg, epoch)), "seconds": seconds}
        check_finite(record, cfg.lr)
        keep_if_best(state, record, run.kept)
        stopped = from_main(cfg.patience > 0 and state.bad_epochs >= cfg.patience, info)
        if info.is_main:
            checkpoint.save(run, state)
        on_epoch(record)

    kept = run.kept
    kept.load_state_dict(state.best_state)
    per_rank = len(data.train) // info.world_size
    images = sum(epoch_images(cfg, epoch, per_rank) for epoch in range(len(state.history))) * info.world_size
    return FitResult(kept.cpu().eval(), state, sum(r["seconds"] for r in state.history), images, resumed_from)


def keep_if_best(state: TrainState, record: dict[str, float], kept: nn.Module) -> None:
    """Add the epoch's `record` to `state`; keep `kept`'s weights when its validation loss is the lowest yet."""
    state.epoch, state.history = int(record["epoch"]), [*state.history, record]
    if record["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.bad_epochs = record["val_loss"], state.epoch, 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
    else:
        state.bad_epochs += 1


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of all `n` images: it depends only on (seed, epoch), so it is resumable and the same
    in every process."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def shard(order: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """This process's equal share of `order` (the remainder is left out)."""
    return order[info.rank::info.world_size][:len(order) // info.world_size]


def train_one_epoch(run: Run, network: nn.Module, epoch: int, show_progress: bool) -> tuple[float, int, int]:
    """Epoch `epoch` of `network` (the model, or its DDP wrapper), added up over all processes, buffers synced.

    Returns the loss sum, the number correct and the number of images.
    """
    cfg, info = run.cfg, run.info
    # augmentation: resumable per epoch, and each rank draws its own (rank 0 alone draws what one process would)
    torch.manual_seed(cfg.seed * 1_000_003 + info.rank * 1_000 + epoch)
    order = epoch_permutation(len(run.images), cfg.seed, epoch)  # every rank holds the whole training set
    if selective(cfg, epoch):  # every process selects the same images from the same losses, then takes its share
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 500_000)
        count = epoch_images(cfg, epoch, len(order) // info.world_size) * info.world_size
        order = select(order, run.image_losses.cpu(), count, generator)
    order = shard(order, info)
    bar = tqdm(total=len(order), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img", leave=False) \
        if show_progress and info.is_main else None
    totals = sum_over_processes(train_steps(run, network, order, bar), run.images.device, info)
    if cfg.select_fraction and info.distributed:
        share_losses(run.image_losses, order, info)
    for module in {id(m): m for m in (run.model, run.kept)}.values():
        sync_buffers(module, info)
    if run.images.device.type == "cuda":
        torch.cuda.synchronize(run.images.device)
    if bar is not None:
        bar.close()
    return totals


def augment(batch: torch.Tensor, run: Run) -> torch.Tensor:
    """The training batch as the model sees it: rotated and scaled, shifted, then corrupted, as the params ask."""
    cfg, background = run.cfg, run.background
    if cfg.rotate_deg or cfg.zoom:
        batch = random_affine(batch, background, cfg.rotate_deg, cfg.zoom)
    if cfg.augment:
        batch = random_shift(batch, background)
    return random_corrupted(batch, run.normalization, cfg.corrupt_fraction) if cfg.corrupt_fraction else batch


def train_steps(run: Run, network: nn.Module, order: torch.Tensor,
                progress: tqdm | None) -> tuple[float, int, int]:
    """One pass of `network` over `order` in slices of the local batch: loss sum, number correct, images."""
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
        batch, target = run.images[index], run.labels[index]
        extra = non_digit_batch(run, len(index))
        with autocast:
            logits = network(augment(torch.cat([batch, extra]) if len(extra) else batch, run))
        logits, non_digit_logits = logits[:len(index)], logits[len(index):]
        if cfg.select_fraction:  # selective backprop keeps every image's loss
            each = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing, reduction="none")
            run.image_losses[index] = each.detach()
            loss = each.mean()
        else:
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        # outlier exposure: a flat answer, every class as likely, for what is not a digit (the record keeps the
        # digits' loss alone, comparable with validation's)
        flat = -NON_DIGIT_WEIGHT * F.log_softmax(non_digit_logits.float(), dim=1).mean() if len(extra) else 0.0
        run.optimizer.zero_grad(set_to_none=True)
        (loss + flat).backward()
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


def non_digit_batch(run: Run, digits: int) -> torch.Tensor:
    """`cfg.non_digits` times `digits` drawn non-digits picked at random (none when the run uses none)."""
    count = round(run.cfg.non_digits * digits) if len(run.non_digits) else 0
    if count == 0:
        return run.non_digits[:0]
    return run.non_digits[torch.randint(len(run.non_digits), (count,), device=run.non_digits.device)]


def share_losses(losses: torch.Tensor, order: torch.Tensor, info: ProcessInfo) -> None:
    """Give every process the losses the others computed this epoch (each saw its own share, `order`)."""
    seen = torch.zeros_like(losses)
    seen[order.to(losses.device)] = 1
    shared = all_sum(torch.stack([losses * seen, seen]).to(reduction_device(losses.device)), info)
    shared = shared.to(losses.device)
    losses.copy_(torch.where(shared[1] > 0, shared[0], losses))


def sum_over_processes(totals: tuple[float, int, int], device: torch.device,
                       info: ProcessInfo) -> tuple[float, int, int]:
    """An epoch's (loss sum, correct, count) added up over all processes (as they are, for one process)."""
    if not info.distributed:
        return totals
    # in float64, which CUDA has (MPS, which has not, has no DDP)
    loss_sum, correct, count = all_sum(torch.tensor(totals, dtype=torch.float64, device=reduction_device(device)),
                                       info).tolist()
    return loss_sum, int(correct), int(count)
