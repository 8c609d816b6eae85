"""predict on real MNIST test digits redrawn as people draw, scan and photograph them (bench/digit_forms.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.digit_forms import FORMS, Form, faint_with_specks, on_paper, pen_drawing, thin_pen
from bench.predict_forms import form_accuracy, form_files
from pipeline.common.errors import PipelineError
from pipeline.data.prepared import load_split
from pipeline.evaluate.metrics import predict_logits, to_pixels
from pipeline.export.onnx_session import open_session, run_logits
from pipeline.inference.digit_image import to_mnist
from pipeline.model.model_file import load_model

pytestmark = pytest.mark.xdist_group("evaluated-and-exported")  # the worker that already has the exported model
DIGITS = 60


@pytest.fixture(scope="module")
def own_accuracy(trained_model: Path, prepared: Path) -> float:
    """How well the model reads the same digits as MNIST stores them."""
    test = load_split(prepared / "test.pt")
    model, _ = load_model(trained_model)
    predicted = predict_logits(model, to_pixels(test.images[:DIGITS])).argmax(1)
    return (predicted == test.labels[:DIGITS]).double().mean().item()


@pytest.mark.parametrize("form", FORMS, ids=[form.name for form in FORMS])
def test_predict_reads_each_form_about_as_well_as_the_model_reads_mnist(
        form: Form, own_accuracy: float, exported: Path, prepared: Path, tmp_path: Path) -> None:
    test = load_split(prepared / "test.pt")
    files = form_files(form, test.images[:DIGITS].numpy(), tmp_path)
    accuracy, unreadable = form_accuracy(open_session(exported / "model.onnx"), files, test.labels[:DIGITS].numpy())
    assert unreadable == 0
    assert accuracy >= min(0.95, own_accuracy - 0.04), f"{form.name}: {accuracy:.3f} (on MNIST: {own_accuracy:.3f})"


def test_a_thin_pen_on_a_large_page_reads_19_of_20(exported: Path, prepared: Path, tmp_path: Path) -> None:
    test = load_split(prepared / "test.pt")
    files = form_files(Form("thin pen", thin_pen), test.images[:20].numpy(), tmp_path)
    accuracy, _ = form_accuracy(open_session(exported / "model.onnx"), files, test.labels[:20].numpy())
    assert accuracy >= 19 / 20


def test_a_dark_blot_and_specks_neither_set_the_ink_level_nor_become_the_digit(exported: Path, prepared: Path,
                                                                               tmp_path: Path) -> None:
    test = load_split(prepared / "test.pt")
    files = form_files(Form("faint, with specks", faint_with_specks), test.images[:20].numpy(), tmp_path)
    accuracy, unreadable = form_accuracy(open_session(exported / "model.onnx"), files, test.labels[:20].numpy())
    assert unreadable == 0 and accuracy >= 18 / 20  # the blot read as the digit, or a lost digit, fails here


@pytest.mark.parametrize("seed", range(40))
def test_no_image_reaches_a_nan_only_a_digit_or_a_one_line_refusal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    side = int(rng.integers(8, 120))
    page = np.ones((side, side), dtype=np.float32)
    for _ in range(int(rng.integers(0, 6))):  # blots and specks of any size and shade, anywhere
        (y, x), radius = rng.integers(0, side, 2), rng.uniform(0.3, side / 4)
        ys, xs = np.mgrid[0:side, 0:side]
        page = np.minimum(page, np.where(np.hypot(ys - y, xs - x) <= radius, rng.uniform(0, 1), 1.0))
    page = np.clip(page + rng.normal(0, rng.uniform(0, 0.05), page.shape), 0, 1).astype(np.float32)
    try:
        digit = to_mnist(page, "page")
    except PipelineError as exc:
        assert str(exc).startswith("page: no digit found"), exc
    else:
        assert digit.shape == (28, 28) and np.isfinite(digit).all() and digit.max() == 1


@pytest.mark.parametrize("shade", [0.3, 0.45, 0.6])
def test_a_pencil_digit_beside_a_black_blot_is_read_at_every_shade(shade: float, exported: Path,
                                                                  prepared: Path) -> None:
    test = load_split(prepared / "test.pt")
    session = open_session(exported / "model.onnx")
    blot = np.zeros((300, 300), dtype=np.float32)
    blot[262:270, 262:270] = 1.0  # darker than the digit, and far smaller
    for digit, label in zip(test.images[:10].numpy(), test.labels[:10].tolist(), strict=True):
        page = np.asarray(on_paper(np.maximum(shade * pen_drawing(digit, 300, 180, 8), blot)), np.float32) / 255
        pixels = to_mnist(page, "page")  # at 0.45 the blot once left no stroke to measure: a NaN, a 500
        assert np.isfinite(pixels).all()
        assert int(run_logits(session, pixels[None, None]).argmax()) == label
