"""An online run's writing beside the model (`--stream --write-threads N`, `outputs.lanes`): the same files
as writing inline, the model running on while a frame is written, a writer's failure ending the run with
its error and nothing half-written, and `WriteLanes`' order and back-pressure on their own.
"""

import threading
import time

import numpy as np
import pytest
import torch

from rd_engine.backends.torch_backend import TorchBackend
from rd_engine.outputs.lanes import WriteLanes
from rd_engine.outputs.offline import OutputOptions
from rd_engine.outputs.stream import run_stream
from rd_engine.pipeline.offline import Pipeline
from rd_engine.settings import resolve

CPU = torch.device("cpu")
LAG = 1


def _settings():
    s, _ = resolve("fast", {"res": 64, "seed": 1, "refine_step": 0}, CPU)
    return s


def _files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_background_writes_are_the_inline_bytes(tiny_models, clip, tmp_path):
    """Default outputs plus point clouds (a frame sink), written inline and on 3 threads: every file the
    same bytes (the .npz's arrays equal but `latency`, which measures the run).
    """
    pipe = Pipeline(TorchBackend(tiny_models, CPU, torch.float32), progress=False)
    files = {}
    for n in (1, 3):
        out = tmp_path / f"w{n}"
        out.mkdir()
        opts = OutputOptions(write_threads=n, pointcloud=True, fov=60.0)
        run_stream(pipe, _settings(), LAG, clip, out, "clip", opts, "tiny")
        files[n] = _files(out)
    assert list(files[1]) == list(files[3])
    names = list(files[1])
    assert {"clip_pred.npy", "clip.npz", "clip_Spectral_r.mp4", "clip_Greys_r.mp4"} <= set(names)
    assert sum(n.startswith("clip_pointcloud/") for n in names) == 14  # a PLY per frame of the clip
    for name in names:
        if name.endswith(".npz"):
            a, b = (np.load(files[n][name]) for n in (1, 3))
            assert a.files == b.files
            assert all(np.array_equal(a[k], b[k]) for k in a.files if k not in ("latency", "metadata"))
        else:
            assert files[1][name].read_bytes() == files[3][name].read_bytes(), name


class _HoldFirstFrame:
    """A frame sink that holds frame 0 until `release` is set (or a hang-stopping timeout passes)."""

    def __init__(self, release: threading.Event):
        self.release, self.released, self.threads = release, [], []

    def __enter__(self):
        return self

    def emit(self, fo) -> None:
        if fo.index == 0:
            self.released.append(self.release.wait(timeout=120))  # a timeout only stops a hang: no timing
        self.threads.append(threading.current_thread().name)

    def __exit__(self, *exc) -> bool:
        return False


def test_the_model_runs_while_a_frame_is_written(tiny_models, clip, tmp_path):
    """Frame 0's writing waits until the model has encoded frame 6: written inline it would wait in vain
    (the model cannot go on until the write returns); on a background thread the model goes on.
    """

    class Watched(TorchBackend):
        encoded = 0

        def encode(self, frames):
            Watched.encoded += frames.shape[0]
            if Watched.encoded > 6:
                later_frame_encoded.set()
            return super().encode(frames)

    later_frame_encoded = threading.Event()
    hold = _HoldFirstFrame(later_frame_encoded)
    pipe = Pipeline(Watched(tiny_models, CPU, torch.float32), progress=False)
    opts = OutputOptions(write_threads=2, cmaps=["Greys_r"], sbs=False)
    run_stream(pipe, _settings(), LAG, clip, tmp_path, "clip", opts, "tiny", frame_sinks=[hold])
    assert hold.released == [True]
    assert len(hold.threads) == 14 and all(t.startswith("rd-write") for t in hold.threads)


class _FailAt:
    def __init__(self, index: int):
        self.index = index

    def __enter__(self):
        return self

    def emit(self, fo) -> None:
        if fo.index == self.index:
            raise OSError(28, "No space left on device")

    def __exit__(self, *exc) -> bool:
        return False


@pytest.mark.parametrize("threads", [1, 3])
def test_a_failing_writer_ends_the_run_and_leaves_nothing(tiny_models, clip, tmp_path, threads):
    """A frame sink failing at frame 4 ends the run with that error, inline or on a thread; no output and
    no temporary file is left behind.
    """
    pipe = Pipeline(TorchBackend(tiny_models, CPU, torch.float32), progress=False)
    opts = OutputOptions(write_threads=threads, pointcloud=True, fov=60.0)
    with pytest.raises(OSError, match="No space left"):
        run_stream(pipe, _settings(), LAG, clip, tmp_path, "clip", opts, "tiny", frame_sinks=[_FailAt(4)])
    assert list(tmp_path.iterdir()) == []


def test_lanes_keep_each_lanes_order_and_hold_back_a_fast_producer():
    """Writes of one lane run in submission order on one thread; a bounded queue (depth 2) holds the
    producer back when the writer is slow, so no more than depth + 1 writes wait or run at once.
    """
    done: dict[int, list[int]] = {0: [], 1: [], 2: []}
    waiting = []
    pending = [0]
    lock = threading.Lock()

    def write(lane: int, i: int) -> None:
        with lock:
            pending[0] -= 1
        time.sleep(0.001 * (lane == 0))  # lane 0 slow: its queue fills
        done[lane].append(i)

    with WriteLanes(lanes=3, threads=2, depth=2) as lanes:
        assert lanes.background
        for i in range(50):
            for lane in range(3):
                with lock:
                    pending[0] += 1
                    waiting.append(pending[0])
                lanes.submit(lane, write, lane, i)
    assert done == {lane: list(range(50)) for lane in range(3)}
    # per thread 2 queued + 1 taken and not yet started, plus the one being submitted: 2 * 3 + 1
    assert max(waiting) <= 7


def test_lanes_inline_and_failures():
    order = []
    with WriteLanes(lanes=2, threads=1) as lanes:  # one thread asked: inline, in the caller
        assert not lanes.background
        lanes.submit(1, lambda: order.append(threading.current_thread().name))
    assert order == [threading.current_thread().name]

    def fail():
        raise ValueError("cannot encode")

    lanes = WriteLanes(lanes=2, threads=2)
    lanes.submit(0, fail)
    with pytest.raises(ValueError, match="cannot encode"):
        for _ in range(1000):  # raised at a later submit or at close, never lost
            lanes.submit(0, lambda: None)
        lanes.close()
    lanes.abort()  # after a failure: stops cleanly
