"""Selective backprop's choice of images and its step count; Muon's orthogonalized update."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.data.prepared import PreparedData
from pipeline.model.networks import build_model
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.distributed import ProcessInfo
from pipeline.train.loop import fit
from pipeline.train.muon import MuonAdamW, muon_parameters, orthogonalized
from pipeline.train.selection import HARD_SHARE, select, total_steps
from pipeline.train.setup import TrainingData
from tests.helpers import REPO, quick_config


def test_a_selection_is_the_hardest_three_quarters_and_random_others_without_repeats() -> None:
    losses = torch.arange(1000, dtype=torch.float32)  # image i's last loss is i: the hardest are the last
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    chosen = select(order, losses, 400, torch.Generator().manual_seed(1))
    hard = round(400 * HARD_SHARE)
    assert len(chosen) == len(set(chosen.tolist())) == 400
    assert set(range(1000 - hard, 1000)) <= set(chosen.tolist())  # every one of the 300 hardest
    others = sorted(set(chosen.tolist()) - set(range(1000 - hard, 1000)))
    assert len(others) == 400 - hard and others[0] < 500  # the rest drawn from all the others, not the next hardest
    again = select(order, losses, 400, torch.Generator().manual_seed(1))
    assert torch.equal(chosen, again)  # seeded
    assert not torch.equal(chosen, select(order, losses, 400, torch.Generator().manual_seed(2)))


def test_the_schedule_counts_exactly_the_steps_a_selective_run_takes(prepared: Path, tmp_path: Path) -> None:
    cfg = quick_config(select_fraction=0.3, select_after=1, epochs=3, batch_size=100)
    data = TrainingData.of(PreparedData.load(prepared))
    steps = total_steps(cfg, len(data.train), cfg.batch_size)
    full = -(-len(data.train) // 100)
    assert full < steps < 3 * full
    result = fit(cfg, data, ProcessInfo(), Checkpoint(tmp_path / "ck.pt", {"run": "selective"}))
    # one-cycle raises on a step past its plan; a run that stopped short of it would end at another rate
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.25,
                                                   cycle_momentum=False)
    rates = []
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert result.state.history[-1]["lr"] == pytest.approx(rates[-1], rel=1e-9) != pytest.approx(rates[-2])
    assert result.samples_seen == len(data.train) + 2 * round(len(data.train) * 0.3)


def test_newton_schulz_brings_every_singular_value_near_one() -> None:
    matrix = torch.randn(32, 288, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 288)
    values = torch.linalg.svdvals(orthogonalized(matrix))
    assert values.min() > 0.6 and values.max() < 1.25, values
    tall = torch.linalg.svdvals(orthogonalized(matrix.T))
    assert torch.allclose(tall, values)


def test_muon_takes_every_convolution_and_hidden_linear_and_adamw_the_rest() -> None:
    model = build_model("cnn")
    matrices, others = muon_parameters(model)
    assert [tuple(p.shape) for p in matrices] == [(16, 1, 5, 5), (32, 16, 3, 3), (32, 32, 3, 3), (64, 1568)]
    assert len(matrices) + len(others) == len(list(model.parameters()))
    assert all(p.ndim == 1 for p in others[:-2]) and tuple(others[-2].shape) == (10, 64)  # norms, biases, classifier
    optimizer = MuonAdamW(matrices, others, lr=0.01, weight_decay=0.0)
    model(torch.randn(8, 1, 28, 28)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_muon_run_with_its_schedule_and_checkpoint_imports_no_dynamo() -> None:
    """torch.optim's wrappers import torch._dynamo (about 1.5 s) on their first call; the default optimizer
    takes the methods unwrapped, so a training process never pays for it."""
    script = """
import sys, torch
from pipeline.train.muon import MuonAdamW, muon_parameters
from pipeline.model.networks import build_model
model = build_model("cnn", 4)
optimizer = MuonAdamW(*muon_parameters(model), lr=0.01, weight_decay=0.0005)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=4)
for _ in range(2):
    optimizer.zero_grad(set_to_none=True)
    model(torch.rand(8, 1, 28, 28)).sum().backward()
    optimizer.step()
    schedule.step()
optimizer.load_state_dict(optimizer.state_dict())
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
