"""predict: label digit images with the exported ONNX model (onnxruntime only, no PyTorch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference.prediction import DEFAULT_MODEL, predict_files


@click.command(help="""Print the predicted label and its probability for each image FILE.

Any size, any pen, dark-on-light or light-on-dark, gray or colour, PNG/JPEG/TIFF/...: the ink
is measured against the local paper (lighting, gradients and haze removed), specks are ignored,
the stroke width is brought to MNIST's, and the digit is fitted into 20x20 and centred by mass
in 28x28 as MNIST digits were, then run through the ONNX model with onnxruntime. Files that
cannot be read are reported and the others still predicted; the exit status is 1 if any file
failed.""")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever predict is run from).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
def main(files: tuple[Path, ...], model: Path, as_json: bool) -> None:
    try:
        session = open_session(model)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    results = predict_files(session, class_names(session), list(files))
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
