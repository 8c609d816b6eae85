"""The sweep worker (stages/sweep_worker.py, docs/sweeps.md): its grid, shards and names; two workers sharing a
grid through a bare origin and a team remote, collected by a third clone; no leak between points; a push that
did not arrive; and the recipes for Slurm, Kubernetes and GitHub Actions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages import sweep_worker
from stages.sweep_worker import experiment_name, grid, parse_sweep, shard_of
from tests.dvc_repo import ENV, dvc, experiments, git, md5, run, set_params
from tests.helpers import REPO
from tests.test_experiments import outside_writes

SWEEP = "-S 'lr=0.002,0.004' -S 'seed=1'"  # a point for each of the two workers
RECIPES = REPO / "docs" / "recipes"


def test_the_grid_is_expanded_in_one_order_and_the_shards_cover_it_once() -> None:
    points = grid(parse_sweep("-S 'lr=0.003,0.006' -S batch_size=256,512,1024"))
    assert points[:3] == [{"lr": "0.003", "batch_size": "256"}, {"lr": "0.003", "batch_size": "512"},
                          {"lr": "0.003", "batch_size": "1024"}] and len(points) == 6
    for shards in (1, 2, 4, 7):
        taken = [index for shard in range(shards) for index, _ in shard_of(points, shard, shards)]
        assert sorted(taken) == list(range(6))


def test_names_are_the_points_own_and_valid_git_refs() -> None:
    points = grid(parse_sweep("-S 'lr=0.003,0.0030,1e-3' -S 'model=cnn,mlp'"))
    names = [experiment_name(point) for point in points]
    assert len(set(names)) == len(names)  # 0.003 and 0.0030 too: the hash tells them apart
    assert names == [experiment_name(dict(point)) for point in points]  # the same on every worker
    for name in names:
        assert subprocess.run(["git", "check-ref-format", f"refs/exps/{name}"]).returncode == 0, name


@pytest.mark.parametrize(("sweep", "message"), [
    ("", "empty (give one or more -S 'key=value1,value2')"),
    ("-S lr", "expected -S 'key=value1,value2', got '-S lr'"),
    ("-S 'lr=0.1,'", "expected -S 'key=value1,value2', got '-S lr=0.1,'"),
    ("-X lr=1", "expected -S 'key=value1,value2', got '-X lr=1'"),
    ("-S lr=1 -S lr=2", "'lr' is given twice"),
])
def test_a_bad_sweep_is_one_line(sweep: str, message: str) -> None:
    result = CliRunner().invoke(sweep_worker.main, ["--shard", "0", "--shards", "1", "--sweep", sweep, "--dry-run"])
    assert result.exit_code == 1 and result.stderr == f"Error: --sweep: {message}\n"


def test_the_recipes_pass_the_engines_index_and_count_to_the_worker() -> None:
    slurm = (RECIPES / "slurm-array.sh").read_text()
    assert subprocess.run(["bash", "-n", str(RECIPES / "slurm-array.sh")]).returncode == 0
    assert 'SHARD="$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))" SHARDS="$SLURM_ARRAY_TASK_COUNT"' in slurm
    job = yaml.safe_load((RECIPES / "k8s-indexed-job.yaml").read_text())
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["spec"]["completionMode"] == "Indexed"
    assert {"name": "SHARDS", "value": str(job["spec"]["completions"])} in container["env"]
    assert 'make sweep-worker SHARD="$JOB_COMPLETION_INDEX" SHARDS="$SHARDS"' in container["args"][0]
    workflow = yaml.safe_load((RECIPES / "github-actions-sweep.yml").read_text())
    worker = workflow["jobs"]["worker"]
    assert worker["env"]["SHARDS"] == len(worker["strategy"]["matrix"]["shard"])
    assert "make sweep-worker SHARD=${{ matrix.shard }} SHARDS=$SHARDS" in worker["steps"][-1]["run"]
    for recipe in RECIPES.iterdir():
        assert "git config user.name" in recipe.read_text(), recipe.name  # dvc exp run commits each experiment
    dry = subprocess.run(["make", "--no-print-directory", "-n", "sweep-worker", "SHARD=1", "SHARDS=4",
                          f"SWEEP={SWEEP}"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert f'--shard "1" --shards "4" --sweep "{SWEEP}"' in dry


def team_origin(repo: Path, tmp_path: Path) -> Path:
    """A bare origin holding `repo`'s main, whose committed default DVC remote is a shared folder."""
    origin = tmp_path / "origin.git"
    (repo / ".dvc" / "config.local").unlink()  # the template's test remote: back to the project's own config
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    dvc(repo, "remote", "add", "-d", "team", str(tmp_path / "team-remote"))
    git(repo, "commit", "-qam", "The team's remote")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return origin


def worker(clone: Path, shard: int, shards: int, sweep: str = SWEEP) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stages.sweep_worker", "--shard", str(shard), "--shards",
                             str(shards), "--sweep", sweep], cwd=clone, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow  # handed out first (conftest), so that it does not end the run alone
def test_two_workers_share_a_grid_and_a_third_clone_collects_it_and_pulls_the_best_model(
        dvc_repo: Path, tmp_path: Path) -> None:
    before = outside_writes()
    origin = team_origin(dvc_repo, tmp_path)
    clones = [tmp_path / f"worker{shard}" for shard in (0, 1)]
    for clone in clones:
        run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    workers = [worker(clone, shard, 2) for shard, clone in enumerate(clones)]  # at the same time
    outputs = [process.communicate(timeout=900)[0] for process in workers]
    assert [process.returncode for process in workers] == [0, 0], "\n".join(outputs)

    collector = tmp_path / "collector"
    run(tmp_path, "git", "clone", "-q", str(origin), str(collector))
    dvc(collector, "exp", "pull", "origin", "-A", "--no-cache")
    shown = experiments(collector, "-A")
    points = {experiment_name(point): point for point in grid(parse_sweep(SWEEP))}
    assert set(shown) == set(points)
    for name, point in points.items():
        params = shown[name]["params"]["params.yaml"]["data"]
        assert (str(params["lr"]), str(params["seed"])) == (point["lr"], point["seed"])
        assert 0 < shown[name]["metrics"]["metrics/eval.json"]["data"]["accuracy"] <= 1
    best = max(points, key=lambda name: shown[name]["metrics"]["metrics/eval.json"]["data"]["accuracy"])
    dvc(collector, "exp", "pull", "-f", "origin", best)  # now with its outputs, from the team remote
    dvc(collector, "exp", "branch", best, "best")  # as docs/sweeps.md says
    git(collector, "checkout", "-q", "best")
    dvc(collector, "checkout", "train", "export", "evaluate")
    lock = yaml.safe_load((collector / "dvc.lock").read_text())
    model = next(out for out in lock["stages"]["train"]["outs"] if out["path"] == "models/model.pt")
    assert md5(collector / "models" / "model.pt") == model["md5"]
    assert outside_writes() == before


def test_a_point_starts_from_the_commits_params_and_a_push_that_did_not_arrive_fails_it(
        dvc_repo: Path, tmp_path: Path) -> None:
    origin = team_origin(dvc_repo, tmp_path)
    committed = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    refused, kept = (experiment_name({"lr": lr}) for lr in ("0.004", "0.002"))
    # an experiment of the same name already at the origin, on a commit the worker's is not a descendant of:
    # DVC calls the push diverged and does not push it
    baseline = git(dvc_repo, "rev-parse", "main").strip()
    other = git(dvc_repo, "commit-tree", "main^{tree}", "-p", "main", "-m", "another experiment").strip()
    git(dvc_repo, "push", "-q", "origin", f"{other}:refs/exps/{baseline[:2]}/{baseline[2:]}/{refused}")
    clone = tmp_path / "worker"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    set_params(clone, epochs=committed["epochs"] + 1)  # what an earlier experiment left in the workspace
    process = worker(clone, 0, 1, "-S 'lr=0.002,0.004'")
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 1, output
    assert f"{refused}: FAILED: the push to origin did not arrive" in output
    assert f"{kept}: pushed to origin" in output and f"1 of 2 points failed: {refused}" in output
    refs = git(clone, "ls-remote", "origin", "refs/exps/*")
    assert f"{other}\trefs/exps/{baseline[:2]}/{baseline[2:]}/{refused}" in refs  # still the other one
    ref = next(line.split()[1] for line in refs.splitlines() if line.endswith(kept))
    git(clone, "fetch", "-q", "origin", f"{ref}:{ref}")
    params = yaml.safe_load(git(clone, "show", f"{ref}:params.yaml"))
    assert params == {**committed, "lr": 0.002}  # the leftover epochs did not leak into the point
