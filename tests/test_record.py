"""The record travels: a fresh clone gets the committed model files offline, and a retrain on another platform
ends with a verdict against the committed record."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.verdict.compare import RESTORE, Record, verdict
from stages import verdict as verdict_stage
from tests.dvc_repo import BIN, ENV, dvc, git, run
from tests.helpers import REPO, invoke

MODEL_FILES = ("models/model.pt", "models/model.onnx", "models/model.pt2", "models/model_card.md")


def locked_md5(lock: dict, path: str) -> str:
    return next(out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
                if out["path"] == path)


@pytest.mark.complete  # the real dvc, on a clone of this repository
def test_a_fresh_clone_gets_the_committed_model_files_without_the_authors_cache(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    dvc(clone, "pull", "-r", "storage", "train", "export", "evaluate")  # from dvc-store/ in the clone, nowhere else
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    for path in MODEL_FILES:
        assert hashlib.md5((clone / path).read_bytes()).hexdigest() == locked_md5(lock, path), path
    assert git(clone, "status", "--porcelain") == ""


def test_the_in_repository_store_holds_model_files_only(tmp_path: Path) -> None:
    stored = [path for path in (REPO / "dvc-store").rglob("*") if path.is_file()]
    assert stored, "dvc-store/ is empty: run `make publish`"
    assert sum(path.stat().st_size for path in stored) < 20 * 2**20  # data (110 MB) is never pushed there


def rerun_with_threads(repo: Path, threads: int) -> str:
    env = {**ENV, "OMP_NUM_THREADS": str(threads)}
    done = run(repo, str(BIN / "dvc"), "repro", "--force", "--downstream", "train", env=env)
    return done.stdout


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_a_retrain_on_another_platform_ends_with_a_verdict_and_the_record_comes_back(dvc_repo: Path) -> None:
    committed_model = hashlib.md5((dvc_repo / "models/model.pt").read_bytes()).hexdigest()
    out = rerun_with_threads(dvc_repo, 2)  # the template trained on 1 thread: another platform
    lines = [line.removeprefix("[verdict] ") for line in out.splitlines() if line.startswith("[verdict]")]
    assert lines[0] == "this run trained on another platform than the committed record:", out
    assert lines[1].startswith("  committed: cpu ") and ", 1 thread, " in lines[1]
    assert lines[2].startswith("  this run:  cpu ") and ", 2 threads, " in lines[2]
    assert lines[3].startswith("  test accuracy: committed 0.") and "reproduced 0." in lines[3]
    assert lines[4].startswith(("  within the tolerance of 0.", "  OUTSIDE the tolerance of 0."))
    assert lines[5].startswith("  changed files of the record (") and "metrics/train.json" in lines[5]
    assert lines[6] == f"  to restore the committed record: {RESTORE}"
    run(dvc_repo, "bash", "-c", RESTORE)
    assert git(dvc_repo, "status", "--porcelain") == ""
    assert hashlib.md5((dvc_repo / "models/model.pt").read_bytes()).hexdigest() == committed_model


PLATFORM = {"torch": "2.14.1", "device": "cpu", "device_name": "CPU", "cpu_capability": "AVX2", "threads": 2}


def record(accuracy: float, **platform: object) -> Record:
    return Record({"lr": 0.01}, {**PLATFORM, **platform}, accuracy, round((1 - accuracy) * 10_000))


@pytest.mark.parametrize(("reproduced", "word"), [(0.9951, "within"), (0.9941, "OUTSIDE")])
def test_the_verdict_measures_the_distance_against_the_seed_spread(reproduced: float, word: str) -> None:
    lines = verdict(record(0.9954), record(reproduced, threads=16), (0.0008, "5 seeds"), ["dvc.lock"])
    assert lines[3] == (f"  test accuracy: committed 0.9954 (46 errors), reproduced {reproduced:.4f} "
                        f"({round((1 - reproduced) * 10_000)} errors): {abs(reproduced - 0.9954):.4f} apart")
    assert lines[4].startswith(f"  {word} the tolerance of 0.0008")


def test_an_experiment_is_not_judged_as_a_reproduction() -> None:
    experiment = Record({"lr": 0.008}, PLATFORM, 0.9950, 50)
    assert verdict(record(0.9954), experiment, (0.0008, "5 seeds"), []) == [
        "an experiment, not a reproduction: params differ from the committed record (lr 0.01 -> 0.008); "
        "compare with `dvc metrics diff` or `make compare`"]


def test_a_key_only_one_side_has_is_named_as_none_on_the_other() -> None:
    experiment = Record({"lr": 0.01, "select_after": 2}, PLATFORM, 0.9950, 50)
    committed = Record({"lr": 0.01, "augment": True}, PLATFORM, 0.9954, 46)
    assert "(augment True -> (none); select_after (none) -> 2)" in verdict(committed, experiment, (0.0008, ""), [])[0]


def test_the_same_platform_with_another_result_is_named_as_other_code() -> None:
    lines = verdict(record(0.9954), record(0.9950), (0.0008, "5 seeds"), ["metrics/eval.json"])
    assert lines[0] == "this run trained on the committed record's platform, with other code than the committed record:"
    assert lines[1] == lines[2].replace("this run: ", "committed:")  # the same platform on both lines
    assert lines[4].startswith("  within the tolerance of 0.0008")


def test_with_no_committed_record_the_verdict_says_so_and_nothing_else(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # a repository with no commit yet
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text("lr: 0.01\n")
    (tmp_path / "metrics" / "train.json").write_text('{"platform": {}}')
    (tmp_path / "metrics" / "eval.json").write_text('{"accuracy": 0.99, "errors": 100}')
    monkeypatch.chdir(tmp_path)
    result = invoke(verdict_stage.main, "--tolerance-from", REPO / "bench/results/preset-default.json",
                    "--pipeline", REPO / "dvc.yaml")
    assert (result.exit_code, result.output) == (0, "[verdict] no committed record at HEAD to compare with\n")
