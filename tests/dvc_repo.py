"""A throwaway git + DVC copy of this repository on a tiny dataset, driven by the real CLIs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MNIST_OFFLINE": "1",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
       "GIT_COMMITTER_EMAIL": "test@example.com", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
STAGES = ("download", "preprocess", "corrupt", "train", "evaluate", "export", "robustness")
# the MLP keeps each of the many tiny pipeline runs short; tests that need a longer run ask for the CNN
TINY_PARAMS = {"dataset": "custom", "val_size": 100, "epochs": 1, "batch_size": 128, "device": "cpu", "model": "mlp"}
# the data stages that every fresh clone reruns, on less: these tests check DVC's workflow, not accuracy
TINY_COMMANDS = {"python -m stages.draw --out data/non_digits.npz": "--count 1000",
                 "python -m stages.corrupt --data data/prepared --out data/corrupted": "--images 100"}


def run(repo: Path, *args: str, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in `repo` (with ENV, or `env`); on failure show its output."""
    done = subprocess.run(args, cwd=repo, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{output}")
    return done


def dvc(repo: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """The real `dvc` command."""
    return run(repo, str(BIN / "dvc"), *args, **kwargs)


def git(repo: Path, *args: str) -> str:
    """The real `git` command; its stdout."""
    return run(repo, "git", *args).stdout


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def experiments(repo: Path, *flags: str) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: its data}."""
    shown = json.loads(dvc(repo, "exp", "show", "--json", *flags).stdout)
    return {exp["name"]: exp["revs"][0]["data"] for rev in shown for exp in (rev.get("experiments") or [])}


def set_params(repo: Path, **values: object) -> None:
    """Edit params.yaml as a user would."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(dest: Path, data_dir: Path, remote: Path) -> Path:
    """Copy the project's files (tracked or new, not ignored) into a fresh git repo on the tiny dataset."""
    listed = run(REPO, "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "dvc.lock", "dvc-store/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git(dest, "init", "-q", "-b", "main")
    set_params(dest, data_dir=str(data_dir), **TINY_PARAMS)
    pipeline = (dest / "dvc.yaml").read_text()
    for command, smaller in TINY_COMMANDS.items():
        assert f"cmd: {command}\n" in pipeline, command
        pipeline = pipeline.replace(f"cmd: {command}\n", f"cmd: {command} {smaller}\n")
    (dest / "dvc.yaml").write_text(pipeline)
    dvc(dest, "remote", "modify", "--local", "storage", "url", str(remote))
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny copy")
    return dest


def build_template(folder: Path) -> Path:
    """`folder`/repo: a committed tiny copy with its pipeline reproduced; built once, whoever asks first.

    A file lock makes every other caller (xdist workers, the background builder) wait for the one build.
    """
    from filelock import FileLock

    from tests.helpers import read_bundled_mnist, write_tiny_dataset

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / "lock")):
        if not (folder / "ready").exists():
            data = write_tiny_dataset(folder / "data", read_bundled_mnist(), 1000, 300)
            repo = make_repo(folder / "repo", data, folder / "remote")
            repro = dvc(repo, "repro").stdout
            assert all(f"Running stage '{stage}'" in repro for stage in STAGES), repro
            git(repo, "add", "-A")
            git(repo, "commit", "-qm", "baseline run")
            (folder / "ready").touch()
    return folder / "repo"


if __name__ == "__main__":
    build_template(Path(sys.argv[1]))
