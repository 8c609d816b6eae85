"""The DVC workflow end to end with the real `dvc` and `git`: repro, no-op, branches, diffs, the queue,
push/pull into a fresh clone (experiments followed live and shared: test_experiments.py). Each test gets its
own copy of a tiny repository (conftest.dvc_repo)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import BIN, ENV, dvc, experiments, git, md5, run, set_params
from tests.helpers import REPO, wait_until
from tools.chart_screenshot import CHROMIUM, rendered_dom


def test_repro_is_a_noop_when_nothing_changed(dvc_repo: Path) -> None:
    assert "Data and pipelines are up to date." in dvc(dvc_repo, "repro").stdout
    assert git(dvc_repo, "status", "--porcelain") == ""


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_a_forced_run_in_another_folder_reproduces_the_committed_record_bit_for_bit_and_says_so(
        dvc_repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "another" / "place"
    elsewhere.parent.mkdir(parents=True)
    dvc_repo.rename(elsewhere)
    out = dvc(elsewhere, "repro", "--force").stdout  # every stage again, in a folder the record was not made in
    assert git(elsewhere, "status", "--porcelain") == "", "a hashed output changed: it is not a pure function"
    assert "[verdict] reproduced the committed record on its own platform (cpu " in out, out


def changed_stages(dvc_repo: Path) -> set[str]:
    return set(json.loads(dvc(dvc_repo, "status", "--json").stdout))


CODE_EDITS = {
    "stages/download.py": {"download"},
    "stages/preprocess.py": {"preprocess"},
    "stages/train.py": {"train"},
    "stages/evaluate.py": {"evaluate"},
    "stages/export.py": {"export"},
    "stages/verdict.py": {"verdict"},
    "pipeline/evaluate/figures.py": {"evaluate"},
    "pipeline/train/record.py": {"train"},
    "pipeline/train/__init__.py": {"train"},
    "pipeline/model/networks.py": {"train", "export"},  # evaluate runs the ONNX file: no model code
    "pipeline/common/params.py": {"download", "preprocess", "train", "export", "verdict"},
    "pipeline/data/sources.py": {"download"},  # the download code is download's alone
    "pipeline/model/test_time.py": {"export"},
    "pipeline/export/onnx_session.py": {"export", "evaluate", "robustness"},
    "pipeline/inference/prediction.py": set(),
    "pipeline/inference/digit_image.py": {"corrupt"},  # the suite holds predict's preparation of each image
    "pipeline/data/corruptions.py": {"corrupt", "train"},
    "stages/robustness.py": {"robustness"},
}


def test_editing_code_marks_exactly_the_stages_that_import_it(dvc_repo: Path) -> None:
    for edited, stages in CODE_EDITS.items():
        path = dvc_repo / edited
        original = path.read_bytes()
        path.write_bytes(original + b"# an edit\n")
        assert changed_stages(dvc_repo) == stages, edited
        path.write_bytes(original)
    (dvc_repo / "pipeline" / "train" / "__pycache__").mkdir(exist_ok=True)
    (dvc_repo / "pipeline" / "train" / "__pycache__" / "loop.cpython-311.pyc").write_bytes(b"a cache")
    assert changed_stages(dvc_repo) == set()  # caches inside a code folder are .dvcignored


# verdict reads the whole file (it tells an experiment from a reproduction by the params); the others their keys
PARAM_CHANGES = [
    ({"seed": 7}, {"train", "verdict"}),
    ({"split_seed": 7}, {"preprocess", "verdict"}),
    ({"lr": 0.02}, {"train", "verdict"}),
    ({"dataset": "mnist"}, {"download", "verdict"}),
    ({"tta_shifts": 8}, {"export", "verdict"}),  # a test-time choice: no retraining (evaluate follows export)
]


def test_each_param_marks_only_the_stages_that_read_it(dvc_repo: Path) -> None:
    committed = (dvc_repo / "params.yaml").read_text()
    for values, stages in PARAM_CHANGES:
        set_params(dvc_repo, **values)
        assert changed_stages(dvc_repo) == stages, values
        (dvc_repo / "params.yaml").write_text(committed)


def test_a_change_behind_data_dir_reruns_download_and_a_no_op_stays_a_no_op(dvc_repo: Path, tiny_dataset: Path,
                                                                         tmp_path: Path) -> None:
    local = tmp_path / "my-digits"
    shutil.copytree(tiny_dataset, local)
    set_params(dvc_repo, data_dir=str(local))
    assert "Running stage 'download'" in dvc(dvc_repo, "repro").stdout
    assert "Data and pipelines are up to date." in dvc(dvc_repo, "repro").stdout
    with (local / "MD5SUMS").open("a") as fh:
        fh.write("\n")  # a change to the folder that leaves the verified files as they were
    assert changed_stages(dvc_repo) == {"download"}
    rerun = dvc(dvc_repo, "repro").stdout
    assert "Running stage 'download'" in rerun and "Stage 'preprocess' didn't change" in rerun
    (local / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    failed = dvc(dvc_repo, "repro", check=False)
    assert failed.returncode != 0 and "checksum mismatch for t10k-labels-idx1-ubyte" in failed.stderr


def test_a_misspelt_key_added_by_hand_is_refused_in_one_line_and_retrains_nothing(dvc_repo: Path) -> None:
    with (dvc_repo / "params.yaml").open("a") as fh:
        fh.write("lrr: 0.01\n")
    failed = dvc(dvc_repo, "repro", check=False)
    assert failed.returncode != 0
    assert "Error: params.yaml: unknown key 'lrr' (did you mean 'lr'?)" in failed.stderr
    assert "Running stage 'verdict'" in failed.stdout and "Running stage 'train'" not in failed.stdout
    assert "Traceback" not in failed.stderr
    git(dvc_repo, "checkout", "-q", "--", "params.yaml")  # the typo fixed: the record stands as it was
    dvc(dvc_repo, "repro")
    assert git(dvc_repo, "status", "--porcelain") == ""


def test_metrics_are_committed_and_shown(dvc_repo: Path) -> None:
    tracked = git(dvc_repo, "ls-files", "metrics").split()
    assert {"metrics/eval.json", "metrics/export.json", "metrics/train.json",
            "metrics/eval/confusion.csv", "metrics/train/acc.tsv", "metrics/train/curves.png"} <= set(tracked)
    shown = json.loads(dvc(dvc_repo, "metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]
    assert metrics["metrics/eval.json"]["data"]["accuracy"] > 0.5
    assert metrics["metrics/train.json"]["data"]["epochs_run"] == 1
    assert metrics["metrics/export.json"]["data"]["agree"] is True


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_plots_diff_draws_its_charts_with_no_network(dvc_repo: Path, tmp_path: Path) -> None:
    dvc(dvc_repo, "plots", "diff", "main", "-o", str(tmp_path / "plots"))
    page = tmp_path / "plots" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text()
    dom = rendered_dom(page, tmp_path / "profile")  # headless Chromium with no name resolution, no route out
    marks = {kind: dom.count(f'class="mark-{kind}') for kind in ("line", "rect", "text")}
    assert marks["line"] >= 5, marks  # the five per-epoch series
    assert marks["rect"] >= 2 and marks["text"] > 20, marks  # confusion matrix, F1 bars, axes
    figures = sorted(path.name for path in (tmp_path / "plots").rglob("*.png"))
    assert len(figures) == 6 and sum(name.startswith("main_") for name in figures) == 3  # 3 per revision


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_a_branch_with_other_lr_reruns_downstream_diffs_and_going_back_restores_from_the_run_cache(
        dvc_repo: Path) -> None:
    git(dvc_repo, "checkout", "-q", "-b", "faster-lr")
    old_lr = yaml.safe_load((dvc_repo / "params.yaml").read_text())["lr"]
    set_params(dvc_repo, lr=0.003)
    repro = dvc(dvc_repo, "repro").stdout
    assert "Running stage 'download'" not in repro and "Running stage 'preprocess'" not in repro
    assert "Running stage 'train'" in repro
    git(dvc_repo, "commit", "-qam", "lr 0.003")
    params = json.loads(dvc(dvc_repo, "params", "diff", "main", "--json").stdout)
    assert params["params.yaml"]["lr"]["old"] == old_lr
    assert params["params.yaml"]["lr"]["new"] == 0.003
    metrics = json.loads(dvc(dvc_repo, "metrics", "diff", "main", "--json").stdout)
    assert "accuracy" in metrics["metrics/eval.json"]
    rows = [line.split() for line in dvc(dvc_repo, "metrics", "diff", "main").stdout.splitlines()[1:]]
    shown_zero = {(row[0], row[1]) for row in rows if row[2:4] == ["0.0", "0.0"]}
    assert rows and all(metrics[path][name] == {"old": 0, "new": 0, "diff": 0} for path, name in shown_zero), rows
    # a row reads 0.0 only where the value is zero: none is too small to show
    markdown = dvc(dvc_repo, "params", "diff", "main", "--md").stdout
    assert markdown.startswith("| Path") and "| params.yaml | lr " in markdown
    run(dvc_repo, sys.executable, "-m", "stages.report", "main")
    report = (dvc_repo / "report" / "report.md").read_text()
    assert re.search(rf"\| params\.yaml +\| lr +\| {old_lr} +\| 0\.003 ", report), report
    assert re.search(r"\| metrics/eval\.json +\| accuracy +\|", report), report
    for image in ("main-curves.png", "workspace-curves.png", "main-confusion.png", "workspace-confusion.png"):
        assert f"]({image})" in report and (dvc_repo / "report" / image).read_bytes().startswith(b"\x89PNG")
    assert md5(dvc_repo / "report" / "main-curves.png") != md5(dvc_repo / "report" / "workspace-curves.png")
    git(dvc_repo, "checkout", "-q", "main")  # back to the params that ran first: restored, not retrained
    back = dvc(dvc_repo, "repro").stdout
    assert "Running stage" not in back, back
    assert "Stage 'train' is cached - skipping run, checking out outputs" in back, back
    assert git(dvc_repo, "status", "--porcelain") == ""


def test_metrics_show_has_robustness_beside_accuracy(dvc_repo: Path) -> None:
    shown = json.loads(dvc(dvc_repo, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    robustness = metrics["metrics/robustness.json"]["data"]
    assert 0 < metrics["metrics/eval.json"]["data"]["accuracy"] <= 1
    for path in ("direct", "predict"):
        assert 0 <= robustness[path]["mean"] <= 1 and 0 <= robustness[path]["held_out_mean"] <= 1


def compare(repo: Path) -> list[str]:
    """`make compare` as a user sees it in 100 columns: its lines."""
    return run(repo, "make", "--no-print-directory", "-o", "setup", "compare",
               env={**ENV, "COLUMNS": "100"}).stdout.splitlines()


def finished_experiments(repo: Path) -> int:
    """Experiments that have ended with a result: DVC writes each one's ref, refs/exps/<2 hex>/<38 hex>/<name>,
    into the repository when it ends (read from the files: no process started to look)."""
    return sum(path.is_file() for path in (repo / ".git" / "refs" / "exps").glob("??/*/*"))


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_one_sweep_command_runs_the_grid_on_two_workers_and_compare_shows_it_with_the_platform_where_it_differs(
        dvc_repo: Path) -> None:
    queued = dvc(dvc_repo, "exp", "run", "--queue", "-S", "lr=0.003,0.005").stdout
    assert queued.count("Queued experiment") == 2, queued
    dvc(dvc_repo, "queue", "start", "-j", "2")
    try:
        wait_until(lambda: finished_experiments(dvc_repo) >= 2, None, 400, "two queued experiments")
        status = dvc(dvc_repo, "queue", "status").stdout
        assert status.count("Success") == 2, status
    finally:
        dvc(dvc_repo, "queue", "stop", check=False)
    grid = experiments(dvc_repo)
    assert sorted(data["params"]["params.yaml"]["data"]["lr"] for data in grid.values()) == [0.003, 0.005]
    compared = compare(dvc_repo)
    assert max(map(len, compared)) <= 100, "\n".join(compared)
    header = next(line.split() for line in compared if "Experiment" in line)
    assert "platform.threads" not in header and "lr" in header, compared  # one platform: no platform column
    assert {"direct.mean", "predict.mean"} <= set(header), "robustness is not beside accuracy:\n" + "\n".join(compared)
    accuracy = header.index("accuracy")
    rows = [line.split() for line in compared if "├──" in line or "└──" in line]
    shown = [float(row[accuracy + 2]) for row in rows]  # a row has '├──', the revision and the name first
    assert len(shown) == 2 and shown == sorted(shown, reverse=True), "\n".join(compared)

    run(dvc_repo, str(BIN / "dvc"), "exp", "run", "-n", "two-threads", "-S", "lr=0.004",
        env={**ENV, "OMP_NUM_THREADS": "2"})  # another platform: the same machine with another thread count
    lines = compare(dvc_repo)
    header = next(line.split() for line in lines if "Experiment" in line)
    assert "platform.threads" in header, "\n".join(lines)
    rows = [line.split() for line in lines if "├──" in line or "└──" in line]  # '├──', revision, name, values
    threads = {row[2]: row[header.index("platform.threads") + 2] for row in rows}
    assert sorted(threads.values()) == ["1", "1", "2"] and threads["[two-threads]"] == "2", "\n".join(lines)
    assert max(map(len, lines)) <= 100, "\n".join(lines)


def test_push_then_pull_into_a_fresh_clone_restores_the_model_and_data_is_rebuilt_not_pulled(
        dvc_repo: Path, tmp_path: Path) -> None:
    pushed = dvc(dvc_repo, "push", "-r", "storage").stdout
    assert "4 files pushed" in pushed, pushed  # model.pt, model.onnx, model.pt2, model_card.md; no data
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(dvc_repo), str(clone))
    remote = dvc(dvc_repo, "remote", "list", "--local").stdout.split()[1]
    dvc(clone, "remote", "modify", "--local", "storage", "url", remote)
    dvc(clone, "pull", "-r", "storage", "--allow-missing")
    for artifact in ("models/model.pt", "models/model.onnx", "models/model.pt2"):
        assert md5(clone / artifact) == md5(dvc_repo / artifact), artifact
    assert not (clone / "data" / "prepared").exists()
    rebuilt = dvc(clone, "repro").stdout
    assert "Running stage 'preprocess'" in rebuilt and "Running stage 'train'" not in rebuilt, rebuilt
    assert md5(clone / "data" / "prepared" / "train.npz") == md5(dvc_repo / "data" / "prepared" / "train.npz")
    assert git(clone, "status", "--porcelain") == ""


def test_the_readmes_way_back_restores_main_after_a_refused_experiment(dvc_repo: Path) -> None:
    refused = dvc(dvc_repo, "exp", "run", "-S", "model=resnet", check=False)
    assert refused.returncode != 0
    assert "'model' must be one of cnn, mlp, mlp2, got 'resnet'" in refused.stdout + refused.stderr
    assert git(dvc_repo, "status", "--porcelain") != ""  # params.yaml changed, train's outputs deleted
    way_back = "git checkout -- . && dvc checkout"
    assert f"{way_back}      # back to main's model, from the cache; also after a refused -S value" in (
        REPO / "README.md").read_text()
    run(dvc_repo, "bash", "-c", way_back)
    assert git(dvc_repo, "status", "--porcelain") == ""
    assert "Data and pipelines are up to date." in dvc(dvc_repo, "status").stdout
