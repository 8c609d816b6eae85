"""Benchmark: does predict say "not a digit" for what is not one, and only for that?

Reads, through `python -m stages.predict`'s own code path, the non-digits committed in bench/data/not_digits/
(letters in two fonts, shapes and scribbles on 300 px pages; none of them drawn by `pipeline/data/non_digits.py`,
which makes what training sees) and the digits of `bench.predict_forms` (the first N test digits in each of its
forms). Reports the share of non-digits called "not a digit" per kind, the share of digits called so per form, and
each form's accuracy (a digit called "not a digit" counts as wrong). Needs `dvc repro` (data/prepared/test.npz and
models/model.onnx). Writes bench/results/local/not_digits.json (`--update`: the committed
bench/results/not_digits.json). `--redraw` draws the committed non-digits again (it needs the DejaVu Sans and
Liberation Serif fonts: Debian's fonts-dejavu-core and fonts-liberation).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.digit_forms import FORMS
from bench.predict_forms import form_files, form_folder, right_answers
from bench.report_file import machine, write_report
from pipeline.data.prepared import load_split
from pipeline.export.onnx_session import class_names, not_digit_below, open_session
from pipeline.inference.prediction import predict_files

FOLDER = Path(__file__).with_name("data") / "not_digits"
FONTS = {"sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
         "serif": "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf"}
# every letter but those that are digits as people write them (O, I, l; o; g and q, a 9 with a hook or a stem)
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ" + "abcdefhijkmnprstuvwxyz"
PAGE = 300
Draw = Callable[[ImageDraw.ImageDraw], None]


def _curve(points: list[tuple[float, float]], width: int) -> Draw:
    return lambda pen: pen.line(points, fill=0, width=width, joint="curve")


def shapes() -> dict[str, Draw]:
    """Eight shapes drawn with a pen, each on its own page."""
    star = [(150 + (110 if i % 2 == 0 else 45) * math.cos(math.pi / 2 + i * math.pi / 5),
             150 - (110 if i % 2 == 0 else 45) * math.sin(math.pi / 2 + i * math.pi / 5)) for i in range(11)]
    spiral = [(150 + t * 9 * math.cos(t), 150 + t * 9 * math.sin(t)) for t in np.linspace(0, 12, 200)]
    heart = [(150 + 90 * math.sin(t) ** 3,
              140 - 90 * (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) / 16)
             for t in np.linspace(0, 2 * math.pi, 100)]

    def smiley(pen: ImageDraw.ImageDraw) -> None:
        pen.ellipse([40, 40, 260, 260], outline=0, width=10)
        pen.ellipse([100, 100, 120, 120], fill=0)
        pen.ellipse([180, 100, 200, 120], fill=0)
        pen.arc([90, 130, 210, 220], 20, 160, fill=0, width=10)

    def hash_sign(pen: ImageDraw.ImageDraw) -> None:
        for line in ([(100, 40), (80, 260)], [(200, 40), (180, 260)], [(40, 110), (260, 110)], [(30, 190), (250, 190)]):
            pen.line(line, fill=0, width=14)

    return {"square": lambda pen: pen.rectangle([60, 60, 240, 240], outline=0, width=14),
            "triangle": _curve([(150, 40), (260, 250), (40, 250), (150, 40)], 14),
            "star": _curve(star, 12), "hash": hash_sign, "spiral": _curve(spiral, 10), "heart": _curve(heart, 12),
            "smiley": smiley,
            "house": _curve([(60, 260), (60, 130), (150, 40), (240, 130), (240, 260), (60, 260), (60, 130),
                             (240, 130)], 12)}


def redraw(folder: Path = FOLDER) -> None:
    """Draw the benchmark's non-digits into `folder`: letters in each of FONTS, shapes, and 20 seeded scribbles."""
    folder.mkdir(parents=True, exist_ok=True)
    pages: dict[str, Draw] = {}
    for style, path in FONTS.items():
        font = ImageFont.truetype(path, 220)
        for letter in LETTERS:
            case = "upper" if letter.isupper() else "lower"
            pages[f"letter-{style}-{case}-{letter}"] = (
                lambda pen, letter=letter, font=font: pen.text((150, 150), letter, font=font, fill=0, anchor="mm"))
    pages.update({f"shape-{name}": draw for name, draw in shapes().items()})
    rng = np.random.default_rng(0)
    for index in range(20):
        points = [(rng.uniform(40, 260), rng.uniform(40, 260)) for _ in range(8)]
        pages[f"scribble-{index:02d}"] = _curve(points, int(rng.integers(6, 16)))
    for name, draw in pages.items():
        page = Image.new("L", (PAGE, PAGE), 255)
        draw(ImageDraw.Draw(page))
        page.save(folder / f"{name}.png", optimize=True)


def kind(path: Path) -> str:
    """letters, shapes or scribbles, from the file's name."""
    return {"letter": "letters", "shape": "shapes", "scribble": "scribbles"}[path.stem.split("-")[0]]


@click.command(help=__doc__)
@click.option("--digits", default=300, show_default=True, help="Test digits per form.")
@click.option("--model", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--redraw", "again", is_flag=True, help="Draw the committed non-digits again first.")
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(digits: int, model: Path, data: Path, again: bool, update: bool) -> None:
    if again:
        redraw()
    session = open_session(model)
    classes = class_names(session)
    others = sorted(FOLDER.glob("*.png"))
    results = predict_files(session, classes, others)
    refused = {path: result.get("label") is None for path, result in zip(others, results, strict=True)}
    report: dict[str, object] = {"machine": machine(), "not_digit_below": not_digit_below(session),
                                 "non_digits": len(others), "digits_per_form": digits}
    report["non_digits_called_not_a_digit"] = round(float(np.mean(list(refused.values()))), 4)
    report["per_kind"] = {name: round(float(np.mean([r for p, r in refused.items() if kind(p) == name])), 4)
                          for name in ("letters", "shapes", "scribbles")}
    report["missed"] = [path.stem for path, r in refused.items() if not r]
    test = load_split(data / "test.npz")
    images, labels = test.images[:digits].numpy(), test.labels[:digits].numpy()
    forms, all_refused = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for form in FORMS:
            results = list(predict_files(session, classes, form_files(form, images, form_folder(Path(tmp), form))))
            called_none = [r.get("label") is None and "error" not in r for r in results]
            right = right_answers(results, labels, classes)
            forms[form.name] = {"accuracy": round(float(np.mean(right)), 4),
                                "called_not_a_digit": round(float(np.mean(called_none)), 4)}
            all_refused += called_none
            print(f"{form.name:28s} accuracy {forms[form.name]['accuracy']:.2%}, "
                  f"not a digit {forms[form.name]['called_not_a_digit']:.2%}")
    report["digits_called_not_a_digit"] = round(float(np.mean(all_refused)), 4)
    report["forms"] = forms
    print(f"non-digits called not a digit: {report['non_digits_called_not_a_digit']:.1%} of {len(others)} "
          f"({', '.join(f'{k} {v:.0%}' for k, v in report['per_kind'].items())}); digits: "
          f"{report['digits_called_not_a_digit']:.2%} of {len(all_refused)}")
    print("wrote", write_report("not_digits", report, update))


if __name__ == "__main__":
    main()
