"""AOTInductor backend: the engine's compiled packages (`.pt2`), on the CPU or a CUDA device.

Each component's package was compiled ahead of time (`rd_engine.export.aoti`) for
one torch version, one device type and (on CUDA) one GPU architecture, with a
dynamic batch and latent size covering the engine's profile; the folder's
manifest records all of it and `EngineFolder.check_aoti_machine` refuses a
package that does not fit the run. Packages are loaded on first use (a run that
never refines with another snippet length never loads that UNet step). Calls
larger than the package's batch range are split.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rd_engine.backends.engine_file import EngineFileBackend
from rd_engine.engine_format.folder import EngineFolder, open_engine_folder

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_package(path: Path, device: torch.device):
    """A loaded AOTInductor package: call it with the component's inputs in contract order."""
    from torch._inductor import aoti_load_package

    if device.type == "cuda":
        return aoti_load_package(str(path), device_index=device.index or 0)
    return aoti_load_package(str(path))


class AotiBackend(EngineFileBackend):
    """Runs an engine folder's AOTInductor packages (the Backend protocol).

    Args:
        engine_dir: The engine folder (ignored when `engine` is given).
        device: The device the packages were compiled for ("cpu", "cuda" or "cuda:N").
        engine: An already opened `EngineFolder`.

    Raises:
        UserError: The folder holds no packages, or they were built by another torch version, for another
            device type or GPU architecture.
    """

    name = "aoti"

    def __init__(
        self,
        engine_dir: str | os.PathLike | None,
        device: torch.device | str = "cpu",
        *,
        engine: EngineFolder | None = None,
    ):
        folder = engine if engine is not None else open_engine_folder(Path(engine_dir))
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        folder.check_aoti_machine(dev)
        super().__init__(folder, dev)
        info = folder.aoti
        self.dtype = _DTYPES[info.precision]
        self.ddim = folder.ddim()
        self._batch_max = {"B": info.dynamic["B"][1], "S": info.dynamic["S"][1]}
        self._runners: dict[str, object] = {}

    def _runner(self, name: str):
        runner = self._runners.get(name)
        if runner is None:
            runner = load_package(self.folder.aoti_package(name), self.device)
            self._runners[name] = runner
        return runner

    def run_component(
        self, name: str, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        contract = self.folder.contracts[name]
        runner = self._runner(name)
        inputs = [feeds[s.name].to(self.device, s.torch_dtype(self.dtype)).contiguous() for s in contract.inputs]
        batched = set(contract.batched_inputs())
        n = next(x.shape[0] for s, x in zip(contract.inputs, inputs) if s.name in batched)
        step = self._batch_max[contract.batch_dim]
        parts = []
        for a in range(0, n, step):
            args = [x[a : a + step] if s.name in batched else x for s, x in zip(contract.inputs, inputs)]
            out = runner(*args)
            parts.append(out[0] if isinstance(out, (list, tuple)) else out)
        (out_name,) = (s.name for s in contract.outputs)
        return {out_name: parts[0] if len(parts) == 1 else torch.cat(parts)}
