"""Benchmark: predict's accuracy on real MNIST test digits redrawn in the forms people feed it.

Needs `dvc repro` (data/prepared/test.npz and models/model.onnx). Each form gets the same digits (the
first N of the test split), written to files and read back through `python -m stages.predict`'s own
code path. With `--previous DIR` (a checkout of an earlier revision with its models/model.onnx), the same
files also go through that revision's `python -m stages.predict --json`, side by side. Writes
bench/results/local/predict_forms.json (`--update` replaces the committed bench/results/predict_forms.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.digit_forms import FORMS, Form
from bench.report_file import machine, write_report
from pipeline.data.prepared import load_split
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference.prediction import predict_files


def form_files(form: Form, digits: np.ndarray, folder: Path, seed: int = 0) -> list[Path]:
    """Each digit drawn in `form`, saved in the form's file type; the same pages for the same seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, digit in enumerate(digits):
        path = folder / f"{index:04d}{form.suffix}"
        form.make(digit, rng).save(path)
        files.append(path)
    return files


def form_folder(root: Path, form: Form) -> Path:
    """Where a benchmark writes `form`'s files, under `root`."""
    return root / form.name.replace(" ", "_").replace(",", "")


def right_answers(results: list[dict[str, Any]], labels: np.ndarray, classes: list[str]) -> list[bool]:
    """Whether each of predict's answers is its file's digit (a file it cannot read, or calls no digit, is not)."""
    return [r.get("label") == classes[label] for r, label in zip(results, labels, strict=True)]


def form_accuracy(session: object, files: list[Path], labels: np.ndarray) -> tuple[float, int]:
    """Share of files that predict labels correctly (a file it cannot read counts as wrong), and errors."""
    classes = class_names(session)
    results = list(predict_files(session, classes, files))
    return sum(right_answers(results, labels, classes)) / len(files), sum("error" in r for r in results)


def previous_accuracy(checkout: Path, files: list[Path], labels: np.ndarray) -> float:
    """Share of files that `checkout`'s own predict command labels correctly (its code, its model)."""
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--json", *map(str, files)], cwd=checkout,
                          capture_output=True, text=True, timeout=600)
    results = json.loads(done.stdout)
    return sum(str(r.get("label")) == str(label) for r, label in zip(results, labels, strict=True)) / len(files)


@click.command(help=__doc__)
@click.option("--digits", default=300, show_default=True, help="Test digits per form.")
@click.option("--model", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--previous", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A checkout of an earlier revision, with its models/model.onnx, to read the same files beside.")
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(digits: int, model: Path, data: Path, previous: Path | None, update: bool) -> None:
    test = load_split(data / "test.npz")
    images, labels = test.images[:digits].numpy(), test.labels[:digits].numpy()
    session = open_session(model)
    report: dict[str, object] = {"machine": machine(), "digits_per_form": digits, "forms": {}}
    if previous is not None:
        report["previous"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=previous, text=True,
                                            capture_output=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        for form in FORMS:
            files = form_files(form, images, form_folder(Path(tmp), form))
            started = time.perf_counter()
            accuracy, failed = form_accuracy(session, files, labels)
            seconds = time.perf_counter() - started
            report["forms"][form.name] = {"accuracy": round(accuracy, 4), "unreadable": failed,
                                          "ms_per_image": round(1000 * seconds / digits, 1)}
            beside = ""
            if previous is not None:
                report["forms"][form.name]["previous_accuracy"] = round(previous_accuracy(previous, files, labels), 4)
                beside = f"  previous revision {report['forms'][form.name]['previous_accuracy']:7.2%}"
            click.echo(f"{form.name:<22} {accuracy:7.2%}  ({failed} unreadable, "
                       f"{1000 * seconds / digits:.0f} ms/image){beside}")
    click.echo(f"-> {write_report('predict_forms', report, update)}")


if __name__ == "__main__":
    main()
