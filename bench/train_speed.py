"""Benchmark: train a model from params.yaml's settings on a chosen device and report speed and test accuracy.

Runs without DVC, so it works on a bare GPU machine after `download` and `preprocess`:
    python -m bench.train_speed --device cuda
    torchrun --nproc_per_node 1 -m bench.train_speed --device cuda    # the DDP/NCCL path
"""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import click
import torch

from bench.default_recipe import NON_DIGITS
from pipeline.common.params import load_params
from pipeline.data.prepared import PreparedData
from pipeline.model.batches import predict_logits, to_pixels
from pipeline.model.test_time import TEST_TIME_PARAMS, for_inference
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.config import load_train_config
from pipeline.train.distributed import destroy_process_group, init_process_group, process_info
from pipeline.train.loop import fit
from pipeline.train.setup import TrainingData, resolve_device

ROOT = Path(__file__).resolve().parent.parent


def device_name(device: torch.device) -> str:
    """A human-readable name of the device the run used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


@click.command(help=__doc__)
@click.option("--device", default="auto", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override params.yaml's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override params.yaml's batch_size.")
@click.option("--params", "params_file", default=ROOT / "params.yaml", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default=ROOT / "data" / "prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Write the report as JSON here.")
def main(device: str, epochs: int | None, batch_size: int | None, params_file: Path, data: Path,
         out: Path | None) -> None:
    info = process_info()
    cfg = load_train_config(params_file)
    cfg = replace(cfg, device=device, epochs=epochs or cfg.epochs, batch_size=batch_size or cfg.batch_size)
    torch_device = resolve_device(cfg.device, info.local_rank)
    init_process_group(info, torch_device)
    prepared = PreparedData.load(data)
    test = prepared.split("test")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = fit(cfg, TrainingData.of(prepared, NON_DIGITS if cfg.non_digits else None), info,
                    Checkpoint(Path(tmp) / "ck.pt", {"run": "bench"}),
                    lambda r: click.echo(f"epoch {r['epoch']}: {r['seconds']:.2f}s val acc {r['val_acc']:.4f}")
                         if info.is_main else None, device=torch_device)
    finally:
        destroy_process_group(info)
    if not info.is_main:
        return
    tta_shifts = load_params(TEST_TIME_PARAMS, params_file)["tta_shifts"]
    model = for_inference(result.model, cfg.model, prepared.normalization, tta_shifts)
    accuracy = (predict_logits(model, to_pixels(test.images)).argmax(1) == test.labels).double().mean().item()
    seconds = [r["seconds"] for r in result.state.history]
    report = {"device": device_name(torch_device), "processes": info.world_size, "torch": torch.__version__,
              "config": asdict(cfg), "epoch_seconds": [round(s, 3) for s in seconds],
              "train_seconds": round(result.train_seconds, 2),
              "steady_epoch_seconds": round(sorted(seconds[1:] or seconds)[len(seconds[1:] or seconds) // 2], 3),
              "images_per_second": round(result.samples_seen / result.train_seconds), "test_accuracy": accuracy}
    click.echo(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
