"""`rd-engine bench`: CI smoke run (tiny model, CPU) with a schema check, `--compare`, and the pieces."""

import argparse
import copy
import json
import math

import pytest
import torch

from rd_engine.bench import flops, measure, report, runner, schema, timing
from rd_engine.cli import bench
from rd_engine.errors import UserError

TOP_KEYS = {
    "schema_version",
    "created",
    "options",
    "machine",
    "libraries",
    "backend",
    "model",
    "settings",
    "input",
    "mode",
    "effective_dilations",
    "processed_size",
    "repeats",
    "warmup",
    "stages",
    "end_to_end",
    "memory",
    "peak_tflops",
    "peak_matmul",
    "flop_counts",
    "baseline",
    "online",
    "nullable",
}
MEASURED_KEYS = {
    "mode",
    "settings",
    "effective_dilations",
    "processed_size",
    "repeats",
    "warmup",
    "stages",
    "end_to_end",
    "memory",
}
E2E_KEYS = {
    "seconds",
    "fps",
    "ms_per_frame",
    "frames",
    "runs",
    "p50",
    "p95",
    "p99",
    "predict_seconds",
    "flops",
    "tflops",
    "fraction_of_peak",
}
NO_FLOP_STAGES = {"decode", "detect", "resize", "align", "merge", "write"}


def parse(argv):
    parser = argparse.ArgumentParser(prog="rd-engine")
    sub = parser.add_subparsers(dest="command", required=True)
    bench.add_bench_parser(sub)
    return parser.parse_args(["bench", *argv])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_ckpt):
    """One tiny CPU run with every stage (refine on) and the baseline, one repeat each."""
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    with pytest.MonkeyPatch.context() as mp:
        # `--model tiny` loads the session's tiny checkpoint (same seed) instead of building one in ~/.cache
        mp.setattr("rd_engine.model.factory.tiny_checkpoint_cached", lambda seed=0: tiny_ckpt)
        args = parse(
            [
                "--model",
                "tiny",
                "--device",
                "cpu",
                "--res",
                "64",
                "--frames",
                "6",
                "--warmup-frames",
                "4",
                "--repeats",
                "1",
                "--refine-step",
                "1",
                "--with-baseline",
                "--baseline-align-iters",
                "5",
                "--peak-n",
                "256",
                "--out",
                str(out),
                "-q",
            ]
        )
        buf = io.StringIO()
        threads = torch.get_num_threads()
        # one thread: on a CI runner shared with other jobs, spinning OpenMP threads cost more than they give
        torch.set_num_threads(1)
        try:
            with redirect_stdout(buf):
                rc = bench.cmd_bench(args)
        finally:
            torch.set_num_threads(threads)
    return rc, out, buf.getvalue()


def _positive_finite(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r} is not positive and finite"


def _check_measured(part, where, peak_matmul_cpu=True):
    assert MEASURED_KEYS <= set(part), f"{where}: missing {MEASURED_KEYS - set(part)}"
    assert set(part["stages"]) == set(schema.STAGES)
    for name, e in part["stages"].items():
        w = f"{where}.stages.{name}"
        assert e["ran"] is True, f"{w} did not run ({e.get('note')})"
        assert set(schema.STAGE_FIELDS) <= set(e)
        for key in ("seconds", "calls", "items", "fps"):
            _positive_finite(e[key], f"{w}.{key}")
        for i, s in enumerate(e["seconds_runs"]):
            _positive_finite(s, f"{w}.seconds_runs[{i}]")
        if name in NO_FLOP_STAGES:  # documented nulls
            assert e["flops"] is None and e["tflops"] is None and e["fraction_of_peak"] is None, w
        else:
            for key in ("flops", "tflops", "fraction_of_peak"):
                _positive_finite(e[key], f"{w}.{key}")
    e2e = part["end_to_end"]
    assert set(e2e) == E2E_KEYS
    for key in E2E_KEYS - {"runs"}:
        _positive_finite(e2e[key], f"{where}.end_to_end.{key}")
    assert len(e2e["runs"]) == part["repeats"] == 1
    for r in e2e["runs"]:
        _positive_finite(r, f"{where}.end_to_end.runs")
    assert e2e["p50"] <= e2e["p95"] <= e2e["p99"] <= max(e2e["runs"]) + 1e-12
    _positive_finite(part["memory"]["host_peak_bytes"], f"{where}.memory.host_peak_bytes")
    assert part["memory"]["device_peak_bytes"] is None  # documented: null on the CPU
    _positive_finite(part["warmup"]["seconds"], f"{where}.warmup.seconds")


def test_smoke_json_schema_and_figures(smoke):
    rc, out, _ = smoke
    assert rc == 0
    r = json.loads(out.read_text())  # strict JSON: no NaN / Infinity tokens
    assert set(r) == TOP_KEYS
    assert r["schema_version"] == schema.SCHEMA_VERSION
    assert r["mode"] == "optimized"
    assert {k: r["backend"][k] for k in ("name", "device", "dtype", "execution")} == {
        "name": "pytorch",
        "device": "cpu",
        "dtype": "fp32",
        "execution": "eager",
    }
    assert r["model"]["kind"] == "tiny" and r["model"]["random_weights"] is True
    for key in ("hostname", "cpu", "cores", "gpu", "gpu_count", "driver", "cuda"):
        assert key in r["machine"]
    assert r["machine"]["gpu"] is None and r["machine"]["driver"] is None  # documented: no GPU
    assert r["libraries"]["torch"] == torch.__version__ and "diffusers" in r["libraries"]
    assert r["settings"]["res"] == 64 and r["settings"]["preset"] == "fast"
    assert r["input"]["frames"] == 6 and r["input"]["generated"] is True
    assert (r["input"]["processed_width"], r["input"]["processed_height"]) == (64, 36)

    _check_measured(r, "result")
    _positive_finite(r["peak_tflops"], "peak_tflops")
    assert r["peak_matmul"]["n"] == 256 and r["peak_matmul"]["dtype"] == "float32"
    for name in ("unet_per_snippet", "vae_encoder_per_frame", "vae_decoder_per_frame"):
        _positive_finite(r["flop_counts"][name]["flops"], f"flop_counts.{name}")
    unet = r["flop_counts"]["unet_per_snippet"]
    assert unet["input_shape"] == [3, 4, 5, 8]  # L frames x latent of 64x40 (36 padded to 40)
    _positive_finite(unet["attention_flops"], "attention_flops")  # cross-frame attention is counted
    # stage FLOPs = per-item FLOPs x items
    assert r["stages"]["unet"]["flops"] == unet["flops"] * r["stages"]["unet"]["items"]
    assert (
        r["stages"]["vae_decode"]["flops"]
        == r["flop_counts"]["vae_decoder_per_frame"]["flops"] * r["stages"]["vae_decode"]["items"]
    )

    base = r["baseline"]
    _check_measured(base, "baseline")
    assert base["settings"]["snippet_batch"] == 1 and base["settings"]["vae_batch"] == 4
    assert base["settings"]["align"] == "reference" and base["settings"]["align_iters"] == 5
    assert base["strategy"]["align_iters_reduced"] is True and base["strategy"]["dtype"] == "fp32"
    # one snippet per UNet call; the same work as the optimized run
    assert base["stages"]["unet"]["calls"] == base["stages"]["unet"]["items"] == r["stages"]["unet"]["items"]
    assert r["stages"]["unet"]["calls"] < base["stages"]["unet"]["calls"]
    assert base["end_to_end"]["flops"] == r["end_to_end"]["flops"]
    _positive_finite(base["speedup"]["end_to_end"], "speedup.end_to_end")
    assert set(base["speedup"]["stages"]) == set(schema.STAGES)
    for name, v in base["speedup"]["stages"].items():
        _positive_finite(v, f"speedup.{name}")

    on = r["online"]
    assert on["frames"] == r["input"]["frames"]
    for key in ("seconds", "fps", "latency_p50", "latency_p95", "latency_p99"):
        _positive_finite(on[key], f"online.{key}")
    assert on["latency_p50"] <= on["latency_p95"] <= on["latency_p99"]


def test_smoke_prints_every_field(smoke):
    _, out, text = smoke
    for word in (
        *schema.STAGES,
        "end to end",
        "p50",
        "p95",
        "p99",
        "host peak",
        "device peak",
        "TFLOP/s",
        "%peak",
        "speedup",
        "baseline",
        "UNet",
        "VAE encoder",
        "VAE decoder",
        "online",
        "machine",
    ):
        assert word in text, word
    assert f"result: {out}" in text


def test_compare(smoke, tmp_path, capsys):
    _, out, _ = smoke
    a = json.loads(out.read_text())
    b = copy.deepcopy(a)
    for e in b["stages"].values():
        e["seconds"] = e["seconds"] / 2
    b["end_to_end"]["seconds"] /= 4
    b["machine"]["hostname"] = "elsewhere"
    pb = tmp_path / "b.json"
    pb.write_text(json.dumps(b))

    assert bench.cmd_bench(parse(["--compare", str(out), str(pb)])) == 0
    text = capsys.readouterr().out
    assert "warning: machines differ in hostname" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "2.00x" in lines["unet"]
    assert "4.00x" in [ln for ln in text.splitlines() if ln.startswith("end to end")][0]

    b["model"]["name"] = "other"
    pb.write_text(json.dumps(b))
    with pytest.raises(UserError, match="models differ"):
        bench.cmd_bench(parse(["--compare", str(out), str(pb)]))
    assert bench.cmd_bench(parse(["--compare", str(out), str(pb), "--force"])) == 0
    assert "warning: models differ" in capsys.readouterr().out

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not an rd-engine bench result"):
        report.compare(out, bad)


def test_attention_flops_counted_from_shapes():
    import torch.nn.functional as F

    q = torch.randn(2, 4, 96, 16)
    k = torch.randn(2, 4, 80, 16)
    res = flops.count_flops(lambda: F.scaled_dot_product_attention(q, k, k))
    assert res["attention_flops"] == 4 * 2 * 4 * 96 * 80 * 16
    assert res["flops"] == res["attention_flops"]  # counted once, by the counter or from the shapes


def test_timed_backend_counts_and_forwards():
    class Fake:
        name, device, dtype, ddim = "fake", torch.device("cpu"), torch.float32, "the ddim"

        def encode(self, x):
            return x[:, :1]

        def denoise(self, rgb, depth, step):
            return depth + step

        def decode(self, z):
            return z

    timer = timing.StageTimer(torch.device("cpu"))
    tb = timing.TimedBackend(Fake(), timer)
    assert (tb.name, tb.ddim, tb.dtype) == ("fake", "the ddim", torch.float32)
    tb.encode(torch.randn(5, 3, 8, 8))
    tb.phase = "refine"
    assert torch.equal(tb.denoise(None, torch.zeros(2, 3, 4, 1, 1), 1), torch.ones(2, 3, 4, 1, 1))
    secs = timer.collect()
    assert set(secs) == {"main.encode", "refine.denoise"} and all(v >= 0 for v in secs.values())
    assert timer.items["main.encode"] == 5 and timer.shapes["main.encode"] == {(3, 8, 8): 5}
    assert timer.calls["refine.denoise"] == 1 and timer.items["refine.denoise"] == 2


def test_small_helpers():
    assert runner.generated_clip_size(768, (16, 9)) == (768, 432)
    assert runner.generated_clip_size(512, (9, 16)) == (288, 512)
    assert measure.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert measure.percentile([5.0], 99) == 5.0
    with pytest.raises(UserError):
        runner.parse_aspect("wide")
    peak = flops.measure_peak_tflops(torch.device("cpu"), torch.float32, n=128)
    assert peak["tflops"] > 0 and peak["n"] == 128
    path = runner.default_out_path("full", 768, "fast", "pytorch", torch.device("cpu"), "optimized")
    assert path.parent.as_posix() == "benchmarks/results" and path.name.startswith("full_768_fast_pytorch_cpu-")


def test_bad_options():
    with pytest.raises(UserError, match="pick one"):
        runner.run_bench(parse(["--baseline", "--with-baseline"]))
    with pytest.raises(UserError, match="not found"):
        runner.run_bench(parse(["--input", "/nonexistent/video.mp4"]))
    with pytest.raises(SystemExit):
        parse(["--repeats", "0"])
