"""Fault injection with the real stage commands: kills at random points, a full disk, corrupt inputs,
two `dvc repro` at once, and determinism of whole runs. Nothing wrong may ever sit at an output path."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.model_file import load_model
from pipeline.prepared import load_split, load_stats
from pipeline.raw import FILES
from pipeline.sources import DATASETS
from stages import evaluate, preprocess
from tests.dvc_repo import ENV, dvc, git, make_repo, set_params
from tests.helpers import REPO


def stage_command(stage: str, work: Path, prepared: Path, model: Path) -> list[str]:
    """The stage as a user runs it, with every path pointing into `work`."""
    params = ["--params", str(work / "params.yaml")]
    commands = {
        "download": [*params, "--out", str(work / "raw"), "--offline"],
        "preprocess": [*params, "--raw", str(work / "raw-ready"), "--out", str(work / "prepared")],
        "train": [*params, "--data", str(prepared), "--model-out", str(work / "model.pt"),
                  "--metrics", str(work / "train.json"), "--record-dir", str(work / "metrics"),
                  "--checkpoint", str(work / "ck.pt")],
        "evaluate": ["--model", str(model), "--data", str(prepared), "--metrics", str(work / "eval.json"),
                     "--plots-dir", str(work / "eval")],
        "export": ["--model", str(model), "--data", str(prepared), "--eval-metrics", str(work / "eval-ready.json"),
                   "--onnx-out", str(work / "model.onnx"), "--program-out", str(work / "model.pt2"),
                   "--card-out", str(work / "card.md"), "--metrics", str(work / "export.json")],
    }
    return [sys.executable, "-m", f"stages.{stage}", *commands[stage]]


def accept_raw(work: Path) -> None:
    for name in FILES:
        assert hashlib.md5((work / "raw" / name).read_bytes()).hexdigest() == DATASETS["mnist"].md5[name]


def accept_prepared(work: Path) -> None:
    for split in ("train", "val", "test"):
        load_split(work / "prepared" / f"{split}.pt")
    load_stats(work / "prepared")


def accept_model(work: Path) -> None:
    load_model(work / "model.pt")
    json.loads((work / "train.json").read_text())
    assert (work / "metrics" / "curves.png").stat().st_size > 0


def accept_evaluation(work: Path) -> None:
    assert set(json.loads((work / "eval.json").read_text())) >= {"accuracy", "errors"}
    for name in ("per_class.csv", "confusion.csv", "confusion.png", "misclassified.png"):
        assert (work / "eval" / name).stat().st_size > 0


def accept_export(work: Path) -> None:
    onnx.checker.check_model(onnx.load(work / "model.onnx"))
    torch.export.load(work / "model.pt2")
    assert json.loads((work / "export.json").read_text())["agree"] is True


OUTPUTS: dict[str, tuple[list[str], Callable[[Path], None]]] = {
    "download": (["raw"], accept_raw),
    "preprocess": (["prepared"], accept_prepared),
    "train": (["model.pt", "train.json", "metrics"], accept_model),
    "evaluate": (["eval.json", "eval"], accept_evaluation),
    "export": (["model.onnx", "model.pt2", "export.json"], accept_export),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, prepared: Path, trained_model: Path,
              tiny_raw: Path) -> Path:
    """Inputs every stage can start from."""
    work = tmp_path_factory.mktemp("faults")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(epochs=4, batch_size=128, device="cpu", val_size=100)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(tiny_raw, work / "raw-ready")
    (work / "eval-ready.json").write_text(json.dumps(
        {"accuracy": 0.9, "errors": 1, "f1_macro": 0.9, "loss": 0.1}))
    return work


@pytest.mark.parametrize("stage", list(OUTPUTS))
def test_killed_stage_never_leaves_an_acceptable_looking_partial_output(
        stage: str, workspace: Path, prepared: Path, trained_model: Path) -> None:
    rng = random.Random(stage)
    command = stage_command(stage, workspace, prepared, trained_model)
    outputs, accept = OUTPUTS[stage]
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, check=True, timeout=300)
    full = time.monotonic() - started
    for signum in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL):
        for name in outputs:
            target = workspace / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 1.0) * full)
        process.send_signal(signum)
        process.wait(timeout=120)
        present = [name for name in outputs if (workspace / name).exists()]
        if present:
            accept(workspace)  # whatever is at an output path is complete and valid
        subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, check=True, timeout=300)
        accept(workspace)
    assert not [p.name for p in workspace.iterdir() if p.name.endswith(".tmp")]


def test_sigint_mid_training_exits_cleanly_and_resumes_to_the_same_model(workspace: Path, prepared: Path) -> None:
    work = workspace / "resume"
    work.mkdir()
    shutil.copy(workspace / "params.yaml", work)
    command = stage_command("train", work, prepared, work / "model.pt")
    subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, check=True, timeout=300)
    reference = torch.load(work / "model.pt", weights_only=True)["state_dict"]
    (work / "model.pt").unlink()
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (work / "ck.pt").exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (work / "model.pt").exists()
    resumed = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, check=True, timeout=300)
    assert "resuming from" in resumed.stderr
    state = torch.load(work / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(reference[k], state[k]) for k in reference)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_ctrl_c_while_a_stage_starts_is_one_line(stage: str, workspace: Path, prepared: Path,
                                                 trained_model: Path) -> None:
    work = workspace / f"start-{stage}"
    work.mkdir()
    shutil.copy(workspace / "params.yaml", work)
    command = stage_command(stage, work, prepared, trained_model)
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # torch alone takes over a second to import: this lands during start-up
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT, stderr
    assert stderr == f"[{stage}] interrupted while starting; nothing was written\n"
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]


def fail_with_enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1]) if args else None)


def test_disk_full_during_preprocess_keeps_previous_outputs(workspace: Path, tiny_raw: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = workspace / "prepared-previous"
    args = ["--params", str(workspace / "params.yaml"), "--raw", str(tiny_raw), "--out", str(out)]
    assert CliRunner().invoke(preprocess.main, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr("pathlib.Path.write_bytes", fail_with_enospc)
    result = CliRunner().invoke(preprocess.main, args)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and result.output.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in workspace.iterdir() if p.name.startswith(".prepared-previous")]


def test_disk_full_during_evaluate_keeps_previous_metrics(workspace: Path, prepared: Path, trained_model: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = workspace / "eval-previous.json"
    args = ["--model", str(trained_model), "--data", str(prepared), "--metrics", str(metrics),
            "--plots-dir", str(workspace / "eval-previous")]
    assert CliRunner().invoke(evaluate.main, args).exit_code == 0
    before = metrics.read_bytes()
    monkeypatch.setattr("pandas.DataFrame.to_csv", fail_with_enospc)
    result = CliRunner().invoke(evaluate.main, args)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert metrics.read_bytes() == before
    assert (workspace / "eval-previous" / "per_class.csv").exists()


@pytest.mark.parametrize(("split", "data", "message"), [
    ("train.pt", {"images": torch.zeros(5, 28, 28, dtype=torch.int32), "labels": torch.zeros(5, dtype=torch.int64)},
     "images must be uint8 N x 28 x 28, got torch.int32 (5, 28, 28)"),
    ("val.pt", {"images": torch.zeros(5, 28, 28, dtype=torch.uint8), "labels": torch.zeros(4, dtype=torch.int64)},
     "5 images but 4 labels"),
    ("train.pt", {"pixels": torch.zeros(1)}, "expected keys 'images' and 'labels'"),
    ("val.pt", b"not a torch file", "not a prepared split"),
])
def test_train_refuses_corrupt_prepared_tensors(workspace: Path, prepared: Path, tmp_path: Path, split: str,
                                                data: object, message: str) -> None:
    broken = tmp_path / "prepared"
    shutil.copytree(prepared, broken)
    if isinstance(data, bytes):
        (broken / split).write_bytes(data)
    else:
        torch.save(data, broken / split)
    command = stage_command("train", tmp_path, broken, tmp_path / "model.pt")
    command[command.index("--params") + 1] = str(workspace / "params.yaml")
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "model.pt").exists()


def test_garbled_gzip_in_data_dir_is_one_clear_line(workspace: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(DATASETS["mnist"].bundled_dir, local)
    data = (local / "train-labels-idx1-ubyte.gz").read_bytes()
    (local / "train-labels-idx1-ubyte.gz").write_bytes(data[:100])
    (tmp_path / "params.yaml").write_text(f"dataset: mnist\ndata_dir: {local}\n")
    command = [sys.executable, "-m", "stages.download", "--params", str(tmp_path / "params.yaml"),
               "--out", str(tmp_path / "raw"), "--offline"]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: {local / 'train-labels-idx1-ubyte.gz'}: corrupt or truncated gzip "
                                   "(Compressed file ended before the end-of-stream marker was reached)")
    assert not (tmp_path / "raw").exists()


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    root = tmp_path_factory.mktemp("faults-dvc")
    return make_repo(root / "repo", tiny_dataset, root / "remote")


def lock_outputs(repo: Path) -> dict[str, str]:
    """Every output's hash in dvc.lock, data, models, model card and committed record alike."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def shown_metrics(repo: Path) -> dict[str, object]:
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)[""]["data"]
    return {path: entry["data"] for path, entry in shown.items()}


def test_two_full_forced_runs_give_identical_hashes_and_metrics(pipeline_repo: Path) -> None:
    dvc(pipeline_repo, "repro", "--force")
    first = lock_outputs(pipeline_repo), shown_metrics(pipeline_repo)
    dvc(pipeline_repo, "repro", "--force")
    second = lock_outputs(pipeline_repo), shown_metrics(pipeline_repo)
    assert first == second
    assert {"data/raw", "data/prepared", "models/model.pt", "models/model.onnx", "models/model.pt2",
            "models/model_card.md", "metrics/train.json", "metrics/eval/confusion.csv"} <= set(first[0])


def test_concurrent_repro_fails_cleanly_on_the_lock(pipeline_repo: Path) -> None:
    dvc(pipeline_repo, "repro")
    git(pipeline_repo, "add", "-A")
    git(pipeline_repo, "commit", "-qm", "baseline")
    dvc_bin = str(Path(sys.executable).parent / "dvc")
    first = subprocess.Popen([dvc_bin, "repro", "--force", "train"], cwd=pipeline_repo, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    second = dvc(pipeline_repo, "repro", "--force", "train", check=False)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode != 0
    assert "lock" in (second.stdout + second.stderr).lower()
    assert "Data and pipelines are up to date." in dvc(pipeline_repo, "repro").stdout
    load_model(pipeline_repo / "models" / "model.pt")


def test_interrupted_dvc_repro_resumes_training_from_the_checkpoint(pipeline_repo: Path) -> None:
    set_params(pipeline_repo, epochs=40)
    dvc(pipeline_repo, "repro", "preprocess")
    checkpoint = pipeline_repo / "models" / "checkpoint.pt"
    dvc_bin = str(Path(sys.executable).parent / "dvc")
    process = subprocess.Popen([dvc_bin, "repro"], cwd=pipeline_repo, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    assert not (pipeline_repo / "models" / "model.pt").exists()
    resumed = dvc(pipeline_repo, "repro")
    assert "resuming from models/checkpoint.pt after epoch" in resumed.stdout + resumed.stderr
    assert json.loads((pipeline_repo / "metrics" / "train.json").read_text())["epochs_run"] == 40
    assert not checkpoint.exists()
    assert "Data and pipelines are up to date." in dvc(pipeline_repo, "repro").stdout
