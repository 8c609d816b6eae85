"""Selective backprop (Jiang et al. 2019): after the first full epochs, each epoch trains on the images that
were hardest at their last visit, mixed with some drawn at random, so that later epochs cost a fraction of a
full one. The losses are the ones the training pass computes anyway (stale for the images an epoch skips).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.train.config import TrainConfig

HARD_SHARE = 0.75  # of the images a selective epoch trains on: the hardest by their last loss; the rest at random
RECALIBRATION_IMAGES = 8192  # training images that re-estimate BatchNorm's statistics before each validation


def selective(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch `epoch` (0-based) trains on a selection."""
    return cfg.select_fraction > 0 and epoch >= cfg.select_after


def epoch_images(cfg: TrainConfig, epoch: int, per_rank: int) -> int:
    """How many images epoch `epoch` trains on in each process."""
    return max(1, round(per_rank * cfg.select_fraction)) if selective(cfg, epoch) else per_rank


def total_steps(cfg: TrainConfig, per_rank: int, local_batch: int) -> int:
    """The optimizer steps of the whole run, for the learning-rate schedule."""
    return sum(math.ceil(epoch_images(cfg, epoch, per_rank) / local_batch) for epoch in range(cfg.epochs))


def select(order: torch.Tensor, losses: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` images of `order`: the HARD_SHARE with the highest last loss (ties in `order`'s order), the rest
    drawn at random from the others; shuffled, all on the host and seeded by `generator`."""
    hard = round(count * HARD_SHARE)
    ranked = order[torch.argsort(losses[order], descending=True, stable=True)]
    rest = ranked[hard:]
    chosen = torch.cat([ranked[:hard], rest[torch.randperm(len(rest), generator=generator)[:count - hard]]])
    return chosen[torch.randperm(len(chosen), generator=generator)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, seed: int, batch_size: int) -> None:
    """Re-estimate `model`'s BatchNorm statistics as a plain average over a fixed random subset of `images`
    (a selective epoch's batches are harder than the data, and so are the statistics they leave)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(images), generator=generator)[:RECALIBRATION_IMAGES].to(images.device)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for start in range(0, len(subset), batch_size):
        model(images[subset[start:start + batch_size]])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
