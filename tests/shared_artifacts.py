"""What many tests read and no test changes, built once per test run in a folder every xdist worker shares:
prepared splits, a quickly trained model, its export and evaluation, and the DVC template.

Whichever process asks first builds an artifact under a file lock; the others wait for it and reuse it. When a
run selects tests that need them, `start_background_build` builds them in a process of its own at once, while
the workers run the tests that do not (the worker that started it waits for it at the end of its session).
`python -m tests.shared_artifacts ROOT NAME...` is that process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from filelock import FileLock

from tests.helpers import REPO, invoke, make_raw, quick_config, read_bundled_mnist, write_tiny_dataset


def built_once(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    """`root`/`name`, made by `build` the first time any process asks (a file lock makes the others wait)."""
    folder = root / name
    ready = root / f"{name}.ready"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        if not ready.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part way
            folder.mkdir()
            build(folder)
            ready.touch()
    return folder


def prepared_digits(root: Path, name: str, train: int, test: int, val_size: int) -> Path:
    """Prepared splits (as the preprocess stage writes them) from the first `train` and `test` real digits."""
    from pipeline.data.preparation import prepare
    from pipeline.data.prepared import save_split

    def build(out: Path) -> None:
        dataset = write_tiny_dataset(root / f"{name}-dataset", read_bundled_mnist(), train, test)
        splits, stats = prepare(make_raw(root / f"{name}-raw", dataset), val_size, 0)
        for split_name, split in splits.items():
            save_split(out / f"{split_name}.npz", split)
        (out / "stats.json").write_text(json.dumps(stats))

    return built_once(root, name, build)


def prepared(root: Path) -> Path:
    """Prepared splits from 8,000 real training digits (500 for validation) and 2,000 test digits."""
    return prepared_digits(root, "prepared", 8000, 2000, 500)


def small_prepared(root: Path) -> Path:
    """Prepared splits from 1,000 real training digits (100 for validation) and 300 test digits: for the tests of
    equality (a resumed run against an uninterrupted one), which need no accuracy."""
    return prepared_digits(root, "small-prepared", 1000, 300, 100)


def non_digits(root: Path) -> Path:
    """A file of 300 drawn non-digits, as the draw stage writes its 12,000."""
    from pipeline.data.non_digits import draw_non_digits
    from pipeline.data.prepared_arrays import save_arrays

    def build(out: Path) -> None:
        images, kinds = draw_non_digits(300)
        save_arrays(out / "non_digits.npz", images, kinds.astype("int64"))

    return built_once(root, "non-digits", build) / "non_digits.npz"


def plain_params(root: Path) -> Path:
    """params.yaml with no test-time shifts, for the stages run on the trained model, compared with it plain."""
    def build(out: Path) -> None:
        params = {**yaml.safe_load((REPO / "params.yaml").read_text()), "tta_shifts": 0}
        (out / "params.yaml").write_text(yaml.safe_dump(params))

    return built_once(root, "plain-params", build) / "params.yaml"


def trained_model(root: Path) -> Path:
    """models/model.pt of a CNN trained for 3 epochs on `prepared`, on one thread (about 97% accurate)."""
    import torch

    from pipeline.data.prepared import PreparedData
    from pipeline.model.model_file import ModelFile
    from pipeline.train.checkpoint import Checkpoint
    from pipeline.train.distributed import ProcessInfo
    from pipeline.train.loop import fit
    from pipeline.train.setup import TrainingData

    data_folder = prepared(root)

    def build(folder: Path) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same bits whichever process builds it
        try:
            data = PreparedData.load(data_folder)
            cfg = quick_config(epochs=3, augment=False)
            result = fit(cfg, TrainingData.of(data), ProcessInfo(),
                         Checkpoint(folder / "checkpoint.pt", {"run": "fixture"}))
            ModelFile.of(cfg.model, result.model, data.normalization, data.classes,
                         {"epochs": cfg.epochs, "standardize": cfg.standardize}).save(folder / "model.pt")
        finally:
            torch.set_num_threads(threads)

    return built_once(root, "model", build) / "model.pt"


def exported(root: Path) -> Path:
    """The export stage's outputs for `trained_model` (no test-time shifts): model.onnx, model.pt2, export.json."""
    from stages import export

    model, data, params = trained_model(root), prepared(root), plain_params(root)

    def build(out: Path) -> None:
        result = invoke(export.main, "--params", params, "--model", model, "--data", data,
                        "--onnx-out", out / "model.onnx", "--program-out", out / "model.pt2",
                        "--metrics", out / "export.json")
        assert result.exit_code == 0, result.output

    return built_once(root, "exported", build)


def evaluated(root: Path) -> Path:
    """The evaluate stage's outputs for `exported` on the prepared test split: eval.json, eval/, model_card.md."""
    from stages import evaluate

    onnx_folder, data = exported(root), prepared(root)

    def build(out: Path) -> None:
        result = invoke(evaluate.main, "--model", onnx_folder / "model.onnx", "--data", data,
                        "--export-metrics", onnx_folder / "export.json", "--metrics", out / "eval.json",
                        "--plots-dir", out / "eval", "--card", out / "model_card.md")
        assert result.exit_code == 0, result.output

    return built_once(root, "evaluated", build)


def dvc_template(root: Path) -> Path:
    """A committed tiny copy of this project with its pipeline reproduced (tests.dvc_repo)."""
    from tests.dvc_repo import build_template

    return build_template(root / "dvc-template")


ARTIFACTS: dict[str, Callable[[Path], Path]] = {
    "prepared": prepared, "small_prepared": small_prepared, "non_digits": non_digits, "plain_params": plain_params,
    "trained_model": trained_model, "exported": exported,
    "evaluated": evaluated, "dvc_template": dvc_template,
}


def start_background_build(root: Path, names: list[str]) -> subprocess.Popen | None:
    """Build the `names` of ARTIFACTS in a process of its own, unless another process already started one."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        (root / "background-build.started").touch(exist_ok=False)
    except FileExistsError:
        return None
    return subprocess.Popen([sys.executable, "-m", "tests.shared_artifacts", str(root), *names], cwd=REPO,
                            stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    for artifact in sys.argv[2:]:
        ARTIFACTS[artifact](Path(sys.argv[1]))
