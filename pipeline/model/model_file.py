"""The trained-model file: state dict plus all that is needed to rebuild and use it, loaded weights-only."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.common.atomic import save_torch
from pipeline.common.errors import PipelineError
from pipeline.model.networks import (
    CNN_WIDTH,
    INPUT_SHAPE,
    MODELS,
    TTA_OFFSETS,
    Normalized,
    ShiftAveraged,
    build_model,
    fold_batchnorm,
    uses_channels_last,
)

FORMAT = "mnist-pipeline-model/1"


def save_model(path: Path | str, model_name: str, model: nn.Module, mean: float, std: float,
               classes: list[str], params: dict[str, Any]) -> None:
    """Write models/model.pt atomically: plain tensors and values only, so weights_only loading works."""
    save_torch(path, {
        "format": FORMAT,
        "model": model_name,
        "input_shape": list(INPUT_SHAPE),
        "normalization": {"mean": mean, "std": std},
        "classes": list(classes),
        "params": params,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    })


def read_model_file(path: Path | str) -> dict[str, Any]:
    """The checked contents of a model file; refuses anything that is not plain weights."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the train stage)") from None
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise PipelineError(f"{path}: refused by weights-only loading, not a weights file ({reason})") from None
    except Exception as exc:  # truncated zip, garbage bytes, ...
        raise PipelineError(f"{path}: unreadable or truncated model file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PipelineError(f"{path}: not a model file of this pipeline (expected format {FORMAT})")
    if data.get("model") not in MODELS:
        raise PipelineError(f"{path}: unknown model {data.get('model')!r}, expected one of {', '.join(MODELS)}")
    return data


def for_inference(model: nn.Module, name: str, mean: float, std: float, tta_shifts: int = 0) -> nn.Module:
    """A trained network as it is evaluated and exported, in eval mode: taking [0, 1] pixels, with the
    normalization and any test-time shifts inside, BatchNorm folded into the convolutions, and the CNN
    channels-last (about twice as fast on CPU)."""
    model = fold_batchnorm(model.eval())
    if uses_channels_last(name):
        model = model.to(memory_format=torch.channels_last)
    wrapped: nn.Module = Normalized(model, mean, std)
    if tta_shifts:
        wrapped = ShiftAveraged(wrapped, tta_shifts)
    return wrapped.eval()


def load_model(path: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """The model as `for_inference` makes it, and the file's metadata."""
    data = read_model_file(path)
    params = data["params"] if isinstance(data.get("params"), dict) else {}
    shifts = params.get("tta_shifts", 0)
    if type(shifts) is not int or shifts not in TTA_OFFSETS:  # False would pass as 0
        allowed = ", ".join(map(str, TTA_OFFSETS))
        raise PipelineError(f"{path}: unknown tta_shifts {shifts!r}, expected one of {allowed}")
    model = build_model(data["model"], params.get("width", CNN_WIDTH))
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise PipelineError(f"{path}: weights do not fit model '{data['model']}' ({first[:200]})") from None
    norm = data["normalization"]
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return for_inference(model, data["model"], norm["mean"], norm["std"], shifts), meta
