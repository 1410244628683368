"""`rd-engine bench`: latency and throughput of the offline pipeline, per stage and end to end.

What one measurement is (see benchmarks/README.md for how to read the JSON):

* The backend is wrapped in `TimedBackend`, a proxy that times every
  `encode` / `denoise` / `decode` call (CUDA events plus NVTX ranges on a GPU,
  `time.perf_counter` on the CPU) without touching the pipeline. Events are
  read once per run, after one synchronize, so timing adds no stalls. UNet
  time is the time of the `denoise` calls (UNet + fused DDIM update).
* Video decoding and the resize (host->device copy, antialiased resize,
  normalization) run inside the pipeline on a decoder thread and overlap the
  model, so the harness times them in their own passes over the same input.
* align, merge and refine come from `Prediction.stage_seconds`; refine also
  includes its final VAE decode (the pipeline's "decode" stage). The writers
  (`rd_engine.outputs.offline.write_outputs`, default outputs) run into a temporary
  folder and make the "write" stage.
* End to end = wall time of `Pipeline.predict` + the writers. One warm-up run
  (a short clip of the same size) comes first; then `--repeats` runs, whose
  median is reported with p50/p95/p99.
* FLOPs are counted (`torch.utils.flop_counter.FlopCounterMode`) on one call
  of every distinct shape the run used, per snippet (UNet) or per frame (VAE),
  and multiplied by the number of snippets and frames. The device's peak is a
  large matmul in the run's precision, timed on the spot.
* `--with-baseline` repeats everything with the reference implementation's
  execution strategy (one snippet per UNet call, eager, VAE batch 4, fp16 on a
  GPU, the Adam co-alignment) in the same process, so every speedup is a ratio
  from one run.

Modules, by job:

* `rd_engine.bench.runner`: `run_bench`, one result per resolution (models, input, settings, the
  baseline strategy, speedups, output path).
* `rd_engine.bench.measure`: the measured runs (`measure`, `measure_online`, decode and resize passes).
* `rd_engine.bench.timing`: `StageTimer`, `TimedBackend`, synchronize and NVTX helpers.
* `rd_engine.bench.flops`: FLOP counting (`count_flops`, `FlopTable`) and `measure_peak_tflops`.
* `rd_engine.bench.machine`: the machine and library description.
* `rd_engine.bench.report`: the table, strict JSON writing and loading, `compare`.
* `rd_engine.bench.schema`: the JSON schema's version, stages and nullable fields.

The command-line options are `rd_engine.cli.bench`.
"""
