"""predict: label digit images with the exported ONNX model (onnxruntime only, no PyTorch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from pipeline.digit_image import prepare_image
from pipeline.errors import PipelineError

INPUT_NAME = "pixels"


def load_session(model: Path):
    """An onnxruntime session and the class names stored in the model's metadata."""
    import onnxruntime as ort

    if not model.is_file():
        raise PipelineError(f"{model}: not found (run `dvc repro` to export the model)")
    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types for corrupt files
        raise PipelineError(f"{model}: not a valid ONNX model ({str(exc).splitlines()[0][:160]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(10)]
    return session, classes


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict_files(session, classes: list[str], files: list[Path]) -> list[dict]:
    """One result per file: label and probability, or the error that stopped it."""
    results, ready, batch = [], [], []
    for path in files:
        try:
            batch.append(prepare_image(path))
            ready.append(len(results))
            results.append({"file": str(path)})
        except PipelineError as exc:
            results.append({"file": str(path), "error": str(exc)})
    if batch:
        probs = softmax(session.run(None, {INPUT_NAME: np.stack(batch).astype(np.float32)})[0])
        for index, row in zip(ready, probs, strict=True):
            best = int(row.argmax())
            results[index].update(label=classes[best], probability=round(float(row[best]), 6))
    return results


@click.command(help="""Print the predicted label and its probability for each image FILE.

Any size, dark-on-light or light-on-dark, PNG/JPEG/...: each image is prepared as MNIST digits
were (grayscale, fitted into 20x20, centred by mass in 28x28) and run through the ONNX model
with onnxruntime. Files that cannot be read are reported and the others still predicted;
the exit status is 1 if any file failed.""")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
def main(files: tuple[Path, ...], model: Path, as_json: bool) -> None:
    try:
        session, classes = load_session(model)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    results = predict_files(session, classes, list(files))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            click.echo(f"error: {result['error']}", err=True)
        elif not as_json:
            click.echo(f"{result['file']}: {result['label']} ({result['probability']:.3f})")
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
