"""ONNX export and TensorRT build (installed as `rd_engine.export`).

- `onnx_export`: `torch.onnx.export` of a contract, checks, the attention summary.
- `ort_graph`: the ONNX Runtime flavour of a graph (attention as MultiHeadAttention).
- `tensorrt_build`: strongly typed TensorRT plans with a persistent timing cache.
- `build`: `rd-engine build` (atomic: temporary folder, renamed at the end).

The contracts, the manifest and the engine folder are `rd_engine.engine_format`; the
CLI subcommands are `rd_engine.cli.build`. Nothing here is imported at run time, and
nothing here imports onnx, onnxruntime or tensorrt at module import.
"""
