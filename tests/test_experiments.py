"""Experiments as DVC users live them: followed while they run, shared between two clones of a bare origin,
and the model fetched by the repository's URL. Real `dvc`, `git` and `make` on the tiny template copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.train.record import STEP_SIGNAL
from tests.dvc_repo import BIN, ENV, dvc, experiments, git, md5, run
from tests.helpers import wait_until

TRAIN_OUTPUTS = ("models/model.pt", "metrics/train.json", "metrics/train/loss.tsv", "metrics/train/acc.tsv",
                 "metrics/train/lr.tsv", "metrics/train/curves.png")
MODEL_FILES = ("models/model.pt", "models/model.onnx", "models/model.pt2")


def outside_writes() -> set[Path]:
    """Where DVC would put an in-repository remote it resolved against / (the reported bug)."""
    return {path for path in (Path("/dvc-store"), Path("/.dvc")) if path.exists()}


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_a_running_experiment_shows_its_latest_epoch_and_ends_with_the_bytes_of_an_unwatched_run(
        dvc_repo: Path) -> None:
    epochs = 3  # training is held (SIGSTOP) after its first epoch: the rest only has to exist
    process = subprocess.Popen([str(BIN / "dvc"), "exp", "run", "-n", "watched", "-S", "model=cnn", "-S",
                                f"epochs={epochs}"], cwd=dvc_repo, env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    signal_file = dvc_repo / STEP_SIGNAL
    try:
        wait_until(signal_file.exists, process, 300, "signal of a completed epoch")
        train_pid = json.loads(signal_file.read_text())["pid"]
        os.kill(train_pid, signal.SIGSTOP)  # hold training where it is, so what is shown is mid-run
        try:
            live = experiments(dvc_repo)["watched"]["metrics"]["metrics/train.json"]["data"]
            rows = (dvc_repo / "metrics/train/loss.tsv").read_text().splitlines()
        finally:
            os.kill(train_pid, signal.SIGCONT)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert 1 <= live["epochs_run"] < epochs and live["best_epoch"] <= live["epochs_run"], live
    assert len(rows) == 1 + live["epochs_run"] and rows[0].split("\t") == ["epoch", "train", "val", "trained_on"]
    assert not signal_file.exists()
    assert json.loads((dvc_repo / "metrics/train.json").read_text())["epochs_run"] == epochs
    watched = {path: md5(dvc_repo / path) for path in TRAIN_OUTPUTS}
    dvc(dvc_repo, "repro", "--force", "train")  # the same params again, with nobody watching
    assert {path: md5(dvc_repo / path) for path in TRAIN_OUTPUTS} == watched


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_an_experiment_shared_as_the_docs_say_reaches_a_second_clone_exactly_and_the_model_by_url(
        dvc_repo: Path, tmp_path: Path) -> None:
    before = outside_writes()
    alice, bob, origin, team = dvc_repo, tmp_path / "bob", tmp_path / "origin.git", tmp_path / "team-remote"
    (alice / ".dvc" / "config.local").unlink()  # the template's test remote: back to the project's own config
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    # docs/experiments.md, "Sharing": a team remote, committed as the default, and the record published to it
    dvc(alice, "remote", "add", "-d", "team", str(team))
    run(alice, "make", "--no-print-directory", "-o", "setup", "publish")
    git(alice, "commit", "-qam", "Team remote, and the record in it and in dvc-store/")
    git(alice, "remote", "add", "origin", str(origin))
    git(alice, "push", "-q", "origin", "main")

    dvc(alice, "exp", "run", "-n", "shared", "-S", "lr=0.002")
    dvc(alice, "exp", "push", "origin", "shared")
    run(tmp_path, "git", "clone", "-q", str(origin), str(bob))
    run(bob, "make", "--no-print-directory", "-o", "setup", "repro")  # the record offline, the data rebuilt
    assert git(bob, "status", "--porcelain") == ""
    dvc(bob, "exp", "pull", "origin", "shared")
    assert experiments(bob, "-A")["shared"]["params"]["params.yaml"]["data"]["lr"] == 0.002
    dvc(bob, "exp", "apply", "shared")
    dvc(bob, "pull", "train", "export")
    for path in MODEL_FILES:
        assert md5(bob / path) == md5(alice / path), path

    # a user who never clones: main's model by the bare origin's URL, through the team remote
    dvc(tmp_path, "get", str(origin), "models/model.onnx", "-o", str(tmp_path / "fetched.onnx"))
    lock = yaml.safe_load(run(alice, "git", "show", "main:dvc.lock").stdout)
    onnx = next(out for out in lock["stages"]["export"]["outs"] if out["path"] == "models/model.onnx")
    assert md5(tmp_path / "fetched.onnx") == onnx["md5"]
    assert outside_writes() == before


def test_without_a_team_remote_dvc_get_fails_in_one_line_and_the_store_in_git_serves_the_model(
        dvc_repo: Path, tmp_path: Path) -> None:
    before = outside_writes()
    (dvc_repo / ".dvc" / "config.local").unlink()  # the template's test remote: back to the project's own config
    run(dvc_repo, "make", "--no-print-directory", "-o", "setup", "publish")  # into dvc-store/, in the repository
    git(dvc_repo, "commit", "-qm", "Record")
    origin = tmp_path / "origin.git"
    run(tmp_path, "git", "clone", "-q", "--bare", str(dvc_repo), str(origin))

    failed = dvc(tmp_path, "get", str(origin), "models/model.onnx", check=False)
    assert failed.returncode != 0 and "No storage files available: 'models/model.onnx'" in failed.stderr
    assert not (tmp_path / "model.onnx").exists()
    # docs/reproducibility.md: the record's files are in git, under their md5 from dvc.lock
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    onnx = next(out for out in lock["stages"]["export"]["outs"] if out["path"] == "models/model.onnx")["md5"]
    dvc(tmp_path, "get", str(origin), f"dvc-store/files/md5/{onnx[:2]}/{onnx[2:]}", "-o", "model.onnx")
    assert md5(tmp_path / "model.onnx") == onnx
    assert outside_writes() == before
