"""The DVC workflow end to end with the real `dvc` and `git`: repro, no-op, branches, diffs, experiments,
queue, push/pull into a fresh clone. Runs on a tiny custom dataset with one-epoch training."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import dvc, git, make_repo, run, set_params

STAGES = ("download", "preprocess", "train", "evaluate", "export")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A committed tiny copy on main with the pipeline reproduced and its lock and metrics committed."""
    root = tmp_path_factory.mktemp("workflow")
    repo = make_repo(root / "repo", tiny_dataset, root / "remote")
    repro = dvc(repo, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in repro.stdout
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline run")
    return repo


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_repro_is_a_noop_when_nothing_changed(repo: Path) -> None:
    assert "Data and pipelines are up to date." in dvc(repo, "repro").stdout
    assert git(repo, "status", "--porcelain") == ""


def test_forced_runs_here_and_in_a_clone_elsewhere_reproduce_the_committed_record(repo: Path,
                                                                                  tmp_path: Path) -> None:
    dvc(repo, "repro", "--force")
    assert git(repo, "status", "--porcelain") == ""
    clone = tmp_path / "elsewhere" / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, "repro")
    assert git(clone, "status", "--porcelain") == "", "the record depends on where the project sits"


def changed_stages(repo: Path) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json").stdout))


@pytest.mark.parametrize(("edited", "stages"), [
    ("stages/download.py", {"download"}),
    ("stages/preprocess.py", {"preprocess"}),
    ("stages/train.py", {"train"}),
    ("stages/evaluate.py", {"evaluate"}),
    ("stages/export.py", {"export"}),
    ("pipeline/evaluation_figures.py", {"evaluate"}),
    ("pipeline/training_record.py", {"train"}),
    ("pipeline/models.py", {"train", "evaluate", "export"}),
    ("pipeline/params.py", {"download", "preprocess", "train"}),
])
def test_editing_code_marks_exactly_the_stages_that_import_it(repo: Path, edited: str, stages: set[str]) -> None:
    path = repo / edited
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"# an edit\n")
        assert changed_stages(repo) == stages
    finally:
        path.write_bytes(original)
    assert changed_stages(repo) == set()


def test_going_back_to_a_params_set_restores_it_from_the_run_cache(repo: Path) -> None:
    old_lr = yaml.safe_load((repo / "params.yaml").read_text())["lr"]
    try:
        set_params(repo, lr=0.0123)
        assert "Running stage 'train'" in dvc(repo, "repro").stdout
        set_params(repo, lr=old_lr)
        back = dvc(repo, "repro").stdout
        for stage in ("train", "evaluate", "export"):
            assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in back, back
        assert git(repo, "status", "--porcelain") == ""
    finally:
        git(repo, "checkout", "-q", "--", ".")
        dvc(repo, "checkout", "-q")


@pytest.mark.parametrize(("values", "stages"), [
    ({"seed": 7}, {"train"}),
    ({"split_seed": 7}, {"preprocess", "train"}),
    ({"lr": 0.02}, {"train"}),
    ({"dataset": "mnist"}, {"download", "train"}),
])
def test_each_param_marks_only_the_stages_that_read_it(repo: Path, values: dict, stages: set[str]) -> None:
    try:
        set_params(repo, **values)
        assert changed_stages(repo) == stages
    finally:
        git(repo, "checkout", "-q", "--", "params.yaml")


def test_a_change_behind_data_dir_reruns_download_and_a_no_op_stays_a_no_op(repo: Path, tiny_dataset: Path,
                                                                         tmp_path: Path) -> None:
    local = tmp_path / "my-digits"
    shutil.copytree(tiny_dataset, local)
    try:
        set_params(repo, data_dir=str(local))
        assert "Running stage 'download'" in dvc(repo, "repro").stdout
        assert "Data and pipelines are up to date." in dvc(repo, "repro").stdout
        with (local / "MD5SUMS").open("a") as fh:
            fh.write("\n")  # a change to the folder that leaves the verified files as they were
        assert changed_stages(repo) == {"download"}
        rerun = dvc(repo, "repro").stdout
        assert "Running stage 'download'" in rerun and "Stage 'preprocess' didn't change" in rerun
        (local / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
        failed = dvc(repo, "repro", check=False)
        assert failed.returncode != 0 and "checksum mismatch for t10k-labels-idx1-ubyte" in failed.stderr
    finally:
        git(repo, "checkout", "-q", "--", ".")
        dvc(repo, "checkout", "-q", "--force")


def test_a_misspelt_key_added_by_hand_stops_train_in_one_line(repo: Path) -> None:
    try:
        with (repo / "params.yaml").open("a") as fh:
            fh.write("lrr: 0.01\n")
        failed = dvc(repo, "repro", check=False)
        assert failed.returncode != 0
        assert "Error: params.yaml: unknown key 'lrr' (did you mean 'lr'?)" in failed.stderr
        assert "Running stage 'train'" in failed.stdout and "Traceback" not in failed.stderr
    finally:
        git(repo, "checkout", "-q", "--", ".")
        assert "Stage 'train' is cached" in dvc(repo, "repro").stdout
        assert git(repo, "status", "--porcelain") == ""


def test_metrics_are_committed_and_shown(repo: Path) -> None:
    tracked = git(repo, "ls-files", "metrics").split()
    assert {"metrics/eval.json", "metrics/export.json", "metrics/train.json",
            "metrics/eval/confusion.csv", "metrics/train/val_acc.tsv", "metrics/train/curves.png"} <= set(tracked)
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]
    assert metrics["metrics/eval.json"]["data"]["accuracy"] > 0.5
    assert metrics["metrics/export.json"]["data"]["agree"] is True
    assert metrics["metrics/train.json"]["data"]["epochs_run"] == 1


def test_plots_render_offline(repo: Path, tmp_path: Path) -> None:
    dvc(repo, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "confusion" in html.lower()
    assert len(list((tmp_path / "plots").rglob("*.png"))) == 3


def test_branch_with_other_lr_runs_only_downstream_stages_and_diffs(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "faster-lr")
    try:
        old_lr = yaml.safe_load((repo / "params.yaml").read_text())["lr"]
        set_params(repo, lr=0.01)
        repro = dvc(repo, "repro").stdout
        assert "Running stage 'download'" not in repro and "Running stage 'preprocess'" not in repro
        assert "Running stage 'train'" in repro
        git(repo, "commit", "-qam", "lr 0.01")
        params = json.loads(dvc(repo, "params", "diff", "main", "--json").stdout)
        assert params["params.yaml"]["lr"]["old"] == old_lr
        assert params["params.yaml"]["lr"]["new"] == 0.01
        metrics = json.loads(dvc(repo, "metrics", "diff", "main", "--json").stdout)
        assert "accuracy" in metrics["metrics/eval.json"]
        markdown = dvc(repo, "params", "diff", "main", "--md").stdout
        assert markdown.startswith("| Path") and "| params.yaml | lr " in markdown
    finally:
        git(repo, "checkout", "-q", "main")
        dvc(repo, "checkout", "-q")


def test_experiment_with_set_param_appears_in_exp_show(repo: Path) -> None:
    dvc(repo, "exp", "run", "-n", "lr-002", "-S", "lr=0.002", "-S", "model=mlp")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    ours = [e for e in experiments if e.get("name") == "lr-002"]
    assert ours, shown
    data = ours[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["lr"] == 0.002
    assert data["metrics"]["metrics/eval.json"]["data"]["accuracy"] > 0
    dvc(repo, "exp", "apply", "lr-002")
    assert "lr: 0.002" in (repo / "params.yaml").read_text()
    git(repo, "checkout", "-q", "--", ".")
    dvc(repo, "checkout", "-q")


def test_two_queued_experiments_run_side_by_side(repo: Path) -> None:
    for lr in ("0.003", "0.005"):
        dvc(repo, "exp", "run", "--queue", "-n", f"q-{lr}", "-S", f"lr={lr}")
    dvc(repo, "queue", "start", "-j", "2")
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            status = dvc(repo, "queue", "status").stdout
            if status.count("Success") + status.count("Failed") >= 2:
                break
            time.sleep(3)
        assert status.count("Success") == 2, status
    finally:
        dvc(repo, "queue", "stop", check=False)
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = {exp.get("name") for rev in shown for exp in (rev.get("experiments") or [])}
    assert {"q-0.003", "q-0.005"} <= names


def test_push_then_pull_into_a_fresh_clone_restores_the_model(repo: Path, tmp_path: Path) -> None:
    dvc(repo, "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    remote = dvc(repo, "remote", "list", "--local").stdout.split()[1]
    dvc(clone, "remote", "modify", "--local", "storage", "url", remote)
    dvc(clone, "pull")
    for artifact in ("models/model.pt", "models/model.onnx", "data/prepared/train.pt"):
        assert md5(clone / artifact) == md5(repo / artifact), artifact
    assert "Data and pipelines are up to date." in dvc(clone, "repro").stdout
