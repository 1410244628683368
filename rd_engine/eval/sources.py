"""Where a sequence's prediction comes from: a folder of saved predictions, or a run of the engine.

A folder's predictions come at whatever size they were saved; `rd_engine.eval.runner` brings them to the
ground truth's size and scores them. An engine run sees each sequence's RGB frames inside the benchmark's
crop (ScanNet's border is cut off before inference, as the published benchmark scripts do) and gives its
depth at the size of those frames.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rd_engine.api import Engine
from rd_engine.errors import UserError
from rd_engine.eval import EVAL_PRESET, EVAL_SEED
from rd_engine.eval.datasets import Benchmark, SequenceSpec, check_rgb_size, load_rgb
from rd_engine.eval.predictions import check_predictions, load_prediction, to_size
from rd_engine.io.files import save_npy_atomic
from rd_engine.io.video_writer import write_lossless_video


class PredictionFolder:
    """Saved predictions (rd-engine's, Video Depth Anything's, DepthCrafter's; see `rd_engine.eval.predictions`).

    Args:
        folder: The folder.
        method: Row label (default: the folder's name).
    """

    def __init__(self, folder: Path, method: str | None = None):
        self.folder = Path(folder)
        self.method = method or self.folder.resolve().name
        self.model: str | None = None
        self.backend: str | None = None
        self.settings: dict | None = None

    def check(self, root: Path, bench: Benchmark, seqs: list[SequenceSpec]) -> None:
        """Fail before any work if a sequence has no prediction."""
        check_predictions(self.folder, seqs)

    def predict(self, root: Path, bench: Benchmark, seq: SequenceSpec) -> tuple[np.ndarray, str]:
        """``([N, h, w] prediction, where it came from)``; rd-engine's metadata fills model, backend, settings."""
        loaded = load_prediction(self.folder, seq)
        meta = loaded.metadata
        if meta and self.model is None:
            self.model, self.backend, self.settings = meta.get("model"), meta.get("backend"), meta.get("settings")
        return loaded.depth, str(loaded.path)


class EngineRun:
    """Runs rd-engine on each sequence's RGB frames, offline or online.

    By default with the paper's settings (`EVAL_PRESET`) and a fixed seed (`EVAL_SEED`). Offline, the
    frames go to the pipeline as a lossless (FFV1) video in a temporary folder, so the run is exactly
    `rd-engine run` on those frames; online (``lag`` given), they are pushed into a stream session one by
    one, as `rd-engine run --stream --lag` does.

    Args:
        engine: The loaded engine.
        preset: Settings preset.
        overrides: Explicit settings (None values keep the preset's; no seed: `EVAL_SEED`).
        lag: Online look-ahead in frames; None runs the offline method.
        save_dir: Where to keep each sequence's prediction as ``<sequence>_pred.npy`` (None: nowhere).
        method: Row label.
    """

    def __init__(
        self,
        engine: Engine,
        preset: str = EVAL_PRESET,
        overrides: dict | None = None,
        lag: int | None = None,
        save_dir: Path | None = None,
        method: str | None = None,
    ):
        self.engine = engine
        self.preset = preset
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.overrides.setdefault("seed", EVAL_SEED)
        self.lag = lag
        self.save_dir = save_dir
        self.model = engine.model_name
        self.backend = engine.backend.name
        self.settings = engine.settings(preset, **self.overrides).to_dict()
        self.settings["preset"] = preset
        self.settings["mode"] = "offline" if lag is None else "online"
        if lag is not None:
            self.settings["lag"] = lag
        mode = "offline" if lag is None else f"online-lag{lag}"
        self.method = method or f"rd-engine-{preset}-{self.settings['align']}-{mode}"

    def check(self, root: Path, bench: Benchmark, seqs: list[SequenceSpec]) -> None:
        """Fail before any run if a benchmark with a crop has RGB frames at another size than its depth."""
        check_rgb_size(root, bench, seqs)

    def predict(self, root: Path, bench: Benchmark, seq: SequenceSpec) -> tuple[np.ndarray, str]:
        """The depth of one sequence, ``[N, h, w]`` at the size of its (cropped) RGB frames."""
        size: list[int] = []
        frames = _frames(root, bench, seq, size)  # read one at a time: a sequence's RGB is never held whole
        depth = self._offline(frames) if self.lag is None else self._online(frames, seq.frames)
        depth = _materialize(to_size(depth, size[0], size[1], f"{seq.id}: rd-engine run"))
        if self.save_dir is not None:
            save_npy_atomic(Path(self.save_dir) / f"{seq.id}_pred.npy", depth)
        return depth, "rd-engine run"

    def _offline(self, frames: Iterator[np.ndarray]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="rd-eval-") as tmp:
            video = Path(tmp) / "frames.mkv"
            write_lossless_video(video, frames)
            pred = self.engine.run(video, self.preset, shots="off", **self.overrides)  # benchmark clips are one shot
            try:
                return np.array(pred.depth, np.float32)
            finally:
                pred.close()

    def _online(self, frames: Iterator[np.ndarray], n: int) -> np.ndarray:
        session = self.engine.open_stream(self.preset, self.lag, shots="off", **self.overrides)
        done: dict[int, np.ndarray] = {}
        for i, rgb in enumerate(frames):
            for f in session.push(rgb, i / 30.0):
                done[f.index] = f.depth
        for f in session.flush():
            done[f.index] = f.depth
        return np.stack([done[i] for i in range(n)]).astype(np.float32)


def _materialize(depth, chunk: int = 16) -> np.ndarray:
    """``[N, H, W]`` float32 from an array or a resizing view, resized a chunk of frames at a time."""
    if isinstance(depth, np.ndarray):
        return depth.astype(np.float32, copy=False)
    out = np.empty(depth.shape, np.float32)
    for a in range(0, depth.shape[0], chunk):
        out[a : a + chunk] = depth[a : a + chunk]
    return out


def _frames(root: Path, bench: Benchmark, seq: SequenceSpec, size: list[int]) -> Iterator[np.ndarray]:
    """A sequence's RGB frames in order inside the benchmark's crop, checked to share one size.

    ``size`` receives ``[height, width]`` of the yielded (cropped) frames once the first is read.
    """
    first = None
    for i in range(seq.frames):
        rgb = load_rgb(root, seq, i)
        if first is None:
            first = rgb.shape
            window = bench.crop_window(*first[:2])
        elif rgb.shape != first:
            raise UserError(
                f"{seq.id}: frame {seq.rgb[i]} is {rgb.shape[1]}x{rgb.shape[0]}, the first is {first[1]}x{first[0]}"
            )
        rgb = np.ascontiguousarray(rgb[window])
        if not size:
            size += rgb.shape[:2]
        yield rgb
