"""params.yaml validation: every key rejected when missing, of the wrong type or out of range."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.params import SCHEMA, load_params, validate
from tests.helpers import REPO

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())

WRONG_TYPE = {
    "dataset": 3, "data_dir": 5, "val_size": "many", "seed": 1.5, "model": ["cnn"], "optimizer": None,
    "lr": "fast", "momentum": "high", "nesterov": "yes", "weight_decay": [0.1], "scheduler": 1,
    "label_smoothing": True, "augment": 1, "batch_size": 32.0, "epochs": "3", "patience": False, "device": 0,
}
OUT_OF_RANGE = {
    "dataset": "cifar10", "val_size": 0, "seed": -1, "model": "resnet50", "optimizer": "lbfgs", "lr": 0,
    "momentum": 1.0, "weight_decay": -0.1, "scheduler": "step", "label_smoothing": 1.0, "batch_size": 0,
    "epochs": 0, "patience": -2, "device": "tpu",
}


def test_defaults_are_valid_and_cover_the_schema() -> None:
    assert set(DEFAULTS) == set(SCHEMA)
    assert validate(DEFAULTS, SCHEMA)["model"] == "cnn"


@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_missing_key_named(key: str) -> None:
    raw = {k: v for k, v in DEFAULTS.items() if k != key}
    with pytest.raises(PipelineError, match=f"missing key '{key}' \\({SCHEMA[key].allowed}\\)"):
        validate(raw, SCHEMA)


@pytest.mark.parametrize(("key", "value"), sorted(WRONG_TYPE.items()))
def test_wrong_type_named(key: str, value: object) -> None:
    with pytest.raises(PipelineError, match=f"'{key}' must be {SCHEMA[key].allowed}, got"):
        validate({**DEFAULTS, key: value}, SCHEMA)


@pytest.mark.parametrize(("key", "value"), sorted(OUT_OF_RANGE.items()))
def test_out_of_range_named(key: str, value: object) -> None:
    with pytest.raises(PipelineError, match=f"'{key}' must be {SCHEMA[key].allowed}, got {value!r}"):
        validate({**DEFAULTS, key: value}, SCHEMA)


def test_yaml_exponent_strings_accepted_for_numbers() -> None:
    assert validate({**DEFAULTS, "lr": "1e-3"}, ["lr"])["lr"] == pytest.approx(0.001)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(PipelineError, match="'nesterov' needs 'momentum' > 0"):
        validate({**DEFAULTS, "optimizer": "sgd", "nesterov": True, "momentum": 0.0}, SCHEMA)


def test_only_requested_keys_are_checked() -> None:
    assert load_params(["dataset"], REPO / "params.yaml") == {"dataset": DEFAULTS["dataset"]}


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "must be a mapping"),
    ("lr: [unclosed", "not valid YAML"),
])
def test_unreadable_params_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        load_params(["lr"], path)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="params.yaml: not found"):
        load_params(["lr"], tmp_path / "params.yaml")
