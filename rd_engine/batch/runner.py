"""The driver of a cluster run on Ray: many videos across workers, and long videos split across them.

- **Many videos**: one `Worker` actor per GPU (CPU slot without GPUs) loads the models once and
  takes the next video when it is free, longest videos first. Each video runs exactly as in a
  single-process run (`Pipeline.predict`, `write_outputs`), so the outputs are the same files.
- **One long video** (at least `split_min_frames` frames, or `split="always"`): frame ranges, one
  per worker (`pipeline.ranges`). Each worker decodes its own range from the file, runs the
  snippets that cover it and sends the driver only the solver copies it owns; the driver solves the
  co-alignment once (`offline.coalign`) and sends back the scales and shifts; each worker merges its
  range; the whole video's min and max go back for the re-normalization; one worker writes the
  outputs from the ranges' parts.
- **Faults**: a worker that dies (killed, out of memory, node lost) is restarted by Ray and its
  video runs again from the start on the next free worker (up to `max_attempts` times); a bad input
  is a recorded error and the other videos go on; with `resume`, videos whose outputs are complete
  and were made with the same settings (the `.npz` metadata) are skipped.
- **Progress**: one bar (frames, frames per second, videos done, workers busy) and a summary JSON
  per run at the output location (per video: seconds, frames, worker, error).

Ray is an optional dependency (`pip install "rd-engine[ray]"`); nothing imports it before a run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from rd_engine.batch.destination import INSTALL_HINT, Destination
from rd_engine.batch.jobs import VideoJob, make_jobs
from rd_engine.batch.worker import EngineSpec, Worker
from rd_engine.errors import UserError
from rd_engine.io.video import list_inputs
from rd_engine.outputs.offline import OutputOptions
from rd_engine.pipeline.inference import pick_seed
from rd_engine.pipeline.offline import Shot, coalign
from rd_engine.pipeline.ranges import RangeMismatch, snippet_batches, split_ranges, splittable
from rd_engine.pipeline.shots import ShotOptions
from rd_engine.settings import resolve

log = logging.getLogger("rd_engine")

SPLIT_MIN_FRAMES = 3000  # videos at least this long are split across the workers (split="auto")
SPLITS = ("auto", "always", "never")


def import_ray():
    """The `ray` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"running on a Ray cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass
class ClusterRun:
    """What a cluster run did."""

    jobs: list[VideoJob]  # in input order
    seconds: float
    workers: list[str]
    summary: str  # where the summary JSON went

    @property
    def failures(self) -> list[VideoJob]:
        return [j for j in self.jobs if j.status == "error"]


class _Bar:
    """One progress bar for the run: frames, frames per second, videos done, workers busy."""

    def __init__(self, enabled: bool, frames: int, videos: int, workers: int):
        self.videos, self.workers, self.done = videos, workers, 0
        self.bar = tqdm(
            total=frames or None,
            unit="frame",
            desc="cluster",
            disable=not (enabled and sys.stderr.isatty()),
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )

    def show(self, busy: int) -> None:
        self.bar.set_postfix_str(f"videos {self.done}/{self.videos}, workers busy {busy}/{self.workers}")

    def finished(self, job: VideoJob, busy: int) -> None:
        self.done += 1
        self.bar.update(job.frames or 0)
        self.show(busy)

    def close(self) -> None:
        self.bar.close()


def run_cluster(
    inputs: list[str | os.PathLike],
    output: str | os.PathLike,
    *,
    checkpoint: str | None = None,
    engine: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    preset: str = "fast",
    overrides: dict | None = None,
    options: OutputOptions | None = None,
    address: str | None = None,
    workers: int | None = None,
    split: str = "auto",
    split_min_frames: int = SPLIT_MIN_FRAMES,
    max_memory: float | None = None,
    spill_dir: str | None = None,
    storage_options: dict | None = None,
    resume: bool = True,
    progress: bool = True,
    max_attempts: int = 3,
    threads: int | None = None,
    sequence: dict | None = None,
    on_event: Callable[[str, VideoJob, dict], None] | None = None,
    shots: ShotOptions | None = None,
) -> ClusterRun:
    """Run many videos, or long ones split into frame ranges, on a Ray cluster.

    Args:
        inputs: Video files, folders of videos, or `.txt` lists (as `rd-engine run`).
        output: Output folder (local or shared by the workers) or fsspec URL (`s3://bucket/prefix`).
        checkpoint: Checkpoint folder or hub id (as `rd-engine run -c`).
        engine: Engine folder from `rd-engine build`.
        backend: Inference backend (as `rd-engine run --backend`).
        device: "auto", "cpu", "cuda" (each worker gets one GPU when the cluster has GPUs).
        preset: Settings preset.
        overrides: Explicit settings (names of `rd_engine.settings.Settings` fields).
        options: Which outputs to write.
        address: Ray cluster address (default: `RAY_ADDRESS`, else a local cluster is started).
            An already connected Ray (`ray.init` in this process) is used as it is.
        workers: Number of worker actors (default: one per GPU, else one per CPU of the cluster).
        split: "auto" (videos of at least `split_min_frames` frames), "always" or "never".
        split_min_frames: The length from which "auto" splits a video.
        max_memory: GiB of host memory per worker for snippet depth before it spills to disk.
        spill_dir: Workers' folder for spill and scratch files (default: their temp folder).
        storage_options: fsspec options for a URL output (s3fs: endpoint_url, key, secret, ...).
        resume: Skip videos whose outputs are complete and were made with the same settings.
        progress: Show the run's progress bar (on a terminal).
        max_attempts: Runs of a video before a worker death counts as its failure.
        threads: PyTorch CPU threads per worker (default: this process's count, so that CPU results
            are bitwise those of a single-process run here: they depend on the thread count).
        sequence: Options of image-sequence inputs (`rd_engine.io.sequence.SequenceOptions` fields: fps,
            transform, allow_gaps); None: their defaults.
        on_event: Called with ("started", job, worker info) when a worker takes a video (or a range).
        shots: How videos are cut into shots (None: off). A long video with cuts (as `split` picks long
            videos) is split at them: its shots run on the free workers, each exactly as `rd-engine run`
            computes it (no co-alignment across a cut), and one worker writes the video's files; a long
            shot (as `split` picks long videos) is split into frame ranges across the workers, as a long
            video without cuts is. Shorter videos run shot by shot on one worker.

    Returns:
        The jobs with their outcome, the seconds, the workers and the summary's location.

    Raises:
        UserError: For a setting, input list, output location or cluster problem (one line).
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if max_attempts < 1:
        raise UserError(f"max_attempts must be >= 1, got {max_attempts}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    resolve(preset, overrides, torch.device("cpu"))  # bad settings fail here, before any cluster starts
    opts = options or OutputOptions()
    ray = import_ray()
    t0 = time.perf_counter()
    paths = list_inputs([str(p) for p in inputs])
    if not paths:
        raise UserError("no input videos given")
    jobs = make_jobs(paths)
    dest = Destination(output, storage_options)
    dest.check_writable()
    started = _connect(ray, address)
    actors: list = []
    try:
        actors, infos = _start_workers(
            ray,
            workers,
            device,
            max_attempts,
            EngineSpec(
                checkpoint=checkpoint,
                engine=None if engine is None else str(engine),
                backend=backend,
                device=device,
                preset=preset,
                overrides=overrides,
                max_memory=max_memory,
                spill_dir=spill_dir,
                threads=threads or torch.get_num_threads(),
                sequence=dict(sequence) if sequence else None,
                shots=shots or ShotOptions("off"),
            ),
        )
        settings = infos[0]["settings"]
        for note in infos[0]["notes"]:
            log.info(note)
        log.info(
            "cluster: %d workers on %s (%s), model %s",
            len(actors),
            infos[0]["device"],
            infos[0]["backend"],
            infos[0]["model"],
        )
        jobs = _survey(ray, actors, jobs, dest, opts, resume)
        todo = sorted((j for j in jobs if j.status == "pending"), key=lambda j: -(j.frames or 0))
        by_shots = shots is not None and not shots.off
        why_not = (
            (None if by_shots else splittable(settings))  # shots need no co-alignment across workers
            or ("snippets are saved" if opts.snippets else None)
        )
        to_split = []
        if split != "never" and len(actors) > 1 and why_not is None:
            to_split = [j for j in todo if j.frames and (split == "always" or j.frames >= split_min_frames)]
        elif split == "always" and why_not is not None:
            log.warning("not splitting videos across workers: %s", why_not)
        whole = deque(j for j in todo if j not in to_split)
        ranged = by_shots and splittable(settings) is None and not opts.snippets and len(actors) > 1

        def long_shot(n: int) -> bool:  # a shot split into frame ranges, as a long video without cuts is
            long = split == "always" or n >= split_min_frames
            return ranged and long and len(split_ranges(n, len(actors), settings)) > 1

        bar = _Bar(progress, sum(j.frames or 0 for j in todo), len(todo), len(actors))
        try:
            for job in to_split:
                if by_shots:
                    done = _run_shots(
                        ray, actors, infos, job, settings, dest, opts, max_attempts, on_event, bar, long_shot
                    )
                else:
                    done = _run_split(ray, actors, infos, job, settings, dest, opts, max_attempts, on_event, bar)
                if not done:
                    whole.appendleft(job)  # no cut, or the container's frame count was wrong: run it whole
            _run_whole(ray, actors, infos, whole, dest, opts, max_attempts, on_event, bar)
        finally:
            bar.close()
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - t0
    summary = _write_summary(dest, jobs, seconds, [i["name"] for i in infos], settings, opts)
    return ClusterRun(jobs, seconds, [i["name"] for i in infos], summary)


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster (or start a local one); True when this call started Ray."""
    if ray.is_initialized():
        return False
    addr = address or os.environ.get("RAY_ADDRESS") or None
    if addr is None:  # a local cluster of this machine
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    elif addr.startswith("ray://"):  # Ray Client: the cluster's own defaults
        kw = {}
    else:
        kw = {"log_to_driver": False, "configure_logging": False}
    import signal
    import threading

    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        ray.init(address=addr, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {addr or '(local)'}: {e}") from None
    if callable(sigterm):
        # Ray's core installs its own SIGTERM handler (a stack dump and exit); the caller's (the CLI's:
        # SIGTERM as Ctrl-C) comes back, so that a preempted run stops its workers and cleans up
        signal.signal(signal.SIGTERM, sigterm)
    return True


def _start_workers(ray, workers: int | None, device: str, max_attempts: int, spec: EngineSpec):
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and device != "cpu"
    slots = gpus if use_gpu else max(1, int(resources.get("CPU", 1)))
    if workers is not None and workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    if workers is not None and workers > slots:
        log.warning("the cluster has room for %d workers, not %d", slots, workers)
    n = min(workers or slots, slots)
    remote = ray.remote(Worker).options(
        num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=max_attempts, max_task_retries=0
    )
    actors = [remote.remote(spec) for _ in range(n)]
    infos = ray.get([a.info.remote() for a in actors])
    for info in infos:
        if info["error"]:
            for a in actors:
                ray.kill(a, no_restart=True)
            raise UserError(info["error"])
    if any(i["settings"] != infos[0]["settings"] for i in infos):
        raise UserError("the workers resolved different settings (mixed devices?); pass --device and --dtype")
    return actors, infos


def _survey(ray, actors, jobs: list[VideoJob], dest, opts, resume: bool) -> list[VideoJob]:
    """Lengths, early errors and completed videos, probed by the workers (they can read the inputs)."""
    share = [jobs[i :: len(actors)] for i in range(len(actors))]
    done = ray.get([a.survey.remote(part, dest, opts, resume) for a, part in zip(actors, share) if part])
    out = {j.index: j for part in done for j in part}
    return [out[j.index] for j in jobs]


def _actor_died(ray, e: BaseException) -> bool:
    return isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError))


def _refresh(ray, actors, infos, wi: int, wait_s: float = 300.0) -> bool:
    """After a worker died: wait for Ray's restart and take its new identity; False if it is gone for good."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            infos[wi] = ray.get(actors[wi].info.remote())
            return infos[wi]["error"] is None
        except ray.exceptions.ActorUnavailableError:  # still restarting
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        except ray.exceptions.RayActorError:  # out of restarts
            return False


def _run_whole(ray, actors, infos, queue: deque, dest, opts, max_attempts, on_event, bar: _Bar) -> None:
    free = deque(range(len(actors)))
    inflight: dict = {}
    try:
        while queue or inflight:
            if queue and not free and not inflight:  # every worker is gone for good
                for job in queue:
                    job.status, job.error = "error", f"{job.input}: no worker left to run it"
                queue.clear()
                break
            while free and queue:
                wi, job = free.popleft(), queue.popleft()
                job.attempts += 1
                inflight[actors[wi].run_video.remote(job, dest, opts)] = (wi, job)
                if on_event is not None:
                    on_event("started", job, infos[wi])
            bar.show(len(inflight))
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                wi, job = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:
                    if not _actor_died(ray, e):
                        raise
                    dest.remove_partials(job.stem)
                    log.warning("%s: worker %s died; running the video again", job.input, infos[wi]["name"])
                    if job.attempts < max_attempts:
                        queue.appendleft(job)
                    else:
                        job.status, job.error = "error", f"{job.input}: its worker died {job.attempts} times"
                        bar.finished(job, len(inflight))
                    if _refresh(ray, actors, infos, wi):
                        free.append(wi)
                    continue
                _copy_outcome(job, result)
                bar.finished(job, len(inflight))
                free.append(wi)
    except BaseException:  # Ctrl-C, SIGTERM: stop the busy workers, then remove what they left unfinished
        for wi, job in inflight.values():
            _stop(ray, actors[wi])
            dest.remove_partials(job.stem)
        raise


def _stop(ray, actor, wait_s: float = 10.0) -> None:
    """Kill a worker and wait (a little) until its process is gone, so that it writes nothing more."""
    ray.kill(actor, no_restart=True)
    try:
        ray.get(actor.info.remote(), timeout=wait_s)
    except Exception:  # noqa: BLE001 - dead (the normal case) or not answering: either way, done waiting
        pass


def _copy_outcome(job: VideoJob, result: VideoJob) -> None:
    for name in ("status", "seconds", "frames", "worker", "error"):
        setattr(job, name, getattr(result, name))


def _split_window(ray, workers, key: str, job: VideoJob, s, n: int, seed: int, dest, prefix: str, window=None) -> dict:
    """Phases 1-3 of a split run on `n` frames across `workers`: the video's processed window, or (`window`
    = (first, n)) one shot of it, as a single-process run of that window computes it. Each range's
    re-normalized depth is stored as a part named from `prefix`, in frame order.
    """
    ranges = split_ranges(n, len(workers), s)
    workers = workers[: len(ranges)]
    keys = [f"{key}-{i}" for i in range(len(ranges))]
    try:
        res = ray.get(
            [w.range_infer.remote(k, job, n, seed, a, b, window) for k, w, (a, b) in zip(keys, workers, ranges)]
        )
        copies: dict = {}
        for r in res:
            copies.update(r["copies"])
        driver_bytes = sum(c.numel() * c.element_size() for c in copies.values())
        driver_bytes += sum(8 * len(r["timestamps"]) for r in res)
        gmin = torch.tensor(min(r["gmin"] for r in res), dtype=torch.float32)
        _, plan, effective = snippet_batches(n, s)
        params, delta = coalign(plan, copies, gmin, s, torch.device("cpu"), None, n)
        spans = ray.get([w.range_merge.remote(k, params, float(gmin), delta) for k, w in zip(keys, workers)])
        lo, hi = min(x[0] for x in spans), max(x[1] for x in spans)
        parts = [f"{prefix}-{i:04d}.npy" for i in range(len(ranges))]
        ray.get([w.range_finish.remote(k, lo, hi, dest, p) for k, w, p in zip(keys, workers, parts)])
    finally:
        for k, w in zip(keys, workers):
            w.range_drop.remote(k)
    return {
        "ranges": ranges,
        "parts": parts,
        "params": params,
        "dilations": effective,
        "groups": [(g.dilation, g.weight) for g in plan],
        "timestamps": [t for r in res for t in r["timestamps"]],
        "size": res[0]["size"],
        "norm": (lo, hi),
        "workers": [r["worker"] for r in res],
        "driver_bytes": driver_bytes,
    }


def _run_split(ray, actors, infos, job: VideoJob, s, dest, opts, max_attempts, on_event, bar: _Bar) -> bool:
    """One video across all workers; False when the video must run whole instead."""
    n = job.frames
    seed = s.seed if s.seed is not None else pick_seed(None)
    while True:
        job.attempts += 1
        key = f"{job.stem}-{secrets.token_hex(4)}"
        parts_dir = f".rd-engine-parts-{key}"
        t0 = time.perf_counter()
        ranges = split_ranges(n, len(actors), s)
        try:
            for wi in range(len(ranges)):
                if on_event is not None:
                    on_event("started", job, infos[wi])
            bar.show(len(ranges))
            w = _split_window(ray, actors, key, job, s, n, seed, dest, f"{parts_dir}/part")
            job.driver_bytes = w["driver_bytes"]
            meta = {k: w[k] for k in ("params", "dilations", "groups", "timestamps", "size")}
            meta["seed"] = seed
            job.seconds = 0.0
            out = ray.get(actors[0].assemble.remote(job, dest, opts, w["parts"], meta))
            job.status, job.error, job.ranges = "done", None, w["ranges"]
            job.worker = ",".join(w["workers"])
            job.seconds = time.perf_counter() - t0
            job.frames = out.frames
            bar.finished(job, 0)
            return True
        except Exception as e:
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, RangeMismatch):
                log.warning("%s; running it on one worker", cause)
                job.attempts -= 1
                return False
            if _run_again(ray, actors, infos, job, e, len(ranges), max_attempts, "the split video"):
                continue
            job.seconds = time.perf_counter() - t0
            bar.finished(job, 0)
            return True
        finally:
            dest.remove(parts_dir)
            dest.remove_partials(job.stem)


def _run_again(ray, actors, infos, job: VideoJob, e: Exception, n_workers: int, max_attempts: int, what: str) -> bool:
    """After a split video's failure `e` (inside its `except`): True to run it again (a worker died and
    attempts are left); else the job records its error (a user's mistake, or too many deaths), and a bug
    is raised on.
    """
    cause = getattr(e, "cause", None) or e
    if _actor_died(ray, e) or isinstance(cause, RuntimeError) and "is not on this worker" in str(cause):
        log.warning("%s: a worker died (%s); running %s again", job.input, type(e).__name__, what)
        log.debug("%s", e)
        for wi in range(n_workers):
            _refresh(ray, actors, infos, wi)
        if job.attempts < max_attempts:
            return True
        job.status, job.error = "error", f"{job.input}: a worker died {job.attempts} times"
    elif isinstance(cause, UserError):
        job.status, job.error = "error", str(cause)
    else:
        raise
    return False


def _run_shots(
    ray, actors, infos, job: VideoJob, s, dest, opts, max_attempts, on_event, bar: _Bar, long_shot=None
) -> bool:
    """One edited video split at its cuts: its shots (each exactly what a single-process run computes for
    it) run on the free workers, longest first, and one worker writes the video's outputs. A shot for which
    `long_shot(frames)` holds is itself split into frame ranges across all workers first (as `_run_split`
    splits a video, its co-alignment on the driver). False when the video has no cut (it runs whole, as
    a plain run).
    """
    seed = s.seed if s.seed is not None else pick_seed(None)
    while True:
        job.attempts += 1
        key = f"{job.stem}-{secrets.token_hex(4)}"
        parts_dir = f".rd-engine-parts-{key}"
        t0 = time.perf_counter()
        try:
            bounds = ray.get(actors[0].find_cuts.remote(job))  # the cuts, then the window's length
            starts = [0, *bounds[:-1]]
            shots = [(a, b - a) for a, b in zip(starts, bounds)]
            if len(shots) < 2:
                job.attempts -= 1
                return False
            parts: dict[int, list[str]] = {}
            ranges: dict[int, list[tuple[int, int]]] = {}
            results: dict[int, dict] = {}
            workers: set[str] = set()
            split = [i for i, (_, n) in enumerate(shots) if long_shot is not None and long_shot(n)]
            for i in split:  # one long shot at a time on every worker
                first, n = shots[i]
                for wi in range(min(len(actors), len(split_ranges(n, len(actors), s)))):
                    if on_event is not None:
                        on_event("started", job, infos[wi])
                bar.show(len(actors))
                w = _split_window(
                    ray, actors, f"{key}-{i}", job, s, n, seed, dest, f"{parts_dir}/shot-{i:05d}", (first, n)
                )
                a = s.start_frame + first
                lo, hi = w["norm"]
                results[i] = {"shot": Shot(a, a + n - 1, lo, hi, list(w["dilations"])), **w}
                parts[i], ranges[i] = w["parts"], [(first + x, first + y) for x, y in w["ranges"]]
                job.driver_bytes = max(job.driver_bytes or 0, w["driver_bytes"])
                workers.update(w["workers"])
            todo = deque(sorted((i for i in range(len(shots)) if i not in results), key=lambda i: -shots[i][1]))
            free = deque(range(len(actors)))
            inflight: dict = {}
            while todo or inflight:
                while todo and free:
                    i, wi = todo.popleft(), free.popleft()
                    if on_event is not None:
                        on_event("started", job, infos[wi])
                    first, n = shots[i]
                    parts[i], ranges[i] = [f"{parts_dir}/shot-{i:05d}.npy"], [(first, first + n)]
                    inflight[actors[wi].shot_infer.remote(job, seed, first, n, dest, parts[i][0])] = (i, wi)
                bar.show(len(inflight))
                ready, _ = ray.wait(list(inflight), num_returns=1)
                i, wi = inflight.pop(ready[0])
                results[i] = ray.get(ready[0])
                workers.add(results[i]["worker"])
                free.append(wi)
            res = [results[i] for i in range(len(shots))]
            meta = {
                "params": [],
                "dilations": list(s.dilations),
                "groups": [],
                "timestamps": [t for r in res for t in r["timestamps"]],
                "size": res[0]["size"],
                "seed": seed,
                "shots": [r["shot"] for r in res],
            }
            job.seconds = 0.0
            every = [p for i in range(len(shots)) for p in parts[i]]
            out = ray.get(actors[0].assemble.remote(job, dest, opts, every, meta))
            job.status, job.error = "done", None
            job.ranges = [r for i in range(len(shots)) for r in ranges[i]]
            job.worker = ",".join(sorted(workers))
            job.seconds = time.perf_counter() - t0
            job.frames = out.frames
            bar.finished(job, 0)
            return True
        except Exception as e:
            if _run_again(ray, actors, infos, job, e, len(actors), max_attempts, "its shots"):
                continue
            job.seconds = time.perf_counter() - t0
            bar.finished(job, 0)
            return True
        finally:
            dest.remove(parts_dir)
            dest.remove_partials(job.stem)


def _write_summary(dest: Destination, jobs: list[VideoJob], seconds: float, workers, settings, opts) -> str:
    """The run's summary JSON at the output location; returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"rd-engine-run-{stamp}-{secrets.token_hex(2)}.json"
    frames = sum(j.frames or 0 for j in jobs if j.status == "done")
    doc = {
        "seconds": round(seconds, 3),
        "frames": frames,
        "frames_per_second": round(frames / seconds, 3) if seconds > 0 else None,
        "workers": workers,
        "settings": None if settings is None else settings.to_dict(),
        "outputs": dataclasses.asdict(opts),
        "videos": [j.summary() for j in jobs],
    }
    dest.write_bytes(name, (json.dumps(doc, indent=2) + "\n").encode())
    return dest.display(name)
