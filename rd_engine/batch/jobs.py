"""What a cluster run has to do: one job per video, its output names, and whether it is already done."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from rd_engine.batch.destination import Destination
from rd_engine.io.video import input_stem
from rd_engine.outputs.offline import OutputOptions
from rd_engine.outputs.stereo import output_names as stereo_names
from rd_engine.settings import Settings


@dataclass
class VideoJob:
    """One input video and what became of it (one entry of the run summary)."""

    index: int  # position in the input list
    input: str
    stem: str
    frames: int | None = None  # frames in the processed window (None: the container does not say)
    status: str = "pending"  # pending | done | skipped | error
    seconds: float = 0.0
    worker: str | None = None
    error: str | None = None
    attempts: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)  # frame ranges when split across workers
    driver_bytes: int = 0  # what the workers sent the driver for the co-alignment (split videos)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d["ranges"] = [list(r) for r in self.ranges]
        return d


def make_jobs(paths: list[Path]) -> list[VideoJob]:
    """One job per input; two inputs with one name get `<stem>_2`, ... as in a single-process run."""
    stems: dict[str, int] = {}
    jobs = []
    for i, path in enumerate(paths):
        stem = input_stem(path)
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}_{stems[stem]}"
        jobs.append(VideoJob(i, str(path), stem))
    return jobs


def output_names(stem: str, opts: OutputOptions) -> list[str]:
    """The files and folders `outputs.offline.write_outputs` writes for one video."""
    names = []
    if opts.npy:
        names.append(f"{stem}_pred.npy")
    if opts.npz:
        names.append(f"{stem}.npz")
    for kind in ("exr", "tiff16", "png16"):
        if getattr(opts, kind):
            names.append(f"{stem}_{kind}")
    if opts.ffv1:
        names += [f"{stem}_depth_ffv1.mkv", f"{stem}_depth_ffv1.json"]
    if opts.snippets:
        names.append(f"{stem}_snippets.npz")
    for i, cmap in enumerate(opts.cmaps):
        names.append(f"{stem}_{cmap}.mp4")
        if i == 0 and opts.sbs:
            names.append(f"{stem}_rgbd.mp4")
    if opts.stereo is not None:
        names += stereo_names(stem, opts.stereo.layouts)
    return names


def is_complete(
    dest: Destination, job: VideoJob, settings: Settings, opts: OutputOptions, model_name: str, backend: str
) -> bool:
    """True when every output of the video is there and its `.npz` says it was made the same way.

    The `.npz` metadata records the input, the model, the backend, every setting and the output
    options; without `--npz` nothing records them, so such videos are always redone.
    """
    if not opts.npz:
        return False
    names = output_names(job.stem, opts)
    if not all(dest.exists(n) for n in names):
        return False
    meta = dest.npz_metadata(f"{job.stem}.npz")
    if meta is None:
        return False
    return (
        meta.get("source") == job.input
        and meta.get("model") == model_name
        and meta.get("backend") == backend
        and meta.get("settings") == settings.to_dict()
        # as the metadata stores them: through JSON (tuples become lists, infinity a float)
        and meta.get("outputs") == json.loads(json.dumps(opts.recorded()))
    )
