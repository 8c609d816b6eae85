"""Running an exported ONNX model with onnxruntime on the CPU (no PyTorch needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import PipelineError

INPUT_NAME, OUTPUT_NAME = "pixels", "logits"


def open_session(path: Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session for the model at `path` using `threads` threads per run (0: onnxruntime's
    default, one per core); a missing or corrupt file is a PipelineError."""
    import onnxruntime as ort

    if not path.is_file():
        raise PipelineError(f"{path}: not found (run `dvc repro` to export the model)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types for corrupt files
        raise PipelineError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0][:160]})") from None


def metadata(session: Any) -> dict[str, str]:
    """The string properties the export stage stored in the model (`formats.onnx_metadata`)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def class_names(session: Any) -> list[str]:
    """The class names stored in the model's metadata (digits when absent)."""
    meta = metadata(session)
    return json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(10)]


def not_digit_below(session: Any) -> float:
    """The probability below which the likeliest digit is no digit at all (`not_digit_below`; 0: never)."""
    return float(metadata(session).get("not_digit_below", 0))


def run_logits(session: Any, pixels: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits for float32 N x 1 x 28 x 28 pixels, in batches."""
    return np.concatenate([session.run(None, {INPUT_NAME: pixels[i:i + batch]})[0]
                           for i in range(0, len(pixels), batch)])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def surest(probabilities: np.ndarray) -> int:
    """Which of several readings of one image (K x classes probabilities) to take: the one the model is surest of
    (the first of equals: the digit as prepared)."""
    return int(probabilities.max(axis=1).argmax())
