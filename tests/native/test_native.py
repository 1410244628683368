"""The C++ runtime against the Python one: ctest (plain and sanitized), rd_stream and the C example
against `rd-engine run --stream` on the same AOTInductor engine and frames, bad input, find_package.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rd_engine.cli.main import main as rd_main
from rd_engine.io.video import iter_frames
from rd_engine.testing.media import write_test_video
from tests.native.conftest import ROOT

# C++ and Python run the same packages on the same inputs with the same op sequence: the
# depth agrees to float rounding (in practice it is bitwise equal); the bound is 1e-4.
PARITY_TOL = 1e-4
RES, DILATIONS, SEED = 96, ("1", "10"), 5
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.fixture(scope="module")
def clip60(tmp_path_factory) -> tuple[Path, bytes, tuple[int, int]]:
    """A 60-frame clip, its decoded frames as raw RGB24 bytes, and its (width, height)."""
    path = tmp_path_factory.mktemp("clip60") / "clip60.mp4"
    write_test_video(path, n_frames=60, width=128, height=80, fps=30, seed=3)
    frames = [f.rgb for f in iter_frames(path)]
    assert len(frames) == 60
    return path, b"".join(np.ascontiguousarray(f).tobytes() for f in frames), (128, 80)


def python_stream(clip: Path, engine: Path, lag: int, out: Path, *extra: str, key: str | None = "depth"):
    """Depth of `rd-engine run --stream` (the Python online mode) on the AOTInductor engine (key None: the .npz)."""
    args = ["run", str(clip), "--engine", str(engine), "--backend", "aoti", "--stream", "--lag", str(lag)]
    args += ["--res", str(RES), "--dilations", *DILATIONS, "--seed", str(SEED), "--dtype", "fp32"]
    args += ["-o", str(out), "--no-sbs", "--cmap", "-q", *extra]
    assert rd_main(args) == 0
    with np.load(out / f"{clip.stem}.npz") as z:
        return z[key] if key else {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def python_depth(clip60, aoti_engine_dir, tmp_path_factory):
    """`python_depth(lag)`: the Python online mode's depth on clip60, computed once per lag."""
    done: dict[int, np.ndarray] = {}

    def get(lag: int) -> np.ndarray:
        if lag not in done:
            done[lag] = python_stream(clip60[0], aoti_engine_dir, lag, tmp_path_factory.mktemp(f"py-lag{lag}"))
        return done[lag]

    return get


def rd_stream(build: Path, engine: Path, raw: bytes, size: tuple[int, int], lag: int, *extra: str):
    cmd = [str(build / "rd_stream"), "--engine", str(engine), "--size", f"{size[0]}x{size[1]}", "--lag", str(lag)]
    cmd += ["--res", str(RES), "--dilations", *DILATIONS, "--seed", str(SEED), *extra]
    return subprocess.run(cmd, input=raw, capture_output=True)


def test_ctest(native_build):
    r = subprocess.run(["ctest", "--output-on-failure"], cwd=native_build, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "100% tests passed" in r.stdout
    assert "c_api.with_engine" in r.stdout and "c_api.threads" in r.stdout  # the cases that need a model ran too


def test_ctest_under_sanitizers(native_sanitized):
    r = subprocess.run(["ctest", "--output-on-failure"], cwd=native_sanitized, capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert not [s for s in SANITIZER_REPORTS if s in out], out[-4000:]


def test_thread_test_under_tsan(native_tsan):
    r = subprocess.run(["ctest", "--output-on-failure"], cwd=native_tsan, capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "c_api.threads" in r.stdout and "WARNING: ThreadSanitizer" not in out, out[-4000:]


@pytest.mark.parametrize("lag", [0, 4])
def test_rd_stream_equals_python_online_mode(native_build, aoti_engine_dir, clip60, python_depth, tmp_path, lag):
    clip, raw, size = clip60
    expected = python_depth(lag)
    r = rd_stream(native_build, aoti_engine_dir, raw, size, lag, "--latency-log", str(tmp_path / "lat.csv"))
    assert r.returncode == 0, r.stderr.decode()
    got = np.frombuffer(r.stdout, np.float32)
    assert got.size == expected.size, (got.size, expected.shape)
    got = got.reshape(expected.shape)
    assert expected.shape == (60, 60, 96)
    assert np.abs(got - expected).max() < PARITY_TOL
    log = (tmp_path / "lat.csv").read_text().splitlines()
    assert log[0] == "index,timestamp,latency_s" and len(log) == 61
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(60))
    # the C program (C header only) computes the same depth as the C++ wrapper
    c = subprocess.run(
        [str(native_build / "rd_minimal_c"), str(aoti_engine_dir), *map(str, size), str(RES), str(lag), str(SEED)]
        + list(DILATIONS),
        input=raw,
        capture_output=True,
    )
    assert c.returncode == 0, c.stderr.decode()
    assert np.array_equal(np.frombuffer(c.stdout, np.float32).reshape(expected.shape), got)
    # the same C program as written against ABI 1's header (a copy in native/tests/abi1): this library runs it
    old = subprocess.run(
        [str(native_build / "rd_minimal_c_abi1"), str(aoti_engine_dir), *map(str, size), str(RES), str(lag), str(SEED)]
        + list(DILATIONS),
        input=raw,
        capture_output=True,
    )
    assert old.returncode == 0, old.stderr.decode()
    assert np.array_equal(np.frombuffer(old.stdout, np.float32).reshape(expected.shape), got)


# Metric depth: the same fit semantics on both sides (coalign.metric.fit_metric, online.metric.OnlineMetric;
# native/src/metric.cpp) on the same relative depth. The starts differ (numpy's generator, splitmix64) but the
# IRLS converges to one fixed point (to ~1e-10), so depth_m agrees to float32 rounding and confidence (the
# same ops on the same entries) to float rounding; the bounds asked here are those of the relative depth.
METRIC_TOL = 1e-4  # relative, on depth_m (metres)
# absolute, confidence in [0, 1]: 1 / (1 + spread / CONFIDENCE_SPREAD) moves by at most 1 / 0.02 = 50 times
# the spread of the depth entries, so the depth's parity tolerance (PARITY_TOL, 1e-4) allows 5e-3. Measured:
# 0 on an idle checkout, 3.6e-4 (lag 0) and 1.7e-4 (lag 4) in one full CI-like run whose C++ and Python
# depth differed more (depth_m 7.9e-6 relative instead of 1.1e-7), still within PARITY_TOL
CONFIDENCE_TOL = PARITY_TOL / 0.02
FIRST_ANCHORED = 6  # frames before it finish before any anchor: flagged on both sides


def _sparse_lidar(depth: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """16-bit PNG sparse depth (mm) per frame from relative depth [N, h, w]: scan lines every 6th row, every
    3rd column, `1 / z = 0.25 d + 0.5` with 1 % noise and 20 % outliers; from FIRST_ANCHORED on, every
    third frame without anchors, frame 10 at half the input size (its pixels map proportionally).
    """
    n, h, w = depth.shape
    out = {}
    for f in range(FIRST_ANCHORED, n):
        if f % 3 == 2:
            continue
        W, H = (size[0] // 2, size[1] // 2) if f == 10 else size
        img = np.zeros((H, W), np.uint16)
        v, u = np.mgrid[1:H:6, 0:W:3]
        xp = np.clip(np.rint((u + 0.5) * w / W - 0.5), 0, w - 1).astype(int)
        yp = np.clip(np.rint((v + 0.5) * h / H - 0.5), 0, h - 1).astype(int)
        z = 1.0 / (0.25 * depth[f][yp, xp] + 0.5) * (1 + 0.01 * rng.standard_normal(u.shape))
        bad = rng.random(u.shape) < 0.2
        z[bad] *= rng.uniform(1.3, 3.0, int(bad.sum()))
        img[v, u] = np.clip(np.rint(z * 1000), 1, 65535).astype(np.uint16)
        out[f] = img
    return out


@pytest.mark.parametrize(("lag", "frames", "cut"), [(0, 60, 29), (4, 24, None)])
def test_rd_stream_metric_equals_python(
    native_build, aoti_engine_dir, clip60, python_depth, tmp_path, lag, frames, cut
):
    """Anchors from a folder of 16-bit PNGs through rd_stream and through `rd-engine run --stream --anchors`:
    the same frames flagged, depth_m and confidence equal; the relative depth unchanged by the anchors.
    Lag 0 over the 60 frames with a cut before frame 29 (a cut list on both sides: the new shot starts
    without a fit, frame 29 has no anchors, so it is flagged); lag 4 over the first 24 frames (the Python
    online mode at lag 4 runs at about 1 frame/s here; 24 frames still reach the dilation-10 snippets).
    """
    clip, raw, size = clip60
    raw = raw[: frames * size[0] * size[1] * 3]
    folder = tmp_path / "sparse"
    folder.mkdir()
    for f, img in _sparse_lidar(python_depth(0)[:frames], size, np.random.default_rng(7)).items():
        Image.fromarray(img).save(folder / f"depth_{f:04d}.png")
    extra = ["--anchors", str(folder), "--confidence", "--frame-count", str(frames)]
    cuts = []
    if cut is not None:
        (tmp_path / "cuts.txt").write_text(f"{cut}\n")
        extra += ["--shots", str(tmp_path / "cuts.txt")]
        cuts = ["--cuts", str(cut)]
    py = python_stream(clip, aoti_engine_dir, lag, tmp_path / "py", *extra, key=None)
    out = tmp_path / "native"
    r = rd_stream(native_build, aoti_engine_dir, raw, size, lag, "--anchors", str(folder), *cuts,
                  "--depth-m", str(out / "depth_m.f32"), "--confidence", str(out / "conf.f32"),
                  "--metric-log", str(out / "metric.csv"), "--depth-mm", str(out / "mm"))  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    expected_valid = [i >= FIRST_ANCHORED and i != cut for i in range(frames)]
    assert f"metric depth on {sum(expected_valid)} of {frames} frames" in r.stderr.decode()
    shape = py["depth"].shape
    assert shape == (frames, 60, 96)
    depth = np.frombuffer(r.stdout, np.float32).reshape(shape)
    assert np.abs(depth - py["depth"]).max() < PARITY_TOL
    plain = rd_stream(native_build, aoti_engine_dir, raw, size, lag, *cuts)  # no anchors
    assert np.array_equal(depth, np.frombuffer(plain.stdout, np.float32).reshape(shape))  # bit for bit
    log = np.genfromtxt(out / "metric.csv", delimiter=",", names=True)
    valid = log["has_metric"].astype(bool)
    assert valid.tolist() == py["metric_valid"].tolist() == expected_valid
    assert log["inliers"][-1] < log["samples"][-1]  # the outliers were weighed out
    depth_m = np.fromfile(out / "depth_m.f32", np.float32).reshape(shape)
    conf = np.fromfile(out / "conf.f32", np.float32).reshape(shape)
    assert np.isnan(depth_m[~valid]).all() and np.isnan(py["depth_m"][~valid]).all()
    assert np.array_equal(np.isnan(depth_m), np.isnan(py["depth_m"]))
    ok = ~np.isnan(depth_m)
    rel = np.abs(depth_m[ok].astype(np.float64) / py["depth_m"][ok] - 1)
    c_diff = np.abs(conf - py["confidence"]).max()
    print(f"lag {lag}: depth_m max relative diff {rel.max():.3g}, confidence max abs diff {c_diff:.3g}")
    assert ok.sum() > 0.9 * valid.sum() * shape[1] * shape[2]
    assert rel.max() < METRIC_TOL
    assert c_diff < CONFIDENCE_TOL and conf.min() >= 0 and conf.max() <= 1
    # 16UC1 PNGs: round(depth_m * 1000) mm, 0 where invalid (frames before the fit: all 0)
    from rd_engine.outputs.render import depth_to_mm

    for f in (0, frames - 1):
        png = np.asarray(Image.open(out / "mm" / f"frame_{f:06d}.png"))
        assert png.dtype == np.uint16 and np.array_equal(png, depth_to_mm(depth_m[f]))
    assert not (png == 0).all()


def test_rd_stream_anchors_bad_input(native_build, aoti_engine_dir, clip60, tmp_path):
    _, raw, size = clip60
    frame = size[0] * size[1] * 3
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "000003.png")  # 8-bit
    out = tmp_path / "m.f32"
    r = rd_stream(
        native_build, aoti_engine_dir, raw[: 4 * frame], size, 0, "--anchors", str(bad), "--depth-m", str(out)
    )
    err = r.stderr.decode()
    assert r.returncode == 1 and "16-bit grayscale millimetres" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    (bad / "000003.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(bad / "depth.png")
    r = rd_stream(native_build, aoti_engine_dir, raw[:frame], size, 0, "--anchors", str(bad))
    assert r.returncode == 1 and "named by its frame number" in r.stderr.decode()
    r = rd_stream(native_build, aoti_engine_dir, raw[:frame], size, 0, "--anchors", str(tmp_path / "none"))
    assert r.returncode == 1 and "no such anchors folder" in r.stderr.decode()


def test_rd_stream_restore_and_png16(native_build, aoti_engine_dir, clip60, tmp_path):
    clip, raw, size = clip60
    raw20 = raw[: 20 * size[0] * size[1] * 3]
    r = rd_stream(native_build, aoti_engine_dir, raw20, size, 0, "--restore")
    assert r.returncode == 0, r.stderr.decode()
    restored = np.frombuffer(r.stdout, np.float32).reshape(20, size[1], size[0])
    plain = np.frombuffer(rd_stream(native_build, aoti_engine_dir, raw20, size, 0).stdout, np.float32)
    plain = plain.reshape(20, 60, 96)
    assert abs(float(restored.mean()) - float(plain.mean())) < 0.05  # the same depth, resized
    out = tmp_path / "png"
    r = rd_stream(native_build, aoti_engine_dir, raw20, size, 0, "--png16", str(out))
    assert r.returncode == 0, r.stderr.decode()
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(20)]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    image = Image.open(out / "frame_000007.png")
    assert image.mode.startswith("I;16") and image.size == (96, 60)  # 16-bit grayscale
    png = np.asarray(image).astype(np.float64)
    expected = np.round(np.clip((plain[7].astype(np.float64) + 1) / 2, 0, 1) * 65535)
    assert np.abs(png - expected).max() <= 1


def test_rd_stream_bad_input(native_build, aoti_engine_dir, clip60, tmp_path):
    _, raw, size = clip60
    frame = size[0] * size[1] * 3
    r = rd_stream(native_build, aoti_engine_dir, raw[: 3 * frame + 100], size, 0, "--png16", str(tmp_path / "p"))
    err = r.stderr.decode()
    assert r.returncode == 1 and "ended mid-frame" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists() and not list(tmp_path.iterdir())  # nothing half-written
    r = rd_stream(native_build, tmp_path / "nope", raw[:frame], size, 0)
    assert r.returncode == 1 and "does not exist" in r.stderr.decode()
    r = rd_stream(native_build, aoti_engine_dir, b"", size, 0)
    assert r.returncode == 1 and "no frame" in r.stderr.decode()
    r = rd_stream(native_build, aoti_engine_dir, raw[:frame], size, 0, "--res", "1024")
    assert r.returncode == 1 and "rebuild with a wider range" in r.stderr.decode()
    r = subprocess.run([str(native_build / "rd_stream"), "--engine", str(aoti_engine_dir), "--size", "12"])
    assert r.returncode == 2
    r = subprocess.run([str(native_build / "rd_stream"), "--lag", "-3"], capture_output=True)
    assert r.returncode == 2 and b"--lag takes an integer >= 0" in r.stderr


def _readelf_dynamic(lib: Path) -> dict[str, list[str]]:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    tags: dict[str, list[str]] = {}
    for line in out.splitlines():
        if "(" in line and "[" in line:
            tag = line.split("(", 1)[1].split(")", 1)[0]
            tags.setdefault(tag, []).append(line.split("[", 1)[1].rsplit("]", 1)[0])
    return tags


def test_shared_library_abi(native_build):
    """A versioned SONAME, only rd_* exported, and run paths without stray or empty entries."""
    lib = native_build / "librd_engine.so.2"
    assert lib.is_file() and (native_build / "librd_engine.so").resolve() == (native_build / "librd_engine.so.0.2.0")
    tags = _readelf_dynamic(lib)
    assert tags["SONAME"] == ["librd_engine.so.2"]
    runpath = ":".join(tags.get("RUNPATH", []) + tags.get("RPATH", []))
    # every entry a folder that exists: no stray MKL/Windows ones, and no empty one (the loader would search
    # the working directory; CMake's own build run path ends in one). The installed path is checked in the
    # consumer test.
    entries = runpath.split(":")
    assert entries and all(e and Path(e).is_dir() for e in entries), runpath
    nm = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    names = [line.split()[-1].split("@")[0] for line in nm.stdout.splitlines() if line.strip()]
    exported = [n for n in names if n != "RD_ENGINE_2"]
    assert exported and all(n.startswith("rd_") for n in exported), [n for n in exported if not n.startswith("rd_")]
    assert {"rd_session_cut", "rd_abi_version", "rd_build_info", "rd_session_push_frame"} <= set(exported)
    assert {"rd_session_poll_outputs", "rd_anchors_init_sized"} <= set(exported)  # ABI 2.1


def test_find_package_consumer_relocated(native_build, aoti_engine_dir, tmp_path):
    """Install, move the installed tree elsewhere, build a consumer against the moved copy, run it."""
    import shutil

    import torch

    prefix = tmp_path / "prefix"
    install = ["cmake", "--install", str(native_build), "--prefix", str(prefix)]
    r = subprocess.run(install, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (prefix / "include" / "rd_engine" / "rd_engine.h").is_file()
    moved = tmp_path / "elsewhere" / "rd-engine"
    shutil.copytree(prefix, moved, symlinks=True)
    shutil.rmtree(prefix)
    lib = moved / "lib" / "librd_engine.so.2"
    tags = _readelf_dynamic(lib)
    assert tags.get("RUNPATH") == ["$ORIGIN"], tags.get("RUNPATH")  # nothing of the build machine
    assert _readelf_dynamic(moved / "bin" / "rd_stream").get("RUNPATH") == ["$ORIGIN/../lib"]
    cmake_dir = moved / "lib" / "cmake" / "rd_engine"
    text = "".join(p.read_text() for p in cmake_dir.iterdir())
    for machine_path in (str(ROOT), str(native_build), str(Path(torch.__file__).parent), str(prefix)):
        assert machine_path not in text, machine_path
    torch_lib = Path(torch.__file__).parent / "lib"  # libtorch on the loader's path, as an embedder ships it
    env = {**os.environ, "LD_LIBRARY_PATH": str(torch_lib)}
    consumer = tmp_path / "consumer"
    configure = ["cmake", "-S", str(ROOT / "native" / "examples" / "consumer"), "-B", str(consumer)]
    r = subprocess.run(configure + [f"-DCMAKE_PREFIX_PATH={moved}"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["cmake", "--build", str(consumer)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    flags = "".join(p.read_text() for p in consumer.rglob("flags.make"))
    assert "torch" not in flags and str(moved / "include") in flags  # the C API's include folder only
    run = [str(consumer / "depth_consumer"), str(aoti_engine_dir)]
    r = subprocess.run(run, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8 and lines[-1] == "frame 7 (flush)"
