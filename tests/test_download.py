"""download: sources in order, checksum verification, nothing written on failure."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.common.errors import PipelineError
from pipeline.data.raw import FILES, MANIFEST, read_manifest
from pipeline.data.sources import DATASETS, dataset_spec, fetch_dataset, reachable
from stages import download
from tests.helpers import idx_header

MNIST = DATASETS["mnist"]


def run_download(tmp_path: Path, params: str, *extra: str) -> tuple[int, str, Path]:
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "raw"
    result = CliRunner().invoke(download.main, ["--params", str(tmp_path / "params.yaml"), "--out", str(out),
                                                "--offline", *extra])
    return result.exit_code, result.output, out


def test_bundled_mnist_is_verified_and_decompressed(tmp_path: Path) -> None:
    code, output, out = run_download(tmp_path, f"dataset: mnist\ndata_dir: {tmp_path / 'empty'}\n")
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
    source = fetch_dataset(MNIST, str(local), tmp_path, offline=True)
    assert source == str(local)
    assert all((tmp_path / name).is_file() for name in FILES)


def test_incomplete_local_dir_is_skipped(tmp_path: Path) -> None:
    local = tmp_path / "partial"
    local.mkdir()
    shutil.copy(MNIST.bundled_dir / "t10k-labels-idx1-ubyte.gz", local)
    assert fetch_dataset(MNIST, str(local), tmp_path, offline=True) == str(MNIST.bundled_dir)


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


def test_custom_dataset_uses_md5sums(tiny_dataset: Path, tmp_path: Path) -> None:
    spec = dataset_spec("custom", str(tiny_dataset))
    assert fetch_dataset(spec, str(tiny_dataset), tmp_path) == str(tiny_dataset)
    assert (tmp_path / "t10k-labels-idx1-ubyte").stat().st_size == 8 + 300


def test_custom_dataset_needs_md5sums(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="MD5SUMS: not found"):
        dataset_spec("custom", str(tmp_path))
    (tmp_path / "MD5SUMS").write_bytes(b"0" * (65 * 1024))
    with pytest.raises(PipelineError, match="MD5SUMS: larger than 65,536 bytes"):
        dataset_spec("custom", str(tmp_path))


def test_no_source_lists_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no source has all four files .*tried: .*fashion-mnist"):
        fetch_dataset(replace(DATASETS["fashion-mnist"], system_dirs=(tmp_path / "fashion-mnist",)),
                      str(tmp_path / "none"), tmp_path, offline=True)


def test_a_host_that_never_answers_is_given_up_after_the_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    waiting = []
    for _ in range(3):  # fill the accept queue: further connection attempts get no answer at all
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        waiting.append(client)
    try:
        assert given_up(f"http://127.0.0.1:{port}/", timeout=1.0)
    finally:
        for sock in (*waiting, server):
            sock.close()


def given_up(url: str, timeout: float) -> bool:
    """Whether `reachable(url, timeout)` says no, waiting on its answer with a deadline only a hang reaches."""
    answer: list[bool] = []
    probe = threading.Thread(target=lambda: answer.append(reachable(url, timeout=timeout)), daemon=True)
    probe.start()
    probe.join(timeout=60)
    assert answer, f"reachable({url!r}, timeout={timeout}) still waiting after 60 s"
    return not answer[0]


def test_a_refused_connection_is_given_up() -> None:
    assert given_up("http://127.0.0.1:9/", timeout=5.0)


def test_bad_dataset_param_stops_before_work(tmp_path: Path) -> None:
    code, output, out = run_download(tmp_path, "dataset: cifar10\ndata_dir: ''\n")
    assert code == 1
    assert "'dataset' must be one of mnist, fashion-mnist, custom, got 'cifar10'" in output
    assert not out.exists()


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="no dataset-fashion-mnist")
def test_fashion_mnist_from_debian(tmp_path: Path) -> None:
    source = fetch_dataset(DATASETS["fashion-mnist"], str(tmp_path / "none"), tmp_path, offline=True)
    assert source == "/usr/share/datasets/fashion-mnist"
    assert all((tmp_path / name).is_file() for name in FILES)


def write_gzip(path: Path, header: bytes, zeros: int) -> Path:
    """A gzip file holding `header` and then `zeros` zero bytes, written in chunks (never held whole)."""
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(header)
        chunk = bytes(1 << 20)
        for start in range(0, zeros, len(chunk)):
            fh.write(chunk[: min(len(chunk), zeros - start)])
    return path


def bomb_folder(folder: Path, header: bytes, zeros: int) -> Path:
    """MNIST from the bundled copy, but train-images replaced by a small gzip that expands to `zeros` bytes."""
    shutil.copytree(MNIST.bundled_dir, folder)
    write_gzip(folder / "train-images-idx3-ubyte.gz", header, zeros)
    return folder


def test_gzip_bomb_is_refused_after_the_bytes_its_header_announces(tmp_path: Path) -> None:
    folder = bomb_folder(tmp_path / "bomb", idx_header(0x803, 60000, 28, 28), 400 * (1 << 20))
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 2 * (1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError, match="has trailing bytes after the 47040016 bytes its header announces"):
            fetch_dataset(MNIST, str(folder), tmp_path, offline=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak {peak} bytes"


@pytest.mark.parametrize(("header", "message"), [
    (idx_header(0x803, 100_000_000, 28, 28), "header says 100000000x28x28: more than 1,000,000 items"),
    (idx_header(0x803, 100, 32, 32), "header says 100x32x32: expected images of 28x28"),
    (idx_header(0x801, 100), "header says 100: expected images of 28x28"),
])
def test_headers_are_checked_before_the_body_is_read(tmp_path: Path, header: bytes, message: str) -> None:
    folder = bomb_folder(tmp_path / "bad", header, 1000)
    code, output, out = run_download(tmp_path, f"dataset: mnist\ndata_dir: {folder}\n")
    assert code == 1 and message in output and output.count("\n") == 1, output
    assert not out.exists()


@contextlib.contextmanager
def files_served(folder: Path) -> Iterator[int]:
    """A local HTTP server of `folder` (a stand-in for the official mirrors); yields its port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(timeout=30)


def test_the_mirrors_are_tried_in_order_and_one_down_or_serving_bad_files_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import torchvision.datasets as tvd

    shutil.copytree(MNIST.bundled_dir, tmp_path / "good")
    (tmp_path / "bad").mkdir()
    for name in (p.name for p in (tmp_path / "good").iterdir()):
        (tmp_path / "bad" / name).write_bytes(b"not the file")
    # torchvision checks each download against its table of the official .gz files' MD5s; ours hold the same
    # bytes once decompressed, in another gzip wrapper, so the table names ours
    monkeypatch.setattr(tvd.MNIST, "resources", [(p.name, hashlib.md5(p.read_bytes()).hexdigest())
                                                 for p in sorted((tmp_path / "good").iterdir())])
    (tmp_path / "out").mkdir()
    with files_served(tmp_path) as port, caplog.at_level("INFO"):
        mirrors = ["http://127.0.0.1:9/", f"http://127.0.0.1:{port}/bad/", f"http://127.0.0.1:{port}/good/"]
        monkeypatch.setattr(tvd.MNIST, "mirrors", mirrors)
        source = fetch_dataset(replace(MNIST, bundled_dir=None), str(tmp_path / "none"), tmp_path / "out")
    assert source == "official mirrors"  # the last source, tried when no folder here has the files
    assert all(hashlib.md5((tmp_path / "out" / name).read_bytes()).hexdigest() == MNIST.md5[name] for name in FILES)
    assert f"mirror {mirrors[0]} unreachable, skipping" in caplog.text
    assert f"mirror {mirrors[1]} failed" in caplog.text


def test_a_copy_on_this_machine_is_used_before_any_mirror_is_contacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> bool:
        raise AssertionError("a mirror was contacted although the bundled copy has the files")

    monkeypatch.setattr("pipeline.data.sources.reachable", no_network)
    (tmp_path / "out").mkdir()
    assert fetch_dataset(MNIST, str(tmp_path / "none"), tmp_path / "out") == str(MNIST.bundled_dir)
