"""One evaluation: a method (saved predictions or engine runs) on one benchmark split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from rd_engine.errors import UserError
from rd_engine.eval.datasets import Benchmark, SequenceSpec, check_dataset, load_depth, load_split, split_folder
from rd_engine.eval.metrics import DISPARITY_FLOOR, MIN_DEPTH, PRED_CLIP, mean_scores, score_video
from rd_engine.eval.predictions import to_benchmark_size
from rd_engine.eval.report import EvalReport, SequenceResult, frame_list

log = logging.getLogger("rd_engine")


class PredictionSource(Protocol):
    """What `evaluate` scores (`rd_engine.eval.sources.PredictionFolder` or `EngineRun`)."""

    method: str
    model: str | None
    backend: str | None
    settings: dict | None

    def check(self, root: Path, bench: Benchmark, seqs: list[SequenceSpec]) -> None: ...

    def predict(self, root: Path, bench: Benchmark, seq: SequenceSpec) -> tuple[np.ndarray, str]: ...


def protocol(bench: Benchmark, max_depth: float, clip_pred: bool = False) -> dict:
    """The protocol's parameters, as recorded in the JSON and summarized above the table."""
    crop = bench.crop
    summary = (
        (
            f"RGB and GT cropped by {crop} px (top, bottom, left, right) before inference and scoring; "
            if any(crop)
            else ""
        )
        + (f"prediction clipped at {PRED_CLIP:g} before the fit; " if clip_pred else "")
        + "one least-squares scale and shift per sequence in inverse depth; GT valid in "
        + f"({MIN_DEPTH:g}, {max_depth:g}) m"
        + (
            f", stored {', '.join(f'{v:g}' for v in bench.no_measurement)} = no measurement"
            if bench.no_measurement
            else ""
        )
        + f"; aligned inverse depth floored at {DISPARITY_FLOOR:g}, depth clipped to [{MIN_DEPTH:g}, {max_depth:g}] m; "
        "AbsRel and delta1 (1.25) per frame, averaged over frames, then over sequences"
    )
    return {
        "alignment": "least squares, one scale and shift per sequence, in inverse depth (float64)",
        "min_depth": MIN_DEPTH,
        "max_depth": max_depth,
        "disparity_floor": DISPARITY_FLOOR,
        "crop_top_bottom_left_right": list(crop),
        "crop_applies_to": "rgb and ground truth" if any(crop) else None,
        "no_measurement_stored_values": list(bench.no_measurement),
        "prediction_clip": PRED_CLIP if clip_pred else None,
        "summary": summary,
    }


def evaluate(
    bench: Benchmark,
    root: Path,
    source: PredictionSource,
    split: str | Path | None = None,
    max_depth: float | None = None,
    on_sequence: Callable[[SequenceResult], None] | None = None,
    clip_pred: bool = False,
) -> EvalReport:
    """Score a method on a benchmark split; nothing is written here (`rd_engine.eval.report.write_report`).

    The dataset is checked whole (every listed file present) and the source checked (every prediction
    present) before any sequence is scored.

    Args:
        bench: The benchmark.
        root: The dataset root (the folder that holds the sequence folders).
        source: Saved predictions or engine runs.
        split: A carried split's name, a folder of CSV lists, or None for the paper's split.
        max_depth: Override of the benchmark's depth cap (metres).
        on_sequence: Called with each sequence's result as soon as it is scored.
        clip_pred: Clip the prediction at `PRED_CLIP` before the fit, as the published scripts do for
            their non-negative outputs (a compatibility switch; off by default).

    Returns:
        The `EvalReport`.

    Raises:
        UserError: A missing or partial dataset, a missing prediction, or one of the wrong length or size.
    """
    root = Path(root)
    seqs = load_split(bench, split)
    check_dataset(root, bench, seqs)
    source.check(root, bench, seqs)
    cap = bench.max_depth if max_depth is None else max_depth
    results = []
    scores = []
    for seq in seqs:
        gt = load_depth(root, bench, seq)  # inside the benchmark's crop
        pred, where = source.predict(root, bench, seq)
        if pred.shape[0] != gt.shape[0]:
            raise UserError(f"{where}: {pred.shape[0]} frames, but sequence {seq.id} has {gt.shape[0]}")
        pred = to_benchmark_size(pred, bench, gt.full_shape[1], gt.full_shape[2], where)
        try:
            score = score_video(pred, gt, None, MIN_DEPTH, cap, pred_clip=PRED_CLIP if clip_pred else None)
        except UserError as e:
            raise UserError(f"{seq.id}: {e}") from None
        scores.append(score)
        r = SequenceResult(
            id=seq.id,
            frames=seq.frames,
            absrel=score.absrel,
            delta1=score.delta1,
            scale=score.scale,
            shift=score.shift,
            pixels=score.pixels,
            frame_absrel=frame_list(score.frame_absrel),
            frame_delta1=frame_list(score.frame_delta1),
            prediction=where,
        )
        results.append(r)
        if on_sequence is not None:
            on_sequence(r)
    absrel, delta1 = mean_scores(scores)
    split_name = split_folder(bench, split).name
    return EvalReport(
        benchmark=bench.name,
        split=split_name,
        root=str(root),
        method=source.method,
        model=source.model,
        backend=source.backend,
        settings=source.settings,
        protocol=protocol(bench, cap, clip_pred),
        sequences=results,
        absrel=absrel,
        delta1=delta1,
    )
