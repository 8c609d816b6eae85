"""Validation after each epoch: the loss and accuracy of the kept network, summed exactly, checked finite."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.common.errors import PipelineError

EVAL_BATCH = 2000


@torch.inference_mode()
def loss_and_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
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


def check_finite(record: dict[str, float], lr: float) -> None:
    """Stop with one line when the losses are no longer numbers."""
    for key in ("train_loss", "val_loss"):
        if not math.isfinite(record[key]):
            raise PipelineError(f"training diverged at epoch {record['epoch']}: {key.replace('_', ' ')} is "
                                f"{record[key]}; lower lr (now {lr:g})")
