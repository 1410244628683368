"""The engine folder: manifest contents, graphs, refusals of stale or foreign engines, atomic builds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch

from rd_engine.cli.args import worded
from rd_engine.engine_format.contracts import SAMPLE_DIMS, all_contracts, unet_step_contract
from rd_engine.engine_format.folder import open_engine_folder
from rd_engine.engine_format.manifest import FORMAT_VERSION, Manifest
from rd_engine.errors import UserError
from rd_engine.export import build as build_mod
from rd_engine.export.onnx_export import attention_summary, export_onnx

CPU = torch.device("cpu")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# -- what a build writes --------------------------------------------------------


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


def test_manifest_schema_reads_back_what_was_written(engine_dir):
    """The typed schema is the file: parsing and writing back gives the same JSON."""
    raw = _manifest(engine_dir)
    m = Manifest.from_json(raw)
    assert m.to_json() == raw
    assert list(m.to_json()) == list(raw)  # same key order too
    engine = open_engine_folder(engine_dir)
    assert engine.manifest.source.weights_hash == raw["source"]["weights_hash"] == engine.weights_hash
    comp = engine.manifest.components["unet_step_L3"]
    assert comp.contract.snippet_len == 3 and comp.tensorrt is None
    assert comp.onnx["fp32"].ort_file == "onnx/unet_step_L3.ort.onnx"


def test_incomplete_manifest_is_refused(engine_copy):
    m = _manifest(engine_copy)
    del m["source"]
    (engine_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"incomplete manifest \(KeyError: 'source'\).*rd-engine build"):
        open_engine_folder(engine_copy)


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


def test_contract_profiles():
    from rd_engine.engine_format.profile import Profile

    p = Profile(min_res=64, opt_res=768, max_res=1024, max_batch=8, opt_batch=8, max_vae_batch=8, opt_vae_batch=4)
    assert p.latent_range() == (8, 128) and p.opt_latent() == (54, 96)  # 768x432
    shapes = unet_step_contract(3).profile_shapes(p)
    assert shapes["rgb_latent"] == ((1, 3, 4, 8, 8), (8, 3, 4, 54, 96), (8, 3, 4, 128, 128))
    assert shapes["timestep"] == ((1,), (1,), (1,))
    enc = all_contracts([3])[0]
    assert enc.profile_shapes(p)["frames"] == ((1, 3, 64, 64), (4, 3, 432, 768), (8, 3, 1024, 1024))
    assert enc.dynamic_axes() == {"frames": {0: "B", 2: "H", 3: "W"}, "latents": {0: "B", 2: "h", 3: "w"}}
    assert p.covers((768, 432)) and p.covers((432, 768)) and not p.covers((1030, 500))


def test_profile_errors_use_the_field_names():
    """The API words a bad profile in its own terms; the CLI (test below) in its flags'."""
    from rd_engine.engine_format.profile import Profile

    with pytest.raises(UserError, match=r"^min_res must be >= 8 pixels, got 4$"):
        Profile(min_res=4).validated()
    with pytest.raises(UserError, match=r"^opt_res \(96\) must lie within min_res..max_res \(32..64\)$"):
        Profile(min_res=32, opt_res=96, max_res=64).validated()
    with pytest.raises(UserError, match=r"^max_vae_batch must be >= 1, got 0$"):
        Profile(max_vae_batch=0, opt_vae_batch=0).validated()
    with pytest.raises(UserError, match=r"^opt_batch \(9\) must lie within 1..max_batch \(8\)$"):
        Profile(opt_batch=9).validated()


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


# -- refusals -------------------------------------------------------------------


def test_edited_graph_is_refused(engine_copy):
    from rd_engine.backends.onnx_backend import OrtBackend

    graph = engine_copy / "onnx" / "unet_step_L3.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the weights
    graph.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"unet_step_L3.onnx was modified.*rebuild: rd-engine build"):
        OrtBackend(engine_copy, CPU)


def test_missing_file_is_refused(engine_copy):
    from rd_engine.backends.onnx_backend import OrtBackend

    (engine_copy / "onnx" / "vae_decoder.onnx").unlink()
    with pytest.raises(UserError, match="vae_decoder.onnx is missing"):
        OrtBackend(engine_copy, CPU)


def test_resolution_outside_the_profile_is_refused_with_a_rebuild_command(engine_dir, ort_backend):
    with pytest.raises(UserError) as e:
        open_engine_folder(engine_dir, processed_size=(256, 144))
    msg = str(e.value)
    assert "32..128 px" in msg and "256x144" in msg
    assert "rd-engine build --checkpoint" in msg and "--min-res 32 --max-res 256" in msg and "--force" in msg
    # too small is refused too (smallest side 16 px < 32)
    with pytest.raises(UserError, match="--min-res 16 --max-res 128"):
        open_engine_folder(engine_dir, processed_size=(64, 16))
    # and the backend refuses on its own, for callers that skip open_engine_folder's check
    with pytest.raises(UserError, match="rebuild with a wider range"):
        ort_backend.encode(torch.zeros(1, 3, 144, 256))
    open_engine_folder(engine_dir, processed_size=(64, 42))  # inside: fine


def test_unknown_format_version_is_refused(engine_copy):
    m = _manifest(engine_copy)
    m["format_version"] = 999
    (engine_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"format version 999.*reads version 1.*rd-engine build"):
        open_engine_folder(engine_copy)


def test_other_weights_are_refused(engine_dir, tmp_path):
    from rd_engine.model.factory import make_tiny_checkpoint

    other = make_tiny_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(
        UserError,
        match=r"built from other weights than checkpoint .*other.*rd-engine build "
        r"--checkpoint .*other",
    ):
        open_engine_folder(engine_dir, checkpoint=other)
    with pytest.raises(UserError, match="other weights"):
        open_engine_folder(engine_dir, checkpoint=SimpleNamespace(source=other))  # a loaded Models works the same


def test_weights_edited_in_the_checkpoint_are_refused(engine_dir, tiny_ckpt, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    open_engine_folder(engine_dir, checkpoint=ckpt)  # same bytes: accepted
    f = next((ckpt / "unet").glob("*.safetensors"))
    data = bytearray(f.read_bytes())
    data[-10] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(UserError, match="other weights"):
        open_engine_folder(engine_dir, checkpoint=ckpt)


def test_folder_without_manifest_is_refused(engine_copy):
    (engine_copy / "manifest.json").unlink()
    with pytest.raises(UserError, match="build did not finish"):
        open_engine_folder(engine_copy)


def test_tensorrt_plans_missing_is_refused_with_hint(engine_dir):
    with pytest.raises(UserError, match="holds no TensorRT plans.*--backend tensorrt"):
        open_engine_folder(engine_dir).check_tensorrt_machine("cuda")


# -- atomic builds ----------------------------------------------------------------


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
    with pytest.raises(UserError, match="^precision bf16 is a TensorRT plan precision"):
        build("--backend", "onnxruntime", "--precision", "bf16")
    with pytest.raises(UserError, match="^backend tensorrt: ") as e:
        if build_mod.resolve_backends("auto", "cuda")[0]:
            pytest.skip("TensorRT is available here")
        build("--backend", "tensorrt")
    assert worded(e.value).startswith("--backend tensorrt: ")
    assert not (tmp_path / "e").exists()


# -- rd-engine info --------------------------------------------------------------


def test_info_shows_the_engine(engine_dir, capsys, parser):
    from rd_engine.cli.build import cmd_info

    assert cmd_info(parser.parse_args(["info", str(engine_dir)])) == 0
    out = capsys.readouterr().out
    for text in (
        "format 1",
        "weights hash:",
        "precision: fp32",
        "snippet lengths: 3",
        "frame sides 32..128 px",
        "v_prediction",
        "unet_step_L3: onnx fp32",
        "onnxruntime: yes",
        "checksums: ok",
    ):
        assert text in out, text
    assert cmd_info(parser.parse_args(["info", str(engine_dir), "--json", "--no-verify"])) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == FORMAT_VERSION


def test_info_reports_a_damaged_engine(engine_copy, capsys, parser):
    from rd_engine.cli.build import cmd_info

    (engine_copy / "empty_prompt.safetensors").write_bytes(b"junk")
    assert cmd_info(parser.parse_args(["info", str(engine_copy)])) == 1
    assert "checksums: FAILED" in capsys.readouterr().out
