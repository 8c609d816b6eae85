"""Evaluation arithmetic and training augmentation, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.evaluate.metrics import confusion_matrix, per_class_report
from pipeline.train.augmentation import MAX_SHIFT_PX, random_affine, random_shift


def test_macro_precision_recall_and_f1_match_hand_computed_values() -> None:
    matrix = np.array([[5, 1, 0],   # actual 0: 5 right, 1 taken for a 1
                       [2, 3, 1],   # actual 1: 3 right
                       [0, 0, 4]])  # actual 2: all right
    actual = np.repeat(np.arange(3), matrix.sum(1))
    predicted = np.concatenate([np.repeat(np.arange(3), row) for row in matrix])
    assert (confusion_matrix(actual, predicted, 3) == matrix).all()
    report = per_class_report(matrix, ["a", "b", "c"])
    precision, recall = [5 / 7, 3 / 4, 4 / 5], [5 / 6, 3 / 6, 4 / 4]
    f1 = [10 / 13, 0.6, 8 / 9]  # 2pr / (p + r), worked out per class
    assert report["precision"].tolist() == pytest.approx(precision, abs=1e-6)
    assert report["recall"].tolist() == pytest.approx(recall, abs=1e-6)
    assert report["f1"].tolist() == pytest.approx(f1, abs=1e-6)
    assert report["support"].tolist() == [6, 6, 4]
    assert report["f1"].mean() == pytest.approx((10 / 13 + 0.6 + 8 / 9) / 3, abs=1e-6)


def test_a_class_never_predicted_has_zero_precision_not_an_error() -> None:
    report = per_class_report(np.array([[2, 0], [1, 0]]), ["a", "b"])
    assert report["precision"].tolist() == [pytest.approx(2 / 3, abs=1e-6), 0.0]
    assert report["f1"].tolist()[1] == 0.0


def test_random_shift_moves_each_image_by_its_own_offset_and_keeps_all_ink() -> None:
    torch.manual_seed(0)
    n, background = 64, -0.5
    images = torch.full((n, 1, 28, 28), background)
    rows = torch.randint(MAX_SHIFT_PX, 28 - MAX_SHIFT_PX - 2, (n,))
    cols = torch.randint(MAX_SHIFT_PX, 28 - MAX_SHIFT_PX - 2, (n,))
    for i in range(n):  # a 3x3 blot of ink, at least MAX_SHIFT_PX from every border
        images[i, 0, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3] = torch.arange(9.0).view(3, 3) + 1
    shifted = random_shift(images, background)
    assert shifted.shape == images.shape
    offsets = set()
    for i in range(n):
        ink = torch.nonzero(shifted[i, 0] != background)
        assert len(ink) == 9, "ink was lost or smeared"
        dy, dx = (ink.min(0).values - torch.stack([rows[i], cols[i]])).tolist()
        assert -MAX_SHIFT_PX <= dy <= MAX_SHIFT_PX and -MAX_SHIFT_PX <= dx <= MAX_SHIFT_PX
        assert torch.equal(shifted[i, 0, rows[i] + dy:rows[i] + dy + 3, cols[i] + dx:cols[i] + dx + 3],
                           images[i, 0, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3])  # moved whole, not resampled
        offsets.add((dy, dx))
    assert len(offsets) > 10, "the images of a batch share their offsets"


def test_random_affine_turns_each_image_its_own_way_and_keeps_the_background() -> None:
    background = -0.4
    images = torch.full((64, 1, 28, 28), background)
    images[:, :, 6:22, 12:16] = 2.0  # an upright bar in the middle
    torch.manual_seed(0)
    turned = random_affine(images, background, max_degrees=30, max_scale=0.1)
    assert torch.allclose(turned[:, :, :3], torch.full_like(turned[:, :, :3], background))  # the margins stay blank
    ink = (turned - background).clamp(min=0)
    mass = ink.sum(dim=(1, 2, 3)) / (images - background).sum(dim=(1, 2, 3))
    assert ((mass > 0.75) & (mass < 1.3)).all()  # scaled by at most 10% each way: area within about 21%
    assert len({tuple(i.flatten().round(decimals=2).tolist()) for i in turned}) == len(images)
    unchanged = random_affine(images, background, max_degrees=0, max_scale=0)
    assert torch.allclose(unchanged, images, atol=1e-5)


