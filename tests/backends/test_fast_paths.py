"""The fast paths (`rd_engine.backends.fast`, the host options) against the plain eager path, on the CPU.

Each mechanism that exists on a CPU is checked here on random inputs: the NHWC layout (oneDNN's
channels-last convolutions), the SDPA kernel choice (the CPU's flash kernel against the math one),
torch.compile (Inductor's CPU code), parallel writers and the host solver's thread count. cuDNN's
autotuning and cuDNN attention exist only on CUDA: the GPU check (`benchmarks/gpu/check.sh`) compares
them there. Sizes: a latent of 8x5 (odd: the tiny UNet's downsampling rounds up and its upsampling takes
the explicit-size path) and 12x8 (even: the scale-factor path), batches of 1 and 3 snippets.
"""

import argparse

import numpy as np
import pytest
import torch

from rd_engine.backends.fast import FastPaths
from rd_engine.backends.torch_backend import TorchBackend
from rd_engine.errors import SettingError

SIZES = ((8, 5, 1), (12, 8, 3))  # latent (w, h), snippets per UNet call


def _outputs(be: TorchBackend, w: int, h: int, batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 3, 8 * h, 8 * w, generator=g) * 2 - 1
    lat = torch.randn(batch, 4, h, w, generator=g)
    rgb, depth = (torch.randn(batch, 3, 4, h, w, generator=g) for _ in range(2))
    step = be.ddim.schedule(1)[0]
    return {
        "encode": be.encode(frames).float(),
        "decode": be.decode(lat).float(),
        "denoise": be.denoise(rgb, depth, step).float(),
    }


def _max_diff(a: dict, b: dict) -> dict[str, float]:
    return {k: float((a[k] - b[k]).abs().max()) for k in a}


@pytest.mark.parametrize(
    "fast",
    [FastPaths(channels_last=True), FastPaths(attention="flash"), FastPaths(attention="math")],
    ids=["channels_last", "attention_flash", "attention_math"],
)
def test_fast_path_matches_eager_fp32(tiny_models, fast):
    eager = TorchBackend(tiny_models, "cpu", torch.float32)
    quick = TorchBackend(tiny_models, "cpu", torch.float32, fast)
    before = _outputs(eager, *SIZES[0], seed=10)
    for i, (w, h, batch) in enumerate(SIZES):
        want = _outputs(eager, w, h, batch, seed=10 + i)
        got = _outputs(quick, w, h, batch, seed=10 + i)
        for k, v in got.items():
            assert v.shape == want[k].shape and v.is_contiguous()
        # fp32 with the sums in another order (NHWC convolutions, another attention kernel): 1e-4 on outputs of ~1
        assert max(_max_diff(got, want).values()) < 1e-4, _max_diff(got, want)
    # the backends share the modules: the eager one puts its own layout back and computes as before
    after = _outputs(eager, *SIZES[0], seed=10)
    assert max(_max_diff(after, before).values()) == 0.0
    assert all(m.weight.is_contiguous() for m in eager.unet.modules() if isinstance(m, torch.nn.Conv2d))


def test_torch_compile_matches_eager_fp32(tiny_models):
    """Inductor's CPU code for the VAE and the UNet step (mode "default"; the CUDA-graph mode is a CUDA
    mechanism, measured by the GPU check).
    """
    eager = TorchBackend(tiny_models, "cpu", torch.float32)
    compiled = TorchBackend(tiny_models, "cpu", torch.float32, FastPaths(compile="default"))
    w, h, batch = SIZES[1]
    got = _outputs(compiled, w, h, batch, seed=3)
    want = _outputs(eager, w, h, batch, seed=3)
    assert max(_max_diff(got, want).values()) < 1e-4, _max_diff(got, want)


def test_bad_fast_path_values_are_refused():
    with pytest.raises(SettingError, match="one of off, default"):
        FastPaths(compile="fastest").validate()
    with pytest.raises(SettingError, match="one of auto, flash"):
        FastPaths(attention="sdpa").validate()


def test_run_and_bench_take_the_fast_path_options():
    from rd_engine.cli.bench import add_bench_parser
    from rd_engine.cli.main import build_parser

    flags = ["--channels-last", "--cudnn-benchmark", "--compile", "reduce-overhead", "--attention", "cudnn"]
    flags += ["--align-threads", "1", "--write-threads", "3", "--device-snippet-budget", "auto", "--align-on", "device"]
    run = build_parser().parse_args(["run", "x.mp4", *flags])
    p = argparse.ArgumentParser()
    add_bench_parser(p.add_subparsers(dest="command"))
    bench = p.parse_args(["bench", *flags])
    for args in (run, bench):
        assert FastPaths.from_args(args) == FastPaths(True, True, "reduce-overhead", "cudnn")
        assert (args.align_threads, args.write_threads, args.device_snippet_budget) == (1, 3, "auto")
        assert args.align_on == "device"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "x.mp4", "--device-snippet-budget", "lots"])


def test_host_options_keep_the_result(tiny_models, clip, tmp_path):
    """Parallel writers write the same files; the solver's thread count is restored after the solve."""
    from rd_engine.outputs.offline import OutputOptions, write_outputs
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.progress import StageClock
    from rd_engine.settings import resolve

    be = TorchBackend(tiny_models, "cpu", torch.float32)
    s, _ = resolve("fast", {"res": 64, "seed": 1, "refine_step": 0}, torch.device("cpu"))
    threads = torch.get_num_threads()
    one = Pipeline(be, progress=False, align_threads=1).predict(clip, s)
    assert torch.get_num_threads() == threads
    default = Pipeline(be, progress=False).predict(clip, s)
    assert np.abs(one.depth - default.depth).max() < 1e-6  # a reduction order, nothing else
    # the solvers on "the device": on a CPU backend that is the host, so the same depth bit for bit (on a
    # GPU the check's align_on_device variant compares them); the robust solver too, whose merge scales
    # are computed from the host copies either way
    for align in ("fast", "robust"):
        sa, _ = resolve("fast", {"res": 64, "seed": 1, "refine_step": 0, "align": align}, torch.device("cpu"))
        host = Pipeline(be, progress=False, align_on="host").predict(clip, sa)
        dev = Pipeline(be, progress=False, align_on="device").predict(clip, sa)
        np.testing.assert_array_equal(host.depth, dev.depth)
    with pytest.raises(SettingError, match="align_on must be one of host, device"):
        Pipeline(be, align_on="gpu")
    files = {}
    for n in (1, 3):
        out = tmp_path / f"w{n}"
        out.mkdir()
        written = write_outputs(one, out, "clip", OutputOptions(write_threads=n), "tiny", "pytorch", StageClock(False))
        files[n] = {p.name: p.read_bytes() for p in written}
    assert list(files[1]) == list(files[3]) and len(files[1]) == 5  # npy, npz, two colorized mp4s, side by side
    for name in files[1]:
        if name.endswith(".npz"):  # its metadata holds no times; the arrays must be equal
            a, b = (np.load(tmp_path / f"w{n}" / name) for n in (1, 3))
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
        else:
            assert files[1][name] == files[3][name], name


def test_the_python_api_takes_the_fast_paths(tiny_models):
    from rd_engine import Engine
    from rd_engine import FastPaths as Exported

    fast = Exported(channels_last=True, attention="math")
    engine = Engine(models=tiny_models, device="cpu", backend="pytorch", fast=fast, align_threads=1)
    assert engine.backend.fast == fast and engine.pipeline.align_threads == 1
    with pytest.raises(SettingError):
        Engine(models=tiny_models, device="cpu", backend="pytorch", fast=FastPaths(compile="fastest"))
