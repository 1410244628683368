"""`rd-engine info`: what an engine folder holds, and a damaged one."""

from __future__ import annotations

import json

from rd_engine.engine_format.manifest import FORMAT_VERSION


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
