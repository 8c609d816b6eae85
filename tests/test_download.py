"""download: sources in order, checksum verification, nothing written on failure."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.errors import PipelineError
from pipeline.raw import FILES, MANIFEST, read_manifest
from pipeline.sources import DATASETS, dataset_spec, fetch_dataset, reachable
from stages import download

MNIST = DATASETS["mnist"]


def run_download(tmp_path: Path, params: str, *extra: str) -> tuple[int, str, Path]:
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "raw"
    result = CliRunner().invoke(download.main, ["--params", str(tmp_path / "params.yaml"), "--out", str(out),
                                                "--offline", *extra])
    return result.exit_code, result.output, out


def test_bundled_mnist_is_verified_and_decompressed(tmp_path: Path) -> None:
    code, output, out = run_download(tmp_path, "dataset: mnist\ndata_dir: ''\n")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, MANIFEST])
    for name in FILES:
        assert hashlib.md5((out / name).read_bytes()).hexdigest() == MNIST.md5[name]
    manifest = read_manifest(out)
    assert manifest["dataset"] == "mnist" and manifest["classes"] == list(MNIST.classes)
    assert manifest["md5"] == MNIST.md5 and "LeCun" in manifest["credit"]


def test_local_dir_is_tried_before_bundled_copy(tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(MNIST.bundled_dir, local)
    files, source = fetch_dataset(MNIST, str(local), offline=True)
    assert source == str(local)
    assert set(files) == set(FILES)


def test_incomplete_local_dir_is_skipped(tmp_path: Path) -> None:
    local = tmp_path / "partial"
    local.mkdir()
    shutil.copy(MNIST.bundled_dir / "t10k-labels-idx1-ubyte.gz", local)
    _, source = fetch_dataset(MNIST, str(local), offline=True)
    assert source == str(MNIST.bundled_dir)


def test_checksum_mismatch_names_file_and_writes_nothing(tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(MNIST.bundled_dir, local)
    (local / "t10k-labels-idx1-ubyte.gz").unlink()
    (local / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    code, output, out = run_download(tmp_path, f"dataset: mnist\ndata_dir: {local}\n")
    assert code == 1
    assert "checksum mismatch for t10k-labels-idx1-ubyte" in output
    assert output.count("\n") == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]


def test_custom_dataset_uses_md5sums(tiny_dataset: Path) -> None:
    spec = dataset_spec("custom", str(tiny_dataset))
    files, source = fetch_dataset(spec, str(tiny_dataset))
    assert source == str(tiny_dataset)
    assert len(files["t10k-labels-idx1-ubyte"]) == 8 + 300


def test_custom_dataset_needs_md5sums(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="MD5SUMS: not found"):
        dataset_spec("custom", str(tmp_path))
    with pytest.raises(PipelineError, match="needs 'data_dir'"):
        dataset_spec("custom", "")


def test_no_source_lists_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no source has all four files .*tried: .*fashion-mnist"):
        fetch_dataset(replace(DATASETS["fashion-mnist"], system_dirs=(tmp_path / "fashion-mnist",)), offline=True)


def test_offline_detection_is_quick() -> None:
    started = time.monotonic()
    assert not reachable("http://127.0.0.1:9/", timeout=1.0)
    assert time.monotonic() - started < 2


def test_bad_dataset_param_stops_before_work(tmp_path: Path) -> None:
    code, output, out = run_download(tmp_path, "dataset: cifar10\ndata_dir: ''\n")
    assert code == 1
    assert "'dataset' must be one of mnist, fashion-mnist, custom, got 'cifar10'" in output
    assert not out.exists()


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="no dataset-fashion-mnist")
def test_fashion_mnist_from_debian() -> None:
    files, source = fetch_dataset(DATASETS["fashion-mnist"], offline=True)
    assert source == "/usr/share/datasets/fashion-mnist"
    assert len(files) == 4
