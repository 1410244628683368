"""Child of test_memory_flat_over_many_shots: RSS after each shot of a slideshow, as JSON lines."""

import json
import sys

import torch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(ckpt: str, clip: str, n: int) -> None:
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.model.checkpoint import load_checkpoint
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.pipeline.shots import ShotOptions, predict_shots
    from rd_engine.settings import resolve

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    pipe = Pipeline(TorchBackend(load_checkpoint(ckpt), cpu, torch.float32), progress=False)
    s = resolve("fast", dict(res=0, seed=1), cpu)[0]
    samples = []
    pred = predict_shots(
        pipe, clip, s, ShotOptions("list", list(range(1, n))), on_shot=lambda p, i: samples.append(rss_bytes())
    )
    print(json.dumps({"shots": len(pred.shots), "rss": samples}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
