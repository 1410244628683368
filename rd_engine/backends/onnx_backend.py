"""ONNX Runtime backend: the engine's ONNX graphs on the CPU or CUDA execution provider.

The graphs are the `.ort.onnx` flavour: attention is ONNX Runtime's
`MultiHeadAttention` (flash-style kernels on CPU and CUDA), not the portable
MatMul-Softmax-MatMul, whose score matrices (tokens = L*h*w per snippet) do
not fit in memory at real resolutions (see rd_engine.export.ort_graph).

Inputs and outputs are torch tensors bound to the session by address
(`IOBinding` with `data_ptr()`): on CUDA nothing goes through host memory, on
the CPU nothing is copied into numpy. The session runs on torch's current CUDA
stream (`user_compute_stream`), so ordering with the surrounding torch work
needs no host synchronization.

Precision: an engine built with `--precision fp16` holds fp16 graphs beside
the fp32 ones; they run when the run asks for fp16 (on CUDA: the fast path; on
the CPU only when fp16 is forced with --dtype). Everything else runs the fp32
graphs: ONNX Runtime has no bf16 kernels for these graphs (bf16 engines are
for TensorRT).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from rd_engine.backends.engine_file import EngineFileBackend
from rd_engine.engine_format.folder import EngineFolder, open_engine_folder
from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}
_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_DTYPE = {v: k for k, v in _PRECISION.items()}


def onnxruntime_unavailable_reason(device: torch.device | str = "cpu") -> str | None:
    """Why the ONNX Runtime backend cannot run on `device` here (None: it can)."""
    try:
        import onnxruntime as ort
    except Exception as e:
        return f"onnxruntime is not importable ({type(e).__name__}: {e}); pip install onnxruntime (or onnxruntime-gpu)"
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu, or run on the CPU)"
    if torch.device(device).type not in ("cpu", "cuda"):
        return f"device {device} is not supported (cpu or cuda)"
    return None


class OrtBackend(EngineFileBackend):
    """Runs an engine folder's ONNX graphs with ONNX Runtime (the Backend protocol).

    Args:
        engine_dir: The engine folder (ignored when `engine` is given).
        device: "cpu" or a CUDA device (CUDA execution provider).
        dtype: Requested run precision: fp16 runs the engine's fp16 graphs if it has them, anything
            else the fp32 graphs. `self.dtype` says what runs.
        engine: An already opened `EngineFolder`.
        threads: CPU intra-op threads (default: torch's thread count).
        fused_attention: Run the `.ort.onnx` graphs, whose attention is ONNX Runtime's
            memory-efficient MultiHeadAttention (False: the portable graphs, which materialize every
            score matrix: fine for tests, out of memory at real resolutions).
    """

    name = "onnxruntime"

    def __init__(
        self,
        engine_dir: str | os.PathLike | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        *,
        engine: EngineFolder | None = None,
        threads: int | None = None,
        fused_attention: bool = True,
    ):
        why = onnxruntime_unavailable_reason(device)
        if why:
            raise UserError(f"onnxruntime backend: {why}")
        import onnxruntime as ort

        folder = engine if engine is not None else open_engine_folder(Path(engine_dir))
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        super().__init__(folder, dev)
        precision = "fp32"
        if dtype == torch.float16 and "fp16" in folder.onnx_precisions:
            precision = "fp16"
        elif dtype is not None and dtype != torch.float32:
            log.info(
                "onnxruntime runs the engine's fp32 graphs (%s was asked for; %s)",
                _PRECISION.get(dtype, dtype),
                "no fp16 graphs in the engine"
                if dtype == torch.float16
                else "ONNX Runtime has no bf16 kernels for them",
            )
        self.precision = precision
        self.dtype = _DTYPE[precision]
        folder.verify_files(folder.onnx_files(precision))
        self.ddim = folder.ddim()

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: ORT's per-node placement warnings are noise here
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if dev.type == "cpu":
            opts.intra_op_num_threads = threads or max(1, torch.get_num_threads())
            # no busy-waiting workers between calls: they would compete with torch's own threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers = ["CPUExecutionProvider"]
            self._ort_device, self._device_id = "cpu", 0
            self._stream = None
            self._run_options = None
        else:
            self._stream = torch.cuda.current_stream(dev)
            cuda_opts = {
                "device_id": dev.index,
                # torch's stream: ORT's kernels are ordered with the torch work around them
                "user_compute_stream": str(self._stream.cuda_stream),
                # ORT's arena next to torch's caching allocator: grow by what is asked, no doubling
                "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": "EXHAUSTIVE",
            }
            providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
            self._ort_device, self._device_id = "cuda", dev.index
            self._run_options = ort.RunOptions()
            # same stream as torch: no need for ORT to block the host at the end of every run
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self.sessions: dict[str, object] = {}
        for name in folder.contracts:
            path = folder.onnx_graph(name, precision, "ort" if fused_attention else "portable")
            try:
                sess = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:
                raise UserError(
                    f"onnxruntime cannot load {path} ({type(e).__name__}: {e}); rebuild: {folder.rebuild_command()}"
                ) from None
            if dev.type == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
                raise UserError(
                    f"onnxruntime could not start its CUDA execution provider for {path.name} "
                    "(CUDA/cuDNN libraries matching onnxruntime-gpu installed?); or run on the CPU"
                )
            self.sessions[name] = sess

    def run_component(
        self, name: str, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        """Run one graph with its inputs and outputs bound to torch tensors by address."""
        sess = self.sessions[name]
        contract = self.folder.contracts[name]
        binding = sess.io_binding()
        keep = []  # the converted inputs must outlive the run
        for spec in contract.inputs:
            t = feeds[spec.name].to(self.device, spec.torch_dtype(self.dtype)).contiguous()
            keep.append(t)
            binding.bind_input(spec.name, self._ort_device, self._device_id, _NP[t.dtype], tuple(t.shape), t.data_ptr())
        result = {}
        for spec in contract.outputs:
            out = torch.empty(out_shapes[spec.name], dtype=spec.torch_dtype(self.dtype), device=self.device)
            result[spec.name] = out
            binding.bind_output(
                spec.name, self._ort_device, self._device_id, _NP[out.dtype], tuple(out.shape), out.data_ptr()
            )
        if self._stream is not None and torch.cuda.current_stream(self.device) != self._stream:
            # the caller switched streams since the session was made: order by waiting for it
            torch.cuda.current_stream(self.device).synchronize()
            sess.run_with_iobinding(binding)  # synchronous: outputs are ready for any stream
        else:
            sess.run_with_iobinding(binding, self._run_options)
        return result
