"""`rd-engine run BAG --topic T`: a ROS 2 bag in, the usual outputs plus an output bag out.

Offline, the bag's frames go to the pipeline as a lossless video in a temporary folder (the method sees
exactly the decoded pixels); online (`--stream`), they are pushed to a session one by one, as a camera's
would be. Either way the output bag (`outputs.rosbag_out.BagSink`) carries each input message's header.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.anchors import Anchors
from rd_engine.io.rosbag import image_stamps, match_depth, read_depth, read_images, storage_of
from rd_engine.io.video import processed_size
from rd_engine.io.video_writer import write_lossless_video
from rd_engine.outputs.offline import OutputOptions, write_outputs
from rd_engine.outputs.rosbag_out import BagSink
from rd_engine.outputs.stream import run_stream
from rd_engine.progress import StageClock


def bag_anchors(bag: Path, anchors_topic: str | None, stamps: list[int], size: tuple[int, int]) -> Anchors | None:
    """The anchors topic's sparse depth as `Anchors` of the frames they match by stamp."""
    if anchors_topic is None:
        return None
    matched = match_depth(stamps, read_depth(bag, anchors_topic, size))
    if not matched:
        raise UserError(f"{bag}: no message of {anchors_topic} has the stamp of an image frame (within half a frame)")
    frames = sorted(matched)
    cat = [np.concatenate([matched[f][i] for f in frames]) for i in range(3)]
    frame = np.concatenate([np.full(matched[f][0].size, f, np.int64) for f in frames])
    return Anchors(frame, *cat)


def run_bag(
    pipe,
    settings,
    bag: Path,
    topic: str,
    out_dir: Path,
    stem: str,
    opts: OutputOptions,
    model_name: str,
    backend: str,
    anchors_topic: str | None = None,
    anchors: Anchors | None = None,
    stream: bool = False,
    lag: int = 0,
    progress: bool = True,
    sinks=(),
) -> str:
    """Run one bag (see module doc); returns the summary line. `sinks`: more per-frame writers."""
    t0 = time.perf_counter()
    start, count = settings.start_frame, settings.frame_count
    stamps, in_size = image_stamps(bag, topic, start, count)
    size = processed_size(*in_size, settings.res)
    if anchors is None:
        anchors = bag_anchors(bag, anchors_topic, stamps, in_size)
    if anchors is not None:
        anchors.check(*in_size, len(stamps), source="anchors")
    sink = BagSink(
        out_dir / f"{stem}_rosbag2",
        storage_of(bag),
        depth_range=opts.depth_range,
        voxel=opts.voxel,
        confidence_min=opts.confidence_min,
    )
    windowless = dataclasses.replace(settings, start_frame=0, frame_count=0)
    if stream:
        opts = dataclasses.replace(opts, confidence=True)  # the bag carries confidence

        def frames():
            for fr in read_images(bag, topic, start, count):
                if fr.rgb.shape[:2] != (in_size[1], in_size[0]):
                    raise UserError(f"{bag}: frame {fr.index} is {fr.rgb.shape[1]}x{fr.rgb.shape[0]}, not {in_size}")
                a = anchors.in_range(fr.index, fr.index + 1) if anchors is not None else None
                yield fr.timestamp, fr.rgb, (a.x, a.y, a.depth) if a is not None and len(a) else None, fr.header

        line = run_stream(
            pipe, windowless, lag, bag, out_dir, stem, opts, model_name, frames=frames(), frame_sinks=[sink, *sinks]
        )
        return line + _counts(sink)
    headers, timestamps = [], []
    with tempfile.TemporaryDirectory(prefix="rd-bag-", dir=out_dir) as tmp:
        video = Path(tmp) / f"{stem}.mkv"  # its name is the one the run's messages give

        def rgb_frames():
            for fr in read_images(bag, topic, start, count):
                if fr.rgb.shape[:2] != (in_size[1], in_size[0]):
                    raise UserError(f"{bag}: frame {fr.index} is {fr.rgb.shape[1]}x{fr.rgb.shape[0]}, not {in_size}")
                headers.append(fr.header)
                timestamps.append(fr.timestamp)
                yield fr.rgb

        write_lossless_video(video, rgb_frames())
        pred = pipe.predict(video, windowless, confidence=True, anchors=anchors)
        try:
            pred.timestamps = timestamps  # the bag's header stamps, not the temporary video's
            pred.info = dataclasses.replace(pred.info, fps=_rate(timestamps))
            clock = StageClock(progress)
            write_outputs(pred, out_dir, stem, opts, model_name, backend, clock, sinks=[sink, *sinks], sources=headers)
        finally:
            pred.close()
    secs = time.perf_counter() - t0
    return f"{bag.name}: {len(headers)} frames {size[0]}x{size[1]} in {secs:.1f}s | -> {out_dir}/{stem}*" + _counts(
        sink
    )


def _rate(timestamps: list[float]) -> float:
    if len(timestamps) < 2:
        return 30.0
    d = float(np.median(np.diff(timestamps)))
    return 1.0 / d if d > 0 else 30.0


def _counts(sink: BagSink) -> str:
    return " | bag: " + ", ".join(f"{t} {n}" for t, n in sorted(sink.counts.items()))
