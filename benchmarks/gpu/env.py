"""What the machine is: GPU, driver, CUDA, library versions (part of `benchmarks/gpu/check.sh`).

python3 -m benchmarks.gpu.env --out env.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.env")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    import torch

    from rd_engine.bench.machine import library_versions, machine_info

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"machine": machine_info(device), "libraries": library_versions(), "python": platform.python_version()}
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False)
        info["nvidia_smi"] = smi.stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"not available ({type(e).__name__})"
    a.out.write_text(json.dumps(info, indent=2))
    print(json.dumps(info["machine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
