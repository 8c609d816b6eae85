"""Will a training run fit in the device's memory? Estimated before any work, from the model's real shapes."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import ParamError
from pipeline.model.networks import INPUT_SHAPE
from pipeline.train.config import TrainConfig

FLOAT_BYTES = 4
# a leaf's output is kept for backward and its gradient flows back through a buffer of the same size
ACTIVATION_COPIES = 2
# weights, gradients, the optimizer's two moments and the weight average
PARAMETER_COPIES = 5
# what the estimate may claim of the memory free now: the rest is for torch, the data and everything else
USABLE = 0.8


def training_bytes(model: nn.Module, batch_size: int) -> int:
    """Bytes one training step of `model` needs at `batch_size`: activations, weights and optimizer state.

    The activation sizes come from one image through the real network (in eval mode, without gradients, so
    nothing about it changes), scaled to the batch.
    """
    outputs = 0

    def count(module: nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal outputs
        if not getattr(module, "inplace", False):  # an in-place ReLU reuses its input's memory
            outputs += output[0].numel()

    hooks = [leaf.register_forward_hook(count) for leaf in model.modules() if not list(leaf.children())]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *INPUT_SHAPE))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    parameters = sum(p.numel() for p in model.parameters())
    images = math.prod(INPUT_SHAPE)
    return FLOAT_BYTES * (ACTIVATION_COPIES * batch_size * (outputs + images) + PARAMETER_COPIES * parameters)


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on `device` now, or None where the platform does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def check_fits(model: nn.Module, batch_size: int, cfg: TrainConfig, device: torch.device) -> None:
    """Stop with one line when a step at this batch size cannot fit in the memory free on `device`."""
    free = free_bytes(device)
    needed = training_bytes(model, batch_size)
    if free is not None and needed > USABLE * free:
        raise ParamError(
            f"'model' {cfg.model} at 'width' {cfg.width} and 'batch_size' {cfg.batch_size} needs about "
            f"{needed / 2**30:.1f} GiB to train, but {device.type} has {free / 2**30:.1f} GiB free; "
            f"lower batch_size or width")
