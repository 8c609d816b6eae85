"""Portable exports of a trained model (ONNX and torch.export) and their verification against PyTorch."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.evaluation import BATCH, predict_logits
from pipeline.models import INPUT_SHAPE

INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
MAX_LOGIT_DIFF = 1e-4


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 20)},)


def _example() -> tuple[torch.Tensor]:
    """A fixed sample input (it is stored in the .pt2 file, so it must not be random)."""
    return (torch.linspace(0, 1, 2 * 28 * 28).reshape(2, *INPUT_SHAPE),)


def export_program(model: nn.Module, path: Path) -> None:
    """Save a torch.export program (.pt2) with a dynamic batch dimension."""
    program = torch.export.export(model, _example(), dynamic_shapes=_dynamic_batch())
    buffer = io.BytesIO()  # the archive is named after its file: a buffer keeps the bytes reproducible
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getbuffer())


def export_onnx(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Save one self-contained ONNX file (weights inside, dynamic batch) with `metadata` in its properties."""
    program = torch.onnx.export(model, _example(), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=_dynamic_batch(), verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, path, save_as_external_data=False)


def onnx_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """What a consumer of the ONNX file needs, stored as string properties."""
    return {"classes": json.dumps(meta["classes"]), "model": meta["model"],
            "input": "float32 pixels in [0, 1], N x 1 x 28 x 28; normalization is inside the graph",
            "output": "N x 10 logits"}


def run_onnx(path: Path, pixels: np.ndarray, batch: int = BATCH) -> tuple[np.ndarray, float]:
    """Logits from onnxruntime on the CPU, and its throughput in images per second."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {INPUT_NAME: pixels[:batch]})
    started = time.perf_counter()
    logits = np.concatenate([session.run(None, {INPUT_NAME: pixels[i:i + batch]})[0]
                             for i in range(0, len(pixels), batch)])
    return logits, len(pixels) / (time.perf_counter() - started)


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float | int]:
    """How far `candidate` logits are from PyTorch's: prediction agreement and largest difference."""
    return {"disagreements": int((reference.argmax(1) != candidate.argmax(1)).sum()),
            "max_abs_logit_diff": float((reference - candidate).abs().max())}


def verify(model: nn.Module, onnx_path: Path, program_path: Path, pixels: torch.Tensor) -> dict[str, Any]:
    """Run every image through PyTorch, onnxruntime and the exported program; fail unless all agree."""
    reference = predict_logits(model, pixels)
    onnx_logits, onnx_rate = run_onnx(onnx_path, pixels.numpy())
    program = torch.export.load(program_path).module()
    report = {
        "images": len(pixels),
        "onnx": compare(reference, torch.from_numpy(onnx_logits)),
        "torch_export": compare(reference, predict_logits(program, pixels)),
        "onnxruntime_images_per_second": round(onnx_rate),
    }
    for name in ("onnx", "torch_export"):
        result = report[name]
        if result["disagreements"] or result["max_abs_logit_diff"] >= MAX_LOGIT_DIFF:
            raise PipelineError(
                f"export verification failed for {name}: {result['disagreements']} of {len(pixels)} predictions "
                f"differ, largest logit difference {result['max_abs_logit_diff']:.2e} (allowed < {MAX_LOGIT_DIFF})")
    report["agree"] = True
    return report
