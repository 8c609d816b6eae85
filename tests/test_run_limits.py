"""Params that pass validation run on the machine at hand or stop at once in one line; every device path is
correct by construction (no float64 on the training device, `auto` never picks an untested backend)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pipeline.common.errors import PipelineError
from pipeline.data.prepared import Normalization
from pipeline.model.networks import build_model
from pipeline.train import memory
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.distributed import ProcessInfo
from pipeline.train.loop import fit
from pipeline.train.memory import check_fits, training_bytes
from pipeline.train.setup import TrainingData, resolve_device
from stages import train
from tests.helpers import invoke, quick_config, small_split


class Float64Guard(TorchDispatchMode):
    """Records every aten op that returns a float64 tensor on `device` (MPS has no float64 at all)."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.found = device, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.dtype == torch.float64 and value.device.type == self.device:
                self.found.add(str(func))
        return out


def test_the_guard_sees_a_float64_tensor() -> None:
    with Float64Guard("cpu") as guard:
        torch.zeros(3).double().sum()
    assert guard.found


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9, "rotate_deg": 10.0, "zoom": 0.1}],
                         ids=["plain", "ema-affine"])
def test_the_real_training_loop_makes_no_float64_tensor_on_the_training_device(tmp_path: Path, extra: dict) -> None:
    cfg = quick_config(epochs=2, batch_size=64, **extra)
    with Float64Guard("cpu") as guard:
        result = fit(cfg, TrainingData(small_split(256), small_split(64), Normalization(0.5, 0.3)), ProcessInfo(),
                Checkpoint(tmp_path / "ck.pt", {"run": "g"}))
    assert len(result.state.history) == 2
    assert guard.found == set()


def test_auto_never_picks_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("mps") == torch.device("mps")


def test_onecycle_with_too_few_steps_stops_in_one_line(tmp_path: Path) -> None:
    cfg = quick_config(model="mlp", scheduler="onecycle", batch_size=65536, epochs=4)  # 1 step an epoch: 4 steps
    with pytest.raises(PipelineError, match=r"^'scheduler' onecycle needs at least 5 optimizer steps, "
                                            r"but 'epochs' 4 at 'batch_size' 65536 make 4; "):
        fit(cfg, TrainingData(small_split(256), small_split(64), Normalization(0.5, 0.3)), ProcessInfo(),
                Checkpoint(tmp_path / "ck.pt", {"run": "1"}))
    five = fit(quick_config(model="mlp", batch_size=65536, epochs=5), TrainingData(small_split(256), small_split(64),
               Normalization(0.5, 0.3)), ProcessInfo(), Checkpoint(tmp_path / "ck5.pt", {"run": "5"}))
    assert len(five.state.history) == 5


def test_the_memory_estimate_follows_the_real_activation_shapes() -> None:
    small, wide = build_model("cnn", 16), build_model("cnn", 256)
    assert training_bytes(small, 512) < 200 * 2**20  # the default: tens of MB
    # width 256 at batch 65536: conv outputs of 65536 x 256 x 14 x 14 floats alone are 13 GB each
    assert training_bytes(wide, 65536) > 40 * 2**30
    assert training_bytes(wide, 2) < training_bytes(wide, 4)


def test_a_run_too_big_for_the_machine_stops_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "free_bytes", lambda device: 24 * 2**30)
    cfg = quick_config(width=256, batch_size=65536)
    with pytest.raises(PipelineError, match=r"^'model' cnn at 'width' 256 and 'batch_size' 65536 needs "
                                            r"about \d+\.\d GiB to train, but cpu has 24\.0 GiB free; lower"):
        check_fits(build_model("cnn", 256), 65536, cfg, torch.device("cpu"))
    check_fits(build_model("cnn", 16), 512, quick_config(), torch.device("cpu"))  # the default fits


def test_an_unexpected_error_is_one_line_with_its_traceback_kept(prepared: Path, non_digits: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(train, "fit", broken)
    monkeypatch.delenv("PIPELINE_DEBUG", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    result = invoke(train.main, "--data", prepared, "--non-digits", non_digits, "--model-out", tmp_path / "model.pt",
                    "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "record",
                    "--checkpoint", tmp_path / "ck.pt")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    [kept] = tmp_path.glob("mnist-pipeline-train-*-traceback.txt")
    assert lines == [f"Error: unexpected ZeroDivisionError: float division by zero (a bug: the traceback is in "
                     f"{kept}; PIPELINE_DEBUG=1 prints it)"]
    assert "Traceback" not in result.output
    assert "raise ZeroDivisionError" in kept.read_text()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "gone"))  # nowhere to keep it: still one line
    result = invoke(train.main, "--data", prepared, "--non-digits", non_digits, "--model-out", tmp_path / "model.pt",
                    "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "record",
                    "--checkpoint", tmp_path / "ck.pt")
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert (result.exit_code, len(lines), "Traceback" in result.output) == (1, 1, False), result.output
    assert "the traceback could not be saved" in lines[0]
