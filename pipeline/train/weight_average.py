"""An exponential moving average (EMA) of a model's weights, the model that is validated and kept."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """A copy of `model` that follows it by an EMA of its parameters and BatchNorm statistics.

    The decay grows to `decay` as min(decay, (1 + n) / (10 + n)) over the first updates, so a short run
    averages its recent weights rather than keeping its initial ones. One fused in-place update per
    step (torch.optim.swa_utils.AveragedModel regroups every tensor on every call, about 4 ms a step here).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.updates = 0
        pairs = [*zip(self.module.parameters(), model.parameters(), strict=True),
                 *zip(self.module.buffers(), model.buffers(), strict=True)]
        self._averaged = [a for a, _ in pairs if a.is_floating_point()]
        self._followed = [b for a, b in pairs if a.is_floating_point()]
        self._counters = [(a, b) for a, b in pairs if not a.is_floating_point()]  # batches seen: taken as is

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (call after every optimizer step)."""
        self.updates += 1
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._averaged, self._followed, weight)
        for averaged, followed in self._counters:
            averaged.copy_(followed)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
