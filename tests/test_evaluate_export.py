"""evaluate, export and predict on a quickly trained model; every bad input refused clearly."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.common.errors import PipelineError
from pipeline.data.prepared import load_split
from pipeline.export.onnx_session import open_session, run_logits
from pipeline.model.batches import predict_logits, to_pixels
from pipeline.model.model_file import read_model_file
from pipeline.model.networks import Normalized, build_model
from pipeline.model.test_time import load_model
from stages import evaluate, export, predict
from tests.helpers import REPO, invoke
from tests.hostile_images import bmp_of_runs, jpeg_of_scans, png_of_chunks


def test_evaluate_measures_the_onnx_file_and_writes_metrics_report_figures_and_card(
        evaluated: Path, exported: Path, prepared: Path) -> None:
    metrics = json.loads((evaluated / "eval.json").read_text())
    assert set(metrics) == {"accuracy", "loss", "precision_macro", "recall_macro", "f1_macro", "errors",
                            "calibration_error", "not_digit"}
    test = load_split(prepared / "test.npz")
    logits = run_logits(open_session(exported / "model.onnx"), to_pixels(test.images).numpy())
    expected = int((logits.argmax(1) != test.labels.numpy()).sum())
    assert metrics["errors"] == expected
    assert metrics["accuracy"] == pytest.approx(1 - expected / len(test))
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), test.labels).item()
    assert metrics["loss"] == pytest.approx(loss, abs=2e-6)
    per_class = pd.read_csv(evaluated / "eval" / "per_class.csv")
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support", "errors"]
    assert per_class["errors"].sum() == metrics["errors"]
    assert per_class["support"].sum() == len(test)
    confusion = pd.read_csv(evaluated / "eval" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(test)
    assert (confusion["actual"] != confusion["predicted"]).sum() == expected
    for image in ("confusion.png", "misclassified.png"):
        assert (evaluated / "eval" / image).read_bytes().startswith(b"\x89PNG")
    card = (evaluated / "model_card.md").read_text()
    assert "Intended use and limits" in card and "Custom dataset: see its own licence." in card
    assert f"accuracy {metrics['accuracy']:.4f} ({expected} errors)" in card
    assert "| `epochs` | `3` |" in card  # the training params, from the ONNX file's metadata


def test_evaluate_imports_no_torch() -> None:
    code = "import sys, stages.evaluate; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_the_inference_model_folds_batchnorm_and_predicts_as_the_trained_network(trained_model: Path,
                                                                              prepared: Path) -> None:
    data = read_model_file(trained_model)
    network = build_model(data["model"], standardize=data["params"]["standardize"])  # at the default width
    network.load_state_dict(data["state_dict"])
    trained = Normalized(network, **data["normalization"]).eval()
    model, _ = load_model(trained_model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    pixels = to_pixels(load_split(prepared / "test.npz").images[:500])
    expected, folded = predict_logits(trained, pixels), predict_logits(model, pixels)
    assert (expected - folded).abs().max() < 1e-4
    assert torch.equal(expected.argmax(1), folded.argmax(1))


def test_export_agrees_with_pytorch_on_every_test_image(exported: Path, trained_model: Path, prepared: Path) -> None:
    """Measured here on all of them; the stage itself checks the first VERIFIED (the ONNX file is evaluated on all)."""
    pixels = to_pixels(load_split(prepared / "test.npz").images)
    model, _ = load_model(trained_model)
    with torch.inference_mode():
        reference = predict_logits(model, pixels).numpy()
    onnx_logits = run_logits(open_session(exported / "model.onnx"), pixels.numpy())
    assert (onnx_logits.argmax(1) == reference.argmax(1)).all()  # measured here, not read from the stage's report
    assert abs(onnx_logits - reference).max() < 1e-4
    report = json.loads((exported / "export.json").read_text())  # and the stage's report says the same
    assert report["agree"] is True
    assert report["images"] == export.VERIFIED
    for name in ("onnx", "torch_export"):
        assert report[name]["disagreements"] == 0
        assert report[name]["max_abs_logit_diff_e6"] < 100  # millionths: under 1e-4
    assert report["onnx_bytes"] == (exported / "model.onnx").stat().st_size


def test_onnx_has_dynamic_batch_and_normalization_inside(exported: Path, trained_model: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    model, _ = load_model(trained_model)
    for batch in (1, 7):
        pixels = torch.rand(batch, 1, 28, 28)
        logits = session.run(None, {"pixels": pixels.numpy()})[0]
        assert logits.shape == (batch, 10)
        assert np.abs(logits - model(pixels).detach().numpy()).max() < 1e-4
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == [str(d) for d in range(10)]


def test_test_time_shifts_are_inside_the_exported_graphs(trained_model: Path, prepared: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "params.yaml").read_text()), "tta_shifts": 4}))
    result = invoke(export.main, "--params", params, "--model", trained_model, "--data", prepared,
                    "--onnx-out", tmp_path / "model.onnx", "--program-out", tmp_path / "model.pt2",
                    "--metrics", tmp_path / "export.json")
    assert result.exit_code == 0, result.output  # ONNX and .pt2 agree with PyTorch
    plain, _ = load_model(trained_model)
    pixels = to_pixels(load_split(prepared / "test.npz").images[:5])
    padded = torch.nn.functional.pad(pixels, (1, 1, 1, 1))
    views = [padded[:, :, 1 + dy:29 + dy, 1 + dx:29 + dx] for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))]
    expected = torch.stack([predict_logits(plain, view) for view in views]).mean(0)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"pixels": pixels.numpy()})[0] - expected.numpy()).max() < 1e-4


def digit_png(image: np.ndarray, path: Path, invert: bool, scale: int) -> Path:
    """Draw a test digit as a person's image: dark on light when `invert`, upscaled `scale` times."""
    picture = Image.fromarray(255 - image if invert else image).resize((28 * scale, 28 * scale), Image.BILINEAR)
    picture.convert("RGB").save(path)
    return path


def test_predict_reads_pngs_of_real_digits_as_the_model_reads_the_digits(
        exported: Path, trained_model: Path, prepared: Path, tmp_path: Path) -> None:
    test = load_split(prepared / "test.npz")
    chosen = range(40)  # the first 40, whatever the model makes of them
    model, _ = load_model(trained_model)
    direct = predict_logits(model, to_pixels(test.images[:40])).argmax(1).tolist()
    files = [digit_png(test.images[i].numpy(), tmp_path / f"d{i}.png", invert=i % 2 == 0, scale=1 + i % 4)
             for i in chosen]
    result = invoke(predict.main, *files, "--model", exported / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
    labels = [int(p["label"]) for p in json.loads(result.output)]
    # a preprocessing bug (polarity, transposition, scale, centring) breaks this agreement
    assert sum(a == b for a, b in zip(labels, direct, strict=True)) >= 37
    assert sum(a == b for a, b in zip(labels, test.labels[:40].tolist(), strict=True)) >= 34


def test_predict_reports_bad_files_and_still_predicts_the_rest(exported: Path, prepared: Path, tmp_path: Path) -> None:
    good = digit_png(load_split(prepared / "test.npz").images[0].numpy(), tmp_path / "good.png", True, 2)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    result = invoke(predict.main, text, good, truncated, blank, tmp_path / "missing.png", "--model",
                    exported / "model.onnx")
    assert result.exit_code == 1
    assert f"{good}: 7 (" in result.output
    assert f"{text}: not an image" in result.output
    assert f"{truncated}: unreadable or truncated image" in result.output
    assert f"{blank}: no digit found" in result.output
    assert f"{tmp_path / 'missing.png'}: not found" in result.output


def test_predict_refuses_absurdly_large_images(tmp_path: Path) -> None:
    from pipeline.inference import digit_image

    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 5000), 0).save(huge)
    with pytest.raises(PipelineError, match="9000x5000 pixels is too large"):
        digit_image.prepare_image(huge)


# predict as a child of its own small process, which then prints the child's peak resident memory (kB)
PEAK_OF_CHILD = ("import resource, subprocess, sys; done = subprocess.run([sys.executable, '-m', 'stages.predict', "
                 "*sys.argv[1:]]); print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
                 "file=sys.stderr); sys.exit(done.returncode)")


def test_predict_reads_a_40_megapixel_page_within_a_gigabyte(exported: Path, prepared: Path, tmp_path: Path) -> None:
    digit = Image.fromarray(255 - load_split(prepared / "test.npz").images[0].numpy()).resize((4000, 4000))
    page = Image.new("RGB", (6300, 6300), (250, 244, 225))  # 39.7 megapixels of cream paper: under the limit
    page.paste(digit, (1000, 1200))
    page.save(tmp_path / "page.png")
    done = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, str(tmp_path / "page.png"), "--model",
                           str(exported / "model.onnx")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(f"{tmp_path / 'page.png'}: 7 ("), done.stdout + done.stderr
    peak_mb = int(done.stderr.split("peak ")[1]) // 1024
    assert peak_mb <= 1024, f"peak {peak_mb} MB"


def test_predict_needs_a_valid_model(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"garbage")
    result = invoke(predict.main, tmp_path / "x.png", "--model", broken)
    assert result.exit_code == 1 and "not a valid ONNX model" in result.output
    result = invoke(predict.main, tmp_path / "x.png", "--model", tmp_path / "absent.onnx")
    assert result.exit_code == 1 and "absent.onnx: not found" in result.output


class Exploit:
    """A pickle that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def bad_model_files(folder: Path, trained_model: Path) -> dict[str, tuple[Path, str]]:
    truncated = folder / "truncated.pt"
    truncated.write_bytes(trained_model.read_bytes()[:2000])
    other = folder / "other.pt"
    data = torch.load(trained_model, weights_only=True)
    data["model"] = "mlp"
    torch.save(data, other)
    malicious = folder / "malicious.pt"
    torch.save({"format": "x", "payload": Exploit(folder / "pwned")}, malicious)
    plain_pickle = folder / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps(Exploit(folder / "pwned")))
    return {
        "truncated": (truncated, "unreadable or truncated model file"),
        "other architecture": (other, "weights do not fit model 'mlp'"),
        "malicious": (malicious, "refused by weights-only loading"),
        "plain pickle": (plain_pickle, "refused by weights-only loading"),
        "missing": (folder / "absent.pt", "absent.pt: not found"),
    }


@pytest.mark.parametrize("case", ["truncated", "other architecture", "malicious", "plain pickle", "missing"])
def test_export_refuses_bad_model_files(case: str, trained_model: Path, prepared: Path, tmp_path: Path) -> None:
    path, message = bad_model_files(tmp_path, trained_model)[case]
    result = invoke(export.main, "--model", path, "--data", prepared, "--onnx-out", tmp_path / "model.onnx",
                    "--program-out", tmp_path / "model.pt2", "--metrics", tmp_path / "export.json")
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".onnx", ".pt2", ".json")) == []


def evaluate_args(model: Path, data: Path, exported: Path, out: Path) -> list[Path | str]:
    return ["--model", model, "--data", data, "--export-metrics", exported / "export.json",
            "--metrics", out / "eval.json", "--plots-dir", out / "eval", "--card", out / "card.md"]


def test_evaluate_refuses_an_onnx_file_it_cannot_use(exported: Path, prepared: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    bare = tmp_path / "bare.onnx"  # a valid model without the export stage's metadata
    model = onnx.load(exported / "model.onnx")
    del model.metadata_props[:]
    onnx.save(model, bare)
    for path, message in ((garbage, "garbage.onnx: not a valid ONNX model"),
                          (bare, "bare.onnx: no classes, model, normalization, not_digit_below, params, "
                                 "tta_shifts in its metadata"),
                          (tmp_path / "absent.onnx", "absent.onnx: not found")):
        result = invoke(evaluate.main, *evaluate_args(path, prepared, exported, tmp_path))
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output
        assert not (tmp_path / "eval.json").exists() and not (tmp_path / "eval").exists()
        assert not (tmp_path / "card.md").exists()


def test_evaluate_refuses_mismatched_test_arrays(exported: Path, prepared: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    np.savez(data / "test.npz", images=np.zeros((10, 28, 28), np.float32), labels=np.zeros(10, np.int64))
    result = invoke(evaluate.main, *evaluate_args(exported / "model.onnx", data, exported, tmp_path))
    assert result.exit_code == 1
    assert "images must be uint8 N x 28 x 28, got float32 (10, 28, 28)" in result.output
    assert not (tmp_path / "eval.json").exists()


def test_predict_reads_16_bit_and_float_images_by_their_range(exported: Path, prepared: Path, tmp_path: Path) -> None:
    digit = np.array(Image.fromarray(255 - load_split(prepared / "test.npz").images[0].numpy()).resize((140, 140)))
    Image.fromarray(digit).save(tmp_path / "8bit.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "16bit.png")
    Image.fromarray(digit.astype(np.float32) / 255, mode="F").save(tmp_path / "float.tif")
    result = invoke(predict.main, tmp_path / "8bit.png", tmp_path / "16bit.png", tmp_path / "float.tif",
                    "--model", exported / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
    read = [(r["label"], r["probability"]) for r in json.loads(result.output)]
    assert read[0][0] == "7" and read[1] == read[0] and read[2][0] == "7"


def test_a_file_that_fails_late_is_its_own_error_and_json_stays_valid(exported: Path, prepared: Path,
                                                                      tmp_path: Path) -> None:
    good = digit_png(load_split(prepared / "test.npz").images[0].numpy(), tmp_path / "good.png", True, 2)
    specks = np.full((1000, 1000), 255, np.uint8)
    specks[100, 100] = specks[900, 850] = 0  # two dust specks: nothing left after scaling to 20x20
    Image.fromarray(specks).save(tmp_path / "specks.png")
    result = CliRunner().invoke(predict.main, [str(tmp_path / "specks.png"), str(good), "--model",
                                               str(exported / "model.onnx"), "--json"])
    assert result.exit_code == 1
    parsed = json.loads(result.stdout)
    assert "no digit found" in parsed[0]["error"] and parsed[1]["label"] == "7"


def test_the_default_model_is_this_projects_wherever_predict_runs(tmp_path: Path) -> None:
    elsewhere = tmp_path / "models"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes(b"not this project's model")  # a relative default would open this
    default = REPO / "models" / "model.onnx"
    done = subprocess.run([sys.executable, "-m", "stages.predict", "digit.png"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    if default.exists():  # after `make repro`: the project's model opens, and the missing image is the error
        assert done.stderr.strip() == "error: digit.png: not found", done.stderr
    else:
        assert str(default) in done.stderr and str(elsewhere) not in done.stderr, done.stderr


def test_predict_closes_what_it_refuses_escapes_file_names_and_survives_a_full_disk(
        exported: Path, prepared: Path, tmp_path: Path) -> None:
    from pipeline.inference.digit_image import load_image

    open_files = len(os.listdir("/proc/self/fd"))
    for _ in range(2000):  # more than the usual limit of 1,024 descriptors
        with pytest.raises(PipelineError, match="is a directory"):
            load_image(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == open_files
    good = digit_png(load_split(prepared / "test.npz").images[0].numpy(), tmp_path / "good.png", True, 2)
    forged = good.rename(tmp_path / "a\nb.png: 1 (1.000)")  # would print a second, made-up result line
    result = invoke(predict.main, forged, "--model", exported / "model.onnx")
    assert result.exit_code == 0 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"{tmp_path}/a\\nb.png: 1 (1.000): 7 ("), result.output
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "stages.predict", str(forged), "--model",
                               str(exported / "model.onnx")], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write the results to standard output (No space left on device)\n"


def test_predict_refuses_a_fifo_at_once_and_its_json_stays_valid(exported: Path, prepared: Path,
                                                                 tmp_path: Path) -> None:
    good = digit_png(load_split(prepared / "test.npz").images[0].numpy(), tmp_path / "good.png", True, 2)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opened for reading, a FIFO without a writer would block for ever
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--json", str(good), str(fifo), str(good),
                           "--model", str(exported / "model.onnx")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    parsed = json.loads(done.stdout)
    assert [r.get("label") for r in parsed] == ["7", None, "7"]
    assert parsed[1]["error"] == f"{fifo}: not a regular file (a FIFO, device or socket); give an image file"


@pytest.mark.parametrize(("name", "make", "message"), [
    ("long.png", lambda p: Image.new("L", (15000, 1), 0).save(p), "15000x1 pixels is too elongated"),
    ("icon.ico", lambda p: Image.new("L", (64, 64), 0).save(p), "not an image of an accepted format"),
])
def test_predict_refuses_elongated_images_and_unlisted_formats_before_decoding(tmp_path: Path, name: str, make,
                                                                               message: str) -> None:
    from pipeline.inference import digit_image

    make(tmp_path / name)
    with pytest.raises(PipelineError, match=message):
        digit_image.prepare_image(tmp_path / name)


def test_a_large_digit_is_reduced_before_its_strokes_are_reshaped(exported: Path, prepared: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.inference import digit_image

    reshaped: list[tuple[int, ...]] = []
    normalize = digit_image.normalize_stroke
    monkeypatch.setattr(digit_image, "normalize_stroke", lambda crop, scale: reshaped.append(crop.shape)
                        or normalize(crop, scale))
    digit = load_split(prepared / "test.npz").images[0].numpy()
    small = digit_image.to_mnist(np.kron(digit, np.ones((4, 4), np.float32)) / 255)  # 112 px: as it is
    large = digit_image.to_mnist(np.kron(digit, np.ones((100, 100), np.float32)) / 255)  # 2800 px: reduced
    session = open_session(exported / "model.onnx")
    labels = run_logits(session, np.stack([small, large])[:, None]).argmax(1)
    assert labels.tolist() == [7, 7]
    assert max(reshaped[0]) > digit_image.WORK_SIDE / 2 and max(reshaped[1]) <= digit_image.WORK_SIDE


@pytest.mark.parametrize("shape", [(3, 3), (37, 91), (280, 280), (5, 1000)])
def test_the_fast_3x3_median_equals_scipys(shape: tuple[int, int]) -> None:
    from scipy import ndimage

    from pipeline.inference.digit_image import _median3

    rng = np.random.default_rng(sum(shape))
    for values in (rng.random(shape, dtype=np.float32), (rng.random(shape) > 0.8).astype(np.float32)):
        assert np.array_equal(_median3(values), ndimage.median_filter(values, size=3, mode="nearest"))


@pytest.mark.parametrize(("name", "data", "message"), [
    ("scans.jpg", jpeg_of_scans(3000), "JPEG of more than 64 scans is refused"),
    ("chunks.png", png_of_chunks(100_000), "PNG of more than 4,096 chunks is refused"),
    ("runs.bmp", bmp_of_runs(2000), "run-length BMP of more than 1,048,576 bytes is refused"),
])
def test_predict_refuses_images_whose_structure_costs_more_than_a_digit_needs(tmp_path: Path, name: str,
                                                                              data: bytes, message: str) -> None:
    from pipeline.inference import digit_image

    (tmp_path / name).write_bytes(data)
    with pytest.raises(PipelineError, match=message):
        digit_image.prepare_image(tmp_path / name)


def test_the_structure_check_passes_what_encoders_write(exported: Path, prepared: Path, tmp_path: Path) -> None:
    from pipeline.inference import digit_image

    pixels = load_split(prepared / "test.npz").images[0].numpy()
    digit = Image.fromarray(255 - np.kron(pixels, np.ones((8, 8), np.uint8)))
    kinds = {"progressive.jpg": {"progressive": True}, "baseline.jpg": {}, "optimized.png": {"optimize": True}}
    for name, options in kinds.items():
        digit.convert("RGB").save(tmp_path / name, **options)
        digit_image.prepare_image(tmp_path / name)  # no refusal
