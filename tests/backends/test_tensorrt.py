"""TensorRT plans and the TensorRT backend (and ONNX Runtime's CUDA execution provider).

Everything here needs TensorRT and a CUDA GPU and is skipped elsewhere with that reason.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rd_engine.backends.tensorrt_backend import TRT_REQUIRED, tensorrt_unavailable_reason
from rd_engine.errors import UserError

pytestmark = pytest.mark.skipif(tensorrt_unavailable_reason() is not None, reason=TRT_REQUIRED)

CUDA = torch.device("cuda")
SIZES = [(64, 48), (96, 64)]
# max |TensorRT - PyTorch| per precision, against the fp32 PyTorch reference on random inputs of
# magnitude ~1 (fp32 plans are built without TF32; half plans round every activation)
TOL = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 2e-1}


def _precisions():
    out = ["fp32", "fp16"]
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        out.append("bf16")
    return out


@pytest.fixture(scope="module", params=_precisions())
def trt_engine(request, tiny_ckpt, tmp_path_factory, parser, build_args):
    from rd_engine.cli.build import cmd_build

    prec = request.param
    tmp = tmp_path_factory.mktemp(f"trt-{prec}")
    out = tmp / "engine"
    args = parser.parse_args(
        [
            "build",
            "-c",
            str(tiny_ckpt),
            "-o",
            str(out),
            "-q",
            *build_args,
            "--backend",
            "tensorrt",
            "--precision",
            prec,
            "--timing-cache",
            str(tmp / "timing.cache"),
        ]
    )
    assert cmd_build(args) == 0
    return out, prec


@pytest.fixture(scope="module")
def trt_backend(trt_engine):
    from rd_engine.backends.tensorrt_backend import TrtBackend

    return TrtBackend(trt_engine[0], CUDA)


def test_manifest_keys_the_plans_to_this_machine(trt_engine):
    import tensorrt as trt

    folder, prec = trt_engine
    m = json.loads((folder / "manifest.json").read_text())
    assert m["backends"] == ["onnxruntime", "tensorrt"] and m["precision"] == prec
    major, minor = torch.cuda.get_device_capability()
    assert m["tensorrt"]["version"] == trt.__version__
    assert m["tensorrt"]["gpu"] == {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    for comp in m["components"].values():
        assert comp["tensorrt"]["file"] in m["files"] and comp["tensorrt"]["precision"] == prec
    assert (folder.parent / "timing.cache").stat().st_size > 0  # the persistent timing cache


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_components_match_pytorch(trt_backend, trt_engine, cuda_reference, size, batch):
    prec = trt_engine[1]
    w, h = size
    g = torch.Generator(device="cuda").manual_seed(batch * 1000 + w)
    frames = torch.rand(batch, 3, h, w, device=CUDA, generator=g) * 2 - 1
    lat = torch.randn(batch, 4, h // 8, w // 8, device=CUDA, generator=g)
    rgb = torch.randn(batch, 3, 4, h // 8, w // 8, device=CUDA, generator=g)
    depth = torch.randn(batch, 3, 4, h // 8, w // 8, device=CUDA, generator=g)
    dt = trt_backend.dtype
    assert dt == {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]
    pairs = [
        (cuda_reference.encode(frames), trt_backend.encode(frames.to(dt))),
        (cuda_reference.decode(lat), trt_backend.decode(lat.to(dt))),
    ]
    for step in cuda_reference.ddim.schedule(1) + cuda_reference.ddim.schedule(20)[10:11]:
        pairs.append((cuda_reference.denoise(rgb, depth, step), trt_backend.denoise(rgb.to(dt), depth.to(dt), step)))
    for ref, got in pairs:
        assert got.dtype == dt and got.shape == ref.shape and got.device.type == "cuda"
        assert (got.float() - ref).abs().max().item() < TOL[prec]


def test_cuda_graphs_replay_what_eager_computes(trt_engine):
    from rd_engine.backends.tensorrt_backend import TrtBackend

    eager = TrtBackend(trt_engine[0], CUDA, cuda_graphs=False)
    graphed = TrtBackend(trt_engine[0], CUDA, cuda_graphs=True)
    step = eager.ddim.schedule(1)[0]
    g = torch.Generator(device="cuda").manual_seed(0)
    outs = []
    for _ in range(4):  # first call eager, second captures, then replays
        rgb = torch.randn(2, 3, 4, 6, 8, device=CUDA, generator=g).to(eager.dtype)
        depth = torch.randn(2, 3, 4, 6, 8, device=CUDA, generator=g).to(eager.dtype)
        outs.append((eager.denoise(rgb, depth, step), graphed.denoise(rgb, depth, step)))
    plan = graphed.plans["unet_step_L3"]
    assert len(plan.graphs) == 1 or plan.no_graph, "repeating shape was neither captured nor refused"
    for a, b in outs:
        assert torch.equal(a, b)


def test_runs_on_a_non_default_stream_and_splits_large_batches(trt_backend):
    step = trt_backend.ddim.schedule(1)[0]
    dt = trt_backend.dtype
    g = torch.Generator(device="cuda").manual_seed(1)
    rgb = torch.randn(5, 3, 4, 6, 8, device=CUDA, generator=g).to(dt)  # max batch of the profile: 4
    depth = torch.randn(5, 3, 4, 6, 8, device=CUDA, generator=g).to(dt)
    whole = trt_backend.denoise(rgb, depth, step)
    parts = torch.cat([trt_backend.denoise(rgb[:4], depth[:4], step), trt_backend.denoise(rgb[4:], depth[4:], step)])
    assert torch.equal(whole, parts)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        on_stream = trt_backend.denoise(rgb, depth, step)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(on_stream, whole)


def test_end_to_end_with_auto_backend(trt_engine, cuda_reference, clip):
    from rd_engine.backends.select import open_backend
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.settings import resolve

    folder, prec = trt_engine
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]
    settings, _ = resolve(
        "fast", dict(res=64, dilations=[1, 3], seed=1, align="reference", align_iters=30, dtype=prec), CUDA
    )
    be = open_backend(folder, None, "auto", CUDA, dtype, (64, 42))
    assert be.name == "tensorrt"
    got = Pipeline(be, progress=False).predict(clip, settings)
    depth = torch.as_tensor(got.depth).float()
    assert torch.isfinite(depth).all() and depth.shape == (14, 42, 64)
    if prec == "fp32":
        ref_settings, _ = resolve(
            "fast", dict(res=64, dilations=[1, 3], seed=1, align="reference", align_iters=30, dtype="fp32"), CUDA
        )
        ref = Pipeline(cuda_reference, progress=False).predict(clip, ref_settings)
        assert (depth - torch.as_tensor(ref.depth).float()).abs().max().item() < 1e-3


def test_foreign_plans_are_refused(trt_engine, tmp_path):
    from rd_engine.backends.select import open_backend
    from rd_engine.engine_format.folder import open_engine_folder

    copy = tmp_path / "engine"
    shutil.copytree(trt_engine[0], copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["tensorrt"]["gpu"]["compute_capability"] = "1.0"
    m["tensorrt"]["version"] = "0.0.1"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        UserError,
        match=r"do not fit this machine.*TensorRT 0\.0\.1.*compute capability 1\.0.*"
        r"rd-engine build .*--backend tensorrt",
    ):
        open_engine_folder(copy).check_tensorrt_machine(CUDA)
    with pytest.raises(UserError, match="do not fit this machine"):
        open_backend(copy, None, "auto", CUDA, torch.float16)  # refused, not silently run elsewhere
    assert (
        open_backend(copy, None, "onnxruntime", CUDA if _ort_cuda() else torch.device("cpu"), torch.float32).name
        == "onnxruntime"
    )


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()
