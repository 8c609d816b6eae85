"""Muon (Jordan et al. 2024): momentum whose update is orthogonalized by a Newton-Schulz iteration, for the
weight matrices of convolutions and hidden linear layers; AdamW for the rest (BatchNorm, biases, the classifier).

PyTorch's own `torch.optim.Muon` takes 2-D parameters only; here a convolution's weight is orthogonalized as
its (out channels) x (in channels * kernel) matrix, as in the airbench CIFAR-10 runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic of Jordan's implementation (also torch.optim.Muon's)
NS_STEPS = 5


def orthogonalized(matrix: torch.Tensor) -> torch.Tensor:
    """About U V^T of `matrix`'s SVD (singular values pushed towards 1) by NS_STEPS Newton-Schulz steps."""
    a, b, c = NS_COEFFICIENTS
    x = matrix / (matrix.norm() + 1e-7)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The weights Muon updates (every convolution's and every linear layer's but the last) and the others."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    matrices = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)] + [m.weight for m in linears[:-1]]
    chosen = {id(p) for p in matrices}
    return matrices, [p for p in model.parameters() if id(p) not in chosen]


def _unwrapped(method: Callable) -> Callable:
    """`method` without the wrapper that torch.optim puts around it to keep torch.compile out: the wrapper imports
    torch._dynamo on its first call (about 1.5 s of every training run on a 2-core CPU)."""
    return getattr(method, "__wrapped__", method)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on `matrices`, AdamW on `others`, at one rate: each orthogonalized update is scaled by
    0.2 * sqrt(max(rows, columns)), which gives it AdamW's typical update size, so AdamW's rate and weight decay
    carry over (Liu et al. 2025, "Muon is scalable for LLM training"; torch.optim.Muon's `match_rms_adamw`).

    Never compiled, so it takes torch.optim.Optimizer's methods unwrapped, and a run imports no torch._dynamo.
    """

    add_param_group = _unwrapped(torch.optim.Optimizer.add_param_group)
    zero_grad = _unwrapped(torch.optim.Optimizer.zero_grad)
    state_dict = _unwrapped(torch.optim.Optimizer.state_dict)
    load_state_dict = _unwrapped(torch.optim.Optimizer.load_state_dict)

    def __init__(self, matrices: Iterable[nn.Parameter], others: Iterable[nn.Parameter], lr: float,
                 weight_decay: float, momentum: float = 0.95, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        groups = [{"params": list(matrices), "muon": True}, {"params": list(others), "muon": False}]
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "betas": betas,
                                  "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, decay = group["lr"], group["weight_decay"]
            torch._foreach_mul_(params, 1 - lr * decay)  # decoupled weight decay
            if group["muon"]:
                self._muon(params, group, lr)
            else:
                self._adamw(params, group, lr)

    def _muon(self, params: list[nn.Parameter], group: dict, lr: float) -> None:
        momentum = group["momentum"]
        for p in params:
            buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buffer.mul_(momentum).add_(p.grad)
            update = p.grad.add(buffer, alpha=momentum)  # Nesterov
            matrix = orthogonalized(update.reshape(len(update), -1))
            scale = 0.2 * max(matrix.shape) ** 0.5
            p.add_(matrix.view_as(p), alpha=-lr * scale)

    def _adamw(self, params: list[nn.Parameter], group: dict, lr: float) -> None:
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
        step = states[0]["step"]
        grads = [p.grad for p in params]
        averages, squares = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(averages, grads, 1 - beta1)
        torch._foreach_mul_(squares, beta2)
        torch._foreach_addcmul_(squares, grads, grads, 1 - beta2)
        denominators = torch._foreach_sqrt(squares)
        torch._foreach_div_(denominators, (1 - beta2 ** step) ** 0.5)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, averages, denominators, -lr / (1 - beta1 ** step))
