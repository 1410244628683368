"""The co-alignment benchmark end to end (benchmarks/align_bench.py, quick settings)."""

import json

import pytest
import torch

from benchmarks import align_bench


def test_align_bench_quick_end_to_end(tmp_path, capsys):
    """The CLI end to end; the parent runs in this process, every solver in its own subprocess."""
    out = tmp_path / "quick.json"
    rc = align_bench.main(
        [
            "--quick",
            "--sizes",
            "12",
            "--width",
            "64",
            "--height",
            "48",
            "--reference-iters",
            "20",
            "--modes",
            "b",
            "--solvers",
            "reference",
            "true",
            "--threads",
            "1",
            "--timeout",
            "300",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "| reference |" in table and "| true |" in table
    rep = json.loads(out.read_text())
    assert rep["machine"]["torch_version"] == torch.__version__
    res = {x["solver"]: x for x in rep["results"]}
    assert set(res) == {"reference", "true"}
    for x in res.values():
        assert x["status"] == "ok", x
        assert x["N"] == 12 and x["seconds"] > 0 and x["peak_extra_bytes"] >= 0
        assert x["objective"] > 0 and 0 <= x["delta1"] <= 1
    assert res["true"]["absrel"] < 0.1
    assert res["reference"]["speedup_vs_reference"] == pytest.approx(1.0)
