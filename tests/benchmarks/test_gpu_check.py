"""The one-call GPU check (benchmarks/gpu/check.sh) as a CPU dry run, started the way the GPU machine starts it.

The GPU machine has no rd-engine installed: it gets a copy of the working tree (tracked and untracked files
that git does not ignore), runs `bash benchmarks/gpu/check.sh` from the tree's root with the image's
`python3`, and has diffusers and PyAV only as the wheels carried in `.whl/`. So does this test: a fresh
virtual environment without system site packages, whose one `.pth` line points at a folder of links to
this environment's packages minus rd-engine itself, diffusers and PyAV (the image lacks them); the two
come back as wheels repacked from their installed files into the copy's `.whl/`, which check.sh installs
into its site folder as on the device. A package that only the editable install maps (`rd_engine.kernels`,
`rd_engine.export`) or one that the repository's own `rd_engine/` shadows fails here as it would there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CARRIED = ("diffusers", "av")  # the wheels benchmarks/gpu/prepare.sh fetches: the GPU image lacks them
OWN = ("rd_engine", "rd-engine", "rd_engine-", "__editable__", "_rd_engine")


def _working_tree_copy(dest: Path) -> Path:
    """What the device tool sends: tracked files and untracked ones git does not ignore (no .venv, no
    egg-info, no build outputs).
    """
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in names:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():  # deleted but not yet staged
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def _repack_wheel(dist_name: str, dest: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists (as `pip download` would
    have fetched it for the device).
    """
    dist = metadata.distribution(dist_name)
    root = Path(dist.locate_file(""))
    wheel_meta = next(f for f in dist.files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info"))
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.read_text().splitlines() if line.startswith("Tag:")]
    name = dist.metadata["Name"].replace("-", "_")
    path = dest / f"{name}-{dist.version}-{tags[0]}.whl"
    record_name = f"{wheel_meta.parent}/RECORD"
    lines = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in dist.files:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel or rel == record_name:
                continue
            src = root / rel
            if not src.is_file():
                continue
            data = src.read_bytes()
            z.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{rel},sha256={digest},{len(data)}")
        lines.append(f"{record_name},,")
        z.writestr(record_name, "\n".join(lines) + "\n")
    return path


def _device_like_python(tmp: Path) -> Path:
    """A fresh venv (no system site packages) that sees this environment's packages except rd-engine,
    diffusers and PyAV; returns its bin folder.
    """
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    image = tmp / "image"
    image.mkdir()
    skip = {n.lower() for n in CARRIED}
    for sp in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]):
        sp = Path(sp)
        if not sp.is_dir():
            continue
        for entry in sp.iterdir():
            low = entry.name.lower()
            stem = low.split("-")[0].split(".")[0]
            if low.startswith(OWN) or stem in skip or low.endswith((".pth", ".egg-link")) or low == "__pycache__":
                continue
            if not (image / entry.name).exists():
                (image / entry.name).symlink_to(entry)
    purelib = subprocess.run(
        [str(venv / "bin" / "python3"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "device_image.pth").write_text(f"{image}\n")
    return venv / "bin"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Run check.sh --dry-run in a device-like copy of the tree; returns (completed process, $OUT, bin)."""
    tmp = tmp_path_factory.mktemp("device")
    tree = _working_tree_copy(tmp / "tree")
    (tree / ".whl").mkdir()
    for name in CARRIED:
        _repack_wheel(name, tree / ".whl")
    bindir = _device_like_python(tmp)
    out = tmp / "out"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH")
    }
    env.update(OUT=str(out), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    r = subprocess.run(
        ["bash", "benchmarks/gpu/check.sh", "--dry-run"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    return r, out, bindir, tree


def test_the_device_like_python_has_no_rd_engine_nor_the_carried_packages(dry_run):
    """The environment is as bare as the device's: run from the copy's root, `rd_engine` is only the
    repository's folder (no kernels/ inside), and diffusers and PyAV are absent until the wheels are in.
    """
    _, _, bindir, tree = dry_run
    probe = (
        "import importlib.util as u; "
        "print(u.find_spec('rd_engine.kernels') is None, u.find_spec('diffusers') is None, u.find_spec('av') is None)"
    )
    r = subprocess.run(
        [str(bindir / "python3"), "-c", probe], cwd=tree, capture_output=True, text=True, check=True, env={"PATH": ""}
    )
    assert r.stdout.split() == ["True", "True", "True"]


def test_check_dry_run_runs_every_step_and_writes_its_results(dry_run):
    r, out, _, _ = dry_run
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    steps = (out / "steps.txt").read_text().splitlines()
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:], log[-4000:])
    # kernels and compile are CUDA steps (tests/kernels and tests/backends/test_fast_paths.py cover them here)
    assert [s.split()[0] for s in steps] == ["preflight", "env", "parity", "bench", "fastpaths", "write"]
    assert all(" rc=0 " in s for s in steps)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8  # the most files the device tool brings back
    parity = json.loads((out / "parity.json").read_text())
    assert parity["end_to_end"]["fp32_device_vs_cpu"] == 0.0  # the dry run's "device" is the CPU again
    assert 0 < parity["end_to_end"]["fp16_vs_fp32"] < 1 and 0 < parity["end_to_end"]["bf16_vs_fp32"] < 1
    bench = json.loads((out / "bench_64.json").read_text())
    assert "partial" not in bench and math.isfinite(bench["end_to_end"]["seconds"])
    speedup = bench["baseline"]["speedup"]
    assert all(speedup[k] > 0 for k in ("model_stages", "pipeline", "end_to_end"))
    assert bench["baseline"]["strategy"]["snippet_batch"] == 1 and bench["baseline"]["strategy"]["vae_batch"] == 4
    assert bench["online"]["warmup_covered_every_call_shape"] is True
    fast = json.loads((out / "fastpaths.json").read_text())
    ran = set(fast["variants"])
    assert {"eager", "channels_last", "attention_flash", "vae_batch8", "align_threads1", "online_eager"} <= ran
    assert "cudnn_benchmark" in fast["skipped"] and not any("failed" in why for why in fast["skipped"].values())
    assert all(v["speedup"]["pipeline"] > 0 for k, v in fast["variants"].items() if k != "eager" and "online" not in k)
    write = json.loads((out / "write.json").read_text())["write_overlap"]
    assert write["speedup"] > 0 and len(write["write_seconds"]["1"]) == 2
    online = json.loads((out / "write.json").read_text())["stream_write_overlap"]
    assert online["speedup"] > 0 and all(len(online["seconds"][k]) == 2 for k in ("model_only", "inline", "background"))
    assert json.loads((out / "env.json").read_text())["libraries"]["torch"]


def test_preflight_names_a_shadowed_package(tmp_path):
    """Run from the repository's root, the repository's `rd_engine/` (no kernels/ inside) is what
    imports: preflight names the module instead of letting every step fail at import.
    """
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu.preflight", "--site", str(site_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 1
    assert "not from the site folder" in r.stderr and "rd_engine.kernels" in r.stderr
