"""The params.yaml schema: every key, its type and allowed values, validated before any work starts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError

DATASETS = ("mnist", "fashion-mnist", "custom")
MODELS = ("cnn", "mlp", "mlp2")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class Param:
    """One key of params.yaml: how to coerce a raw YAML value and what is allowed."""

    allowed: str
    coerce: Callable[[Any], Any]
    help: str


def _choice(*options: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> str:
        if value not in options:
            raise ValueError
        return value

    return coerce


def _int(low: int, high: int | None = None) -> Callable[[Any], int]:
    def coerce(value: Any) -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            raise ValueError
        return value

    return coerce


def _float(low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[Any], float]:
    def coerce(value: Any) -> float:
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept numeric strings, reject bools.
        if isinstance(value, bool):
            raise ValueError
        number = float(value) if isinstance(value, (int, float, str)) else None
        if number is None or number != number:
            raise ValueError
        if number < low or (low_open and number == low) or (high is not None and number >= high):
            raise ValueError
        return number

    return coerce


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _optional_dir(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError
    return value


SCHEMA: dict[str, Param] = {
    "dataset": Param(f"one of {', '.join(DATASETS)}", _choice(*DATASETS),
                     "which dataset to fetch; `custom` reads IDX files and an MD5SUMS file from data_dir"),
    "data_dir": Param("a directory path or an empty string", _optional_dir,
                      "a local directory to look in for the IDX files (.gz or not) before system locations"),
    "val_size": Param("an integer from 1 to 30000", _int(1, 30000),
                      "images carved from the training set (stratified) for validation"),
    "seed": Param("an integer >= 0", _int(0), "seed for the validation split, initialisation and batch order"),
    "model": Param(f"one of {', '.join(MODELS)}", _choice(*MODELS),
                   "cnn (default), mlp (784-128-10) or mlp2 (784-128-64-10), the tutorials' baselines"),
    "optimizer": Param(f"one of {', '.join(OPTIMIZERS)}", _choice(*OPTIMIZERS), "sgd (with momentum), adam or adamw"),
    "lr": Param("a number > 0 and < 10", _float(0.0, 10.0, low_open=True), "peak learning rate"),
    "momentum": Param("a number >= 0 and < 1", _float(0.0, 1.0), "SGD momentum (ignored by adam/adamw)"),
    "nesterov": Param("true or false", _bool, "Nesterov momentum for SGD (needs momentum > 0)"),
    "weight_decay": Param("a number >= 0 and < 1", _float(0.0, 1.0), "L2 penalty (decoupled for adamw)"),
    "scheduler": Param(f"one of {', '.join(SCHEDULERS)}", _choice(*SCHEDULERS),
                       "learning-rate schedule, stepped every batch"),
    "label_smoothing": Param("a number >= 0 and < 1", _float(0.0, 1.0), "cross-entropy label smoothing"),
    "augment": Param("true or false", _bool, "random shifts (2 px) and rotations (10 deg) on whole batches"),
    "batch_size": Param("an integer from 1 to 65536", _int(1, 65536), "global batch size (split across processes)"),
    "epochs": Param("an integer from 1 to 1000", _int(1, 1000), "maximum number of epochs"),
    "patience": Param("an integer >= 0", _int(0),
                      "stop after this many epochs without a better validation loss; 0 never stops early"),
    "device": Param(f"one of {', '.join(DEVICES)}", _choice(*DEVICES),
                    "where to train; auto picks cuda, then mps, then cpu"),
}


def validate(raw: dict[str, Any], keys: Iterable[str], source: str = "params.yaml") -> dict[str, Any]:
    """Check `keys` of `raw` against SCHEMA; raise PipelineError naming the first bad key."""
    params = {}
    for key in keys:
        spec = SCHEMA[key]
        if key not in raw:
            raise PipelineError(f"{source}: missing key '{key}' ({spec.allowed})")
        try:
            params[key] = spec.coerce(raw[key])
        except (TypeError, ValueError):
            raise PipelineError(f"{source}: '{key}' must be {spec.allowed}, got {raw[key]!r}") from None
    if params.get("optimizer") == "sgd" and params.get("nesterov") and params.get("momentum") == 0:
        raise PipelineError(f"{source}: 'nesterov' needs 'momentum' > 0")
    return params


def load_params(keys: Iterable[str], path: Path | str = "params.yaml") -> dict[str, Any]:
    """Read params.yaml and return the validated values of `keys`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: must be a mapping of key: value")
    return validate(raw, keys, str(path))


def describe(keys: Iterable[str]) -> str:
    """Help text listing `keys` with their meaning and allowed values (for click's --help)."""
    return "\n".join(f"  {k}: {SCHEMA[k].help} [{SCHEMA[k].allowed}]" for k in keys)
