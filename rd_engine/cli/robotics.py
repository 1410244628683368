"""`rd-engine run`'s robotics and AR flags: anchors, confidence, point clouds, ROS 2 bags, the viewer."""

from __future__ import annotations

import argparse
import math

from rd_engine.errors import UserError, needs_extra


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def _unit_float(text: str) -> float:
    v = _non_negative_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]: {text}")
    return v


def _fov(text: str) -> float:
    v = _positive_float(text)
    if v >= 180:
        raise argparse.ArgumentTypeError(f"must be in (0, 180) degrees: {text}")
    return v


def add_robotics_arguments(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("robotics and AR (docs/robotics.md)")
    r.add_argument(
        "--anchors",
        default=None,
        metavar="PATH",
        help="sparse metric depth: .npz with frame, x, y (input pixels), depth (metres), or a folder of 16-bit "
        "PNG sparse depth in mm named by frame number; writes depth_m (metres) beside the relative depth",
    )
    r.add_argument(
        "--anchor-window",
        type=_non_negative_float,
        default=0.0,
        metavar="FRAMES",
        help="offline: slowly varying metric correction with this temporal window (0 = one fit per run)",
    )
    r.add_argument("--confidence", action="store_true", help="per-pixel confidence in [0, 1] (.npz key, PNG16)")
    r.add_argument(
        "--confidence-min",
        type=_unit_float,
        default=0.0,
        help="metric depth and points are dropped where the confidence is below this",
    )
    r.add_argument("--pointcloud", action="store_true", help="per-frame binary PLY point clouds with colour")
    r.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        default=None,
        metavar=("FX", "FY", "CX", "CY"),
        help="pinhole intrinsics in input-frame pixels (scaled to the processed size)",
    )
    r.add_argument("--fov", type=_fov, default=None, help="horizontal field of view in degrees (without --intrinsics)")
    r.add_argument("--min-depth", type=_non_negative_float, default=0.0, help="points nearer than this are dropped")
    r.add_argument("--max-depth", type=_positive_float, default=math.inf, help="points farther than this are dropped")
    r.add_argument(
        "--voxel-size", type=_non_negative_float, default=0.0, help="point cloud voxel size (0 = every pixel)"
    )
    r.add_argument(
        "--topic", default=None, help="image topic of a ROS 2 bag input (sensor_msgs/Image or CompressedImage)"
    )
    r.add_argument("--anchors-topic", default=None, help="sparse depth topic of a ROS 2 bag input (16UC1 mm, 32FC1 m)")
    r.add_argument(
        "--rerun", default=None, metavar="FILE.rrd", help="log RGB, depth, confidence and points to a Rerun recording"
    )


def check_robotics_arguments(args) -> None:
    """One-line errors for flag combinations that cannot work, before any work."""
    asked = [
        flag
        for flag, on in (
            ("--anchors", args.anchors is not None),
            ("--confidence", args.confidence or args.confidence_min > 0),
            ("--pointcloud", args.pointcloud),
            ("--topic", args.topic is not None),
            ("--rerun", args.rerun is not None),
        )
        if on
    ]
    if asked and getattr(args, "cluster", None):
        raise UserError(f"{asked[0]} is not available with --cluster yet (run those videos locally)")
    if args.intrinsics is not None:
        fx, fy, cx, cy = args.intrinsics
        if not (fx > 0 and fy > 0 and all(math.isfinite(v) for v in args.intrinsics)):
            raise UserError("--intrinsics: fx and fy must be > 0 (pixels)")
        if args.fov is not None:
            raise UserError("--intrinsics and --fov both given: pass one")
    if args.pointcloud and args.intrinsics is None and args.fov is None:
        raise UserError("--pointcloud needs the camera: --intrinsics FX FY CX CY or --fov DEGREES")
    if args.min_depth >= args.max_depth:
        raise UserError(f"--min-depth {args.min_depth} must be below --max-depth {args.max_depth}")
    if args.rerun is not None and len(args.inputs) > 1:
        raise UserError("--rerun records one input: give exactly one")
    if args.rerun is not None and getattr(args, "split_shots", False):
        raise UserError("--rerun writes one recording of the whole video: leave out --split-shots")
    if args.anchors is not None and len(args.inputs) != 1:
        raise UserError("--anchors belongs to one video: give exactly one input")
    if args.anchors_topic is not None and args.anchors is not None:
        raise UserError("--anchors and --anchors-topic both given: pass one")
    if args.pointcloud:
        needs_extra("plyfile", "robotics", "--pointcloud")
    if args.rerun is not None:
        needs_extra("rerun", "viewer", "--rerun")
    if args.anchor_window > 0 and args.stream:
        raise UserError("--anchor-window is offline only (a stream updates its one fit as anchors arrive)")


def viewer_sinks(args) -> list:
    """The `--rerun` recording's sink, if asked for."""
    if args.rerun is None:
        return []
    from pathlib import Path

    from rd_engine.outputs.viewer import RerunSink

    return [RerunSink(Path(args.rerun), (args.min_depth, args.max_depth), args.voxel_size, args.confidence_min)]
