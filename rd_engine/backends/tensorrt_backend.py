"""TensorRT backend: the engine's plans, with every buffer owned by torch.

- Inputs, outputs and the plans' activation memory (one workspace shared by all
  plans, `ExecutionContextAllocationStrategy.USER_MANAGED`) are torch tensors;
  TensorRT gets their addresses. No pycuda, no host copies.
- `execute_async_v3` runs on torch's current stream when that is a non-default
  stream, else on a side stream ordered with it by stream waits (TensorRT
  synchronizes extra on the legacy default stream).
- Shapes that repeat (full snippet batches at one resolution: nearly every call
  of a run) are captured once into a CUDA graph on their own execution context
  and replayed; a call then costs one graph launch plus the input/output copies.
- Calls larger than a plan's batch profile are split.
- Every address handed to TensorRT is 256-byte aligned (TensorRT requires it;
  slice views such as a batch split or `latents[a:b]` can be misaligned:
  those are copied), every binding is checked, and every output buffer is
  checked against the shape TensorRT computes for the inputs.
- Ordering: all plans share one workspace and each plan one eager context, so
  no two executions may overlap. They run in the order of the calls: a call on
  another stream than the previous one first waits for that stream
  (`_Workspace.order`). Running one backend from several threads at once is
  not supported (one session per thread, as for the other backends).

The module imports without tensorrt; `TrtBackend` raises a UserError if it is
missing or the plans were built for another GPU or TensorRT version
(`tensorrt_unavailable_reason` says why TensorRT cannot run here).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch

from rd_engine.backends.engine_file import EngineFileBackend
from rd_engine.engine_format.folder import EngineFolder, open_engine_folder
from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")

_LOGGER = None
MAX_GRAPHS_PER_PLAN = 8
TRT_ALIGNMENT = 256  # bytes: TensorRT's required alignment of I/O tensor addresses


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` contiguous at a `TRT_ALIGNMENT`-byte aligned address (a copy when it is not)."""
    if t.is_contiguous() and t.data_ptr() % TRT_ALIGNMENT == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


TRT_REQUIRED = "TensorRT and a CUDA GPU are required"


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT plans cannot be built or run here (None: they can)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (missing libnvinfer)
        return f"the tensorrt Python package is not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def trt_logger():
    """The process-wide TensorRT logger (warnings and errors)."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, td in (("bfloat16", torch.bfloat16), ("int64", torch.int64), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = td
    if dt not in table:
        raise UserError(f"TensorRT tensor type {dt} is not supported by rd-engine")
    return table[dt]


class _Workspace:
    """Activation memory shared by every execution context (they never run concurrently)."""

    def __init__(self, size: int, device: torch.device):
        self.size = max(int(size), 1)
        self.buffer = torch.empty(self.size, dtype=torch.uint8, device=device)
        self.last_stream: torch.cuda.Stream | None = None

    def order(self, stream: torch.cuda.Stream) -> None:
        """Make `stream` wait for the stream of the previous execution (they share this memory)."""
        if self.last_stream is not None and self.last_stream.cuda_stream != stream.cuda_stream:
            stream.wait_stream(self.last_stream)
        self.last_stream = stream

    def bind(self, ctx) -> None:
        if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
            ctx.set_device_memory(self.buffer.data_ptr(), self.size)
        else:
            ctx.device_memory = self.buffer.data_ptr()


class _Plan:
    """One deserialized plan: its eager context, and CUDA graphs for repeating shapes."""

    def __init__(self, trt, runtime, path: Path, name: str, device: torch.device, cuda_graphs: bool, batch_input: str):
        self.trt = trt
        self.name = name
        self.device = device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {path} (corrupt, or built by another TensorRT version)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        if batch_input not in self.inputs:
            raise UserError(f"TensorRT plan {path} has no input {batch_input!r} (inputs: {self.inputs}); rebuild it")
        _lo, _opt, hi = self.engine.get_tensor_profile_shape(batch_input, 0)  # by name: no order assumed
        self.max_batch = int(hi[0])
        self.capture_warned = False
        self.cuda_graphs = cuda_graphs
        self.workspace: _Workspace | None = None
        self.ctx = None
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.seen: Counter = Counter()
        self.no_graph: set[tuple] = set()

    @property
    def memory_size(self) -> int:
        e = self.engine
        return int(e.device_memory_size_v2 if hasattr(e, "device_memory_size_v2") else e.device_memory_size)

    def new_context(self):
        trt = self.trt
        if hasattr(trt, "ExecutionContextAllocationStrategy"):
            ctx = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        else:
            ctx = self.engine.create_execution_context_without_device_memory()
        if ctx is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {self.name}")
        self.workspace.bind(ctx)
        return ctx

    def bind(self, ctx, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor]) -> None:
        """Set the input shapes and every address; `feeds` and `outs` must be aligned (`aligned`)."""
        for n in self.inputs:
            t = feeds[n]
            if not ctx.set_input_shape(n, tuple(t.shape)):
                raise UserError(f"{self.name}: input {n} of shape {tuple(t.shape)} is outside the plan's profile")
        for n in self.outputs:
            want = tuple(ctx.get_tensor_shape(n))
            if want != tuple(outs[n].shape):
                raise RuntimeError(
                    f"{self.name}: output {n} is {want} for these inputs, the buffer {tuple(outs[n].shape)}"
                )
        for n, t in [*((n, feeds[n]) for n in self.inputs), *((n, outs[n]) for n in self.outputs)]:
            if not ctx.set_tensor_address(n, t.data_ptr()):
                raise RuntimeError(f"{self.name}: TensorRT refused the address of {n} (alignment or size)")

    def run(self, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        with torch.cuda.device(self.device):  # TensorRT runs in the current device's context
            return self._run(feeds, out_shapes)

    def _run(self, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        feeds = {n: aligned(feeds[n].to(self.device, self.dtypes[n])) for n in self.inputs}
        key = tuple(tuple(feeds[n].shape) for n in self.inputs)
        if self.cuda_graphs and key not in self.no_graph:
            graph = self.graphs.get(key)
            if graph is None:
                self.seen[key] += 1
                if self.seen[key] >= 2:  # the shape repeats: capture it
                    graph = self._capture(key, feeds, out_shapes)
            if graph is not None:
                self.graphs.move_to_end(key)
                return graph.replay(feeds)
        outs = {n: torch.empty(out_shapes[n], dtype=self.dtypes[n], device=self.device) for n in self.outputs}
        if self.ctx is None:
            self.ctx = self.new_context()
        with _trt_stream(self.device) as stream:
            self.workspace.order(stream)
            self.bind(self.ctx, feeds, outs)
            if not self.ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.name}")
        return outs

    def _capture(self, key, feeds, out_shapes) -> _Graph | None:
        try:
            graph = _Graph(self, feeds, out_shapes)
        except Exception as e:  # some plans cannot be captured (or memory ran out): run them eagerly
            if not self.capture_warned:
                log.warning(
                    "tensorrt: no CUDA graph for %s at shapes %s (%s: %s); those calls run eagerly, one kernel launch "
                    "per layer instead of one graph launch (slower for small frames and batches)",
                    self.name,
                    key,
                    type(e).__name__,
                    e,
                )
                self.capture_warned = True
            self.no_graph.add(key)
            return None
        self.graphs[key] = graph
        while len(self.graphs) > MAX_GRAPHS_PER_PLAN:
            self.graphs.popitem(last=False)
        return graph


class _Graph:
    """A CUDA graph of one plan at one set of input shapes, on its own execution context."""

    def __init__(self, plan: _Plan, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]):
        dev = plan.device
        self.ctx = plan.new_context()  # shapes fixed for this context's lifetime
        self.inputs = {n: torch.empty_like(t) for n, t in feeds.items()}
        self.outputs = {n: torch.empty(out_shapes[n], dtype=plan.dtypes[n], device=dev) for n in plan.outputs}
        for n, t in feeds.items():
            self.inputs[n].copy_(t)
        plan.bind(self.ctx, self.inputs, self.outputs)
        self.workspace = plan.workspace
        side = torch.cuda.Stream(dev)
        plan.workspace.order(side)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            # one eager run first: TensorRT finishes shape-dependent setup outside the capture
            if not self.ctx.execute_async_v3(side.cuda_stream):
                raise RuntimeError("warm-up run failed")
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
            if not self.ctx.execute_async_v3(side.cuda_stream):
                raise RuntimeError("captured run failed")

    def replay(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for n, t in feeds.items():
            self.inputs[n].copy_(t, non_blocking=True)
        self.workspace.order(torch.cuda.current_stream(self.inputs[next(iter(self.inputs))].device))
        self.graph.replay()
        # the static outputs are overwritten by the next replay: hand out copies
        return {n: t.clone() for n, t in self.outputs.items()}


@contextmanager
def _trt_stream(device: torch.device):
    """Torch's current stream if it is not the default one; else a side stream ordered with it."""
    current = torch.cuda.current_stream(device)
    if current.cuda_stream != torch.cuda.default_stream(device).cuda_stream:
        yield current
        return
    side = _side_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        yield side
    current.wait_stream(side)


_SIDE: dict[torch.device, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _SIDE:
        _SIDE[device] = torch.cuda.Stream(device)
    return _SIDE[device]


class TrtBackend(EngineFileBackend):
    """Runs an engine folder's TensorRT plans (the Backend protocol).

    Args:
        engine_dir: The engine folder (ignored when `engine` is given).
        device: A CUDA device.
        engine: An already opened `EngineFolder`.
        cuda_graphs: Capture repeating shapes into CUDA graphs.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_dir: str | os.PathLike | None,
        device: torch.device | str = "cuda",
        *,
        engine: EngineFolder | None = None,
        cuda_graphs: bool = True,
    ):
        try:
            import tensorrt as trt
        except Exception as e:
            raise UserError(
                f"tensorrt backend: the tensorrt package is not importable ({type(e).__name__}: {e})"
            ) from None
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise UserError(f"tensorrt backend: needs a CUDA device (got {dev})")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        folder = engine if engine is not None else open_engine_folder(Path(engine_dir))
        super().__init__(folder, dev)
        folder.check_tensorrt_machine(dev)
        folder.verify_files(folder.plan_files())
        precision = folder.tensorrt.precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.ddim = folder.ddim()
        with torch.cuda.device(dev):
            self._runtime = trt.Runtime(trt_logger())
            self.plans = {
                name: _Plan(trt, self._runtime, folder.plan_file(name), name, dev, cuda_graphs, c.batched_inputs()[0])
                for name, c in folder.contracts.items()
            }
            self._workspace = _Workspace(max(p.memory_size for p in self.plans.values()), dev)
            for p in self.plans.values():
                p.workspace = self._workspace

    def run_component(
        self, name: str, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        """Run one plan, in chunks of at most its max batch (inputs without a batch dimension are not split)."""
        plan = self.plans[name]
        batched = self.folder.contracts[name].batched_inputs()
        total = feeds[batched[0]].shape[0]
        if total <= plan.max_batch:
            return plan.run(feeds, out_shapes)
        parts = []
        for a in range(0, total, plan.max_batch):
            b = min(total, a + plan.max_batch)
            chunk = {n: (t[a:b] if n in batched else t) for n, t in feeds.items()}
            parts.append(plan.run(chunk, {n: (b - a, *shape[1:]) for n, shape in out_shapes.items()}))
        return {n: torch.cat([p[n] for p in parts]) for n in parts[0]}
