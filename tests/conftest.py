"""Shared fixtures: tiny IDX datasets cut from the bundled MNIST, prepared splits and a quickly trained model."""

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

from pipeline.data.preparation import prepare
from pipeline.data.prepared import save_split
from pipeline.model.model_file import ModelFile
from tests.dvc_repo import build_template
from tests.helpers import REPO, invoke, make_raw, quick_config, read_bundled_mnist, write_tiny_dataset

pytest_plugins = ["tests.ci_skips"]
TEMPLATE_BUILDER = pytest.StashKey[subprocess.Popen]()

os.environ["MNIST_OFFLINE"] = "1"  # tests never touch the network
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: one thread each


@pytest.fixture(scope="session")
def mnist_arrays() -> dict[str, torch.Tensor]:
    """The real MNIST tensors, read once from the bundled copy."""
    return read_bundled_mnist()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, mnist_arrays: dict[str, torch.Tensor]) -> Path:
    """1,000 training and 300 test digits as a custom IDX dataset."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), mnist_arrays, 1000, 300)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny dataset as download lays out data/raw (IDX files and dataset.json)."""
    return make_raw(tmp_path_factory.mktemp("tiny-raw"), tiny_dataset)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, mnist_arrays: dict[str, torch.Tensor]) -> Path:
    """Prepared splits from 8,000 real training digits (500 for validation) and 2,000 test digits."""
    dataset = write_tiny_dataset(tmp_path_factory.mktemp("dataset"), mnist_arrays, 8000, 2000)
    raw = make_raw(tmp_path_factory.mktemp("raw"), dataset)
    out = tmp_path_factory.mktemp("prepared")
    splits, stats = prepare(raw, 500, 0)
    for name, split in splits.items():
        save_split(out / f"{name}.npz", split)
    (out / "stats.json").write_text(json.dumps(stats))
    return out


@pytest.fixture(scope="session")
def plain_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml with no test-time shifts, for the stages run on `trained_model`, compared with it plain."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "params.yaml").read_text()), "tta_shifts": 0}))
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, trained_model: Path, prepared: Path,
             plain_params: Path) -> Path:
    """The export stage's outputs for `trained_model` (no test-time shifts): model.onnx, model.pt2, export.json."""
    from stages import export

    out = tmp_path_factory.mktemp("exported")
    result = invoke(export.main, "--params", plain_params, "--model", trained_model, "--data", prepared,
                    "--onnx-out", out / "model.onnx", "--program-out", out / "model.pt2",
                    "--metrics", out / "export.json")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory: pytest.TempPathFactory, exported: Path, prepared: Path) -> Path:
    """The evaluate stage's outputs for the `exported` model on the `prepared` test split: eval.json, eval/ and
    model_card.md."""
    from stages import evaluate

    out = tmp_path_factory.mktemp("evaluated")
    result = invoke(evaluate.main, "--model", exported / "model.onnx", "--data", prepared,
                    "--export-metrics", exported / "export.json", "--metrics", out / "eval.json",
                    "--plots-dir", out / "eval", "--card", out / "model_card.md")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    """models/model.pt of a CNN trained for 3 epochs on the `prepared` fixture (about 97% accurate)."""
    from pipeline.data.prepared import PreparedData
    from pipeline.train.checkpoint import Checkpoint
    from pipeline.train.distributed import ProcessInfo
    from pipeline.train.loop import fit
    from pipeline.train.setup import TrainingData

    folder = tmp_path_factory.mktemp("model")
    data = PreparedData.load(prepared)
    cfg = quick_config(epochs=3, augment=False)
    result = fit(cfg, TrainingData.of(data), ProcessInfo(), Checkpoint(folder / "checkpoint.pt", {"run": "fixture"}))
    ModelFile.of(cfg.model, result.model, data.normalization, data.classes,
                 {"epochs": cfg.epochs, "standardize": cfg.standardize}).save(
        folder / "model.pt")
    return folder / "model.pt"


def template_root(config: pytest.Config) -> Path:
    """The folder of this test run that every xdist worker shares (the controller's basetemp)."""
    root = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, start building the DVC template at once, in the background, while the workers run unit tests."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and getattr(session.config.option, "numprocesses", None):
        folder = template_root(session.config) / "dvc-template"
        session.config.stash[TEMPLATE_BUILDER] = subprocess.Popen(
            [sys.executable, "-m", "tests.dvc_repo", str(folder)], cwd=REPO, stdout=subprocess.DEVNULL)


def pytest_sessionfinish(session: pytest.Session) -> None:
    builder = session.config.stash.get(TEMPLATE_BUILDER, None)
    if builder is not None:
        builder.wait()


@pytest.fixture(scope="session")
def dvc_template(request: pytest.FixtureRequest) -> Path:
    """A committed tiny copy of this project with its pipeline reproduced, built once per test run."""
    return build_template(template_root(request.config) / "dvc-template")


@pytest.fixture
def dvc_repo(dvc_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template (git history, DVC cache and outputs included) for a test to change."""
    def dvc_scratch(folder: str, names: list[str]) -> list[str]:
        return names if Path(folder).name == "tmp" and Path(folder).parent.name == ".dvc" else []

    return Path(shutil.copytree(dvc_template, tmp_path / "repo", symlinks=True, ignore=dvc_scratch))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the DVC template last (it is built in the background meanwhile), the slowest of them first."""
    def order(item: pytest.Item) -> tuple[bool, bool]:
        return "dvc_template" in getattr(item, "fixturenames", ()), item.get_closest_marker("slow") is None

    items.sort(key=order)
