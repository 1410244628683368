"""ONNX export of the engine components.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. With
torch 2.13 it traces the stock diffusers UNet and VAE without graph breaks and
keeps every shape computation (the cross-frame reshape `(S*L, hw, c) -> (S,
L*hw, c)`, the skip-connection upsample sizes) symbolic, so one graph serves
every snippet batch and resolution. `F.scaled_dot_product_attention` exports
as `MatMul -> Softmax -> MatMul` (query and key each pre-scaled by
sqrt(1/sqrt(d))), the pattern TensorRT fuses into its multi-head-attention
kernels; `attention_summary` counts it in every graph.

Graphs are fp32, plus fp16/bf16 ones traced from the module cast to that dtype
for half-precision engines. Graphs with over 1 GiB of weights (the real UNet:
3.5 GB in fp32, beyond what one protobuf can hold) keep them in one external
data file `<graph>.data` next to the graph. Each fp32/fp16 graph also gets an
ONNX Runtime flavour `<graph>.ort.onnx` (see `ort_graph`) sharing its weights.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rd_engine.engine_format.contracts import SAMPLE_DIMS, Contract
from rd_engine.export.ort_graph import fuse_attention

if TYPE_CHECKING:
    from rd_engine.model.checkpoint import Models

DEFAULT_OPSET = 17
# Conv, InstanceNormalization, Expand... accept bfloat16 only from opset 22 on: bf16 graphs are traced at
# the requested opset and converted (onnx.version_converter), so that they pass the strict checker.
BF16_OPSET = 22
EXTERNAL_DATA_THRESHOLD = 1 << 30  # bytes of weights above which they go to a separate file (protobuf limit: 2 GiB)
ORT_PRECISIONS = ("fp32", "fp16")  # ONNX Runtime flavours (.ort.onnx) are written for these


@contextlib.contextmanager
def _quiet_export():
    """Silence the tracer's expected chatter: diffusers' shape asserts and `contiguous()` guards
    ('Converting a tensor to a Python boolean...') are constants in every graph we build, and the
    TorchScript-exporter deprecation notice is ours to track, not the user's.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1.*")
        yield


@contextlib.contextmanager
def norms_in_fp32(module: torch.nn.Module, enabled: bool = True):
    """While exporting a half-precision graph: every GroupNorm computes in fp32, between two casts.

    Normalization statistics over thousands of half-precision values lose the precision that depth
    needs; the casts in the graph keep them in fp32 in every runtime (a strongly typed TensorRT network
    follows the graph's types and ignores per-layer precision requests). Yields the number of
    normalizations wrapped; restores the modules on exit.
    """
    patched = []
    if enabled:
        for m in module.modules():
            if isinstance(m, torch.nn.GroupNorm):

                def forward(x, m=m):
                    w = m.weight.float() if m.weight is not None else None
                    b = m.bias.float() if m.bias is not None else None
                    return torch.nn.functional.group_norm(x.float(), m.num_groups, w, b, m.eps).to(x.dtype)

                m.forward = forward
                patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def graph_file_name(contract: Contract, precision: str) -> str:
    return f"{contract.name}.onnx" if precision == "fp32" else f"{contract.name}.{precision}.onnx"


def export_onnx(
    contract: Contract,
    models: Models,
    folder: Path,
    opset: int = DEFAULT_OPSET,
    external_data: str = "auto",
    precision: str = "fp32",
) -> dict:
    """Export one component to `folder/<name>[.<precision>].onnx` and check it with `onnx.checker`.

    Args:
        contract: The component.
        models: The loaded checkpoint (fp32, CPU).
        folder: Destination folder (created).
        opset: ONNX opset (>= 17: LayerNormalization is a single op from 17 on).
        external_data: "auto" (weights over 1 GiB go to `<graph>.data`), "always" or "never".
        precision: "fp32", or "fp16"/"bf16" for a graph traced from the module cast to that dtype
            (image/latent I/O in that dtype; timestep int64 and alphas fp32 as always). bf16 graphs
            end up at opset 22 (see BF16_OPSET); ONNX Runtime has no bf16 CPU kernels, TensorRT runs them.

    Returns:
        {"onnx": file name, "files": [graph, data...], "seconds": ..., "attention": {...},
         "weights_bytes": ..., "precision": ...}
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} < 17: LayerNormalization and the attention pattern need >= 17")
    dtype = PRECISIONS[precision]
    folder.mkdir(parents=True, exist_ok=True)
    module = contract.module(models, dtype)
    args = contract.sample_inputs(SAMPLE_DIMS, torch.Generator().manual_seed(0), precision=dtype)
    norms = 0
    final = folder / graph_file_name(contract, precision)
    scratch = folder / f".{final.name}.export"
    scratch.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    try:
        raw = scratch / final.name
        with torch.no_grad(), _quiet_export(), norms_in_fp32(module, dtype != torch.float32) as norms:
            torch.onnx.export(
                module,
                args,
                str(raw),
                input_names=[t.name for t in contract.inputs],
                output_names=[t.name for t in contract.outputs],
                dynamic_axes=contract.dynamic_axes(),
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
                export_params=True,
            )
        # Re-save: one graph file plus (for big models) exactly one weights file, whatever
        # layout the exporter chose (it writes one file per tensor above 2 GiB).
        model = onnx.load(str(raw), load_external_data=True)
        if precision == "bf16" and opset < BF16_OPSET:
            model = _convert_opset(model, BF16_OPSET)
            opset = BF16_OPSET
        weights = sum(t.ByteSize() for t in model.graph.initializer)
        use_external = external_data == "always" or (external_data == "auto" and weights > EXTERNAL_DATA_THRESHOLD)
        _set_dim_names(model, contract)
        files = [final.name]
        if use_external:
            data_name = f"{final.name}.data"
            (folder / data_name).unlink(missing_ok=True)
            onnx.save_model(
                model,
                str(final),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            files.append(data_name)
        else:
            onnx.save_model(model, str(final))
    finally:
        for p in sorted(scratch.glob("*")):
            p.unlink()
        scratch.rmdir()
    onnx.checker.check_model(str(final), full_check=True)  # by path: works with external data
    graph = onnx.load(str(final), load_external_data=False)
    attention = attention_summary(graph)
    info = {
        "onnx": final.name,
        "files": files,
        "attention": attention,
        "weights_bytes": weights,
        "fp32_normalizations": norms,
        "opset": opset,
        "precision": precision,
    }
    if precision in ORT_PRECISIONS:
        # The ONNX Runtime flavour: fused attention, same weights. External weights stay references to
        # the same .data file; embedded ones (graphs under 1 GiB) are copied.
        fused = fuse_attention(graph, module)
        ort_name = final.name[: -len(".onnx")] + ".ort.onnx"
        onnx.save_model(graph, str(folder / ort_name))
        onnx.checker.check_model(str(folder / ort_name))
        info.update(ort_onnx=ort_name, ort_fused_attention=fused)
        files.append(ort_name)
    info["seconds"] = time.perf_counter() - t0
    return info


def _convert_opset(model, opset: int):
    """`onnx.version_converter` on the graph without its weights: the converter serializes the
    model, and protobuf stops at 2 GiB. Initializer bytes are set aside and put back after.
    """
    import onnx.version_converter

    stash = {}
    for init in model.graph.initializer:
        if init.HasField("raw_data"):
            stash[init.name] = init.raw_data
            init.ClearField("raw_data")
    converted = onnx.version_converter.convert_version(model, opset)
    for init in converted.graph.initializer:
        if init.name in stash:
            init.raw_data = stash.pop(init.name)
    if stash:
        raise RuntimeError(f"opset conversion lost {len(stash)} initializers")
    return converted


def _set_dim_names(model, contract: Contract) -> None:
    """Keep the contract's names on the graph's symbolic dims (the exporter invents some for outputs)."""
    specs = {t.name: t for t in (*contract.inputs, *contract.outputs)}
    for vi in (*model.graph.input, *model.graph.output):
        spec = specs.get(vi.name)
        if spec is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, want in zip(dims, spec.shape):
            if isinstance(want, str):
                d.dim_param = want
            else:
                d.dim_value = want


def attention_summary(model) -> dict:
    """How attention looks in a graph: Softmax nodes fed by a MatMul and feeding a MatMul
    (the unfused scaled-dot-product pattern TensorRT fuses), and any fused attention ops.
    """
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    pattern = 0
    for n in softmax:
        src = producers.get(n.input[0])
        dst = consumers.get(n.output[0], [])
        if src is not None and src.op_type == "MatMul" and any(d.op_type == "MatMul" for d in dst):
            pattern += 1
    fused = sum(1 for n in model.graph.node if n.op_type in ("Attention", "MultiHeadAttention"))
    return {"softmax": len(softmax), "matmul_softmax_matmul": pattern, "fused_attention_ops": fused}


def onnx_parity(
    contract: Contract, models: Models, path: Path, dims: dict[str, int] | None = None, seed: int = 0
) -> float:
    """Max |ONNX Runtime (CPU) - PyTorch| of one component on random inputs (a build-time self-check)."""
    import onnxruntime as ort

    dims = dims or SAMPLE_DIMS
    args = contract.sample_inputs(dims, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = contract.module(models)(*args)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {t.name: a.numpy() for t, a in zip(contract.inputs, args)})[0]
    return float((torch.from_numpy(got) - ref).abs().max())
