"""The trained-model file: state dict plus all that is needed to rebuild and use it, loaded weights-only."""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.common.atomic import save_torch
from pipeline.common.errors import PipelineError
from pipeline.data.prepared import Normalization
from pipeline.model.networks import CNN_WIDTH, INPUT_SHAPE, MODELS, build_model

FORMAT = "mnist-pipeline-model/1"


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


@dataclass(frozen=True)
class ModelFile:
    """models/model.pt as one value: the architecture, the normalization, the class names, the params it was
    trained with and the weights. Written by train; read by evaluate, export, the benches and the tests (predict
    and serve read its ONNX export). How it is used at test time is `test_time`'s."""

    architecture: str
    normalization: Normalization
    classes: list[str]
    params: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    @classmethod
    def of(cls, architecture: str, model: nn.Module, normalization: Normalization, classes: list[str],
           params: dict[str, Any]) -> ModelFile:
        """The file of a trained network: its weights copied to the CPU as plain tensors."""
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return cls(architecture, normalization, list(classes), params, weights)

    def save(self, path: Path | str) -> None:
        """Write it atomically: plain tensors and values only, so weights_only loading works."""
        save_torch(path, {
            "format": FORMAT,
            "model": self.architecture,
            "input_shape": list(INPUT_SHAPE),
            "normalization": asdict(self.normalization),  # {"mean": ..., "std": ...}
            "classes": self.classes,
            "params": self.params,
            "state_dict": self.state_dict,
        })

    @classmethod
    def load(cls, path: Path | str) -> ModelFile:
        """The checked contents of a model file; refuses anything that is not plain weights of a known model."""
        path = Path(path)
        data = read_model_file(path)
        params = data["params"] if isinstance(data.get("params"), dict) else {}
        try:
            normalization = Normalization(**data["normalization"])
        except (KeyError, TypeError):
            raise PipelineError(f"{path}: no normalization (mean and std) in this model file") from None
        file = cls(data["model"], normalization, list(data["classes"]), params, data["state_dict"])
        file.network(path)  # the weights fit the architecture, or a one-line error now
        return file

    def network(self, path: Path | str = "the model file") -> nn.Module:
        """The trained network (training form: BatchNorm unfolded)."""
        model = build_model(self.architecture, self.params.get("width", CNN_WIDTH),
                            self.params.get("standardize", False))
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
            raise PipelineError(f"{path}: weights do not fit model '{self.architecture}' ({first[:200]})") from None
        return model
