"""The films/VFX parts of the Python API: sequences in, EXR and stereo out, stereo re-rendered from the .npz."""

import json

import av
import numpy as np
from PIL import Image

from rd_engine import Engine, OutputOptions, SequenceOptions, StereoOptions, render_stereo
from rd_engine.testing.media import synthetic_frame


def test_engine_runs_a_sequence_and_saves_exr_and_stereo_then_rerenders(tmp_path, tiny_ckpt):
    seq = tmp_path / "plate"
    seq.mkdir()
    for i in range(6):
        Image.fromarray(synthetic_frame(i, 6, 64, 48)).save(seq / f"plate_{i + 11:03d}.png")
    engine = Engine(tiny_ckpt)
    pred = engine.run(str(seq / "plate_%03d.png"), sequence=SequenceOptions(fps=30), res=48, align_iters=5, seed=1)
    assert pred.info.frame_numbers == tuple(range(11, 17)) and pred.info.fps == 30
    opts = OutputOptions(cmaps=[], sbs=False, exr=True, stereo=StereoOptions(layouts=["tb"], divergence=3))
    written = engine.save(pred, tmp_path / "out", opts)
    names = sorted(p.name for p in written)
    assert names == sorted(["plate_pred.npy", "plate.npz", "plate_exr", "plate_stereo_tb.mp4", "plate_stereo.json"])
    assert (tmp_path / "out" / "plate_exr" / "plate_000011.exr").is_file()
    again = render_stereo(seq / "plate_%03d.png", tmp_path / "out" / "plate.npz", tmp_path / "again",
                          StereoOptions(layouts=["anaglyph"], divergence=6))  # fmt: skip
    assert [p.name for p in again] == ["plate_stereo_anaglyph.mp4", "plate_stereo.json"]
    side = json.loads(again[1].read_text())
    assert side["fps"] == 30.0 and side["stereo"]["divergence"] == 6  # the run's rate, from its .npz
    with av.open(str(again[0])) as c:
        frames = list(c.decode(video=0))
        assert len(frames) == 6 and (frames[0].width, frames[0].height) == (64, 48)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "plate.npz")["frame_numbers"], np.arange(11, 17))


def test_the_cli_spells_the_choices_and_defaults_of_the_modules():
    import dataclasses

    from rd_engine.cli import args
    from rd_engine.io.sequence import TRANSFORMS
    from rd_engine.outputs.stereo import CODECS, LAYOUTS

    assert args.TRANSFORMS == TRANSFORMS and args.LAYOUTS == LAYOUTS and args.CODECS == CODECS
    d = dataclasses.asdict(StereoOptions())
    assert {k: d[k] for k in args.STEREO_DEFAULTS} == args.STEREO_DEFAULTS
