"""`rd-engine eval`: the paper's video depth benchmarks and their protocol (docs/evaluation.md).

* `datasets`: the four benchmarks (layouts, ground-truth encodings, caps, crops) and their splits;
* `metrics`: the protocol (one least-squares affine per video in inverse depth; AbsRel and delta1);
* `predictions`: saved predictions (rd-engine's, Video Depth Anything's, DepthCrafter's);
* `sources`: predictions from a folder or from engine runs;
* `runner`: one method on one benchmark split;
* `report`: the Markdown and JSON table and the per-frame AbsRel plots, written atomically;
* `synthetic`: synthetic benchmark folders and predictions (tests, and a reproducible check).
"""

EVAL_PRESET = "paper"  # engine runs: Table 1's main rows (dilations 1 10 25 without capping, fp32, 10 refinement steps)
EVAL_SEED = 0  # engine runs: a fixed seed of the initial noise, so that a rerun scores the same
