r"""Start-up and model load times of the CLI, each in a fresh process, stage by stage.

    python -m benchmarks.startup --out benchmarks/results/startup_cpu.json
    python -m benchmarks.startup --before /tmp/rd-before --out ...   # another tree side by side

What is timed (wall seconds of a fresh interpreter, median over ``--repeats``):

* ``help``: ``python -m rd_engine.cli --help``;
* ``missing_input``: ``python -m rd_engine.cli run missing.mp4 -c TINY -o OUT`` (exit status 1);
* ``import_torch``: ``python -c "import torch"``, the floor of anything that computes;
* ``load_tiny``: `load_checkpoint` of the tiny random-weight checkpoint (`tiny_checkpoint_cached`),
  then `Models.to` (the device transfer, ``--device``);
* ``load_full_checkpoint`` (with ``--full-checkpoint``): the same for a full-size random-weight
  checkpoint on disk (`make_random_checkpoint(size="full")`: the RollingDepth/SD2 UNet and the SD2 VAE
  at full width, 3.6 GB of safetensors, written once into ``--work``);
* ``full_size_random``: `full_size_random()`, the full-size architecture built with random weights in
  memory (what ``rd-engine bench --model full`` uses).

The load children report their stages: ``import_torch``, then ``load_checkpoint``'s own
(``info["load_seconds"]``: imports (diffusers), config, unet weights, vae weights, text encoder (the
empty-prompt embedding), prepare), and ``device`` (`Models.to`). A tree given with ``--before``
(a source folder holding ``rd_engine/``, e.g. ``git archive <commit> rd_engine | tar -x -C DIR``) is
put first on ``PYTHONPATH`` and timed the same way, in alternation with this one, so that both see the
same machine load; a tree whose loader reports no stages gets its total only.

Run from the repository root (``benchmarks`` is not an installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cpu_quiet import machine

DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rd-engine" / "startup-bench"

# The load child: prints one JSON line {"total": s, "stages": {...}}.
_LOAD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
stages = {"import_torch": time.perf_counter() - t0}
what, arg, device = sys.argv[1:4]
t = time.perf_counter()
if what == "full_size_random":
    from rd_engine.model.factory import full_size_random
    models = full_size_random()
else:
    from rd_engine.model.checkpoint import load_checkpoint
    models = load_checkpoint(arg)
inner = models.info.get("load_seconds")
if inner:
    stages.update(inner)
else:
    stages[what] = time.perf_counter() - t
t = time.perf_counter()
models.to(device, torch.float32)
if device.startswith("cuda"):
    torch.cuda.synchronize()
stages["device"] = time.perf_counter() - t
print(json.dumps({"total": time.perf_counter() - t0, "stages": stages}))
"""


def _run(cmd: list[str], pythonpath: str | None, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - t, r


def _median_stages(runs: list[dict]) -> dict:
    names = list(dict.fromkeys(k for r in runs for k in r["stages"]))
    return {k: round(statistics.median(r["stages"].get(k, 0.0) for r in runs), 3) for k in names}


def measure(trees: dict[str, str | None], cases: dict[str, list[str]], repeats: dict[str, int], cwd: Path) -> dict:
    """Every case for every tree, alternating trees within each repeat."""
    out: dict = {t: {} for t in trees}
    for case, cmd in cases.items():
        walls: dict[str, list[float]] = {t: [] for t in trees}
        children: dict[str, list[dict]] = {t: [] for t in trees}
        for _ in range(repeats.get(case, repeats["default"])):
            for tree, path in trees.items():
                wall, r = _run(cmd, path, cwd)
                walls[tree].append(wall)
                expected = 1 if case == "missing_input" else 0
                if r.returncode != expected:
                    raise SystemExit(f"{tree} {case}: exit {r.returncode}\n{r.stderr[-2000:]}")
                if cmd[1] == "-c" and cmd[2] == _LOAD_CHILD:
                    children[tree].append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"{tree:>7} {case:<22} {wall:7.2f} s", flush=True)
        for tree in trees:
            entry = {
                "wall_s": round(statistics.median(walls[tree]), 3),
                "wall_runs_s": [round(w, 3) for w in walls[tree]],
            }
            if children[tree]:
                entry["stages_s"] = _median_stages(children[tree])
            out[tree][case] = entry
    return out


def _spelled(cmd: list[str], tmp: str) -> str:
    """A case's command as the results show it: `python` for this interpreter, <tmp> for the scratch folder."""
    words = ["python", *cmd[1:]]
    if cmd[1:3] == ["-c", _LOAD_CHILD]:
        words[2] = "<load child of benchmarks/startup.py>"
    return " ".join(words).replace(tmp, "<tmp>")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/startup_cpu.json"))
    p.add_argument("--before", default=None, help="another source tree (holding rd_engine/) timed side by side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-repeats", type=int, default=1, help="repeats of the full-size cases")
    p.add_argument("--full-checkpoint", action="store_true", help="also load a full-size checkpoint from disk")
    p.add_argument("--no-full-random", action="store_true", help="skip full_size_random()")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = p.parse_args(argv)

    from rd_engine.model.factory import make_random_checkpoint, tiny_checkpoint_cached

    tiny = str(tiny_checkpoint_cached())
    py = sys.executable
    cases = {
        "help": [py, "-m", "rd_engine.cli", "--help"],
        "import_torch": [py, "-c", "import torch"],
        "load_tiny": [py, "-c", _LOAD_CHILD, "load_tiny", tiny, args.device],
    }
    if args.full_checkpoint:
        full = args.work / "full-checkpoint"
        if not (full / "model_index.json").is_file():
            make_random_checkpoint(full, size="full")
        cases["load_full_checkpoint"] = [py, "-c", _LOAD_CHILD, "load_full_checkpoint", str(full), args.device]
    if not args.no_full_random:
        cases["full_size_random"] = [py, "-c", _LOAD_CHILD, "full_size_random", "-", args.device]
    trees = {"this": None, **({"before": str(Path(args.before).resolve())} if args.before else {})}
    repeats = {
        "default": args.repeats,
        "load_full_checkpoint": args.full_repeats,
        "full_size_random": args.full_repeats,
    }
    with tempfile.TemporaryDirectory(prefix="rd-startup-") as tmp:  # the runs' working folder
        cases["missing_input"] = [py, "-m", "rd_engine.cli", "run", "missing.mp4", "-c", tiny, "-o", f"{tmp}/out"]
        # warm the page cache and the embedding cache once per tree, untimed
        for path in trees.values():
            _run(cases["load_tiny"], path, Path(tmp))
        results = measure(trees, cases, repeats, Path(tmp))
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "device": args.device,
        "repeats": repeats,
        "commands": {k: _spelled(v, tmp) for k, v in cases.items()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
