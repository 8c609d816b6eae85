"""The commands, one module each, run as `python -m stages.<name>`: the DVC stages of dvc.yaml; predict, serve
and report, which work on what the stages made; and sweep_worker, which runs experiments of them."""

import sys
from pathlib import Path

# which optional group of pyproject.toml brings a missing module (predict and serve need `serve` only)
GROUPS = {"serve": {"onnxruntime", "PIL", "scipy", "fastapi", "starlette", "pydantic", "pydantic_settings",
                    "anyio", "uvicorn", "h11", "multipart", "python_multipart"},
          "pipeline": {"torch", "torchvision", "dvc", "pandas", "yaml", "onnx", "onnxscript", "matplotlib", "tqdm"}}


def _one_line_start_failure(kind: type[BaseException], value: BaseException, traceback: object) -> None:
    """Before a command starts, Ctrl-C (while torch imports, say) and a package that this install lacks each end
    in one line, not a traceback."""
    stage = Path(sys.argv[0]).stem
    missing = getattr(value, "name", None) or ""
    group = next((name for name, modules in GROUPS.items() if missing.split(".")[0] in modules), None)
    if issubclass(kind, KeyboardInterrupt):
        print(f"[{stage}] interrupted while starting; nothing was written", file=sys.stderr)
    elif issubclass(kind, ModuleNotFoundError) and group:
        print(f"[{stage}] needs the '{group}' packages, and {missing} is not installed: "
              f"pip install -c constraints.txt -e '.[{group}]' (from the project's folder)", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)  # type: ignore[arg-type]


if sys.argv[:1] == ["-m"]:  # only when this package is run as `python -m stages.<name>`, never when imported
    sys.excepthook = _one_line_start_failure
