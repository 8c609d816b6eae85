"""dvc.yaml tells the whole truth: code deps are the stages' imports, commands name exactly the declared paths."""

from __future__ import annotations

import ast
import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from pipeline.common.code_deps import import_closure, imported_names
from tests.helpers import REPO

PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def declared(stage: dict, section: str) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in stage.get(section, [])}


def outputs(stage: dict) -> set[str]:
    return declared(stage, "outs") | declared(stage, "metrics") | declared(stage, "plots")


def code_files(stage: dict) -> set[str]:
    """The stage's declared code deps, each folder expanded to its modules (its __init__ is only a docstring)."""
    files = set()
    for dep in declared(stage, "deps"):
        path = REPO / dep
        if dep.endswith(".py"):
            files.add(dep)
        elif dep.startswith(("pipeline", "stages")) and path.is_dir():
            files |= {str(p.relative_to(REPO)) for p in path.glob("*.py") if p.name != "__init__.py"}
    return files


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_stage_imports(name: str) -> None:
    closure = {str(path.relative_to(REPO)) for path in import_closure(REPO, REPO / "stages" / f"{name}.py")}
    code_deps = code_files(STAGES[name])
    assert sorted(closure - code_deps) == [], "imported but not declared"
    assert sorted(code_deps - closure) == [], "declared but not imported"


# The interpreter's own list of what each stage loads: one process imports the heavy libraries once, then forks
# a child per stage that imports the stage's module and reports every module file it has (the libraries' files
# are outside the project and left out; only the project's own modules count).
RUNTIME_IMPORTS = """
import importlib, json, os, sys
import click, matplotlib, numpy, onnx, onnxruntime, torch, yaml
loaded = {}
for stage in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        importlib.import_module(stage)
        files = sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None))
        os.write(write, json.dumps(files).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        loaded[stage] = json.loads(answer.read())
    os.wait()
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def runtime_imports() -> dict[str, list[str]]:
    """{stage: the module files Python has loaded once `stages.<stage>` is imported}."""
    done = subprocess.run([sys.executable, "-c", RUNTIME_IMPORTS, *(f"stages.{name}" for name in sorted(STAGES))],
                          cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    return {stage.removeprefix("stages."): files for stage, files in json.loads(done.stdout).items()}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_python_really_loads_for_a_stage_is_declared(name: str, runtime_imports: dict) -> None:
    """An oracle independent of code_deps: the interpreter's own list of loaded modules."""
    files = [Path(f) for f in runtime_imports[name] if Path(f).is_absolute()]  # torch has a few relative names
    loaded = {str(f.resolve().relative_to(REPO)) for f in files if f.resolve().is_relative_to(REPO)
              and ".venv" not in f.parts}
    loaded = {f for f in loaded if Path(f).name != "__init__.py"}
    assert loaded, "the oracle found nothing"
    assert sorted(loaded - code_files(STAGES[name])) == [], "loaded at import but not declared"


# which pipeline/ subpackage may import which: shared plumbing first, the stages' work on top of it
MAY_IMPORT = {
    "common": set(),
    "data": {"common"},
    "model": {"common", "data"},  # a model file holds the prepared data's normalization
    "train": {"common", "data", "model"},
    "evaluate": {"common", "data", "export"},  # the ONNX file with onnxruntime, never PyTorch
    "export": {"common", "data", "model"},
    "inference": {"common", "model", "export"},
    "verdict": {"common"},
    "robustness": {"common", "data", "inference", "export"},
}


def test_pipeline_has_one_subpackage_per_concern_and_no_loose_modules() -> None:
    assert sorted(p.name for p in (REPO / "pipeline").iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        MAY_IMPORT)
    assert [p.name for p in (REPO / "pipeline").glob("*.py")] == ["__init__.py"]
    for init in (REPO / "pipeline").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init} holds code (a folder dep would hide it)"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "pipeline").rglob("*.py")))
def test_pipeline_imports_only_downward(path: str) -> None:
    own = Path(path).parts[1]
    for name in imported_names(REPO, REPO / path):
        parts = name.split(".")
        assert parts[0] != "stages", f"{path} imports the stage {name}"
        if parts[0] == "pipeline" and len(parts) > 1 and parts[1] != own:
            assert parts[1] in MAY_IMPORT[own], f"{path} ({own}) imports {name}"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "stages").glob("*.py")))
def test_no_stage_module_imports_another(path: str) -> None:
    stages = [n for n in imported_names(REPO, REPO / path) if n.startswith("stages.") or n == "stages"]
    assert stages == [], f"{path} imports {stages}"


def test_relative_imports_are_followed(tmp_path: Path) -> None:
    (tmp_path / "pipeline" / "train").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline" / "train" / "loop.py").write_text("from .config import x\nfrom ..common import cli\n")
    (tmp_path / "pipeline" / "train" / "config.py").write_text("x = 1\n")
    (tmp_path / "pipeline" / "common").mkdir()
    (tmp_path / "pipeline" / "common" / "cli.py").write_text("")
    (tmp_path / "stages" / "train.py").write_text("from pipeline.train.loop import fit\n")
    closure = {str(p.relative_to(tmp_path)) for p in import_closure(tmp_path, tmp_path / "stages" / "train.py")}
    assert closure == {"stages/train.py", "pipeline/train/loop.py", "pipeline/train/config.py",
                       "pipeline/common/cli.py"}


def command_paths(name: str) -> tuple[click.Command, dict[str, Path]]:
    """The stage's click command and the path options its dvc.yaml cmd passes, parsed by click itself."""
    words = shlex.split(STAGES[name]["cmd"])
    assert words[:3] == ["python", "-m", f"stages.{name}"], words
    command = importlib.import_module(f"stages.{name}").main
    context = command.make_context(name, words[3:])
    given = {param.name for param in command.params if context.get_parameter_source(param.name).name == "COMMANDLINE"}
    return command, {key: value for key, value in context.params.items() if key in given and isinstance(value, Path)}


def covers(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_command_names_every_declared_path_and_nothing_undeclared(name: str) -> None:
    stage = STAGES[name]
    command, paths = command_paths(name)
    params_file = paths.pop("params_file", None)
    assert (params_file == Path("params.yaml")) == bool(stage.get("params")), "--params params.yaml iff params:"
    # the bundled copy and the templated ${data_dir} are read through params, not named in the command
    data = {dep for dep in declared(stage, "deps")
            if not dep.startswith(("pipeline/", "stages/", "data/bundled", "${"))}
    declared_paths = data | outputs(stage)
    named = {str(path) for path in paths.values()}
    for path in named:
        assert any(covers(path, p) for p in declared_paths), f"{name} --{path} is neither a dep nor an out"
    for path in declared_paths:
        assert any(covers(n, path) for n in named), f"{name}: {path} is declared but the command never names it"
    # verdict's --pipeline is dvc.yaml itself, which DVC refuses as a dependency of its own stages
    path_options = {p.name for p in command.params if isinstance(p.type, click.Path)} - {"params_file", "checkpoint",
                                                                                          "pipeline"}
    assert path_options == set(paths), f"{name}: options left to their click defaults: {path_options - set(paths)}"


def string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


@pytest.mark.parametrize(("names", "home"), [
    (("cnn", "mlp", "mlp2"), "pipeline/model/networks.py"),
    (("mnist", "fashion-mnist", "custom"), "pipeline/data/sources.py"),
])
def test_model_and_dataset_names_are_defined_once(names: tuple[str, ...], home: str) -> None:
    code = sorted([*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py")])
    for name in names:
        places = [str(path.relative_to(REPO)) for path in code if name in string_literals(path)]
        assert places == [home], f"{name!r} is written in {places}"


def test_the_committed_lock_holds_the_code_each_stage_depends_on() -> None:
    # a stage whose code changed without its lock entry reruns in every fresh clone and leaves dvc.lock modified
    done = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    stale = sorted(f"{stage}: {path}" for stage, changes in json.loads(done.stdout).items() for change in changes
                   if isinstance(change, dict) for path, how in change.get("changed deps", {}).items()
                   if how == "modified" and path.startswith(("pipeline/", "stages/")))
    assert stale == [], (f"dvc.lock is stale for {stale}: rerun those stages, or `dvc commit -f` them when their "
                         "outputs are unchanged")


def test_each_stage_declares_exactly_the_params_it_reads() -> None:
    """dvc.yaml's params of each stage are its schema's keys (verdict, which reads the whole file, declares it)."""
    from tools.doc_tables import STAGE_SCHEMAS

    reads = {stage: set(schema) for names, schema in STAGE_SCHEMAS.items() for stage in names.split(", ")}
    for name, stage in STAGES.items():
        declared = {entry for entry in stage.get("params", []) if isinstance(entry, str)}
        assert declared == reads.get(name, set()), name
    assert STAGES["verdict"]["params"] == [{"params.yaml": None}]
