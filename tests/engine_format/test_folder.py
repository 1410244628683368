"""The engine folder and its manifest: the schema, and refusals of stale, edited or foreign engines."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rd_engine.engine_format.contracts import all_contracts, unet_step_contract
from rd_engine.engine_format.folder import open_engine_folder
from rd_engine.engine_format.manifest import Manifest
from rd_engine.errors import UserError

CPU = torch.device("cpu")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


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
