"""Scale-out on Ray: many videos across workers and long videos split into frame ranges.

`run_cluster` is the entry point (`rd-engine run --cluster ray` calls it); see `runner` for the
design, `worker` for what runs on each worker, `destination` for where the outputs go and `jobs`
for the per-video bookkeeping (resume, summary). Ray is imported only when a run starts.
"""

from rd_engine.batch.jobs import VideoJob
from rd_engine.batch.runner import SPLIT_MIN_FRAMES, SPLITS, ClusterRun, run_cluster

__all__ = ["SPLITS", "SPLIT_MIN_FRAMES", "ClusterRun", "VideoJob", "run_cluster"]
