"""The one-call GPU check (benchmarks/gpu/check.sh) as a CPU dry run: the script must not rot between draws."""

import json
import math
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_check_dry_run_runs_every_step_and_writes_its_results(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    steps = (out / "steps.txt").read_text().splitlines()
    assert r.returncode == 0, (r.stdout[-2000:], (out / "log.txt").read_text()[-4000:])
    assert [s.split()[0] for s in steps] == [
        "env",
        "parity",
        "bench_fp16",
        "bench_bf16",
        "bench_batch16",
        "bench_small",
    ]
    assert all(" rc=0 " in s for s in steps)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8  # the most files the device tool brings back
    parity = json.loads((out / "parity.json").read_text())
    assert parity["end_to_end"]["fp32_device_vs_cpu"] == 0.0  # the dry run's "device" is the CPU again
    assert 0 < parity["end_to_end"]["fp16_vs_fp32"] < 1 and 0 < parity["end_to_end"]["bf16_vs_fp32"] < 1
    bench = json.loads((out / "bench_64_fp16.json").read_text())
    assert bench["baseline"] is not None and math.isfinite(bench["end_to_end"]["seconds"])
    assert json.loads((out / "env.json").read_text())["libraries"]["torch"]
