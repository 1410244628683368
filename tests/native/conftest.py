"""The native runtime, configured and built once per session with CMake (and once more with sanitizers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = str(max(1, min(4, os.cpu_count() or 1)))


def _tools_missing() -> str | None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def cmake_build(build: Path, *options: str, source: Path = ROOT) -> Path:
    """Configure and build a CMake project (default: the top-level one) into `build`, with this Python's libtorch."""
    missing = _tools_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"native runtime: {missing} (CI must build it)")
        pytest.skip(f"native runtime: {missing}")
    configure = ["cmake", "-S", str(source), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}", *options]
    r = subprocess.run(configure, capture_output=True, text=True)
    if r.returncode != 0 and "Could NOT find" in r.stderr + r.stdout and not os.environ.get("CI"):
        # a machine without the C++ build dependencies (README, "C/C++"): the Python tests still run
        pytest.skip("native runtime: a build dependency is missing: " + _missing_package(r.stderr + r.stdout))
    assert r.returncode == 0, f"{' '.join(configure)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    cmd = ["cmake", "--build", str(build), "-j", JOBS]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return build


def _missing_package(log: str) -> str:
    line = next((x for x in log.splitlines() if "Could NOT find" in x), "")
    return line.strip()


@pytest.fixture(scope="session")
def native_build(aoti_engine_dir, tmp_path_factory) -> Path:
    """Release build: the libraries, rd_stream, the C example and the tests (with the session's AOTI engine)."""
    return cmake_build(tmp_path_factory.mktemp("native") / "build", f"-DRD_TEST_ENGINE_DIR={aoti_engine_dir}")


# the sanitizer builds' flags: line tables only (-g1) are all the sanitizers' file:line reports need, and
# compile in two thirds of -g's time (measured: the ASan+UBSan build 115 s against 170 s on 2 cores)
SANITIZER_BUILD = ("-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")


@pytest.fixture(scope="session")
def native_sanitized(aoti_engine_dir, tmp_path_factory) -> Path:
    """The tests built with AddressSanitizer and UndefinedBehaviorSanitizer (no examples)."""
    return cmake_build(
        tmp_path_factory.mktemp("native-asan") / "build",
        "-DRD_SANITIZE=ON",
        "-DRD_BUILD_EXAMPLES=OFF",
        *SANITIZER_BUILD,
        f"-DRD_TEST_ENGINE_DIR={aoti_engine_dir}",
    )


@pytest.fixture(scope="session")
def native_tsan(aoti_engine_dir, tmp_path_factory) -> Path:
    """The library and the thread test only, built with ThreadSanitizer."""
    return cmake_build(
        tmp_path_factory.mktemp("native-tsan") / "build",
        "-DRD_TSAN=ON",
        "-DRD_BUILD_EXAMPLES=OFF",
        *SANITIZER_BUILD,
        f"-DRD_TEST_ENGINE_DIR={aoti_engine_dir}",
    )
