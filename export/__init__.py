"""ONNX export, TensorRT build and the engine manifest (installed as `rd_engine.export`).

- `contracts`: one export contract per component (names, dynamic axes, profiles, traced module).
- `onnx_export`: `torch.onnx.export` of a contract, checks, the attention summary.
- `tensorrt_build`: strongly typed TensorRT plans with a persistent timing cache.
- `manifest`: the engine folder, its manifest and every refusal of a stale or foreign engine.
- `build`: `rd-engine build` (atomic: temporary folder, renamed at the end).
- `cli`: the `build` and `info` subcommands and `open_backend` for `run`.

Only `manifest` (and `contracts`) are imported at run time; nothing here imports
onnx, onnxruntime or tensorrt at module import.
"""
