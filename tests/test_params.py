"""params.yaml: every key rejected when missing, of the wrong type or out of range; the file read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.common.errors import PipelineError
from pipeline.common.params import load_params, read_params_file, refuse_unknown, validate
from pipeline.data.sources import DOWNLOAD_PARAMS
from pipeline.train.config import TrainConfig, load_train_config
from pipeline.verdict.compare import declared_keys
from tests.helpers import REPO
from tools.doc_tables import STAGE_SCHEMAS

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())
SCHEMA = {key: spec for schema in STAGE_SCHEMAS.values() for key, spec in schema.items()}
SOURCE = "params.yaml"

# a value of the wrong type for each key besides the one every key refuses (a list of its default)
WRONG_TYPE = {
    "dataset": 3, "data_dir": 5, "val_size": "many", "split_seed": 2.5, "seed": 1.5, "optimizer": None, "lr": "fast",
    "momentum": "high", "nesterov": "yes", "scheduler": 1, "label_smoothing": True, "augment": 1, "width": 16.0,
    "rotate_deg": "wide", "zoom": False, "tta_shifts": "4", "batch_size": 32.0, "epochs": "3", "patience": False,
    "device": 0,
}
OUT_OF_RANGE = {
    "dataset": "cifar10", "data_dir": " ", "val_size": 0, "split_seed": -1, "seed": 2**32, "model": "resnet50",
    "optimizer": "lbfgs", "lr": 0, "momentum": 1.0, "weight_decay": -0.1, "scheduler": "step",
    "label_smoothing": 1.0, "width": 2, "rotate_deg": 90, "zoom": 0.5, "ema_decay": 1.0, "tta_shifts": 2,
    "batch_size": 0, "epochs": 0, "patience": -2, "device": "tpu",
}


def test_each_key_is_read_by_exactly_one_stage_and_the_defaults_are_valid() -> None:
    keys = [key for schema in STAGE_SCHEMAS.values() for key in schema]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(DEFAULTS) == set(declared_keys((REPO / "dvc.yaml").read_text()))
    assert list(STAGE_SCHEMAS["train"]) == list(TrainConfig.__dataclass_fields__)
    assert load_train_config(REPO / "params.yaml").model == "cnn"
    assert set(WRONG_TYPE) | set(OUT_OF_RANGE) <= set(keys)


@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_missing_key_named(key: str) -> None:
    raw = {k: v for k, v in DEFAULTS.items() if k != key}
    with pytest.raises(PipelineError, match=f"missing key '{key}' \\({SCHEMA[key].allowed}\\)"):
        validate(raw, SCHEMA, SOURCE)


@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_a_list_is_the_wrong_type_for_every_key(key: str) -> None:
    with pytest.raises(PipelineError, match=f"'{key}' must be {SCHEMA[key].allowed}, got \\["):
        validate({**DEFAULTS, key: [DEFAULTS[key]]}, SCHEMA, SOURCE)


@pytest.mark.parametrize(("key", "value"), sorted(WRONG_TYPE.items()))
def test_wrong_type_named(key: str, value: object) -> None:
    with pytest.raises(PipelineError, match=f"'{key}' must be {SCHEMA[key].allowed}, got"):
        validate({**DEFAULTS, key: value}, SCHEMA, SOURCE)


@pytest.mark.parametrize("value", [False, True, 4.0, 0.0])
def test_a_choice_of_numbers_refuses_bools_and_floats_that_equal_one(value: object) -> None:
    with pytest.raises(PipelineError, match=f"'tta_shifts' must be 0, 4 or 8, got {value!r}"):
        validate({**DEFAULTS, "tta_shifts": value}, SCHEMA, SOURCE)


@pytest.mark.parametrize(("key", "value"), sorted(OUT_OF_RANGE.items()))
def test_out_of_range_named(key: str, value: object) -> None:
    with pytest.raises(PipelineError, match=f"'{key}' must be {SCHEMA[key].allowed}, got {value!r}"):
        validate({**DEFAULTS, key: value}, SCHEMA, SOURCE)


def test_yaml_exponent_strings_accepted_for_numbers() -> None:
    assert validate({**DEFAULTS, "lr": "1e-3"}, {"lr": SCHEMA["lr"]}, SOURCE)["lr"] == pytest.approx(0.001)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_nesterov_needs_momentum(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump({**DEFAULTS, "optimizer": "sgd", "nesterov": True, "momentum": 0.0}))
    with pytest.raises(PipelineError, match="'nesterov' needs 'momentum' > 0"):
        load_train_config(path)


def test_a_stage_reads_only_its_own_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "dataset: mnist\ndata_dir: data/local\nlr: not checked by download\n")
    assert load_params(DOWNLOAD_PARAMS, path) == {"dataset": "mnist", "data_dir": "data/local"}


@pytest.mark.parametrize(("text", "message"), [
    ("lrr: 0.01\n", "unknown key 'lrr' (did you mean 'lr'?)"),
    ("split_sed: 1\n", "unknown key 'split_sed' (did you mean 'split_seed'?)"),
    ("colour: blue\n", "unknown key 'colour' (known keys: augment, batch_size,"),
    ("lr: 0.1\nepochs: 3\nlr: 0.2\n", "key 'lr' is given twice (line 3)"),
    (b"lr: 0.1\n# caf\xe9\n", "not UTF-8 text (byte 13 cannot be decoded)"),
    ("[1, 2]", "must be a mapping"),
    ("lr: [unclosed", "not valid YAML"),
])
def test_the_file_is_refused_whole_with_one_line(tmp_path: Path, text: str | bytes, message: str) -> None:
    """As verdict reads it: any stage refuses the syntax, verdict a key that no stage declares."""
    path = write(tmp_path, text)
    with pytest.raises(PipelineError) as error:
        refuse_unknown(read_params_file(path), declared_keys((REPO / "dvc.yaml").read_text()), str(path))
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="params.yaml: not found"):
        load_train_config(tmp_path / "params.yaml")
