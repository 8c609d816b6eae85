"""predict on real MNIST test digits redrawn as people draw, scan and photograph them (bench/digit_forms.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.digit_forms import FORMS, Form, thin_pen
from bench.predict_forms import form_accuracy, form_files
from pipeline.data.prepared import load_split
from pipeline.evaluate.metrics import predict_logits, to_pixels
from pipeline.export.onnx_session import open_session
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
