"""Portable exports of a trained model (ONNX and torch.export) and their verification against PyTorch.

Both exporters record the Python stack of every traced operation, with absolute source paths; those
records are removed, so the files do not depend on where the project sits (and ship no local paths).
"""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import INPUT_NAME, OUTPUT_NAME, open_session, run_logits
from pipeline.model.batches import BATCH, predict_logits
from pipeline.model.model_file import ModelFile
from pipeline.model.networks import INPUT_SHAPE

MAX_LOGIT_DIFF = 1e-4
ONNX_STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 20)},)


def _example() -> tuple[torch.Tensor]:
    """A fixed sample input (it is stored in the .pt2 file, so it must not be random)."""
    return (torch.linspace(0, 1, 2 * 28 * 28).reshape(2, *INPUT_SHAPE),)


def export_program(model: nn.Module, path: Path) -> torch.export.ExportedProgram:
    """Save a torch.export program (.pt2) with a dynamic batch dimension and no source paths; return it."""
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # channels-last weights do not archive
    program = torch.export.export(plain, _example(), dynamic_shapes=_dynamic_batch())
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    buffer = io.BytesIO()  # the archive is named after its file: a buffer keeps the bytes reproducible
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getbuffer())
    return program


def _strip_stack_traces(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        kept = [prop for prop in node.metadata_props if prop.key != ONNX_STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _strip_stack_traces(attribute.g)


def export_onnx(program: torch.export.ExportedProgram, path: Path, metadata: dict[str, str]) -> None:
    """Save one self-contained ONNX file (weights inside, dynamic batch) with `metadata` in its properties.

    Translates the program `export_program` made, so the model is traced once for both files.
    """
    onnx_program = torch.onnx.export(program, _example(), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME], verbose=False)
    proto = onnx_program.model_proto
    _strip_stack_traces(proto.graph)
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, path, save_as_external_data=False)


def onnx_metadata(meta: ModelFile, test_time: dict[str, Any]) -> dict[str, str]:
    """What a consumer of the ONNX file needs, and what its model card tells, stored as string properties;
    `test_time`: the TEST_TIME_PARAMS' values."""
    return {"classes": json.dumps(meta.classes), "model": meta.architecture,
            "input": "float32 pixels in [0, 1], N x 1 x 28 x 28; normalization is inside the graph",
            "output": "N x 10 logits",
            "normalization": json.dumps({"mean": meta.normalization.mean, "std": meta.normalization.std}),
            "tta_shifts": str(test_time["tta_shifts"]), "not_digit_below": str(test_time["not_digit_below"]),
            "params": json.dumps(meta.params)}


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float | int]:
    """How far `candidate` logits are from PyTorch's: prediction agreement and largest difference."""
    return {"disagreements": int((reference.argmax(1) != candidate.argmax(1)).sum()),
            "max_abs_logit_diff": float((reference - candidate).abs().max())}


def verify(model: nn.Module, onnx_path: Path, program_path: Path, pixels: torch.Tensor) -> tuple[dict[str, Any], float]:
    """Run the images through PyTorch, onnxruntime and the exported program; fail unless all agree.

    Returns the agreement report (a pure function of the model and data) and onnxruntime's
    throughput in images per second (for the log, never for a hashed output).
    """
    reference = predict_logits(model, pixels)
    session = open_session(onnx_path)
    started = time.perf_counter()
    onnx_logits = run_logits(session, pixels.numpy(), BATCH)
    onnx_rate = len(pixels) / (time.perf_counter() - started)
    program = torch.export.load(program_path).module().to(memory_format=torch.channels_last)  # 4-D weights only
    report = {
        "images": len(pixels),
        "onnx": compare(reference, torch.from_numpy(onnx_logits)),
        "torch_export": compare(reference, predict_logits(program, pixels)),
    }
    for name in ("onnx", "torch_export"):
        result = report[name]
        if result["disagreements"] or result["max_abs_logit_diff"] >= MAX_LOGIT_DIFF:
            raise PipelineError(
                f"export verification failed for {name}: {result['disagreements']} of {len(pixels)} predictions "
                f"differ, largest logit difference {result['max_abs_logit_diff']:.2e} (allowed < {MAX_LOGIT_DIFF})")
    for name in ("onnx", "torch_export"):  # in millionths: `dvc metrics diff` shows 5 decimals, and 2e-6 read 0.0
        report[name]["max_abs_logit_diff_e6"] = round(report[name].pop("max_abs_logit_diff") * 1e6, 4)
    report["agree"], report["limit_e6"] = True, round(MAX_LOGIT_DIFF * 1e6, 4)
    return report, onnx_rate
