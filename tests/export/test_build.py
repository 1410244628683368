"""`rd-engine build`: what a build writes, its graphs, option checks and atomic builds."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from rd_engine.cli.args import worded
from rd_engine.engine_format.contracts import SAMPLE_DIMS, all_contracts
from rd_engine.engine_format.folder import open_engine_folder
from rd_engine.engine_format.manifest import FORMAT_VERSION
from rd_engine.errors import UserError
from rd_engine.export import build as build_mod
from rd_engine.export.onnx_export import attention_summary, export_onnx

CPU = torch.device("cpu")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_manifest_records_the_build(engine_dir, tiny_ckpt, tiny_models):
    from rd_engine.model.checkpoint import LATENT_SCALE, weights_hash

    m = _manifest(engine_dir)
    assert m["format_version"] == FORMAT_VERSION
    assert m["source"]["weights_hash"] == weights_hash(Path(tiny_ckpt))
    assert m["precision"] == "fp32" and m["backends"] == ["onnxruntime"] and m["tensorrt"] is None
    assert m["latent_scale"] == LATENT_SCALE and m["snippet_lens"] == [3]
    assert m["profile"]["min_res"] == 32 and m["profile"]["max_res"] == 128 and m["profile"]["opt_res"] == 96
    assert m["profile"]["max_batch"] == 4 and m["profile"]["max_vae_batch"] == 4
    assert m["ddim"]["config"]["prediction_type"] == "v_prediction"
    assert m["ddim"]["alphas_cumprod"] == [float(a) for a in tiny_models.ddim.alphas_cumprod]
    for lib in ("torch", "onnx", "onnxruntime", "diffusers"):
        assert m["libraries"][lib]
    assert set(m["components"]) == {"vae_encoder", "vae_decoder", "unet_step_L3"}
    for comp in m["components"].values():
        assert comp["onnx"]["fp32"]["parity_max_abs_vs_pytorch"] < 1e-4
    # every file is listed with size and checksum; the manifest lists itself nowhere
    on_disk = sorted(p.relative_to(engine_dir).as_posix() for p in engine_dir.rglob("*") if p.is_file())
    assert sorted(m["files"]) == sorted(f for f in on_disk if f != "manifest.json")
    # the empty-prompt embedding is stored, and is the checkpoint's
    engine = open_engine_folder(engine_dir)
    assert torch.equal(engine.empty_embed(), tiny_models.empty_embed)
    assert engine.rebuild_command().startswith("rd-engine build --checkpoint ")


def test_graphs_pass_the_checker_with_dynamic_axes(engine_dir):
    engine = open_engine_folder(engine_dir)
    for name, contract in engine.contracts.items():
        path = engine.onnx_graph(name)
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        assert model.opset_import[0].version >= 17
        dims = {
            vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in (*model.graph.input, *model.graph.output)
        }
        for spec in (*contract.inputs, *contract.outputs):
            assert dims[spec.name] == list(spec.shape), spec.name
        # the empty-prompt embedding and the weights are initializers, not inputs
        assert [i.name for i in model.graph.input] == [t.name for t in contract.inputs]


def test_attention_exports_as_matmul_softmax_matmul(engine_dir):
    """Every attention (tiny UNet: 4 transformer blocks x self+cross; VAE: 1 mid-block) is the
    MatMul -> Softmax -> MatMul pattern TensorRT fuses in the portable graphs, and ONNX Runtime's
    MultiHeadAttention in the .ort.onnx flavour (which shares the weights).
    """
    engine = open_engine_folder(engine_dir)
    expect = {"vae_encoder": 1, "vae_decoder": 1, "unet_step_L3": 8}
    for name, n in expect.items():
        summary = attention_summary(onnx.load(str(engine.onnx_graph(name))))
        assert summary == {"softmax": n, "matmul_softmax_matmul": n, "fused_attention_ops": 0}
        ort_path = engine.onnx_graph(name, flavour="ort")
        assert ort_path.name == f"{name}.ort.onnx"
        onnx.checker.check_model(str(ort_path))
        ort_graph = onnx.load(str(ort_path))
        assert attention_summary(ort_graph) == {"softmax": 0, "matmul_softmax_matmul": 0, "fused_attention_ops": n}
        mha = [nd for nd in ort_graph.graph.node if nd.op_type == "MultiHeadAttention"]
        assert len(mha) == n and all(nd.domain == "com.microsoft" for nd in mha)


def test_external_data_and_half_precision_graphs(tiny_models, tmp_path):
    """A graph saved with its weights in one external file still checks and runs; an fp16 graph
    (for CUDA / TensorRT) tracks the PyTorch fp16 module.
    """
    import onnxruntime as ort

    dec = all_contracts([3])[1]
    info = export_onnx(dec, tiny_models, tmp_path, external_data="always")
    assert info["files"] == ["vae_decoder.onnx", "vae_decoder.onnx.data", "vae_decoder.ort.onnx"]
    graph, data, ort_graph = (tmp_path / f for f in info["files"])
    assert data.stat().st_size > 2 * graph.stat().st_size  # the weights left the graph file
    assert ort_graph.stat().st_size < data.stat().st_size / 2  # ...and the ORT flavour points at them too
    args = dec.sample_inputs(SAMPLE_DIMS, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = dec.module(tiny_models)(*args)
    for f in ("vae_decoder.onnx", "vae_decoder.ort.onnx"):
        sess = ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"latents": args[0].numpy()})[0])
        assert (got - ref).abs().max() < 1e-4

    info16 = export_onnx(dec, tiny_models, tmp_path, precision="fp16")
    assert info16["onnx"] == "vae_decoder.fp16.onnx"
    model = onnx.load(str(tmp_path / info16["onnx"]))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    sess = ort.InferenceSession(str(tmp_path / info16["onnx"]), providers=["CPUExecutionProvider"])
    got16 = torch.from_numpy(sess.run(None, {"latents": args[0].half().numpy()})[0])
    with torch.no_grad():
        ref16 = dec.module(tiny_models, torch.float16)(args[0].half())
    assert (got16.float() - ref16.float()).abs().max() < 2e-2  # fp16 rounding in a different op order
    # the half copy did not round the checkpoint's fp32 weights in place
    assert next(tiny_models.vae.parameters()).dtype == torch.float32
    # every GroupNorm of the half graph computes in fp32, between casts in the graph (what a strongly typed
    # TensorRT network follows); the fp32 graph has none of those casts
    groupnorms = sum(isinstance(m, torch.nn.GroupNorm) for m in dec.module(tiny_models).modules())
    assert info16["fp32_normalizations"] == groupnorms > 0 and info["fp32_normalizations"] == 0
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    to_fp32 = [n for n in casts if any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    assert len(to_fp32) >= groupnorms
    assert not any("forward" in vars(m) for m in dec.module(tiny_models).modules())  # modules restored


def test_failed_build_leaves_nothing_and_keeps_the_old_engine(engine_copy, tiny_ckpt, monkeypatch, parser, build_args):
    """A build that dies half-way (here: in the second component) removes its temporary folder
    and leaves an existing engine at the target as it was.
    """
    from rd_engine.cli.build import cmd_build

    before = {p.relative_to(engine_copy): p.read_bytes() for p in engine_copy.rglob("*") if p.is_file()}
    real = build_mod.export_onnx
    calls = []

    def dying_export(contract, *a, **kw):
        calls.append(contract.name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in the middle of the build")
        return real(contract, *a, **kw)

    monkeypatch.setattr(build_mod, "export_onnx", dying_export)
    args = parser.parse_args(["build", "-c", str(tiny_ckpt), "-o", str(engine_copy), "--force", "-q", *build_args])
    with pytest.raises(RuntimeError, match="simulated crash"):
        cmd_build(args)
    assert calls == ["vae_encoder", "vae_decoder"]
    after = {p.relative_to(engine_copy): p.read_bytes() for p in engine_copy.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in engine_copy.parent.iterdir() if ".partial" in p.name] == []
    open_engine_folder(engine_copy)  # still a valid engine


def test_failed_first_build_leaves_no_folder(tiny_ckpt, tmp_path, monkeypatch, parser, build_args):
    from rd_engine.cli.build import cmd_build

    def crash(*a, **kw):
        raise KeyboardInterrupt  # Ctrl-C mid-export

    monkeypatch.setattr(build_mod, "export_onnx", crash)
    out = tmp_path / "engines" / "new"
    with pytest.raises(KeyboardInterrupt):
        cmd_build(parser.parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", *build_args]))
    assert not out.exists()
    assert list((tmp_path / "engines").iterdir()) == []


def test_existing_target_needs_force_and_must_be_an_engine(tiny_ckpt, tmp_path, parser, build_args):
    from rd_engine.cli.build import cmd_build

    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("not an engine")
    with pytest.raises(UserError, match="already exists; build with the force option"):
        cmd_build(parser.parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", *build_args]))
    with pytest.raises(UserError, match="not an engine folder"):
        cmd_build(parser.parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", "--force", *build_args]))
    assert (out / "precious.txt").read_text() == "not an engine"


def test_build_options_are_validated(tiny_ckpt, tmp_path, parser):
    from rd_engine.cli.build import cmd_build

    def build(*extra):
        return cmd_build(parser.parse_args(["build", "-c", str(tiny_ckpt), "-o", str(tmp_path / "e"), "-q", *extra]))

    with pytest.raises(UserError, match=r"^--res \(96\) must lie within --min-res..--max-res \(32..64\)$"):
        build("--res", "96", "--min-res", "32", "--max-res", "64")
    with pytest.raises(UserError, match=r"^--max-res \(32\) must be >= --min-res \(64\)$"):
        build("--res", "48", "--min-res", "64", "--max-res", "32")
    with pytest.raises(UserError, match="^precision bf16 is a TensorRT plan and AOTInductor package precision"):
        build("--backend", "onnxruntime", "--precision", "bf16")
    with pytest.raises(UserError, match="^backend tensorrt: ") as e:
        if build_mod.resolve_backends("auto", "cuda")[0]:
            pytest.skip("TensorRT is available here")
        build("--backend", "tensorrt")
    assert worded(e.value).startswith("--backend tensorrt: ")
    assert not (tmp_path / "e").exists()
