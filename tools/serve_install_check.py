"""Check a serving-only install (`pip install -c constraints.txt ".[serve]"`): run it with that environment's Python.

Fails unless PyTorch is absent there, `python -m stages.predict` reads real MNIST test digits drawn as PNG files
(dark on light, five times their size), and `python -m stages.serve` answers POST /predict with an image and
with JSON pixels. The commands run from a temporary folder, so the installed package is what runs, not this
checkout. Needs only the serve group's packages (numpy, Pillow) and the standard library.

    .venv-serve/bin/python tools/serve_install_check.py --model models/model.onnx
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "bundled" / "mnist"
DIGITS = 20


def test_digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST test images and labels, from the bundled IDX files (header skipped)."""
    images = np.frombuffer(gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16)
    labels = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8)
    return images.reshape(-1, 28, 28)[:count], labels[:count]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - image).resize((140, 140), Image.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


def check_predict(model: Path, work: Path, images: np.ndarray, labels: np.ndarray) -> None:
    files = []
    for index, image in enumerate(images):
        files.append(work / f"digit{index}.png")
        files[-1].write_bytes(png_bytes(image))
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--json", "--model", str(model), *map(str, files)],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    read = [item["label"] for item in json.loads(done.stdout)]
    right = sum(int(label) == int(truth) for label, truth in zip(read, labels, strict=True))
    assert right >= len(labels) - 1, f"predict read {right} of {len(labels)}: {read} for {labels.tolist()}"
    print(f"predict: {right} of {len(labels)} real test digits read right")


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def check_serve(model: Path, work: Path, image: np.ndarray, label: int) -> None:
    server = subprocess.Popen([sys.executable, "-m", "stages.serve", "--model", str(model), "--port", "0"], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # printed once the port is bound; empty if serve died
        assert line.startswith("serving "), server.stderr.read()
        url = line.split(" on ")[1].split(" ")[0] + "predict"
        by_image = post(url, png_bytes(image), "image/png")
        by_pixels = post(url, json.dumps({"pixels": image.tolist()}).encode(), "application/json")
        for answer in (by_image, by_pixels):
            assert answer["label"] == str(label), answer
        print(f"serve: POST /predict read the digit {label} as an image and as JSON pixels")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the exported model.onnx")
    model = parser.parse_args().model.resolve()
    assert importlib.util.find_spec("torch") is None, "PyTorch is installed here: not a serving-only install"
    print("torch: not installed, as it should be")
    images, labels = test_digits(DIGITS)
    with tempfile.TemporaryDirectory() as folder:
        check_predict(model, Path(folder), images, labels)
        check_serve(model, Path(folder), images[0], int(labels[0]))


if __name__ == "__main__":
    main()
