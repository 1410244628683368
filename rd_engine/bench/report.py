"""Results as text and JSON: the summary table, strict JSON writing and loading, and `--compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rd_engine.bench.schema import SCHEMA_VERSION, STAGES
from rd_engine.errors import UserError
from rd_engine.progress import human_bytes


def _cell(x, width: int, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    """A right-aligned table cell: `x * scale` formatted with `spec` and `suffix`, or '-' for None."""
    text = "-" if x is None else format(x if scale == 1.0 else x * scale, spec) + suffix
    return text.rjust(width)


def format_table(result: dict) -> str:
    """The human-readable summary of one result."""
    m, s = result["machine"], result["settings"]
    base = result.get("baseline")
    lines = [
        f"rd-engine bench: model {result['model']['name']} | {result['input']['frames']} frames "
        f"{result['input']['processed_width']}x{result['input']['processed_height']} | preset {s['preset']} "
        f"res {s['res']} | {result['backend']['name']} on {result['backend']['device']} ({s['dtype']}) | "
        f"mode {result['mode']} | {result['repeats']} repeats",
        f"machine: {m['hostname']} | {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads) | "
        f"GPU {m['gpu'] or 'none'}"
        + (f" (driver {m['driver']}, CUDA {m['cuda']})" if m["gpu"] else "")
        + f" | torch {result['libraries']['torch']}",
    ]
    head = f"{'stage':<11}{'seconds':>10}{'calls':>7}{'frames/s':>10}{'GFLOP':>11}{'TFLOP/s':>9}{'%peak':>8}"
    if base:
        head += f" | {'baseline s':>10}{'speedup':>9}"
    lines += [head, "-" * len(head)]

    def row(name, e, b=None, sp=None):
        line = (
            f"{name:<11}{_cell(e.get('seconds'), 10, '.4f')}{_cell(e.get('calls'), 7, 'd')}"
            f"{_cell(e.get('fps'), 10, '.1f')}{_cell(e.get('flops'), 11, '.2f', 1e-9)}"
            f"{_cell(e.get('tflops'), 9, '.4f')}{_cell(e.get('fraction_of_peak'), 8, '.1f', 100, '%')}"
        )
        if base:
            line += f" | {_cell(None if b is None else b.get('seconds'), 10, '.4f')}{_cell(sp, 9, '.2f', 1, 'x')}"
        return line

    for name in STAGES:
        e = result["stages"][name]
        if not e["ran"]:
            lines.append(f"{name:<11}  (not run: {e.get('note') or 'no reason given'})")
            continue
        b = base["stages"].get(name) if base else None
        sp = base["speedup"]["stages"].get(name) if base else None
        lines.append(row(name, e, b, sp))
    lines.append("-" * len(head))
    e2e = result["end_to_end"]
    lines.append(
        row(
            "end to end",
            {**e2e, "calls": 1},
            base["end_to_end"] if base else None,
            base["speedup"]["end_to_end"] if base else None,
        )
    )
    lines.append(
        f"runs: p50 {e2e['p50']:.4f} s  p95 {e2e['p95']:.4f} s  p99 {e2e['p99']:.4f} s  "
        f"({len(e2e['runs'])} runs; predict only {e2e['predict_seconds']:.4f} s; "
        f"{e2e['ms_per_frame']:.2f} ms/frame)"
    )
    if base:
        sp = base["speedup"]

        def ratio(v):
            return "-" if v is None else f"{v:.2f}x"

        lines.append(
            f"speedup over the baseline: model stages {ratio(sp.get('model_stages'))} | pipeline without writing "
            f"{ratio(sp.get('pipeline'))} | end to end {ratio(sp.get('end_to_end'))}"
        )
    mem = result["memory"]
    dev_peak = mem["device_peak_bytes"]  # null on the CPU
    lines.append(
        f"memory: host peak {human_bytes(mem['host_peak_bytes'])} (process), "
        f"device peak {'-' if dev_peak is None else human_bytes(dev_peak)}"
    )
    pk = result["peak_matmul"]
    lines.append(f"peak: {result['peak_tflops']:.3f} TFLOP/s ({pk['dtype']} matmul {pk['n']}^3, measured now)")
    fc = result["flop_counts"]
    if fc.get("unet_per_snippet"):
        u = fc["unet_per_snippet"]
        lines.append(
            f"FLOPs: UNet {u['flops'] / 1e9:.2f} GFLOP per snippet {u['input_shape']} "
            f"(attention {u['attention_flops'] / 1e9:.2f}, {u['attention_source']})"
        )
    for key, label in (("vae_encoder_per_frame", "VAE encoder"), ("vae_decoder_per_frame", "VAE decoder")):
        if fc.get(key):
            lines.append(f"       {label} {fc[key]['flops'] / 1e9:.2f} GFLOP per frame {fc[key]['input_shape']}")
    if base:
        st = base["strategy"]
        lines.append(
            f"baseline: {st['description']}; align_iters {st['align_iters']}"
            + (f"; {st['dtype_note']}" if st.get("dtype_note") else "")
        )
    on = result["online"]
    lines.append(
        f"online (lag {on['lag']}): {on['fps']:.1f} frames/s, push-to-depth latency p50 "
        f"{on['latency_p50'] * 1e3:.1f} ms, p95 {on['latency_p95'] * 1e3:.1f} ms, "
        f"p99 {on['latency_p99'] * 1e3:.1f} ms"
    )
    return "\n".join(lines)


def check_finite_json(obj, path="result") -> None:
    """Raise if any number in `obj` is NaN or infinite (json would write them as invalid tokens)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{path} is {obj}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite_json(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_finite_json(v, f"{path}[{i}]")


def write_json(result: dict, path: Path) -> None:
    """Write `result` to `path` as strict JSON (no NaN or Infinity), atomically; creates the folder."""
    from rd_engine.io.files import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


def load_result(path) -> dict:
    """Read a bench result; raises `UserError` if it is not one, or has another schema version."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or "schema_version" not in data or "stages" not in data:
        raise UserError(f"{path}: not an rd-engine bench result")
    if data["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"{path}: schema version {data['schema_version']}, this rd-engine reads {SCHEMA_VERSION}")
    return data


def compare(path_a, path_b, force: bool = False) -> str:
    """Side-by-side table of two results; refuses different models or inputs unless `force`."""
    a, b = load_result(path_a), load_result(path_b)
    problems, warnings = [], []
    if a["model"]["name"] != b["model"]["name"]:
        problems.append(f"models differ ({a['model']['name']} vs {b['model']['name']})")
    ia, ib = a["input"], b["input"]
    if (ia["frames"], ia["processed_width"], ia["processed_height"]) != (
        ib["frames"],
        ib["processed_width"],
        ib["processed_height"],
    ):
        problems.append(
            f"inputs differ ({ia['frames']} frames {ia['processed_width']}x{ia['processed_height']} vs "
            f"{ib['frames']} frames {ib['processed_width']}x{ib['processed_height']})"
        )
    if problems and not force:
        raise UserError("cannot compare: " + "; ".join(problems) + " (pass --force to compare anyway)")
    warnings += [f"warning: {p}" for p in problems]
    ma, mb = a["machine"], b["machine"]
    for key in ("hostname", "cpu", "gpu", "driver"):
        if ma.get(key) != mb.get(key):
            warnings.append(f"warning: machines differ in {key}: {ma.get(key)} vs {mb.get(key)}")
    for key in ("torch", "diffusers"):
        if a["libraries"].get(key) != b["libraries"].get(key):
            warnings.append(f"warning: {key} versions differ: {a['libraries'].get(key)} vs {b['libraries'].get(key)}")
    sa, sb = a["settings"], b["settings"]
    diff = [k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    lines = warnings + [
        f"A: {path_a} ({a['mode']}, {a['backend']['name']} {sa.get('dtype')}, {ma.get('gpu') or ma.get('cpu')})",
        f"B: {path_b} ({b['mode']}, {b['backend']['name']} {sb.get('dtype')}, {mb.get('gpu') or mb.get('cpu')})",
    ]
    if diff:
        lines.append("settings that differ: " + ", ".join(f"{k} {sa.get(k)} -> {sb.get(k)}" for k in diff))
    head = f"{'stage':<11}{'A seconds':>12}{'B seconds':>12}{'A/B':>9}{'A %peak':>9}{'B %peak':>9}"
    lines += [head, "-" * len(head)]

    def row(name, ea, eb):
        sa_, sb_ = ea.get("seconds"), eb.get("seconds")
        ratio = sa_ / sb_ if sa_ and sb_ else None
        return (
            f"{name:<11}{_cell(sa_, 12, '.4f')}{_cell(sb_, 12, '.4f')}{_cell(ratio, 9, '.2f', 1, 'x')}"
            f"{_cell(ea.get('fraction_of_peak'), 9, '.1f', 100, '%')}"
            f"{_cell(eb.get('fraction_of_peak'), 9, '.1f', 100, '%')}"
        )

    for name in STAGES:
        lines.append(row(name, a["stages"].get(name, {}), b["stages"].get(name, {})))
    lines.append("-" * len(head))
    lines.append(row("end to end", a["end_to_end"], b["end_to_end"]))
    lines.append(f"{'fps':<11}{a['end_to_end']['fps']:12.2f}{b['end_to_end']['fps']:12.2f}")
    lines.append(f"{'p95 s':<11}{a['end_to_end']['p95']:12.4f}{b['end_to_end']['p95']:12.4f}")
    lines.append(f"{'peak TF/s':<11}{a['peak_tflops']:12.3f}{b['peak_tflops']:12.3f}")
    mem_a, mem_b = (r["memory"]["device_peak_bytes"] for r in (a, b))  # null on the CPU
    lines.append(
        f"{'dev. mem':<11}{'-' if mem_a is None else human_bytes(mem_a):>12}"
        f"{'-' if mem_b is None else human_bytes(mem_b):>12}"
    )
    lines.append("A/B > 1: B is faster")
    return "\n".join(lines)
