"""FLOP counting (matmuls, convolutions, attention) per call shape, and the device's measured peak."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter

import torch

from rd_engine.bench.timing import sync


class _AttentionFlops:
    """Counts attention FLOPs analytically from the shapes of every fused SDPA op, and which of
    them `FlopCounterMode` does not count (e.g. the CPU flash kernel in torch 2.13).
    """

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.flops = 0
                self.uncounted = 0
                self.uncounted_ops: set[str] = set()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = str(func)
                if "scaled_dot_product" in name and "backward" not in name and len(args) >= 3:
                    q, k, v = args[:3]
                    batch = math.prod(q.shape[:-2])
                    # QK^T and PV: 2 * q_len * kv_len * (d_qk + d_v) per batch*head
                    f = 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
                    self.flops += f
                    if func.overloadpacket not in flop_registry:
                        self.uncounted += f
                        self.uncounted_ops.add(name)
                return func(*args, **(kwargs or {}))

        return Mode()


def count_flops(fn, *args) -> dict:
    """FLOPs of one call `fn(*args)` (matmuls, convolutions and attention; elementwise ops are
    not counted). Attention that `FlopCounterMode` misses is added from the shapes.

    Args:
        fn: The callable to count.
        *args: Its arguments.

    Returns:
        `{"flops", "attention_flops", "attention_source"}`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter, _AttentionFlops() as att:
        fn(*args)
    total = int(counter.get_total_flops()) + att.uncounted
    if att.flops == 0:
        source = "no fused attention op (any attention ran as counted matmuls)"
    elif att.uncounted:
        source = f"analytic from shapes ({', '.join(sorted(att.uncounted_ops))} not counted by FlopCounterMode)"
    else:
        source = "FlopCounterMode"
    return {"flops": total, "attention_flops": int(att.flops), "attention_source": source}


class FlopTable:
    """FLOPs per item (frame or snippet) for each (op, shape) a run used, counted once.

    Args:
        backend: The un-timed backend.
    """

    def __init__(self, backend):
        self.backend = backend  # the un-timed backend
        self.cache: dict[tuple, dict] = {}

    def per_item(self, op: str, shape: tuple) -> dict:
        key = (op, shape)
        if key not in self.cache:
            be = self.backend
            gen = torch.Generator(device="cpu").manual_seed(1)

            def rand(*s):  # never zeros: they can hide work and run faster than real data
                return torch.randn(*s, generator=gen).clamp_(-1, 1).to(be.device, be.dtype)

            if op == "encode":
                res = count_flops(be.encode, rand(1, *shape))
            elif op == "decode":
                res = count_flops(be.decode, rand(1, *shape))
            elif op == "denoise":
                step = be.ddim.schedule(1)[0]
                res = count_flops(be.denoise, rand(1, *shape), rand(1, *shape), step)
            else:
                raise ValueError(op)
            self.cache[key] = res
        return self.cache[key]

    def total(self, op: str, shapes: Counter) -> int:
        return sum(self.per_item(op, s)["flops"] * n for s, n in shapes.items())


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None) -> dict:
    """Achieved TFLOP/s of a large square matmul in `dtype` on `device` (after warm-up; median).

    Args:
        device: Where to measure.
        dtype: The run's precision.
        n: Matrix size (default 8192 on a GPU, 1024 on the CPU, 512 for CPU half precision).
    """
    cuda = device.type == "cuda"
    if n is None:
        n = 8192 if cuda else (1024 if dtype == torch.float32 else 512)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    inner = 10 if cuda else 1
    for _ in range(20 if cuda else 2):  # clocks up, handles created
        torch.mm(a, b, out=c)
    sync(device)
    times = []
    deadline = time.perf_counter() + (2.0 if cuda else 1.5)
    while len(times) < 5 or (len(times) < 20 and time.perf_counter() < deadline):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                torch.mm(a, b, out=c)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0 / inner)
        else:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "tflops": 2.0 * n**3 / t / 1e12,
        "n": n,
        "dtype": str(dtype).replace("torch.", ""),
        "seconds_per_matmul": t,
        "samples": len(times),
    }


def flop_summary(flops: FlopTable, runs_shapes: dict) -> dict:
    """Per-call FLOP counts of the main-phase shapes (UNet per snippet, VAE per frame).

    Args:
        flops: The run's FLOP table.
        runs_shapes: Shapes per timer key of the last measured run.

    Returns:
        `{"unet_per_snippet", "vae_encoder_per_frame", "vae_decoder_per_frame"}`, each null if not run.
    """
    out = {}
    for name, (key, op) in {
        "unet_per_snippet": ("main.denoise", "denoise"),
        "vae_encoder_per_frame": ("main.encode", "encode"),
        "vae_decoder_per_frame": ("main.decode", "decode"),
    }.items():
        shapes = runs_shapes.get(key)
        if not shapes:
            out[name] = None
            continue
        shape = shapes.most_common(1)[0][0]
        out[name] = {"input_shape": list(shape), **flops.per_item(op, shape)}
    return out
