"""GPU parity of the PyTorch backend on the tiny checkpoint (part of `benchmarks/gpu/check.sh`).

    python3 -m benchmarks.gpu.parity --out parity.json [--device cuda] [--res 128]

1. fp32 on the device (TF32 off, cuDNN deterministic) against fp32 on the CPU: each component on random
   inputs (VAE encoder, VAE decoder, one UNet step) and the whole offline pipeline on a generated clip.
2. fp16 and bf16 against fp32 on the device, same inputs: the spread that tells whether the test
   tolerances for half precision are realistic.

End to end, every run starts from the same initial noise, drawn once on the CPU and supplied to each
(`Pipeline.predict(noise=...)`): the engine draws its noise with a generator on the run's device, as the
reference does, and CPU and CUDA generators give different numbers for one seed, so without this the
fp32 device-vs-CPU figure would measure the noise, not the numerics.

With `--device cpu` (the dry run) the "device" is the CPU again: the figures are 0 and only the code path
is checked.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _components(be, gen_seed: int, size: tuple[int, int], batch: int) -> dict[str, torch.Tensor]:
    w, h = size
    g = torch.Generator().manual_seed(gen_seed)
    frames = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    lat = torch.randn(batch, 4, h // 8, w // 8, generator=g)
    rgb, depth = (torch.randn(batch, 3, 4, h // 8, w // 8, generator=g) for _ in range(2))
    step = be.ddim.schedule(1)[0]
    dev, dt = be.device, be.dtype
    return {
        "vae_encoder": be.encode(frames.to(dev, dt)).float().cpu(),
        "vae_decoder": be.decode(lat.to(dev, dt)).float().cpu(),
        "unet_step": be.denoise(rgb.to(dev, dt), depth.to(dev, dt), step).float().cpu(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.parity", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--res", type=int, default=128, help="processed longer edge of the end-to-end clip")
    a = p.parse_args(argv)

    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.io.video import probe, processed_size
    from rd_engine.model.checkpoint import load_checkpoint
    from rd_engine.model.factory import make_tiny_checkpoint
    from rd_engine.pipeline.inference import padded_size
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.settings import resolve
    from rd_engine.testing.media import write_test_video

    device = torch.device(a.device)
    if device.type == "cuda":  # an fp32 reference, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
    t0 = time.perf_counter()
    result: dict = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        clip = Path(tmp) / "clip.mp4"
        write_test_video(clip, n_frames=24, width=192, height=108, fps=12)
        cpu = TorchBackend(load_checkpoint(ckpt), "cpu", torch.float32)
        dev = {
            dt: TorchBackend(load_checkpoint(ckpt), device, dt) for dt in (torch.float32, torch.float16, torch.bfloat16)
        }

        def max_diff(x: dict, y: dict) -> dict:
            return {k: float((x[k] - y[k]).abs().max()) for k in x}

        comp = {}
        for size, batch in (((64, 40), 1), ((128, 72), 3)):
            ref = _components(cpu, batch, size, batch)
            here = {dt: _components(be, batch, size, batch) for dt, be in dev.items()}
            comp[f"{size[0]}x{size[1]}_b{batch}"] = {
                "fp32_device_vs_cpu": max_diff(here[torch.float32], ref),
                "fp16_vs_fp32": max_diff(here[torch.float16], here[torch.float32]),
                "bf16_vs_fp32": max_diff(here[torch.bfloat16], here[torch.float32]),
            }
        result["components"] = comp
        e2e = {}
        s0, _ = resolve("fast", {"res": a.res, "seed": 7, "refine_step": 1}, torch.device("cpu"))
        info = probe(clip)
        pw, ph = padded_size(processed_size(info.width, info.height, s0.res))
        noise = torch.randn(1, 4, ph // 8, pw // 8, generator=torch.Generator().manual_seed(7))
        result["end_to_end_noise"] = "one CPU draw (seed 7) supplied to every run"
        for name, be, dtype in (
            ("cpu_fp32", cpu, "fp32"),
            *(
                (f"device_{k}", dev[v], k)
                for k, v in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16))
            ),
        ):
            s, _ = resolve("fast", {"res": a.res, "seed": 7, "dtype": dtype, "refine_step": 1}, be.device)
            e2e[name] = Pipeline(be, progress=False).predict(clip, s, noise=noise).depth.copy()
        result["end_to_end"] = {
            "fp32_device_vs_cpu": float(np.abs(e2e["device_fp32"] - e2e["cpu_fp32"]).max()),
            "fp16_vs_fp32": float(np.abs(e2e["device_fp16"] - e2e["device_fp32"]).max()),
            "bf16_vs_fp32": float(np.abs(e2e["device_bf16"] - e2e["device_fp32"]).max()),
            "frames": int(e2e["cpu_fp32"].shape[0]),
            "size": list(e2e["cpu_fp32"].shape[1:]),
        }
    result["seconds"] = time.perf_counter() - t0
    a.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["end_to_end"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
