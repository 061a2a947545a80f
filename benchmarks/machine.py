"""What a benchmark ran on, printed with its numbers so runs on different machines are not
compared as if alike. A sibling module: the scripts run as `python benchmarks/x.py`, which puts
this folder on sys.path."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    """The CPU's model name, its cores and the Python version."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def torch_machine() -> dict:
    """`machine()` with torch's version, its threads and the GPU where there is one: the model
    benchmarks' numbers depend on them (importing torch takes seconds, so only those ask)."""
    import torch

    info = machine() | {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
