"""The docs' tables that mirror code, config or the committed record, generated: params (from each stage's schema),
what reruns when (from dvc.yaml), serve's limits (from its settings object) and the robustness of the committed model
(from metrics/robustness.json and the suite). `python -m tools.doc_tables` rewrites them in
place; a test fails when they are stale."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import yaml

from pipeline.common.params import Schema, read_params_file
from pipeline.data.corruptions import SUITE
from pipeline.data.preparation import PREPROCESS_PARAMS
from pipeline.data.sources import DOWNLOAD_PARAMS
from pipeline.model.test_time import TEST_TIME_PARAMS
from pipeline.train.config import TRAIN_PARAMS

ROOT = Path(__file__).resolve().parent.parent
# each stage's keys, where that stage defines them (dvc.yaml declares the same keys for it: tests/test_dvc_yaml.py)
STAGE_SCHEMAS: dict[str, Schema] = {"download": DOWNLOAD_PARAMS, "preprocess": PREPROCESS_PARAMS,
                                    "train": TRAIN_PARAMS, "export": TEST_TIME_PARAMS}
PAGE = ROOT / "docs" / "params.md"


def params_table(params_file: Path = ROOT / "params.yaml") -> str:
    """Every key of params.yaml: its default, what is allowed, what it does and which stage reads it."""
    defaults = read_params_file(params_file)
    rows = ["| key | default | allowed | meaning | read by |", "|---|---|---|---|---|"]
    for stage, schema in STAGE_SCHEMAS.items():
        for key, param in schema.items():
            default = str(defaults[key]).lower() if isinstance(defaults[key], bool) else defaults[key]
            rows.append(f"| `{key}` | `{default}` | {param.allowed} | {param.help} | {stage} |")
    return "\n".join(rows)


def _entry(entry: str | dict) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


def _code_files(dep: str) -> list[str]:
    """A code dep of dvc.yaml as the module files it stands for (a folder: all of its modules)."""
    path = ROOT / dep
    if path.is_dir():
        return sorted(str(p.relative_to(ROOT)) for p in path.glob("*.py") if p.name != "__init__.py")
    return [dep]


def _label(files: list[str]) -> list[str]:
    """Module files, with each folder whose modules are all listed written as the folder."""
    labels, rest = [], set(files)
    for folder in sorted({str(Path(f).parent) for f in files}):
        modules = set(_code_files(folder)) if folder.startswith("pipeline/") else set()
        if modules and modules <= rest:
            labels.append(f"`{folder}/`")
            rest -= modules
    return labels + [f"`{f}`" for f in sorted(rest)]


def reruns_table(dvc_yaml: Path = ROOT / "dvc.yaml") -> str:
    """For each code module and param of dvc.yaml, the stages that depend on it directly."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    code: dict[str, list[str]] = {}
    params: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for dep in map(_entry, stage.get("deps", [])):
            if dep.startswith(("pipeline", "stages")):
                for file in _code_files(dep):
                    code.setdefault(file, []).append(name)
        for param in stage.get("params", []):
            key = _entry(param)
            params.setdefault("any key of `params.yaml`" if key == "params.yaml" else f"`{key}`", []).append(name)
    grouped: dict[tuple[str, ...], list[str]] = {}
    for file, names in code.items():
        grouped.setdefault(tuple(names), []).append(file)
    rows = ["| you change | these stages rerun (then those after them, if their outputs change) |", "|---|---|"]
    for names, files in sorted(grouped.items(), key=lambda item: (len(item[0]), item[0])):
        rows.append(f"| {', '.join(_label(files))} | {', '.join(names)} |")
    by_stages: dict[tuple[str, ...], list[str]] = {}
    for label, names in params.items():
        by_stages.setdefault(tuple(names), []).append(label)
    for names, labels in by_stages.items():
        rows.append(f"| {', '.join(labels)} | {', '.join(names)} |")
    return "\n".join(rows)


def serve_limits_table() -> str:
    """serve's limits: option, environment variable, default and meaning (pipeline/inference/settings.py)."""
    from pipeline.inference.settings import SETTINGS, Limits, default_shown, env_name, option_name

    rows = ["| option | environment variable | default | what it bounds |", "|---|---|---|---|"]
    for name in SETTINGS:
        option = f"`{option_name(name)}` (`--timeout`)" if name == "client_seconds" else f"`{option_name(name)}`"
        rows.append(f"| {option} | `{env_name(name)}` | {default_shown(name)} | "
                    f"{Limits.model_fields[name].description} |")
    return "\n".join(rows)


def _robustness() -> dict:
    return json.loads((ROOT / "metrics" / "robustness.json").read_text())


def robustness_families_table() -> str:
    """The committed record's accuracy per corruption family, directly and through predict, and the means."""
    record = _robustness()
    direct, predict = record["direct"], record["predict"]
    rows = ["| family | direct | through predict |", "|---|---|---|"]
    rows += [f"| {name} | {100 * value:.1f} | {100 * predict['family'][name]:.1f} |"
             for name, value in direct["family"].items()]
    held_out = sum(not entry.trained for entry in SUITE)
    rows.append(f"| **mean of the {len(SUITE)}** | **{100 * direct['mean']:.1f}** | **{100 * predict['mean']:.1f}** |")
    rows.append(f"| **mean of the {held_out} held out** | **{100 * direct['held_out_mean']:.1f}** | "
                f"**{100 * predict['held_out_mean']:.1f}** |")
    return "\n".join(rows)


def robustness_corruptions_table() -> str:
    """Each corruption of the suite: family, level, whether training applies its kind, and the record's accuracy."""
    direct, predict = (_robustness()[path]["corruption"] for path in ("direct", "predict"))
    rows = ["| family | corruption | level | training | direct | through predict |", "|---|---|---|---|---|---|"]
    rows += [f"| {e.family} | `{e.name}` | {e.level:g} | {'trained' if e.trained else '**held out**'} | "
             f"{100 * direct[e.name]:.1f} | {100 * predict[e.name]:.1f} |" for e in SUITE]
    return "\n".join(rows)


TABLES = {"params": params_table, "reruns": reruns_table, "serve-limits": serve_limits_table,
          "robustness-families": robustness_families_table, "robustness-corruptions": robustness_corruptions_table}
PAGES = [PAGE, ROOT / "docs" / "predict-and-serve.md", ROOT / "docs" / "results.md"]


def render(page: str) -> str:
    """`page` with the text between each `<!-- NAME table -->` and `<!-- end -->` regenerated."""
    for name, make in TABLES.items():
        page = re.sub(rf"(<!-- {name} table -->\n)(?:(?!<!-- end -->).)*(<!-- end -->)",
                      lambda m, make=make: f"{m[1]}{make()}\n{m[2]}", page, flags=re.S)
    return page


@click.command()
def main() -> None:
    """Rewrite the generated tables in the docs."""
    for page in PAGES:
        page.write_text(render(page.read_text()))
        click.echo(f"tables regenerated in {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
