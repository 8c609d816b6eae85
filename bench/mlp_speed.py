"""Benchmark: the tutorials' per-sample DataLoader loop against this trainer, on the 784-128-64-10 MLP.

Needs `dvc repro` to have produced data/raw and data/prepared. Prints seconds per epoch both ways and
time to reach the target test accuracy, and writes bench/results/local/mlp_speed.json
(`--update` replaces the committed bench/results/mlp_speed.json).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from bench.report_file import machine, write_report
from pipeline.data.prepared import PreparedData
from pipeline.model.batches import predict_logits, to_pixels
from pipeline.model.networks import build_model
from pipeline.model.test_time import for_inference
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.config import load_train_config
from pipeline.train.distributed import ProcessInfo
from pipeline.train.loop import fit
from pipeline.train.setup import TrainingData

# lr: the best validation accuracy after 3 epochs among 0.003, 0.004, 0.005 and 0.006
# (a key added since takes params.yaml's value)
TRAINER = dict(model="mlp2", width=16, optimizer="adam", lr=0.005, momentum=0.9, nesterov=False,
               weight_decay=0.0, rotate_deg=0.0, zoom=0.0, ema_decay=0.0,
               scheduler="onecycle", label_smoothing=0.0, augment=False, batch_size=256, epochs=1,
               patience=0, seed=0, device="cpu")


def tutorial_loaders(raw: Path, root: Path) -> tuple[DataLoader, DataLoader]:
    """The tutorials' data path: torchvision's MNIST, ToTensor + Normalize((0.5,), (0.5,)), batch 64."""
    (root / "MNIST" / "raw").mkdir(parents=True)
    for file in raw.iterdir():
        (root / "MNIST" / "raw" / file.name).symlink_to(file.resolve())
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = datasets.MNIST(root, train=True, transform=transform)
    test = datasets.MNIST(root, train=False, transform=transform)
    return DataLoader(train, batch_size=64, shuffle=True), DataLoader(test, batch_size=1000)


def tutorial_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One epoch of the tutorials' loop; its wall time."""
    started = time.perf_counter()
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


@torch.inference_mode()
def tutorial_accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in loader)
    return correct / len(loader.dataset)


def run_tutorial(raw: Path, epochs: int, target: float, max_epochs: int) -> dict[str, object]:
    """Seconds per epoch over `epochs`, then keep going until `target` test accuracy."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        train, test = tutorial_loaders(raw, Path(root))
        model = build_model("mlp2")
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        seconds, reached = [], None
        for epoch in range(1, max_epochs + 1):
            seconds.append(tutorial_epoch(model, train, optimizer))
            accuracy = tutorial_accuracy(model, test)
            click.echo(f"tutorial  epoch {epoch}: {seconds[-1]:.2f}s, test accuracy {accuracy:.4f}")
            if reached is None and accuracy >= target:
                reached = {"epochs": epoch, "seconds": sum(seconds), "accuracy": accuracy}
            if epoch >= epochs and reached is not None:
                break
    return {"images_per_epoch": len(train.dataset), "seconds_per_epoch": sum(seconds[:epochs]) / epochs,
            "to_target": reached}


def run_trainer(params_file: Path, prepared: Path, epochs: int, target: float, max_epochs: int) -> dict[str, object]:
    """This trainer: seconds per epoch over `epochs`, and the shortest run (own schedule) reaching `target`."""
    data = PreparedData.load(prepared)
    training, test = TrainingData.of(data), data.split("test")
    trainer = replace(load_train_config(params_file), **TRAINER)

    def run(n: int) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            result = fit(replace(trainer, epochs=n), training,
                    ProcessInfo(), Checkpoint(Path(tmp) / "ck.pt", {"run": "bench"}))
        model = for_inference(result.model, trainer.model, data.normalization)
        accuracy = (predict_logits(model, to_pixels(test.images)).argmax(1) == test.labels).double().mean().item()
        click.echo(f"trainer   {n} epoch(s): {result.train_seconds:.2f}s, test accuracy {accuracy:.4f}")
        return result.train_seconds, accuracy

    seconds, _ = run(epochs)
    reached = None
    for n in range(1, max_epochs + 1):
        total, accuracy = run(n)
        if accuracy >= target:
            reached = {"epochs": n, "seconds": total, "accuracy": accuracy}
            break
    return {"images_per_epoch": len(training.train), "seconds_per_epoch": seconds / epochs, "to_target": reached}


@click.command(help=__doc__)
@click.option("--epochs", default=3, show_default=True, help="Epochs timed both ways.")
@click.option("--target", default=0.975, show_default=True, help="Test accuracy to reach.")
@click.option("--max-epochs", default=15, show_default=True)
@click.option("--raw", default="data/raw", type=click.Path(path_type=Path), show_default=True)
@click.option("--prepared", default="data/prepared", type=click.Path(path_type=Path), show_default=True)
@click.option("--params", "params_file", default="params.yaml", type=click.Path(path_type=Path), show_default=True,
              help="Where keys the trainer's recipe does not set come from.")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Where to write the report [default: bench/results/local/mlp_speed.json, git-ignored].")
@click.option("--update", is_flag=True, help="Replace the committed bench/results/mlp_speed.json instead.")
def main(epochs: int, target: float, max_epochs: int, raw: Path, prepared: Path, params_file: Path,
         out: Path | None, update: bool) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    tutorial = run_tutorial(raw, epochs, target, max_epochs)
    trainer = run_trainer(params_file, prepared, epochs, target, max_epochs)
    per_image = (tutorial["seconds_per_epoch"] / tutorial["images_per_epoch"]) / (
        trainer["seconds_per_epoch"] / trainer["images_per_epoch"])
    report = {"machine": machine(), "epochs": epochs, "target": target, "tutorial": tutorial, "trainer": trainer,
              "epoch_speedup_per_image": round(per_image, 1)}
    if tutorial["to_target"] and trainer["to_target"]:
        report["time_to_target_speedup"] = round(tutorial["to_target"]["seconds"] / trainer["to_target"]["seconds"], 1)
    out = write_report("mlp_speed", report, update, out)
    click.echo(f"\nmachine: {report['machine']}")
    click.echo(f"seconds per epoch: tutorial {tutorial['seconds_per_epoch']:.2f} ({tutorial['images_per_epoch']} img), "
               f"trainer {trainer['seconds_per_epoch']:.2f} ({trainer['images_per_epoch']} img); "
               f"per-image speed-up {per_image:.1f}x")
    if "time_to_target_speedup" in report:
        click.echo(f"time to {target:.1%} test accuracy: tutorial {tutorial['to_target']['seconds']:.1f}s, "
                   f"trainer {trainer['to_target']['seconds']:.2f}s; speed-up {report['time_to_target_speedup']}x")


if __name__ == "__main__":
    main()
