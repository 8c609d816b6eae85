"""Reading params.yaml strictly and validating a stage's keys against that stage's schema.

Each stage's keys, with their rules and help, are defined beside that stage's work
(`data.sources.DOWNLOAD_PARAMS`, `data.preparation.PREPROCESS_PARAMS`, `train.config.TRAIN_PARAMS`), so editing one
stage's keys reruns only that stage. Every stage refuses the whole file when it has an unknown key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.common.errors import PipelineError

ALL_KEYS = (
    "dataset", "data_dir",                                   # download
    "val_size", "split_seed",                                # preprocess
    "model", "width", "optimizer", "lr", "momentum", "nesterov",  # train
    "weight_decay", "scheduler", "label_smoothing", "augment", "rotate_deg", "zoom", "ema_decay", "tta_shifts",
    "batch_size", "epochs", "patience", "seed", "device",
)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """One key of params.yaml: what is allowed (for messages), how to coerce a raw YAML value, what it does."""

    allowed: str
    coerce: Callable[[Any], Any]
    help: str


Schema = Mapping[str, Param]


def choice(*options: Any) -> Callable[[Any], Any]:
    """A value that must be one of `options`, of its type too (YAML's false is not 0, nor 4.0 the 4)."""

    def coerce(value: Any) -> Any:
        if not any(type(value) is type(option) and value == option for option in options):
            raise ValueError
        return value

    return coerce


def integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    """An int in [low, high] (bools and floats refused)."""

    def coerce(value: Any) -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            raise ValueError
        return value

    return coerce


def number(low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[Any], float]:
    """A float in [low, high) ((low, high) when `low_open`)."""

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


def boolean(value: Any) -> bool:
    """true or false, nothing else."""
    if not isinstance(value, bool):
        raise ValueError
    return value


def directory(value: Any) -> str:
    """A non-empty path string (it need not exist yet; the stage that reads it says so)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise PipelineError(f"key '{key}' is given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_params_file(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The whole file as a mapping: UTF-8, valid YAML, no duplicate and no unknown keys."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: must be a mapping of key: value")
    for key in raw:
        if key not in ALL_KEYS:
            close = difflib.get_close_matches(str(key), ALL_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(ALL_KEYS)})"
            raise PipelineError(f"{path}: unknown key '{key}'{hint}")
    return raw


def validate(raw: Mapping[str, Any], schema: Schema, source: str = "params.yaml") -> dict[str, Any]:
    """Coerce the keys of `schema` from `raw`; raise PipelineError naming the first bad or missing key."""
    params = {}
    for key, spec in schema.items():
        if key not in raw:
            raise PipelineError(f"{source}: missing key '{key}' ({spec.allowed})")
        try:
            params[key] = spec.coerce(raw[key])
        except (TypeError, ValueError):
            raise PipelineError(f"{source}: '{key}' must be {spec.allowed}, got {raw[key]!r}") from None
    return params


def load_params(schema: Schema, path: Path | str = "params.yaml") -> dict[str, Any]:
    """Read params.yaml strictly and return the validated values of `schema`'s keys."""
    return validate(read_params_file(path), schema, str(path))


def describe(schema: Schema) -> str:
    """Help text listing a schema's keys with their meaning and allowed values (for click's --help)."""
    return "\n".join(f"  {key}: {spec.help} [{spec.allowed}]" for key, spec in schema.items())
