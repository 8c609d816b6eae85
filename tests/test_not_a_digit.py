"""Saying "not a digit": the drawn non-digits training sees, the answer's shape, and calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.non_digits import FAMILIES, draw_non_digits
from pipeline.data.prepared import Normalization
from pipeline.evaluate.metrics import calibration_error
from pipeline.inference.prediction import answer
from pipeline.train.loop import non_digit_batch
from pipeline.train.setup import Run
from tests.helpers import invoke, quick_config

CLASSES = [str(d) for d in range(10)]


def test_the_drawn_non_digits_are_the_same_for_a_seed_and_placed_as_mnist_places_digits() -> None:
    images, kinds = draw_non_digits(60, seed=5)
    again, _ = draw_non_digits(60, seed=5)
    other, _ = draw_non_digits(60, seed=6)
    assert images.dtype == np.uint8 and images.shape == (60, 28, 28) and np.array_equal(images, again)
    assert not np.array_equal(images, other)
    assert set(kinds.tolist()) <= set(range(len(FAMILIES) + 1)) and len(set(kinds.tolist())) >= 3
    for image in images:
        rows, cols = np.nonzero(image)
        assert image.max() == 255 and np.ptp(rows) < 20 and np.ptp(cols) < 20  # inside the 20 x 20 box
        mass = image.astype(float) / image.sum()
        centre = (mass.sum(1) @ np.arange(28), mass.sum(0) @ np.arange(28))
        assert all(abs(c - 13.5) <= 1.5 for c in centre)  # centred by mass, to the pixel


def test_an_answer_below_the_models_probability_is_not_a_digit_and_keeps_the_same_keys() -> None:
    unsure = np.array([0.05] * 8 + [0.25, 0.35])
    refused, taken = answer(CLASSES, unsure, not_digit_below=0.4), answer(CLASSES, unsure, not_digit_below=0.3)
    assert set(refused) == set(taken) == {"label", "probability", "probabilities", "reason"}
    assert refused["label"] is None and refused["reason"] == ("not a digit: the likeliest, 9, has probability 0.35, "
                                                              "below 0.4")
    assert taken["label"] == "9" and taken["reason"] is None and taken["probability"] == refused["probability"] == 0.35
    assert answer(CLASSES, unsure)["label"] == "9"  # a model without the property never refuses


def test_the_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    labels = np.arange(10).repeat(10)
    honest = np.full((100, 10), 0.1 / 9)  # 90 % sure and right 90 % of the time
    honest[np.arange(100), labels] = 0.9
    wrong = np.arange(100) % 10 == 0
    honest[wrong, labels[wrong]], honest[wrong, (labels[wrong] + 1) % 10] = 0.1 / 9, 0.9
    assert calibration_error(honest, labels) == pytest.approx(0.0)
    overconfident = np.full((100, 10), 0.01 / 9)
    overconfident[np.arange(100), (labels + 1) % 10] = 0.99  # always sure, always wrong
    assert calibration_error(overconfident, labels) == pytest.approx(0.99)


def test_each_batch_adds_its_share_of_non_digits_and_none_when_the_run_uses_none() -> None:
    drawn = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).expand(40, 1, 28, 28)
    run = Run(quick_config(non_digits=0.25), None, None, None, None, None, torch.zeros(0), torch.zeros(0),
              Normalization(0.5, 0.3), 100, torch.zeros(0), drawn)
    extra = non_digit_batch(run, 100)
    assert extra.shape == (25, 1, 28, 28) and set(extra[:, 0, 0, 0].tolist()) <= set(range(40))
    assert len(non_digit_batch(Run(**{**run.__dict__, "non_digits": drawn[:0]}), 100)) == 0


def test_the_train_stage_names_a_missing_non_digits_file_in_one_line(prepared: Path, tmp_path: Path) -> None:
    from stages import train

    missing = tmp_path / "absent.npz"
    result = invoke(train.main, "--data", prepared, "--non-digits", missing, "--model-out", tmp_path / "model.pt",
                    "--metrics", tmp_path / "train.json", "--record-dir", tmp_path / "record")
    assert result.exit_code == 1 and result.output == (f"Error: {missing}: not found (`dvc repro` makes it: the "
                                                       "preprocess stage a split, the draw stage the non-digits)\n")
    assert not (tmp_path / "model.pt").exists()
