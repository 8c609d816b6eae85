"""dvc.yaml tells the whole truth: code deps are the stages' imports, commands name exactly the declared paths."""

from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path

import click
import pytest
import yaml

from pipeline.code_deps import import_closure
from tests.helpers import REPO

PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def declared(stage: dict, section: str) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in stage.get(section, [])}


def outputs(stage: dict) -> set[str]:
    return declared(stage, "outs") | declared(stage, "metrics") | declared(stage, "plots")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_stage_imports(name: str) -> None:
    closure = {str(path.relative_to(REPO)) for path in import_closure(REPO, REPO / "stages" / f"{name}.py")}
    code_deps = {dep for dep in declared(STAGES[name], "deps") if dep.endswith(".py")}
    assert sorted(closure - code_deps) == [], "imported but not declared"
    assert sorted(code_deps - closure) == [], "declared but not imported"


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
            if not dep.endswith(".py") and not dep.startswith(("data/bundled", "${"))}
    declared_paths = data | outputs(stage)
    named = {str(path) for path in paths.values()}
    for path in named:
        assert any(covers(path, p) for p in declared_paths), f"{name} --{path} is neither a dep nor an out"
    for path in declared_paths:
        assert any(covers(n, path) for n in named), f"{name}: {path} is declared but the command never names it"
    path_options = {p.name for p in command.params if isinstance(p.type, click.Path)} - {"params_file", "checkpoint"}
    assert path_options == set(paths), f"{name}: options left to their click defaults: {path_options - set(paths)}"


def string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


@pytest.mark.parametrize(("names", "home"), [
    (("cnn", "mlp", "mlp2"), "pipeline/models.py"),
    (("mnist", "fashion-mnist", "custom"), "pipeline/sources.py"),
])
def test_model_and_dataset_names_are_defined_once(names: tuple[str, ...], home: str) -> None:
    code = sorted([*REPO.glob("pipeline/*.py"), *REPO.glob("stages/*.py")])
    for name in names:
        places = [str(path.relative_to(REPO)) for path in code if name in string_literals(path)]
        assert places == [home], f"{name!r} is written in {places}"
