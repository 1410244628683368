"""The synthetic-LiDAR benchmark runs end to end at a tiny size and its anchored depth is metric."""

import json


def test_anchor_bench_tiny(tmp_path):
    from benchmarks.anchor_bench import main

    out = tmp_path / "a.json"
    args = ["--frames", "14", "--width", "64", "--height", "36", "--seeds", "0", "--beams", "6", "--points", "24"]
    assert main([*args, "--lag", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"offline", "online lag 0", "online lag 2"}
    for mode, s in res["summary"].items():
        # metres with no fit to the ground truth: within 1.5x of the bound plus 1 % (noise and outliers)
        assert s["metric_absrel"] < 1.5 * s["bound_absrel_gt_fit"] + 0.01, mode
        assert s["coverage"] == 1.0
