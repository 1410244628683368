"""Import every module the GPU check's steps use, in seconds, before any step spends device time.

    python3 -m benchmarks.gpu.preflight [--site DIR] [--need-triton] [--need-pytest]

Prints one line per module that is missing or comes from the wrong place and exits 1; prints
"preflight: ok (N modules)" and exits 0 otherwise. With `--site`, every `rd_engine` module must come
from that folder (the package as it installs: `rd_engine/` with `kernels/` and `export/` inside), so a
copy of the repository's `rd_engine/` that shadows it (it has neither inside) is named, not found later.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# what each step of check.sh imports (directly or through the modules it runs)
STEP_MODULES: dict[str, tuple[str, ...]] = {
    "env": ("torch", "rd_engine.bench.machine"),
    "parity": (
        "numpy",
        "diffusers",
        "transformers",
        "safetensors",
        "av",
        "rd_engine.backends.torch_backend",
        "rd_engine.model.checkpoint",
        "rd_engine.model.factory",
        "rd_engine.pipeline.offline",
        "rd_engine.settings",
        "rd_engine.testing.media",
        "rd_engine.kernels",
        "rd_engine.coalign.merge",
    ),
    "bench": (
        "matplotlib",
        "tqdm",
        "PIL",
        "rd_engine.cli",
        "rd_engine.cli.bench",
        "rd_engine.bench.runner",
        "rd_engine.bench.measure",
        "rd_engine.bench.flops",
        "rd_engine.outputs.offline",
        "rd_engine.online.session",
        "rd_engine.io.video",
    ),
    "aoti": ("rd_engine.export", "rd_engine.export.aoti", "rd_engine.backends.aoti_backend", "torch._inductor"),
}


def check(modules: list[str], site: Path | None) -> list[str]:
    """One line per module of `modules` that cannot be imported, or (with `site`) an `rd_engine`
    module that does not come from `site`.
    """
    problems = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except Exception as e:  # any failure to import is what this step is for
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if site is not None and name.split(".")[0] == "rd_engine":
            where = Path(getattr(mod, "__file__", "") or "").resolve()
            if site.resolve() not in where.parents:
                problems.append(f"{name}: imported from {where}, not from the site folder {site}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.preflight", description=__doc__.split("\n\n")[0])
    p.add_argument("--site", type=Path, default=None, help="folder every rd_engine module must come from")
    p.add_argument("--need-triton", action="store_true", help="the kernels step runs: Triton must import")
    p.add_argument("--need-pytest", action="store_true", help="the kernels step runs: pytest must import")
    a = p.parse_args(argv)
    modules = [m for mods in STEP_MODULES.values() for m in mods]
    if a.need_triton:
        modules.append("triton")
    if a.need_pytest:
        modules.append("pytest")
    problems = check(modules, a.site)
    for line in problems:
        print(f"preflight: {line}", file=sys.stderr)
    if problems:
        print(f"preflight: {len(problems)} of {len(modules)} modules missing or misplaced", file=sys.stderr)
        return 1
    print(f"preflight: ok ({len(modules)} modules, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
