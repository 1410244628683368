"""The result's JSON schema: its version, the stages it reports, their fields, and the fields that may be null."""

from __future__ import annotations

SCHEMA_VERSION = 1
STAGES = ("decode", "detect", "resize", "vae_encode", "unet", "vae_decode", "align", "merge", "refine", "write")
MODEL_STAGES = ("vae_encode", "unet", "vae_decode", "refine")  # stages with counted FLOPs
STAGE_FIELDS = ("seconds", "seconds_runs", "calls", "items", "unit", "fps", "flops", "tflops", "fraction_of_peak")
# Fields that may be null, with the reason (benchmarks/README.md repeats this list).
NULLABLE = {
    "stages.<stage>.flops / tflops / fraction_of_peak": "decode, detect, resize, align, merge, write (no model FLOPs)",
    "stages.<stage>.*": "a stage that did not run (ran = false): refine with refine_step 0, write with --no-write",
    "memory.device_peak_bytes": "CPU runs",
    "machine.gpu / driver / cuda / compute_capability / gpu_memory_bytes": "no GPU (gpu_count is then 0)",
    "libraries.<name>": "library not installed",
    "input.source": "generated clip",
    "baseline.strategy.dtype_note": "GPU runs",
    "baseline": "without --with-baseline",
}

# Defaults of a measurement (here, not in the runner, so that `rd-engine bench --help` starts without torch)
DEFAULT_TINY_RES = 128  # the tiny model at 768 px spends its time in attention over 15k tokens
DEFAULT_FRAMES = {"tiny": 16, "full": 90, "checkpoint": 90}  # 90 >= 78: dilation 25 is not capped
BASELINE_VAE_BATCH = 4
BASELINE_ALIGN_ITERS = 2000
