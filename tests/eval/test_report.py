"""The table and the plots (rd_engine.eval.report): content, and one atomic result folder."""

import json

import numpy as np
import pytest
from PIL import Image

from rd_engine.eval.report import EvalReport, SequenceResult, frame_list, markdown, write_report


def _report(method="m", absrel=0.25):
    seqs = [
        SequenceResult(
            "a^b", 3, absrel, 0.9, 1.0, 0.0, 30, frame_list(np.array([0.1, np.nan, 0.4])), [1, None, 0.8], "p"
        ),
        SequenceResult("c", 2, 0.05, 1.0, 2.0, 0.5, 20, [0.05, 0.05], [1.0, 1.0], "p"),
    ]
    return EvalReport(
        benchmark="bonn",
        split="5_seq_110frame",
        root="/data",
        method=method,
        model="ckpt",
        backend="pytorch",
        settings={"res": 768, "dilations": [1, 25], "align": "fast", "lag": 2},
        protocol={"summary": "the protocol"},
        sequences=seqs,
        absrel=(absrel + 0.05) / 2,
        delta1=0.95,
    )


def test_markdown_has_a_row_per_sequence_and_the_mean():
    md = markdown(_report())
    assert "| a^b | 3 | 0.2500 | 0.9000 |" in md and "| c | 2 | 0.0500 | 1.0000 |" in md
    assert "| **mean of 2** | | **0.1500** | **0.9500** |" in md
    assert "model: ckpt; backend: pytorch" in md and "align fast" in md and "lag 2" in md


def test_result_folder_holds_table_json_and_a_plot_per_sequence(tmp_path, leftovers):
    folder = write_report(_report(), tmp_path)
    assert folder == tmp_path / "bonn_m"
    assert sorted(p.name for p in folder.iterdir()) == ["plots", "table.json", "table.md"]
    data = json.loads((folder / "table.json").read_text())
    assert data["sequences"][0]["frame_absrel"] == [0.1, None, 0.4] and data["absrel"] == pytest.approx(0.15)
    for name in ("a^b.png", "c.png"):
        with Image.open(folder / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_earlier_result_and_no_partial_files(tmp_path, leftovers):
    write_report(_report(), tmp_path)
    before = (tmp_path / "bonn_m" / "table.md").read_text()
    with pytest.raises(ValueError):  # NaN is no JSON: fails after the plots were written
        write_report(_report(absrel=float("nan")), tmp_path)
    assert (tmp_path / "bonn_m" / "table.md").read_text() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        write_report(_report(method="new", absrel=float("nan")), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bonn_m"]


def test_method_names_are_made_safe_for_file_names(tmp_path):
    assert write_report(_report(method="Video Depth Anything/L"), tmp_path).name == "bonn_Video-Depth-Anything-L"
