"""Where a run trained: the facts that decide its floating-point bits, in a form stable from run to run.

The same code, params and seed give the same bytes only on one platform: the torch build, the device, the
CPU's vector instruction set and the number of threads each change the order of floating-point sums.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# cuBLAS is deterministic only with a fixed workspace; it must be set before the first CUDA matmul
CUBLAS_WORKSPACE = ":4096:8"


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what the platform module says)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_platform(device: torch.device) -> dict[str, str | int]:
    """The training platform: torch version, device kind and name, CPU capability and thread count.

    Threads are recorded for CPU training only, where they change the bits; a GPU's name and CUDA
    version take their place there.
    """
    record: dict[str, str | int] = {"torch": torch.__version__, "device": device.type}
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
        record["cuda"] = str(torch.version.cuda)
    elif device.type == "mps":
        record["device_name"] = f"Apple {platform.machine()}"
    else:
        record["device_name"] = cpu_name()
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["threads"] = torch.get_num_threads()
    return record


def make_deterministic(device: torch.device) -> None:
    """Ask every backend for its deterministic kernels, so a rerun on one platform gives the same bits.

    `set_deterministic_debug_mode("error")` flips the same switch as `use_deterministic_algorithms(True)`
    without importing the Inductor compiler (2.4 s); an op with no deterministic kernel then raises.
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.set_deterministic_debug_mode("error")
