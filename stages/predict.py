"""predict: label digit images with the exported ONNX model (onnxruntime only, no PyTorch)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run
from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference.prediction import DEFAULT_MODEL, predict_files


@click.command(help="""Print the predicted label and its probability for each image FILE.

Any size, any pen, dark-on-light or light-on-dark, gray or colour, PNG/JPEG/TIFF/...: the ink
is measured against the local paper (lighting, gradients and haze removed), specks are ignored,
the stroke width is brought to MNIST's, and the digit is fitted into 20x20 and centred by mass
in 28x28 as MNIST digits were, then run through the ONNX model with onnxruntime. An image whose
likeliest digit is less probable than the model's not_digit_below (a letter, a shape, a
scribble) is answered "not a digit" (label null in JSON, with the reason). Files that cannot be
read are reported and the others still predicted; the exit status is 1 if any file failed.""")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, type=click.Path(path_type=Path),
              help="The exported model (default: this project's, wherever predict is run from).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
@reports_errors
def main(files: tuple[Path, ...], model: Path, as_json: bool) -> None:
    session = open_session(model)
    try:
        failed = print_predictions(session, list(files), as_json)
    except OSError as exc:  # standard output is full, closed or gone: one line, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        raise PipelineError(f"cannot write the results to standard output ({exc.strerror})") from None
    sys.exit(1 if failed else 0)


def printable(text: str) -> str:
    """`text` on one line: control characters (a newline in a file name, say) written as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def print_predictions(session: object, files: list[Path], as_json: bool) -> bool:
    """Print each file's result as soon as it is known; whether any file failed."""
    failed = False
    if as_json:
        click.echo("[")
    for index, result in enumerate(predict_files(session, class_names(session), files)):
        failed = failed or "error" in result
        if as_json:  # a list printed an item at a time, so results appear as they come and the JSON stays valid
            item = textwrap.indent(json.dumps(result, indent=2), "  ")
            click.echo(f"{item}," if index < len(files) - 1 else item)
        if "error" in result:
            click.echo(f"error: {printable(result['error'])}", err=True)
        elif not as_json and result["label"] is None:
            likeliest = max(result["probabilities"], key=result["probabilities"].get)
            click.echo(f"{printable(result['file'])}: not a digit (likeliest {likeliest} at "
                       f"{result['probability']:.3f})")
        elif not as_json:
            click.echo(f"{printable(result['file'])}: {result['label']} ({result['probability']:.3f})")
    if as_json:
        click.echo("]")
    return failed


if __name__ == "__main__":
    run(main)
