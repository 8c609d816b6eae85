"""Training: every model trains, CPU runs are bit-identical, resume equals an uninterrupted run, DDP works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.distributed import ProcessInfo
from pipeline.errors import PipelineError
from pipeline.model_file import load_model
from pipeline.models import MODELS, build_model
from pipeline.prepared import load_split, load_stats
from pipeline.training import epoch_order, fit, resolve_device
from stages import train
from tests.helpers import REPO, quick_config


def fit_prepared(prepared: Path, checkpoint: Path, **overrides: object):
    stats = load_stats(prepared)
    return fit(quick_config(**overrides), load_split(prepared / "train.pt"), load_split(prepared / "val.pt"),
               stats["mean"], stats["std"], ProcessInfo(), checkpoint, "run")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_trains_a_step(name: str) -> None:
    model = build_model(name)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    assert model(images).shape == (8, 10)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_baselines_have_the_tutorials_shapes() -> None:
    shapes = {name: [tuple(p.shape) for p in build_model(name).parameters() if p.ndim == 2] for name in ("mlp", "mlp2")}
    assert shapes["mlp"] == [(128, 784), (10, 128)]
    assert shapes["mlp2"] == [(128, 784), (64, 128), (10, 64)]


@pytest.mark.parametrize(("optimizer", "scheduler"), [("sgd", "cosine"), ("adam", "none"), ("adamw", "onecycle")])
def test_optimizers_and_schedulers_learn(prepared: Path, tmp_path: Path, optimizer: str, scheduler: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 0.003
    result = fit_prepared(prepared, tmp_path / "ck.pt", model="mlp", optimizer=optimizer, scheduler=scheduler, lr=lr,
                          nesterov=optimizer == "sgd", epochs=2, augment=False)
    assert result.state.history[-1]["val_acc"] > 0.85


def test_cpu_training_is_bit_identical(prepared: Path, tmp_path: Path) -> None:
    first = fit_prepared(prepared, tmp_path / "a.pt")
    second = fit_prepared(prepared, tmp_path / "b.pt")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in first.state.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in second.state.history]
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_ends_where_an_uninterrupted_run_ends(prepared: Path, tmp_path: Path) -> None:
    reference = fit_prepared(prepared, tmp_path / "ref.pt", epochs=3)
    checkpoint = tmp_path / "ck.pt"
    stats = load_stats(prepared)

    def interrupt_after_first_epoch(record: dict[str, float]) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(epochs=3), load_split(prepared / "train.pt"), load_split(prepared / "val.pt"),
            stats["mean"], stats["std"], ProcessInfo(), checkpoint, "run", interrupt_after_first_epoch)
    assert checkpoint.exists()
    resumed = fit_prepared(prepared, checkpoint, epochs=3)
    assert resumed.resumed_from == 1
    assert [r["val_loss"] for r in resumed.state.history] == [r["val_loss"] for r in reference.state.history]
    for a, b in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_of_other_params_is_not_resumed(prepared: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ck.pt"
    fit_prepared(prepared, checkpoint, epochs=1, model="mlp")
    stats = load_stats(prepared)
    result = fit(quick_config(epochs=1, model="mlp"), load_split(prepared / "train.pt"),
                 load_split(prepared / "val.pt"), stats["mean"], stats["std"], ProcessInfo(), checkpoint, "other-run")
    assert result.resumed_from == 0


def test_early_stopping_keeps_the_best_epoch(prepared: Path, tmp_path: Path) -> None:
    result = fit_prepared(prepared, tmp_path / "ck.pt", model="mlp", scheduler="none", lr=0.5, optimizer="sgd",
                          epochs=12, patience=1, augment=False)
    history = result.state.history
    assert len(history) < 12
    best = min(history, key=lambda r: r["val_loss"])
    assert result.state.best_epoch == best["epoch"] == len(history) - 1


def test_shards_partition_each_epoch() -> None:
    shards = [epoch_order(103, 5, 2, ProcessInfo(rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(epoch_order(103, 5, 2, ProcessInfo()), epoch_order(103, 5, 2, ProcessInfo()))


def test_absent_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(PipelineError, match="'device' is cuda but no CUDA device"):
        resolve_device("cuda")


def write_params(folder: Path, **overrides: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({"epochs": 1, "batch_size": 128, **overrides})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_model_and_record(prepared: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path, epochs=2, model="mlp2")
    args = ["--params", params, "--data", prepared, "--model-out", tmp_path / "model.pt",
            "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "metrics",
            "--checkpoint", tmp_path / "ck.pt"]
    result = CliRunner().invoke(train.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    _, meta = load_model(tmp_path / "model.pt")
    assert meta["model"] == "mlp2" and meta["classes"] == [str(d) for d in range(10)]
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary == {"val_loss": summary["val_loss"], "val_acc": summary["val_acc"], "best_epoch": 2,
                       "epochs_run": 2, "parameters": 109386}
    assert summary["val_acc"] > 0.8
    loss_rows = (tmp_path / "metrics" / "val_loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["epoch", "val_loss"] and len(loss_rows) == 3
    assert float(loss_rows[2].split("\t")[1]) == summary["val_loss"]
    assert (tmp_path / "metrics" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "ck.pt").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model", "resnet", "'model' must be one of cnn, mlp, mlp2, got 'resnet'"),
    ("lr", -1, "'lr' must be a number > 0 and < 10, got -1"),
    ("epochs", 0, "'epochs' must be an integer from 1 to 1000, got 0"),
])
def test_stage_rejects_bad_params_before_work(prepared: Path, tmp_path: Path, key: str, value: object,
                                              message: str) -> None:
    params = write_params(tmp_path, **{key: value})
    result = CliRunner().invoke(train.main, ["--params", str(params), "--data", str(prepared),
                                             "--model-out", str(tmp_path / "model.pt")])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "model.pt").exists()


def test_ddp_with_two_cpu_processes(prepared: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    params = write_params(tmp_path, epochs=2, model="cnn", device="cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "stages.train", "--params", str(params), "--data", str(data), "--model-out", str(tmp_path / "model.pt"),
               "--metrics", str(tmp_path / "train.json"), "--record-dir", str(tmp_path / "metrics"),
               "--checkpoint", str(tmp_path / "ck.pt")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stderr
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["epochs_run"] == 2 and summary["val_acc"] > 0.9
    model, _ = load_model(tmp_path / "model.pt")
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
