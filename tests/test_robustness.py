"""The robustness suite: each corruption is seeded and does what its name says; the stages that make and score it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.corruptions import SUITE, TRAINING, random_corruptions
from pipeline.data.prepared import load_split
from pipeline.robustness.generate import make_suite
from pipeline.robustness.scores import predict_accuracies, summary
from pipeline.robustness.suite_file import Suite, load_suite, save_suite
from tests.helpers import REPO, invoke

ENTRIES = {entry.name: entry for entry in SUITE}


@pytest.fixture(scope="module")
def digits(mnist_arrays: dict[str, torch.Tensor]) -> torch.Tensor:
    """64 real test digits as float pixels N x 1 x 28 x 28 in [0, 1]."""
    return mnist_arrays["test_images"][:64].float().div(255).unsqueeze(1)


def corrupted(name: str, digits: torch.Tensor, seed: int = 0) -> torch.Tensor:
    entry = ENTRIES[name]
    return entry.corrupt(digits, entry.level, torch.Generator().manual_seed(seed))


def ink_centre(images: torch.Tensor) -> torch.Tensor:
    """Each image's centre of mass, N x 2 (row, column)."""
    rows = torch.arange(28.0).view(1, 28, 1)
    mass = images[:, 0]
    total = mass.sum(dim=(1, 2))
    return torch.stack([(mass * rows).sum(dim=(1, 2)) / total, (mass * rows.transpose(1, 2)).sum(dim=(1, 2)) / total],
                       1)


def ink_spread(images: torch.Tensor) -> torch.Tensor:
    """Each image's radius of gyration about its centre of mass."""
    rows = torch.arange(28.0).view(1, 28, 1)
    centre = ink_centre(images)
    mass = images[:, 0]
    squared = (rows - centre[:, 0].view(-1, 1, 1)) ** 2 + (rows.transpose(1, 2) - centre[:, 1].view(-1, 1, 1)) ** 2
    return ((mass * squared).sum(dim=(1, 2)) / mass.sum(dim=(1, 2))).sqrt()


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
            + (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3)))


def background(x: torch.Tensor) -> torch.Tensor:
    return x == 0


# what each corruption must do to real digits `x`, giving `y`
CHECKS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "offset": lambda x, y: (
        torch.testing.assert_close(y[background(x)], torch.full_like(y[background(x)], 0.5)),
        torch.testing.assert_close(y, (x + 0.5).clamp(0, 1))),
    "low_contrast": lambda x, y: torch.testing.assert_close(y.amax(dim=(1, 2, 3)) - y.amin(dim=(1, 2, 3)),
                                                         torch.full((len(x),), 0.3), atol=0.01, rtol=0),
    "gradient": lambda x, y: (
        # the paper now runs from dark to bright across the image, and no ink got darker
        assert_all((y[:, 0] * background(x)[:, 0]).amax(dim=(1, 2)) > 0.6),
        assert_all(y >= x - 1e-6)),
    "fog": lambda x, y: (
        assert_all(y[background(x)].mean() > 0.2),
        assert_all(y >= x),
        assert_all(sharpness(corrupted("fog", torch.zeros_like(x))) < 0.15)),  # a smooth haze, on blank paper
    "invert": lambda x, y: torch.testing.assert_close(y, 1 - x),
    "invert_sides": lambda x, y: (
        torch.testing.assert_close(y[..., :6], 1 - x[..., :6]),
        torch.testing.assert_close(y[..., -6:], 1 - x[..., -6:]),
        torch.testing.assert_close(y[..., 6:-6], x[..., 6:-6])),
    "gaussian_noise": lambda x, y: (
        assert_all((y - x)[background(x)].std() > 0.15),
        assert_all((y - x)[background(x)].std() < 0.35)),
    "shot_noise": lambda x, y: (
        assert_all((y != x)[background(x)].float().mean() > 0.1),
        assert_all(abs(float(y.mean() - x.mean())) < 0.1)),
    "salt_and_pepper": lambda x, y: (
        assert_all(abs(float(((y == 0) | (y == 1)).float().mean() - ((x == 0) | (x == 1)).float().mean())) < 0.2),
        assert_all(0.05 < float((y == 1).float().mean() - (x == 1).float().mean()) < 0.1),
        assert_all(((y == x) | (y == 0) | (y == 1)).all())),
    "gaussian_blur": lambda x, y: (
        assert_all(sharpness(y).mean() < 0.7 * sharpness(x).mean()),
        torch.testing.assert_close(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.02, atol=0)),
    "motion_blur": lambda x, y: assert_all(sharpness(y).mean() < 0.7 * sharpness(x).mean()),
    "glass_blur": lambda x, y: (
        assert_all(sharpness(y).mean() < 0.85 * sharpness(x).mean()),
        torch.testing.assert_close(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.15, atol=0)),
    "line": lambda x, y: assert_only_adds_ink(x, y, 20),
    "dotted_line": lambda x, y: assert_only_adds_ink(x, y, 8),
    "zigzag": lambda x, y: assert_only_adds_ink(x, y, 20),
    "blots": lambda x, y: assert_only_adds_ink(x, y, 10),
    "stripes": lambda x, y: (
        assert_all(y <= x),
        # every 4th row or column is blank
        assert_all(torch.stack([(y[i, 0] == 0).all(dim=1).sum() + (y[i, 0] == 0).all(dim=0).sum()
                                for i in range(len(y))]) >= 7)),
    "outline": lambda x, y: (
        # the middle of the thickest strokes goes dark, their edges light
        assert_all(y[x > 0.99].mean() < 0.5 * y[(x > 0.1) & (x < 0.9)].mean()),
        assert_all(y.amax(dim=(1, 2, 3)) == 1)),
    "rotate": lambda x, y: assert_all((ink_spread(y) - ink_spread(x)).abs() < 0.6),
    "scale": lambda x, y: torch.testing.assert_close(ink_spread(y) / ink_spread(x), torch.full((len(x),), 0.7),
                                                     atol=0.05, rtol=0),
    "shear": lambda x, y: assert_all((y - x).abs().sum(dim=(1, 2, 3)) > 5),
    # 3 px, less where ink leaves the frame
    "shift": lambda x, y: (
        assert_all(abs(float((ink_centre(y) - ink_centre(x)).norm(dim=1).median()) - 3) < 0.1),
        assert_all(((ink_centre(y) - ink_centre(x)).norm(dim=1) - 2.7).abs() < 0.35)),
}


def assert_all(condition: torch.Tensor | bool) -> None:
    assert bool(torch.as_tensor(condition).all())


def assert_only_adds_ink(x: torch.Tensor, y: torch.Tensor, pixels: int) -> None:
    """`y` is `x` with ink added (never taken away), at least `pixels` changed pixels per image on average."""
    assert_all(y >= x)
    assert (y > x + 0.5).sum(dim=(1, 2, 3)).float().mean() >= pixels


def test_every_corruption_of_the_suite_has_a_check() -> None:
    assert sorted(CHECKS) == sorted(ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_corruption_changes_the_image_as_its_name_says(name: str, digits: torch.Tensor) -> None:
    out = corrupted(name, digits)
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    CHECKS[name](digits, out)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_corruption_is_deterministic_for_its_seed(name: str, digits: torch.Tensor) -> None:
    first, again = corrupted(name, digits, seed=7), corrupted(name, digits, seed=7)
    assert torch.equal(first, again)
    if name not in ("offset", "low_contrast", "invert", "invert_sides", "outline", "scale", "gaussian_blur"):
        assert not torch.equal(first, corrupted(name, digits, seed=8)), "another seed, the same draw"


def test_rotation_turns_an_upright_bar_by_its_angle() -> None:
    bar = torch.zeros(2, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1
    turned = ENTRIES["rotate"].corrupt(bar, ENTRIES["rotate"].level, torch.Generator().manual_seed(0))
    for image in turned[:, 0]:
        rows, cols = torch.nonzero(image > 0.5, as_tuple=True)
        slope = np.polyfit(rows.float().numpy(), cols.float().numpy(), 1)[0]  # columns per row along the bar
        assert abs(abs(np.degrees(np.arctan(slope))) - 23) < 2, slope


def test_training_corrupts_the_share_it_is_asked_for(digits: torch.Tensor) -> None:
    torch.manual_seed(0)
    many = digits.repeat(8, 1, 1, 1)
    out = random_corruptions(many, 0.5)
    changed = (out != many).flatten(1).any(1).float().mean()
    assert 0.35 < float(changed) < 0.6  # a few draws change nothing visible (a line off the digit's pixels: no)
    assert torch.equal(random_corruptions(many, 0.0), many)
    assert all(entry.trained == (entry.corrupt in TRAINING) for entry in SUITE)
    assert any(not entry.trained for entry in SUITE), "the suite keeps held-out corruptions"


def test_suite_is_the_same_for_the_same_seed_and_reads_back(prepared: Path, tmp_path: Path) -> None:
    test = load_split(prepared / "test.npz")
    suite = make_suite(test, 12, seed=3)
    assert suite.images.shape == (len(SUITE), 12, 28, 28) and suite.images.dtype == np.uint8
    assert suite.prepared.shape == (len(SUITE), 12, 2, 28, 28) and suite.prepared.dtype == np.float32
    assert set(np.unique(suite.readings)) <= {1, 2}  # every corrupted digit is found, some read two ways
    assert not suite.prepared[suite.readings == 1][:, 1].any()  # an absent reading is blank
    again = make_suite(test, 12, seed=3)
    assert np.array_equal(suite.images, again.images) and np.array_equal(suite.prepared, again.prepared)
    save_suite(tmp_path / "suite", suite)
    read = load_suite(tmp_path / "suite")
    assert np.array_equal(read.images, suite.images) and np.array_equal(read.readings, suite.readings)
    assert read.index == json.loads(json.dumps(suite.index))
    entries = read.index["corruptions"]
    assert [e["name"] for e in entries] == [e.name for e in SUITE]
    assert [e["trained"] for e in entries] == [e.trained for e in SUITE]


def test_predict_path_counts_the_reading_the_model_is_surest_of() -> None:
    """Three images, read once, twice and not at all (no digit found): the surer reading decides the second."""
    prepared = np.zeros((1, 3, 2, 28, 28), dtype=np.float32)
    prepared[0, 0, 0, 0, 0] = 1  # image 0: one reading, that says class 1
    prepared[0, 1, 0, 0, 0], prepared[0, 1, 1, 0, 0] = 2, 3  # image 1: class 2 unsure, class 3 sure
    suite = Suite(np.zeros((1, 3, 28, 28), np.uint8), prepared, np.array([[1, 2, 0]], np.uint8),
                  np.array([1, 3, 0]), {})

    def logits_of(pixels: np.ndarray) -> np.ndarray:  # a class from the first pixel, surer for class 3
        logits = np.zeros((len(pixels), 10), dtype=np.float32)
        classes = pixels[:, 0, 0, 0].astype(int)
        logits[np.arange(len(pixels)), classes] = np.where(classes == 3, 9.0, 1.0)
        return logits

    assert predict_accuracies(logits_of, suite) == [2 / 3]  # image 2 had no digit found: wrong


def test_summary_reports_the_held_out_mean_beside_the_mean() -> None:
    index = {"corruptions": [{"name": "a", "family": "f", "trained": True},
                             {"name": "b", "family": "f", "trained": False},
                             {"name": "c", "family": "g", "trained": False}]}
    scores = summary(index, [1.0, 0.5, 0.9])
    assert scores["mean"] == 0.8 and scores["held_out_mean"] == 0.7
    assert scores["family"] == {"f": 0.75, "g": 0.9} and scores["corruption"] == {"a": 1.0, "b": 0.5, "c": 0.9}


def test_corrupt_and_robustness_stages_score_the_exported_model(prepared: Path, exported: Path,
                                                                tmp_path: Path) -> None:
    from stages import corrupt, robustness

    result = invoke(corrupt.main, "--data", prepared, "--out", tmp_path / "suite", "--images", 20)
    assert result.exit_code == 0, result.output
    result = invoke(robustness.main, "--model", exported / "model.onnx", "--suite", tmp_path / "suite",
                    "--metrics", tmp_path / "robustness.json", "--plots-dir", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "robustness.json").read_text())
    assert report["images_per_corruption"] == 20
    for path in ("direct", "predict"):
        assert sorted(report[path]["corruption"]) == sorted(ENTRIES)
        assert 0 <= report[path]["held_out_mean"] <= 1 and 0 <= report[path]["mean"] <= 1
        assert sorted(report[path]["family"]) == sorted({e.family for e in SUITE})
    rows = (tmp_path / "plots" / "per_corruption.csv").read_text().splitlines()
    assert rows[0] == "corruption,family,trained,path,accuracy" and len(rows) == 1 + 2 * len(SUITE)


def test_robustness_stage_reports_a_missing_suite_in_one_line(exported: Path, tmp_path: Path) -> None:
    from stages import robustness

    result = invoke(robustness.main, "--model", exported / "model.onnx", "--suite", tmp_path / "none",
                    "--metrics", tmp_path / "robustness.json")
    assert result.exit_code != 0
    assert "suite.json: not found (run the corrupt stage)" in result.output
    assert not (tmp_path / "robustness.json").exists()


def test_robustness_stage_imports_no_torch() -> None:
    code = "import sys, stages.robustness; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "False"


def test_the_results_page_says_which_corruptions_training_sees_as_the_code_does() -> None:
    """docs/results.md's robustness table names every corruption of the suite, its level, and trained or held out."""
    rows = [[cell.strip().strip("`*") for cell in line.split("|")[1:-1]]
            for line in (REPO / "docs" / "results.md").read_text().splitlines() if line.startswith("| ")]
    table = {cells[1]: (cells[0], float(cells[2]), cells[3])
             for cells in rows if len(cells) == 6 and cells[1] in ENTRIES}
    assert table == {e.name: (e.family, e.level, "trained" if e.trained else "held out") for e in SUITE}


def test_a_standardized_network_sees_a_digit_the_same_on_any_paper_contrast_or_polarity(digits: torch.Tensor) -> None:
    from pipeline.model.networks import build_model

    torch.manual_seed(0)
    network = build_model("cnn", standardize=True).eval()
    without = network[1:]  # the same layers after the standardization: they alone are not invariant
    with torch.inference_mode():
        plain = network(digits)
        for changed in (digits * 0.3 + 0.5, 1 - digits, (1 - digits) * 0.5 + 0.2):
            moved = (network(changed) - plain).abs().max()
            assert moved < 2e-3 and (without(changed) - without(digits)).abs().max() > 10 * moved
