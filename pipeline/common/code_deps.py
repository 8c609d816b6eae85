"""The project modules a file imports, followed transitively: a stage's code deps (dvc.yaml, checkpoints)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGES = ("pipeline", "stages")


def _module_file(root: Path, module: str) -> Path | None:
    path = root / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    """`pipeline/train/loop.py` -> `pipeline.train.loop`."""
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_names(root: Path, path: Path) -> list[str]:
    """Every module name `path` imports anywhere in its body, relative imports resolved to absolute names."""
    package = _module_name(root, path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(
        root, path.parent / "__init__.py").removesuffix(".__init__")
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            # `from pipeline.train import loop` names a submodule; `from pipeline.train.loop import fit` names loop
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def direct_imports(root: Path, path: Path) -> set[Path]:
    """Project files that `path` imports anywhere in its body (module level or inside functions)."""
    found = set()
    for name in imported_names(root, path):
        if name.split(".")[0] in PACKAGES:
            module_file = _module_file(root, name)
            if module_file is not None and module_file.name != "__init__.py":
                found.add(module_file)
    return found


REPO_ROOT = Path(__file__).resolve().parents[2]


def import_closure(root: Path, path: Path) -> set[Path]:
    """`path` and every project file it imports, directly or through other project files."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(root, current) - seen)
    return seen


def code_digest(path: Path, root: Path = REPO_ROOT) -> str:
    """SHA-256 over the names and contents of `path` and every project file it imports."""
    digest = hashlib.sha256()
    for file in sorted(import_closure(root, path)):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()
