"""Process helpers of the CPU benchmarks: a quiet machine before timing, commands with their logs.

CPU timings are only as good as the machine is quiet: these wait until other processes use at most a
share of the CPUs (from `/proc/stat`), measure what others used while a command ran, and run commands
with their output in a log file.
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import subprocess
import time
from pathlib import Path


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    import torch

    from rd_engine.bench.machine import library_versions, machine_info

    info = machine_info(torch.device("cpu"))
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cores"] = os.cpu_count()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    info["python"] = platform.python_version()
    info["libraries"] = library_versions()
    return info


def busy_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (/proc/stat; idle and iowait excluded), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_busy_fraction(seconds: float = 3.0) -> float | None:
    """Fraction of the machine's CPU time that other processes use over `seconds` (this one sleeps)."""
    b0 = busy_seconds()
    time.sleep(seconds)
    b1 = busy_seconds()
    if b0 is None or b1 is None:
        return None
    return (b1 - b0) / (seconds * (os.cpu_count() or 1))


def wait_quiet(limit: float, max_seconds: float) -> float | None:
    """Wait (up to `max_seconds`) until other processes use at most `limit` of the CPUs; returns the last share."""
    t0 = time.monotonic()
    while True:
        busy = other_busy_fraction()
        if busy is None or busy <= limit or time.monotonic() - t0 >= max_seconds:
            return busy
        print(f"  the machine is busy ({busy:.0%} of the CPUs used by other processes): waiting", flush=True)
        time.sleep(20)


def run_logged(cmd: list[str], log: Path, timeout: float | None) -> dict:
    """Run `cmd`, its stdout and stderr into `log`.

    Returns:
        The command, exit status (None: timed out), wall seconds, the load averages before and after, and
        the CPU seconds the command used and that other processes used meanwhile (from /proc/stat).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {shlex.join(cmd)}  (log: {log})", flush=True)
    before = loadavg()
    busy0, own0 = busy_seconds(), children_cpu_seconds()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    seconds = time.perf_counter() - t0
    busy1, own1 = busy_seconds(), children_cpu_seconds()
    after = loadavg()
    own = own1 - own0
    other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - own)
    other_fraction = None if other is None else other / (seconds * (os.cpu_count() or 1))
    status = "timed out" if rc is None else f"exit {rc}"
    print(
        f"  {status} in {seconds:.1f} s (its CPU {own:.0f} s, other processes' "
        f"{'-' if other is None else f'{other:.0f}'} s; load average before {before}, after {after})",
        flush=True,
    )
    return {
        "command": shlex.join(cmd),
        "returncode": rc,
        "seconds": seconds,
        "cpu_seconds": own,
        "other_processes_cpu_seconds": other,
        "other_processes_cpu_fraction": other_fraction,
        "loadavg_before": before,
        "loadavg_after": after,
        "log": str(log),
    }


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
