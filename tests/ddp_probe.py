"""Run under torchrun: one DDP step of the real training loop on each rank's half of a batch, then report how
far the ranks' weights are apart and how far they are from one process's step on the whole batch. Both are
zero (to rounding) only if DDP averages the gradients across ranks."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.prepared import Normalization
from pipeline.model.networks import build_model
from pipeline.train.distributed import ProcessInfo, destroy_process_group, init_process_group, process_info
from pipeline.train.loop import shard, share_losses, train_steps
from pipeline.train.setup import Run, make_optimizer
from tests.helpers import quick_config

BATCH = 64


def one_step(model: torch.nn.Module, network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             info: ProcessInfo) -> None:
    cfg = replace(quick_config(model="mlp", optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0,
                               scheduler="none", label_smoothing=0.0, augment=False), batch_size=BATCH)
    run = Run(cfg, info, model, make_optimizer(cfg, model), None, None, images, labels, Normalization(0.0, 1.0),
              len(labels), torch.empty(0))
    train_steps(run, network, torch.arange(len(labels)), None)


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def main(out: str) -> None:
    info = process_info()
    init_process_group(info, torch.device("cpu"))
    generator = torch.Generator().manual_seed(7)
    images, labels = torch.randn(BATCH, 1, 28, 28, generator=generator), torch.randint(0, 10, (BATCH,),
                                                                                        generator=generator)
    torch.manual_seed(0)
    model = build_model("mlp")
    reference, initial = copy.deepcopy(model), flat(model)
    half = slice(info.rank * BATCH // 2, (info.rank + 1) * BATCH // 2)
    one_step(model, DistributedDataParallel(model), images[half], labels[half], info)
    weights = [torch.empty_like(flat(model)) for _ in range(info.world_size)]
    dist.all_gather(weights, flat(model))
    # selective backprop: each rank knows the losses of its own share; after sharing, every rank knows them all
    losses = torch.full((10,), -1.0)
    mine = shard(torch.arange(9), info)  # images 8 (the remainder) and 9 are nobody's: they keep their old loss
    losses[mine] = float(info.rank + 1)
    share_losses(losses, mine, info)
    gathered = [torch.empty_like(losses) for _ in range(info.world_size)]
    dist.all_gather(gathered, losses)
    if info.is_main:
        one_step(reference, reference, images, labels, ProcessInfo())
        report = {"ranks_apart": (weights[0] - weights[1]).abs().max().item(),
                  "from_one_process": (weights[0] - flat(reference)).abs().max().item(),
                  "moved": (weights[0] - initial).abs().max().item(),
                  "shared_losses": [g.tolist() for g in gathered]}
        with open(out, "w") as fh:
            json.dump(report, fh)
    destroy_process_group(info)


if __name__ == "__main__":
    main(sys.argv[1])
