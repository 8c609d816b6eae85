"""preprocess: stratified, deterministic splits; stats; mismatched files rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.common.errors import PipelineError
from pipeline.data.preparation import stratified_split
from pipeline.data.prepared import PreparedData, load_split
from stages import preprocess
from tests.helpers import write_idx


def test_split_sizes_and_disjointness() -> None:
    labels = torch.arange(1000) % 10
    train, val = stratified_split(labels, 137, seed=1)
    assert len(val) == 137 and len(train) == 863
    assert len(set(train.tolist()) | set(val.tolist())) == 1000


def test_split_is_stratified() -> None:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 100, 300, 50, 50, 400, 200, 150, 150, 100])])
    _, val = stratified_split(labels, 200, seed=0)
    counts = torch.bincount(labels[val], minlength=10).float()
    expected = torch.bincount(labels, minlength=10).float() * 200 / len(labels)
    assert (counts - expected).abs().max() < 1


def test_split_is_deterministic_per_seed() -> None:
    labels = torch.arange(500) % 10
    assert torch.equal(stratified_split(labels, 50, 7)[1], stratified_split(labels, 50, 7)[1])
    assert not torch.equal(stratified_split(labels, 50, 7)[1], stratified_split(labels, 50, 8)[1])


def test_val_size_must_leave_training_data() -> None:
    with pytest.raises(PipelineError, match="'val_size' must be between 1 and 9"):
        stratified_split(torch.arange(10), 10, 0)


def run_preprocess(tmp_path: Path, raw: Path, val_size: int = 100) -> tuple[int, str, Path]:
    (tmp_path / "params.yaml").write_text(f"val_size: {val_size}\nsplit_seed: 0\n")
    out = tmp_path / "prepared"
    result = CliRunner().invoke(preprocess.main, ["--params", str(tmp_path / "params.yaml"), "--raw", str(raw),
                                                  "--out", str(out)])
    return result.exit_code, result.output, out


def test_stage_writes_splits_and_stats(tmp_path: Path, tiny_raw: Path) -> None:
    code, output, out = run_preprocess(tmp_path, tiny_raw)
    assert code == 0, output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sizes"] == {"train": 900, "val": 100, "test": 300}
    assert sum(stats["class_counts"]["val"]) == 100
    prepared = PreparedData.load(out)
    assert 0.1 < prepared.normalization.mean < 0.15 and 0.28 < prepared.normalization.std < 0.33
    assert stats["dataset"] == "custom" and prepared.classes == [str(d) for d in range(10)]
    train = load_split(out / "train.npz")
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert tuple(train.images.shape) == (900, 28, 28)


def test_count_mismatch_rejected_and_nothing_written(tmp_path: Path, tiny_raw: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for source in tiny_raw.iterdir():
        (raw / source.name).write_bytes(source.read_bytes())
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.zeros(299, dtype=torch.uint8))
    code, output, out = run_preprocess(tmp_path, raw)
    assert code == 1
    assert "300 images but 299 labels" in output
    assert not out.exists()


def test_wrong_image_size_rejected(tmp_path: Path, tiny_raw: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for source in tiny_raw.iterdir():
        (raw / source.name).write_bytes(source.read_bytes())
    write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(300, 32, 32, dtype=torch.uint8))
    code, output, _ = run_preprocess(tmp_path, raw)
    assert code == 1
    assert "images must be uint8 N x 28 x 28, got uint8 (300, 32, 32)" in output
