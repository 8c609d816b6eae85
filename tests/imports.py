"""The project modules a file imports, followed transitively (what a stage's code deps must list)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("pipeline", "stages")


def _module_file(root: Path, module: str) -> Path | None:
    path = root / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(root: Path, path: Path) -> set[Path]:
    """Project files that `path` imports anywhere in its body (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline import x` may name a submodule; `from pipeline.x import y` names x
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                module_file = _module_file(root, name)
                if module_file is not None and module_file.name != "__init__.py":
                    found.add(module_file)
    return found


def import_closure(root: Path, path: Path) -> set[Path]:
    """`path` and every project file it imports, directly or through other project files."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(root, current) - seen)
    return seen
