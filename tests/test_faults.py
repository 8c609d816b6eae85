"""Faults with the real stage commands: crashes injected at chosen points (tests/crash.py), real signals,
a full disk, corrupt inputs, DVC's lock. Nothing wrong may ever sit at an output path, and the next run
must finish the job and leave no temporaries behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner

from pipeline.data.prepared import PreparedData, load_split
from pipeline.data.raw import FILES
from pipeline.data.sources import DATASETS
from pipeline.model.test_time import load_model
from stages import download, evaluate, preprocess, train
from tests.crash import CRASHED
from tests.dvc_repo import ENV, dvc, set_params
from tests.helpers import REPO, wait_until


def stage_arguments(stage: str, work: Path, prepared: Path, model: Path, exported: Path | None = None) -> list[str]:
    """The stage's command-line arguments, with every output in `work`: train and export read `prepared` and
    `model`, evaluate reads the `exported` folder."""
    exported = exported or work
    params = ["--params", str(work / "params.yaml")]
    return {
        "download": [*params, "--out", str(work / "raw"), "--offline"],
        "preprocess": [*params, "--raw", str(work / "raw-ready"), "--out", str(work / "prepared")],
        "train": [*params, "--data", str(prepared), "--non-digits", str(work / "non_digits.npz"),
                  "--model-out", str(work / "model.pt"),
                  "--metrics", str(work / "train.json"), "--record-dir", str(work / "metrics"),
                  "--checkpoint", str(work / "ck.pt")],
        "evaluate": ["--model", str(exported / "model.onnx"), "--data", str(prepared), "--export-metrics",
                     str(exported / "export.json"), "--metrics", str(work / "eval.json"),
                     "--plots-dir", str(work / "eval"), "--card", str(work / "card.md")],
        "export": ["--model", str(model), "--data", str(prepared), "--onnx-out", str(work / "model.onnx"),
                   "--program-out", str(work / "model.pt2"), "--metrics", str(work / "export.json")],
    }[stage]


def stage_command(stage: str, work: Path, prepared: Path, model: Path, exported: Path | None = None) -> list[str]:
    """The stage as a user runs it."""
    return [sys.executable, "-m", f"stages.{stage}", *stage_arguments(stage, work, prepared, model, exported)]


def leftovers(folder: Path) -> list[str]:
    """Temporaries (`.<name>.<pid>.<random>.tmp<suffix>`) and set-aside folders (`.<name>.old`) under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name or p.name.endswith(".old"))


def whole_raw(path: Path) -> None:
    for name in FILES:
        assert hashlib.md5((path / name).read_bytes()).hexdigest() == DATASETS["mnist"].md5[name]


def whole_prepared(path: Path) -> None:
    for split in ("train", "val", "test"):
        load_split(path / f"{split}.npz")
    PreparedData.load(path)


def whole_record(path: Path) -> None:
    """The per-epoch record as far as it got: every chart's TSV at the same epoch, train.json's if written
    (an interrupted run leaves its partial record), and curves.png a whole PNG once drawn."""
    rows = {chart: len((path / f"{chart}.tsv").read_text().splitlines()) for chart in ("loss", "acc", "lr")}
    assert len(set(rows.values())) == 1 and rows["loss"] >= 2, rows
    if (path.parent / "train.json").exists():
        assert rows["loss"] == 1 + json.loads((path.parent / "train.json").read_text())["epochs_run"]
    if (path / "curves.png").exists():
        assert (path / "curves.png").read_bytes().startswith(b"\x89PNG")


def whole_evaluation_folder(path: Path) -> None:
    import pandas as pd
    from PIL import Image

    per_class, pairs = pd.read_csv(path / "per_class.csv"), pd.read_csv(path / "confusion.csv")
    assert len(per_class) == 10 and list(pairs.columns) == ["actual", "predicted"]
    assert len(pairs) == per_class["support"].sum() > 0  # a pair for every test image
    for name in ("confusion.png", "misclassified.png"):
        with Image.open(path / name) as image:
            image.load()  # decodes the whole image: a truncated PNG raises


def whole_json(path: Path) -> None:
    assert json.loads(path.read_text())


# Every output of each stage, with what makes it whole: a crash may leave an output absent, never broken.
OUTPUTS: dict[str, dict[str, Callable[[Path], None]]] = {
    "download": {"raw": whole_raw},
    "preprocess": {"prepared": whole_prepared},
    "train": {"model.pt": load_model, "train.json": whole_json, "metrics": whole_record},
    "evaluate": {"eval.json": whole_json, "eval": whole_evaluation_folder,
                 "card.md": lambda p: "Model card" in p.read_text() or pytest.fail(p)},
    "export": {"model.onnx": lambda p: onnx.checker.check_model(onnx.load(p)), "model.pt2": torch.export.load,
               "export.json": whole_json},
}


def check_outputs(stage: str, work: Path, *, all_present: bool) -> list[str]:
    """Check every output that exists (all must, when `all_present`); return the names found."""
    present = []
    for name, whole in OUTPUTS[stage].items():
        if (work / name).exists():
            whole(work / name)
            present.append(name)
    if all_present:
        assert present == list(OUTPUTS[stage])
    return present


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params for a CNN that trains long enough (3 epochs) for a signal to land mid-run."""
    work = tmp_path_factory.mktemp("faults")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(epochs=3, batch_size=256, device="cpu", val_size=100)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


@pytest.fixture
def work(tmp_path: Path, tiny_raw: Path) -> Path:
    """A folder with the inputs every stage can start from."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(epochs=3, batch_size=256, device="cpu", val_size=100, model="mlp")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(tiny_raw, tmp_path / "raw-ready")
    return tmp_path


@pytest.mark.slow  # handed out first, so that the two workers end together
@pytest.mark.parametrize(("stage", "point"), [
    ("preprocess", "mid-write"),      # a temporary half written; the output folder untouched
    ("evaluate", "before-rename"),    # every temporary complete, none in place
    # model.pt2 in place (the inner of export's two writes), model.onnx's temporary complete but not in place. A
    # crash earlier in export (while it compares with PyTorch) leaves what "before-rename" does: every temporary
    # complete, none in place (evaluate's case); an export costs seconds of imports and tracing
    ("export", "after-rename"),
    ("train", "epoch"),               # the checkpoint of epoch 1 saved: the next run resumes from it
])
def test_a_crash_leaves_nothing_half_written_and_the_next_run_finishes(
        stage: str, point: str, work: Path, request: pytest.FixtureRequest) -> None:
    # each stage waits for only the shared artifacts it reads
    prepared = request.getfixturevalue("prepared") if stage != "preprocess" else work / "unused"
    trained_model = request.getfixturevalue("trained_model") if stage == "export" else work / "unused"
    exported = request.getfixturevalue("exported") if stage == "evaluate" else None
    if stage == "train":
        shutil.copy(request.getfixturevalue("non_digits"), work / "non_digits.npz")
    arguments = stage_arguments(stage, work, prepared, trained_model, exported)
    crashed = subprocess.run([sys.executable, "-m", "tests.crash", point, f"stages.{stage}", *arguments],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert crashed.returncode == CRASHED, crashed.stderr[-2000:]
    check_outputs(stage, work, all_present=False)
    rerun = subprocess.run(stage_command(stage, work, prepared, trained_model, exported), cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    check_outputs(stage, work, all_present=True)
    if point == "epoch":
        assert "resuming from" in rerun.stderr and "after epoch 1" in rerun.stderr
    assert leftovers(work) == []


def loading_torch(pid: int) -> bool:
    """The process has mapped PyTorch's library: its imports, before any stage command, are under way."""
    try:
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("stage", ["train", "export"])
def test_ctrl_c_while_a_stage_starts_is_one_line(stage: str, workspace: Path, prepared: Path,
                                                 trained_model: Path) -> None:
    work = workspace / f"start-{stage}"
    work.mkdir()
    shutil.copy(workspace / "params.yaml", work)
    command = stage_command(stage, work, prepared, trained_model)
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: loading_torch(process.pid), process, 60, "import of torch")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    # torch's import goes on for a second after its library is mapped; should the command start first,
    # Ctrl-C is still one line, from the command's own handler
    assert stderr in (f"[{stage}] interrupted while starting; nothing was written\n",
                      f"[{stage}] interrupted; outputs are written whole or not at all, so nothing is half-written\n"
                      ), stderr
    assert process.returncode in (-signal.SIGINT, 130), stderr
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]


def fail_with_enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1]) if args else None)


def test_disk_full_during_preprocess_keeps_previous_outputs(workspace: Path, tiny_raw: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = workspace / "prepared-previous"
    args = ["--params", str(workspace / "params.yaml"), "--raw", str(tiny_raw), "--out", str(out)]
    assert CliRunner().invoke(preprocess.main, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr("numpy.lib.format.write_array", lambda *args, **kwargs: fail_with_enospc("train.npz"))
    result = CliRunner().invoke(preprocess.main, args)
    assert result.exit_code == 1
    assert "No space left on device" in result.output and result.output.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in workspace.iterdir() if p.name.startswith(".prepared-previous")]


def test_disk_full_during_evaluate_keeps_previous_metrics(workspace: Path, prepared: Path, exported: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = workspace / "eval-previous.json"
    args = ["--model", str(exported / "model.onnx"), "--data", str(prepared), "--export-metrics",
            str(exported / "export.json"), "--metrics", str(metrics), "--plots-dir", str(workspace / "eval-previous"),
            "--card", str(workspace / "card-previous.md")]
    assert CliRunner().invoke(evaluate.main, args).exit_code == 0
    before = metrics.read_bytes()
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", fail_with_enospc)
    result = CliRunner().invoke(evaluate.main, args)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert metrics.read_bytes() == before
    assert (workspace / "eval-previous" / "per_class.csv").exists()


@pytest.mark.parametrize(("split", "data", "message"), [
    ("train.npz", {"images": np.zeros((5, 28, 28), np.int32), "labels": np.zeros(5, np.int64)},
     "images must be uint8 N x 28 x 28, got int32 (5, 28, 28)"),
    ("val.npz", {"images": np.zeros((5, 28, 28), np.uint8), "labels": np.zeros(4, np.int64)},
     "5 images but 4 labels"),
    ("train.npz", {"pixels": np.zeros(1)}, "expected arrays 'images' and 'labels'"),
    ("val.npz", b"not a split file", "not a prepared split"),
])
def test_train_refuses_corrupt_prepared_splits(workspace: Path, prepared: Path, tmp_path: Path, split: str,
                                               data: object, message: str) -> None:
    broken = tmp_path / "prepared"
    shutil.copytree(prepared, broken)
    if isinstance(data, bytes):
        (broken / split).write_bytes(data)
    else:
        np.savez(broken / split, **data)
    arguments = stage_arguments("train", tmp_path, broken, tmp_path / "model.pt")
    arguments[arguments.index("--params") + 1] = str(workspace / "params.yaml")
    result = CliRunner().invoke(train.main, arguments)
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "model.pt").exists()


def test_garbled_gzip_in_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(DATASETS["mnist"].bundled_dir, local)
    data = (local / "train-labels-idx1-ubyte.gz").read_bytes()
    (local / "train-labels-idx1-ubyte.gz").write_bytes(data[:100])
    (tmp_path / "params.yaml").write_text(f"dataset: mnist\ndata_dir: {local}\n")
    result = CliRunner().invoke(download.main, ["--params", str(tmp_path / "params.yaml"),
                                                "--out", str(tmp_path / "raw"), "--offline"])
    assert result.exit_code == 1
    assert result.output == (f"Error: {local / 'train-labels-idx1-ubyte.gz'}: corrupt or truncated gzip "
                             "(Compressed file ended before the end-of-stream marker was reached)\n")
    assert not (tmp_path / "raw").exists() and leftovers(tmp_path) == []


def test_a_second_dvc_repro_fails_cleanly_on_the_lock(dvc_repo: Path) -> None:
    set_params(dvc_repo, epochs=200, model="cnn")
    first = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "train"], cwd=dvc_repo,
                             env={**ENV, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        for line in first.stdout:  # DVC holds its lock from here until the stage ends
            if "Running stage 'train'" in line:
                break
        second = dvc(dvc_repo, "repro", "train", check=False)
        assert first.poll() is None, "the first run ended before the second one started"
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.communicate(timeout=120)
    assert second.returncode != 0
    assert "lock" in (second.stdout + second.stderr).lower()


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_ctrl_c_during_dvc_repro_exits_cleanly_and_the_next_repro_resumes_training(dvc_repo: Path) -> None:
    set_params(dvc_repo, epochs=8, model="cnn")  # epochs long enough for the signal to land mid-training
    checkpoint = dvc_repo / "models" / "checkpoint.pt"
    process = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=dvc_repo, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_until(checkpoint.exists, process, 300, "checkpoint of the first epoch")
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches dvc and the stage alike
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    assert "[train] interrupted: completed epochs are in models/checkpoint.pt; run again to resume" in output
    assert "Traceback" not in output
    assert not (dvc_repo / "models" / "model.pt").exists()
    resumed = dvc(dvc_repo, "repro")
    assert "resuming from models/checkpoint.pt after epoch" in resumed.stdout + resumed.stderr
    assert json.loads((dvc_repo / "metrics" / "train.json").read_text())["epochs_run"] == 8
    assert not checkpoint.exists() and leftovers(dvc_repo / "models") == []
    assert "Data and pipelines are up to date." in dvc(dvc_repo, "repro").stdout
