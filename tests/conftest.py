"""Shared fixtures: tiny IDX datasets cut from the bundled MNIST, prepared splits and a quickly trained model."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests import shared_artifacts
from tests.helpers import make_raw, read_bundled_mnist, write_tiny_dataset

pytest_plugins = ["tests.ci_skips"]

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


def shared_root(config: pytest.Config) -> Path:
    """The folder of this test run that every xdist worker shares (the controller's basetemp)."""
    root = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "shared"


@pytest.fixture(scope="session")
def prepared(request: pytest.FixtureRequest) -> Path:
    """Prepared splits from 8,000 real training digits (500 for validation) and 2,000 test digits."""
    return shared_artifacts.prepared(shared_root(request.config))


@pytest.fixture(scope="session")
def small_prepared(request: pytest.FixtureRequest) -> Path:
    """Prepared splits from 1,000 training digits (100 for validation): for tests of equality, not accuracy."""
    return shared_artifacts.small_prepared(shared_root(request.config))


@pytest.fixture(scope="session")
def non_digits(request: pytest.FixtureRequest) -> Path:
    """300 drawn non-digits, as the draw stage writes them (for the train stage when non_digits > 0)."""
    return shared_artifacts.non_digits(shared_root(request.config))


@pytest.fixture(scope="session")
def plain_params(request: pytest.FixtureRequest) -> Path:
    """params.yaml with no test-time shifts, for the stages run on `trained_model`, compared with it plain."""
    return shared_artifacts.plain_params(shared_root(request.config))


@pytest.fixture(scope="session")
def trained_model(request: pytest.FixtureRequest, prepared: Path) -> Path:
    """models/model.pt of a CNN trained for 3 epochs on the `prepared` fixture (about 97% accurate)."""
    return shared_artifacts.trained_model(shared_root(request.config))


@pytest.fixture(scope="session")
def exported(request: pytest.FixtureRequest, trained_model: Path, prepared: Path, plain_params: Path) -> Path:
    """The export stage's outputs for `trained_model` (no test-time shifts): model.onnx, model.pt2, export.json."""
    return shared_artifacts.exported(shared_root(request.config))


@pytest.fixture(scope="session")
def evaluated(request: pytest.FixtureRequest, exported: Path, prepared: Path) -> Path:
    """The evaluate stage's outputs for the `exported` model on the `prepared` test split: eval.json, eval/ and
    model_card.md."""
    return shared_artifacts.evaluated(shared_root(request.config))


@pytest.fixture(scope="session")
def dvc_template(request: pytest.FixtureRequest) -> Path:
    """A committed tiny copy of this project with its pipeline reproduced, built once per test run."""
    return shared_artifacts.dvc_template(shared_root(request.config))


@pytest.fixture
def dvc_repo(dvc_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template (git history, DVC cache and outputs included) for a test to change."""
    def dvc_scratch(folder: str, names: list[str]) -> list[str]:
        return names if Path(folder).name == "tmp" and Path(folder).parent.name == ".dvc" else []

    return Path(shutil.copytree(dvc_template, tmp_path / "repo", symlinks=True, ignore=dvc_scratch))


COMPLETE_FIXTURES = {"dvc_template", "dvc_repo"}  # a real DVC repository: the complete tier's


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on a real DVC repository is in the complete tier. The order: first the tests that need no shared
    artifact (they run while a background process builds those), then the ones that do, the complete tier last;
    within each, the slow tests first, so that the two workers end together."""
    for item in items:
        if COMPLETE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.complete)

    def order(item: pytest.Item) -> tuple[bool, bool, bool]:
        shared = bool(set(shared_artifacts.ARTIFACTS) & set(getattr(item, "fixturenames", ())))
        return item.get_closest_marker("complete") is not None, shared, item.get_closest_marker("slow") is None

    items.sort(key=order)


BACKGROUND_BUILD = pytest.StashKey[subprocess.Popen]()


@pytest.hookimpl(trylast=True)  # after `-m` and `-k` have deselected
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the shared artifacts the selected tests need, in a process of its own, at once."""
    if session.config.option.collectonly:
        return
    needed = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    names = [name for name in shared_artifacts.ARTIFACTS if name in needed]
    if names and (builder := shared_artifacts.start_background_build(shared_root(session.config), names)):
        session.config.stash[BACKGROUND_BUILD] = builder


def pytest_sessionfinish(session: pytest.Session) -> None:
    builder = session.config.stash.get(BACKGROUND_BUILD, None)
    if builder is not None:
        builder.wait(timeout=900)
