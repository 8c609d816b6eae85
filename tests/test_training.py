"""Training: every model trains, CPU runs are bit-identical, resume equals an uninterrupted run, DDP works."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.common.code_deps import code_digest
from pipeline.common.errors import PipelineError
from pipeline.common.params import MAX_SEED
from pipeline.data.prepared import Normalization, PreparedData
from pipeline.model.networks import MODELS, build_model
from pipeline.model.test_time import load_model
from pipeline.train.checkpoint import Checkpoint, fingerprint
from pipeline.train.distributed import ProcessInfo
from pipeline.train.loop import epoch_permutation, fit, shard
from pipeline.train.platform_info import describe_platform
from pipeline.train.setup import TrainingData, resolve_device
from stages import train
from tests.helpers import REPO, invoke, quick_config, small_split

CPU = describe_platform(torch.device("cpu"))
H200 = {"torch": CPU["torch"], "device": "cuda", "device_name": "NVIDIA H200", "cuda": "13.0"}


def run_id(prepared: Path, code: str = "code", platform: dict | None = None, **overrides: object) -> dict[str, str]:
    return fingerprint(quick_config(**overrides), [prepared / "train.npz", prepared / "val.npz"], 1, code,
                       platform or CPU)


def fit_prepared(prepared: Path, checkpoint: Path, code: str = "code", **overrides: object):
    return fit(quick_config(**overrides), TrainingData.of(PreparedData.load(prepared)), ProcessInfo(),
               Checkpoint(checkpoint, run_id(prepared, code, **overrides)))


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


@pytest.mark.parametrize(("optimizer", "scheduler"), [("sgd", "cosine"), ("adam", "none"), ("adamw", "onecycle"),
                                                     ("muon", "onecycle")])
def test_optimizers_and_schedulers_learn(prepared: Path, tmp_path: Path, optimizer: str, scheduler: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 0.003
    result = fit_prepared(prepared, tmp_path / "ck.pt", model="mlp", optimizer=optimizer, scheduler=scheduler, lr=lr,
                          nesterov=optimizer == "sgd", epochs=2, augment=False)
    assert result.state.history[-1]["val_acc"] > 0.85
    rates = [record["lr"] for record in result.state.history]  # the rate at the end of each epoch
    if scheduler == "none":
        assert rates == [lr, lr]
    else:  # cosine decays from the peak; one-cycle is past its peak after the first of two epochs
        assert lr > rates[0] > rates[1] >= 0, rates


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9, "rotate_deg": 10.0, "zoom": 0.1},
                                   {"optimizer": "muon", "select_fraction": 0.5, "select_after": 1}],
                         ids=["plain", "ema-affine", "muon-selective"])
def test_resume_ends_where_an_uninterrupted_run_ends(small_prepared: Path, tmp_path: Path, extra: dict) -> None:
    prepared = small_prepared  # equality, not accuracy: 1,000 digits do
    reference = fit_prepared(prepared, tmp_path / "ref.pt", epochs=3, **extra)
    checkpoint = tmp_path / "ck.pt"

    def interrupt_after_first_epoch(record: dict[str, float]) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(epochs=3, **extra), TrainingData.of(PreparedData.load(prepared)), ProcessInfo(),
            Checkpoint(checkpoint, run_id(prepared, epochs=3, **extra)), interrupt_after_first_epoch)
    assert checkpoint.exists()
    resumed = fit_prepared(prepared, checkpoint, epochs=3, **extra)
    assert resumed.resumed_from == 1
    assert [r["val_loss"] for r in resumed.state.history] == [r["val_loss"] for r in reference.state.history]
    for a, b in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_fingerprint_changes_with_params_data_code_torch_processes_and_platform(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [prepared / "train.npz", prepared / "val.npz"]
    base = fingerprint(quick_config(), files, 1, "code", CPU)
    assert fingerprint(quick_config(), files, 1, "code", dict(CPU)) == base
    other_data = tmp_path / "val.npz"
    other_data.write_bytes(files[1].read_bytes() + b"\0")
    variants = {
        "params": fingerprint(quick_config(lr=0.005), files, 1, "code", CPU),
        "data": fingerprint(quick_config(), [files[0], other_data], 1, "code", CPU),
        "code": fingerprint(quick_config(), files, 1, "edited code", CPU),
        "processes": fingerprint(quick_config(), files, 2, "code", CPU),
        "platform": fingerprint(quick_config(), files, 1, "code", {**CPU, "threads": 64}),
    }
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    variants["torch"] = fingerprint(quick_config(), files, 1, "code", CPU)
    for component, changed in variants.items():
        assert [key for key in base if base[key] != changed[key]] == [component]


def test_the_train_stage_fingerprints_its_whole_import_closure_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(REPO / "stages", root / "stages")
    shutil.copytree(REPO / "pipeline", root / "pipeline")
    before = code_digest(root / "stages" / "train.py", root)
    with (root / "pipeline" / "model" / "networks.py").open("a") as fh:
        fh.write("# edited\n")
    edited = code_digest(root / "stages" / "train.py", root)
    assert edited != before
    with (root / "pipeline" / "evaluate" / "figures.py").open("a") as fh:
        fh.write("# not imported by train\n")
    assert code_digest(root / "stages" / "train.py", root) == edited


@pytest.mark.parametrize("other", ["code", "torch", "platform"])
def test_a_checkpoint_of_another_run_is_set_aside_never_loaded(prepared: Path, tmp_path: Path, other: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = tmp_path / "ck.pt"

    def stop(record: dict[str, float]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(epochs=2, model="mlp"), TrainingData.of(PreparedData.load(prepared)), ProcessInfo(),
            Checkpoint(checkpoint, run_id(prepared, platform=H200 if other == "platform" else None, model="mlp",
                                          epochs=2)), stop)
    assert checkpoint.exists()
    if other == "torch":
        monkeypatch.setattr(torch, "__version__", "9.9.9")
    code = "edited code" if other == "code" else "code"
    with caplog.at_level(logging.INFO, logger="train"):
        after_stale = fit_prepared(prepared, checkpoint, code, epochs=2, model="mlp")
    assert f"{checkpoint} not resumed: it is from a run with other {other}; training starts afresh" in caplog.text
    assert after_stale.resumed_from == 0
    fresh = fit_prepared(prepared, tmp_path / "none.pt", code, epochs=2, model="mlp")
    for a, b in zip(fresh.model.state_dict().values(), after_stale.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # nothing of the stale checkpoint leaked into the new run


def test_a_diverging_run_stops_with_one_line(tmp_path: Path) -> None:
    train = small_split(2000)
    cfg = quick_config(model="mlp", optimizer="sgd", lr=9.9, momentum=0.99, scheduler="none", epochs=4, augment=False)
    pattern = r"^training diverged at epoch [1-4]: (train|val) loss is (nan|inf); lower lr \(now 9\.9\)$"
    with pytest.raises(PipelineError, match=pattern):
        fit(cfg, TrainingData(train, small_split(200), Normalization(0.5, 0.3)), ProcessInfo(),
            Checkpoint(tmp_path / "ck.pt", {"run": "diverging"}))


def test_cpu_training_is_bit_identical_for_a_seed_and_the_largest_seed_is_used(prepared: Path,
                                                                                 tmp_path: Path) -> None:
    """(A resumed run's equality with an uninterrupted one is `test_resume_ends_where_an_uninterrupted_run_ends`.)"""
    runs = [fit_prepared(prepared, tmp_path / f"ck{i}.pt", model="mlp", epochs=1, augment=True, seed=seed,
                         corrupt_fraction=fraction)
            for i, (seed, fraction) in enumerate(((MAX_SEED, 0.5), (MAX_SEED, 0.5), (0, 0.5), (MAX_SEED, 0.0)))]
    weights = [torch.cat([p.flatten() for p in run.model.state_dict().values()]) for run in runs]
    assert torch.equal(weights[0], weights[1])  # the same seed, the same bits
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.state.history] for run in runs]
    assert strip[0] == strip[1]  # and the same record
    assert not torch.equal(weights[0], weights[2])  # and not what another seed gives
    assert not torch.equal(weights[0], weights[3])  # the corrupted images are what it trained on
    assert runs[0].state.history[-1]["val_acc"] > 0.5


def test_early_stopping_keeps_the_best_epoch_and_stops_at_the_same_epoch_after_a_resume(prepared: Path,
                                                                                          tmp_path: Path) -> None:
    settings = {"model": "mlp", "scheduler": "none", "lr": 0.5, "optimizer": "sgd", "epochs": 12, "patience": 1,
                "augment": False}
    result = fit_prepared(prepared, tmp_path / "ck.pt", **settings)
    history = result.state.history
    assert len(history) < 12
    best = min(history, key=lambda r: r["val_loss"])
    assert result.state.best_epoch == best["epoch"] == len(history) - 1

    def interrupt_at_the_best_epoch(record: dict[str, float]) -> None:  # the next epoch, resumed, ends the run
        if record["epoch"] == best["epoch"]:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "interrupted.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(quick_config(**settings), TrainingData.of(PreparedData.load(prepared)), ProcessInfo(),
            Checkpoint(checkpoint, run_id(prepared, **settings)), interrupt_at_the_best_epoch)
    resumed = fit_prepared(prepared, checkpoint, **settings)
    assert resumed.resumed_from == best["epoch"] and resumed.state.best_epoch == best["epoch"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.state.history] == strip


def test_shards_partition_each_epoch() -> None:
    shards = [shard(epoch_permutation(103, 5, 2), ProcessInfo(rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(epoch_permutation(103, 5, 2), epoch_permutation(103, 5, 2))
    assert sorted(epoch_permutation(103, 5, 2).tolist()) == list(range(103))


@pytest.mark.may_skip_in_ci("a CI machine with a GPU has CUDA")
def test_absent_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(PipelineError, match="'device' is cuda but no CUDA device"):
        resolve_device("cuda")


def test_a_value_that_cannot_work_is_named_with_the_params_file_read(prepared: Path, non_digits: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    params = write_params(tmp_path, device="mps").rename(tmp_path / "mine.yaml")  # not params.yaml
    result = invoke(train.main, "--params", params, "--data", prepared, "--non-digits", non_digits,
                    "--model-out", tmp_path / "model.pt",
                    "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "metrics")
    assert result.exit_code == 1
    assert f"Error: {params}: 'device' is mps but MPS is not available" in result.output


def test_absent_mps_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # as on every machine but a Mac
    with pytest.raises(PipelineError, match="'device' is mps but MPS is not available"):
        resolve_device("mps")
    assert resolve_device("auto") != torch.device("mps")  # auto never picks it


def write_params(folder: Path, **overrides: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update({"epochs": 1, "batch_size": 128, **overrides})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_model_and_record(prepared: Path, non_digits: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path, epochs=2, model="mlp2")
    args = ["--params", params, "--data", prepared, "--non-digits", non_digits, "--model-out", tmp_path / "model.pt",
            "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "metrics",
            "--checkpoint", tmp_path / "ck.pt"]
    result = CliRunner().invoke(train.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    _, meta = load_model(tmp_path / "model.pt")
    assert meta.architecture == "mlp2" and meta.classes == [str(d) for d in range(10)]
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary == {"val_loss": summary["val_loss"], "val_acc": summary["val_acc"], "best_epoch": 2,
                       "epochs_run": 2, "parameters": 109386, "platform": CPU}
    assert summary["val_acc"] > 0.8
    loss_rows = (tmp_path / "metrics" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t") == ["epoch", "train", "val", "trained_on"] and len(loss_rows) == 3
    assert float(loss_rows[2].split("\t")[2]) == summary["val_loss"]
    assert (tmp_path / "metrics" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "ck.pt").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model", "resnet", "'model' must be one of cnn, mlp, mlp2, got 'resnet'"),
    ("lr", -1, "'lr' must be a number > 0 and < 10, got -1"),
    ("epochs", 0, "'epochs' must be an integer from 1 to 1000, got 0"),
])
def test_stage_rejects_bad_params_before_work(prepared: Path, non_digits: Path, tmp_path: Path, key: str,
                                              value: object, message: str) -> None:
    params = write_params(tmp_path, **{key: value})
    result = CliRunner().invoke(train.main, ["--params", str(params), "--data", str(prepared), "--non-digits",
                                             str(non_digits), "--model-out", str(tmp_path / "model.pt")])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.complete  # torchrun
def test_an_interrupted_two_process_run_resumes_to_the_model_an_uninterrupted_one_trains(
        small_prepared: Path, non_digits: Path, tmp_path: Path) -> None:
    """Two CPU processes (gloo): a crash after epoch 1, a rerun that resumes, and the same bytes of weights and
    the same record as two processes that were never stopped (one step's agreement with one process is
    `test_ddp_averages_gradients_across_ranks`). Equality, not accuracy: 1,000 digits do."""
    data = tmp_path / "data"
    shutil.copytree(small_prepared, data)
    params = write_params(tmp_path, epochs=3, model="cnn", device="cpu", select_after=1)  # epochs 2, 3 selective
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def arguments(name: str) -> list[str]:
        return ["--params", str(params), "--data", str(data), "--non-digits", str(non_digits),
                "--model-out", str(tmp_path / f"{name}.pt"),
                "--metrics", str(tmp_path / f"{name}.json"), "--record-dir", str(tmp_path / name),
                "--checkpoint", str(tmp_path / f"{name}-checkpoint.pt")]

    crashed = subprocess.run([*torchrun, "tests.crash", "epoch", "stages.train", *arguments("resumed")], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert crashed.returncode != 0 and (tmp_path / "resumed-checkpoint.pt").exists()
    assert not (tmp_path / "resumed.pt").exists()
    for name in ("resumed", "straight"):
        done = subprocess.run([*torchrun, "stages.train", *arguments(name)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "2 process(es)" in done.stderr
        assert ("resuming from" in done.stderr and "after epoch 1" in done.stderr) == (name == "resumed")
    resumed, straight = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("resumed", "straight"))
    assert resumed["epochs_run"] == 3 and resumed == straight
    (model, _), (reference, _) = load_model(tmp_path / "resumed.pt"), load_model(tmp_path / "straight.pt")
    for (name, value), expected in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(value, expected), name


@pytest.mark.complete  # torchrun
def test_ddp_averages_gradients_across_ranks(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    done = subprocess.run([*torchrun, "tests.ddp_probe", str(out)], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["moved"] > 1e-3, report  # the step changed the weights
    assert report["ranks_apart"] == 0.0  # each rank saw other images: only an all-reduce makes them agree
    expected = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, -1.0, -1.0]  # 4 images each; 8 and 9 nobody's
    assert report["shared_losses"] == [expected, expected]
    assert report["from_one_process"] < 1e-6, report  # the average of the halves' gradients is the whole batch's


def test_the_record_says_which_epochs_trained_on_the_selected_subset(tmp_path: Path) -> None:
    from pipeline.train.record import write_progress

    history = [{"epoch": e, "train_loss": 1.0, "val_loss": 0.5, "train_acc": 0.9, "val_acc": 0.95, "lr": 0.01,
                "selective": float(e > 2)} for e in (1, 2, 3, 4)]
    write_progress(tmp_path / "train.json", tmp_path / "record", history, 4, 10, CPU)
    for chart in ("loss", "acc"):
        rows = [line.split("\t") for line in (tmp_path / "record" / f"{chart}.tsv").read_text().splitlines()]
        assert [row[-1] for row in rows] == ["trained_on", "all images", "all images", "selected subset",
                                             "selected subset"]
    assert (tmp_path / "record" / "lr.tsv").read_text().splitlines()[0] == "epoch\tlr"
