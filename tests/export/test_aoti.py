"""`rd-engine build --backend aoti`: what the build records, and the export of the dynamic UNet step."""

import json

import torch

from rd_engine.engine_format.contracts import unet_step_contract
from rd_engine.engine_format.profile import Profile
from rd_engine.export.aoti import dynamic_ranges, explicit_upsample_sizes, export_component


def test_manifest_records_what_the_packages_depend_on(aoti_engine_dir, tiny_models):
    m = json.loads((aoti_engine_dir / "manifest.json").read_text())
    assert m["backends"] == ["onnxruntime", "aoti"]
    a = m["aoti"]
    assert a["torch_version"] == torch.__version__ and a["device"] == "cpu" and a["precision"] == "fp32"
    assert a["gpu"] is None
    assert a["dynamic"] == {"B": [1, 4], "S": [1, 4], "h": [4, 96], "w": [4, 96]}
    assert m["build"]["args"]["backend"] == "aoti" and m["build"]["args"]["device"] == "cpu"
    for name, comp in m["components"].items():
        pkg = comp["aoti"]
        assert pkg["file"] == f"aoti/{name}.fp32.cpu.pt2" and pkg["file"] in m["files"]
        assert pkg["seconds"] > 0 and pkg["parity_max_abs_vs_pytorch"] < 1e-4  # the build's own check


def test_unet_step_exports_with_a_dynamic_latent_size_and_restores_the_unet(tiny_models):
    """Without the explicit-size path the export would guard on the latent size (h % 2 ... ); with it the
    program keeps the whole range, and the checkpoint's UNet is left as it was.
    """
    before = tiny_models.unet.num_upsamplers
    profile = Profile(min_res=32, opt_res=64, max_res=128, max_batch=4, opt_batch=4, max_vae_batch=4, opt_vae_batch=4)
    program = export_component(unet_step_contract(3), tiny_models, profile, "fp32", torch.device("cpu"))
    assert tiny_models.unet.num_upsamplers == before
    ranges = sorted((int(r.lower), int(r.upper)) for r in program.range_constraints.values())
    lo, hi = dynamic_ranges(profile)["h"]
    assert ranges.count((lo, hi)) == 2 and (1, 4) in ranges  # h, w over the profile; S from 1 to max_batch
    with explicit_upsample_sizes(torch.nn.Module()):  # modules without a UNet pass through
        pass


def test_profiles_whose_bottom_latent_is_one_cell_are_refused(tiny_models):
    """The tiny UNet downsamples once: latent sides of 2 would leave 1 cell at the bottom (a size torch.export
    specializes); 3 (24 px) is the least. The real UNet (three downsamplings) needs 9 cells: 72 px.
    """
    from rd_engine.cli.args import worded
    from rd_engine.errors import SettingError
    from rd_engine.export.aoti import check_profile

    ok = Profile(min_res=24, opt_res=64, max_res=128, max_batch=4, opt_batch=4, max_vae_batch=4, opt_vae_batch=4)
    check_profile(tiny_models, ok)
    low = Profile(min_res=16, opt_res=64, max_res=128, max_batch=4, opt_batch=4, max_vae_batch=4, opt_vae_batch=4)
    try:
        check_profile(tiny_models, low)
    except SettingError as e:
        assert e.name == "min_res" and worded(e).startswith("--min-res must be at least 24 px")
    else:
        raise AssertionError("a 16 px profile was accepted")
