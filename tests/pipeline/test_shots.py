"""A video cut into shots: each shot exactly what a run on that shot's frames alone gives."""

import dataclasses

import numpy as np
import pytest
import torch

from rd_engine.backends.torch_backend import TorchBackend
from rd_engine.pipeline.offline import Pipeline
from rd_engine.pipeline.shots import ShotOptions, predict_shots
from rd_engine.settings import resolve
from rd_engine.testing.media import multishot_cuts, multishot_frames, write_frames_video

CPU = torch.device("cpu")
LENGTHS = [9, 2, 14, 1, 12]  # a 2- and a 1-frame shot (cut list) among longer ones


@pytest.fixture(scope="module")
def pipe(tiny_models):
    return Pipeline(TorchBackend(tiny_models, CPU, torch.float32), progress=False)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    path = tmp_path_factory.mktemp("edited") / "edited.mp4"
    write_frames_video(path, multishot_frames(LENGTHS, 64, 48), fps=12)
    return path


def _settings(**kw):
    base = dict(res=0, dilations=[1, 3], seed=7, align="fast")
    base.update(kw)
    return resolve(kw.pop("preset", "fast"), base, CPU)[0]


def _alone(pipe, path, s, first, n):
    return pipe.predict(path, dataclasses.replace(s, start_frame=first, frame_count=n))


@pytest.mark.parametrize("align, refine", [("fast", 0), ("robust", 1)])
def test_each_shot_equals_a_run_on_its_frames_alone(pipe, edited, align, refine):
    s = _settings(align=align, refine_step=refine)
    cuts = multishot_cuts(LENGTHS)
    pred = predict_shots(pipe, edited, s, ShotOptions("list", cuts))
    assert pred.num_frames == sum(LENGTHS) and len(pred.timestamps) == sum(LENGTHS)
    assert [(sh.first, sh.last) for sh in pred.shots] == [(a, b - 1) for a, b in zip([0, *cuts], [*cuts, sum(LENGTHS)])]
    for sh in pred.shots:
        alone = _alone(pipe, edited, s, sh.first, sh.frames)
        part = pred.depth[sh.first : sh.last + 1]
        np.testing.assert_allclose(part, alone.depth, rtol=0, atol=1e-6)
        assert (sh.depth_min, sh.depth_max) == alone.norm
        assert sh.dilations == alone.dilations  # capped for the shot's own length
        assert pred.timestamps[sh.first : sh.last + 1] == alone.timestamps


def test_detected_shots_and_a_window(pipe, tmp_path):
    """Detection (default sensitivity) inside a --start-frame/--frame-count window."""
    lengths = [12, 10, 11]
    path = tmp_path / "three.mp4"
    write_frames_video(path, multishot_frames(lengths, 64, 48), fps=12)
    s = _settings(start_frame=3, frame_count=25)
    pred = predict_shots(pipe, path, s, ShotOptions("auto"))
    assert [(sh.first, sh.last) for sh in pred.shots] == [(3, 11), (12, 21), (22, 27)]
    assert "detect" in pred.stage_seconds
    for sh in pred.shots:
        alone = _alone(pipe, path, s, sh.first, sh.frames)
        np.testing.assert_allclose(pred.depth[sh.first - 3 : sh.last - 2], alone.depth, rtol=0, atol=1e-6)


def test_one_shot_equals_the_plain_run(pipe, clip):
    """A clip without cuts: shot detection changes nothing in the depth."""
    s = _settings()
    pred = predict_shots(pipe, clip, s, ShotOptions("auto"))
    plain = pipe.predict(clip, s)
    assert pred.shots is None  # no cut: the plain run's result, no shot table
    np.testing.assert_array_equal(pred.depth, plain.depth)


def test_a_cut_every_frame(pipe, tmp_path):
    """A slideshow: every frame its own shot (each handled like a 1-frame video)."""
    n = 7
    path = tmp_path / "slides.mp4"
    write_frames_video(path, multishot_frames([1] * n, 64, 48), fps=2)
    s = _settings()
    pred = predict_shots(pipe, path, s, ShotOptions("auto", min_shot_len=1))
    assert [(sh.first, sh.last) for sh in pred.shots] == [(i, i) for i in range(n)]
    assert np.isfinite(pred.depth).all() and pred.depth.shape[0] == n
    one = _alone(pipe, path, s, 4, 1)
    np.testing.assert_allclose(pred.depth[4:5], one.depth, rtol=0, atol=1e-6)


def test_split_shots_callback_gets_each_shot(pipe, edited):
    s = _settings()
    got = []
    pred = predict_shots(
        pipe,
        edited,
        s,
        ShotOptions("list", multishot_cuts(LENGTHS)),
        on_shot=lambda p, i: got.append((i, p.depth.copy(), p.settings)),
        keep=False,
    )
    assert pred.depth.shape[0] == 0 and len(pred.shots) == len(LENGTHS)
    assert [g[0] for g in got] == list(range(len(LENGTHS)))
    for (_, depth, ss), sh in zip(got, pred.shots):
        assert (ss.start_frame, ss.frame_count) == (sh.first, sh.frames)
        np.testing.assert_allclose(depth, _alone(pipe, edited, s, sh.first, sh.frames).depth, rtol=0, atol=1e-6)


def test_memory_flat_over_many_shots(tiny_ckpt, tmp_path):
    """A slideshow of 40 one-frame shots in one process: resident memory does not grow with the shots.

    Every shot runs the model, the store and the merge once (a leak of any per-shot structure
    would add about 200 KiB a shot at 128x96: 5 MiB over the 25 shots measured; measured here:
    flat to within 0.3 MiB).
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    n = 40
    clip = tmp_path / "slides.mp4"
    write_frames_video(clip, multishot_frames([1] * n, 128, 96), fps=4)
    child = Path(__file__).with_name("shots_memory_child.py")
    out = subprocess.run(
        [sys.executable, str(child), str(tiny_ckpt), str(clip), str(n)], capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["shots"] == n
    rss = res["rss"]
    growth = max(rss[15:]) - rss[15]  # after the allocator's warm-up
    assert growth < 3 << 20, f"resident memory grew {growth / 2**20:.1f} MiB over {n - 15} shots"


def test_each_shot_has_its_own_metric_fit_and_confidence(pipe, edited):
    """Anchors that follow a different affine in each shot: each shot's metric depth is its own affine
    (relative error < 1e-4 at every pixel), and the confidence is each shot's run alone with it.
    """
    from rd_engine.io.anchors import Anchors

    s = _settings()
    cuts = multishot_cuts(LENGTHS)
    shots = ShotOptions("list", cuts)
    plain = predict_shots(pipe, edited, s, shots)
    rng = np.random.default_rng(4)
    truth = {}  # shot number: (a, b) with 1 / z = a d + b
    rows = []
    n, h, w = plain.depth.shape
    for k, sh in enumerate(plain.shots):
        a, b = 0.2 + 0.1 * k, 0.3 + 0.15 * k  # b > a: positive inverse depth over d in [-1, 1]
        truth[k] = (a, b)
        for f in range(sh.first, sh.last + 1):
            u, v = rng.integers(0, w, 20), rng.integers(0, h, 20)  # res 0: input pixels are processed pixels
            d = plain.depth[f, v, u].astype(np.float64)
            rows.append((np.full(20, f), u.astype(float), v.astype(float), 1.0 / (a * d + b)))
    anchors = Anchors(*(np.concatenate([r[i] for r in rows]) for i in range(4)))
    pred = predict_shots(pipe, edited, s, shots, confidence=True, anchors=anchors)
    np.testing.assert_array_equal(pred.depth, plain.depth)  # anchors change nothing of the relative depth
    assert len(pred.metric.ranges) == len(LENGTHS)
    for k, sh in enumerate(pred.shots):
        a, b = truth[k]
        f0, f1 = sh.first, sh.last + 1
        assert pred.metric.ranges[k][:2] == (f0, f1)
        z = np.stack([pred.metric.depth(f, pred.depth[f]) for f in range(f0, f1)])
        assert np.abs(z * (a * pred.depth[f0:f1].astype(np.float64) + b) - 1).max() < 1e-4, k
        alone = pipe.predict(edited, dataclasses.replace(s, start_frame=f0, frame_count=f1 - f0), confidence=True)
        np.testing.assert_allclose(pred.confidence[f0:f1], alone.confidence, rtol=0, atol=1e-6)


def test_the_model_runs_the_next_shot_while_a_shot_is_written(tiny_models, edited):
    """Across a cut the next shot's encode starts while the previous shot is being written (`on_shot`
    holds shot 0 until the model has encoded frames of shot 1; one after the other it would wait in
    vain), and the overlapped run gives exactly the one-after-the-other run's results.
    """
    import threading

    class Watched(TorchBackend):
        encoded = 0

        def encode(self, frames):
            Watched.encoded += frames.shape[0]
            if Watched.encoded > LENGTHS[0]:
                next_shot_encoding.set()
            return super().encode(frames)

    next_shot_encoding = threading.Event()
    seen = []

    def on_shot(p, i):
        if i == 0:
            seen.append(next_shot_encoding.wait(timeout=120))  # a timeout only stops a hang: no timing
        seen_threads.append(threading.current_thread().name)

    seen_threads: list[str] = []
    pipe = Pipeline(Watched(tiny_models, CPU, torch.float32), progress=False)
    s = _settings()
    cuts = ShotOptions("list", multishot_cuts(LENGTHS))
    both = predict_shots(pipe, edited, s, cuts, on_shot=on_shot, confidence=True, overlap=True)
    assert seen == [True]
    # every shot but the last finishes on the finisher thread
    assert [t.startswith("rd-shot") for t in seen_threads] == [True] * (len(LENGTHS) - 1) + [False]
    serial = predict_shots(pipe, edited, s, cuts, overlap=False, confidence=True)
    np.testing.assert_array_equal(both.depth, serial.depth)
    np.testing.assert_array_equal(both.confidence, serial.confidence)
    assert both.shots == serial.shots and both.timestamps == serial.timestamps


def test_a_failure_while_a_shot_finishes_stops_the_run(pipe, edited):
    """An error in a shot finishing on the second thread ends the run with that error."""

    def on_shot(p, i):
        if i == 1:
            raise ValueError("shot 1 could not be written")

    with pytest.raises(ValueError, match="shot 1 could not be written"):
        cuts = ShotOptions("list", multishot_cuts(LENGTHS))
        predict_shots(pipe, edited, _settings(), cuts, on_shot=on_shot, overlap=True)
