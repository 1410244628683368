"""Description of the machine and the libraries a result was measured with, and file-name slugs."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import torch


def _cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from `nvidia-smi`, or None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device) -> dict:
    """The result's "machine" part: host, CPU, threads and, with CUDA, the GPU, driver and CUDA version.

    Args:
        device: The device the run uses (its GPU is described).
    """
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
        "gpu_count": 0,
        "driver": None,
        "cuda": None,
        "compute_capability": None,
        "gpu_memory_bytes": None,
    }
    if torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            info["gpu"] = props.name
            info["compute_capability"] = f"{props.major}.{props.minor}"
            info["gpu_memory_bytes"] = int(props.total_memory)
    return info


def library_versions() -> dict:
    """The result's "libraries" part: versions of Python, rd-engine and the libraries that matter (None if absent)."""
    from importlib import metadata

    from rd_engine.version import __version__

    out = {"python": platform.python_version(), "rd_engine": __version__}
    for dist in (
        "torch",
        "diffusers",
        "transformers",
        "numpy",
        "av",
        "triton",
        "onnxruntime",
        "onnxruntime-gpu",
        "tensorrt",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def slug(text: str) -> str:
    """`text` in lower case with every run of other characters than a-z and 0-9 made one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(device: torch.device) -> str:
    """The GPU's name, or "cpu-" and the CPU's name, as a slug."""
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device))
    return "cpu-" + slug(_cpu_name())
