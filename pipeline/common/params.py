"""The parts params.yaml is read with: a strict YAML reader, one `Param` per key, validation and help.

Each stage's keys, with their rules and help, are defined beside that stage's work
(`data.sources.DOWNLOAD_PARAMS`, `data.preparation.PREPROCESS_PARAMS`, the fields of `train.config.TrainConfig`),
so editing one stage's keys reruns only that stage. Train, which reads the whole file, knows them all and refuses a
key no stage reads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.common.errors import PipelineError

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """One key of params.yaml: what is allowed (for messages), how to coerce a raw YAML value, what it does."""

    allowed: str
    coerce: Callable[[Any], Any]
    help: str


Schema = Mapping[str, Param]


def param(allowed: str, coerce: Callable[[Any], Any], help: str) -> Any:
    """A config dataclass field that is also a key of params.yaml (see `schema_of`)."""
    return field(metadata={"param": Param(allowed, coerce, help)})


def schema_of(config: type) -> dict[str, Param]:
    """The keys of a config dataclass whose fields were declared with `param`, in field order."""
    return {f.name: f.metadata["param"] for f in fields(config) if "param" in f.metadata}


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


def parse_params(text: str, source: str) -> dict[str, Any]:
    """params.yaml's text as a mapping: valid YAML, no key given twice. `source` names it in errors."""
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except PipelineError as exc:
        raise PipelineError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{source}: must be a mapping of key: value")
    return raw


def read_params_file(path: Path | str) -> dict[str, Any]:
    """The file at `path` as a mapping: UTF-8 text, parsed by `parse_params` (any keys)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    return parse_params(text, str(path))


def validate(raw: Mapping[str, Any], schema: Schema, source: str) -> dict[str, Any]:
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


def load_params(schema: Schema, path: Path | str) -> dict[str, Any]:
    """The validated values of `schema`'s keys from the file at `path`."""
    return validate(read_params_file(path), schema, str(path))


def refuse_unknown(raw: Mapping[str, Any], known: Sequence[str], source: str) -> None:
    """Raise PipelineError naming the first key of `raw` not in `known`, with the closest known key."""
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
            raise PipelineError(f"{source}: unknown key '{key}'{hint}")


def describe(schema: Schema) -> str:
    """Help text listing a schema's keys with their meaning and allowed values (for click's --help)."""
    return "\n".join(f"  {key}: {spec.help} [{spec.allowed}]" for key, spec in schema.items())
