"""What the backends that run an engine folder's files share (ONNX Runtime, TensorRT).

`EngineFileBackend` implements the Backend protocol on top of one hook,
`run_component(name, feeds, out_shapes)`, which runs one component of the
engine (a graph or a plan) on named input tensors and returns its named
outputs. The base class picks the component, computes the output shapes,
refuses frame sizes outside the engine's profile and feeds the UNet step its
(timestep, alpha_t, alpha_prev) inputs.
"""

from __future__ import annotations

import torch

from rd_engine.engine_format.folder import EngineFolder
from rd_engine.model.ddim import DDIM, DDIMStep


class EngineFileBackend:
    """Base class of the engine-file backends (the Backend protocol, less `run_component`).

    Args:
        folder: The opened engine folder.
        device: The device the inputs and outputs live on.

    Subclasses set `name`, `dtype` and `ddim` and implement `run_component`.
    """

    name: str
    dtype: torch.dtype
    ddim: DDIM

    def __init__(self, folder: EngineFolder, device: torch.device):
        self.folder = folder
        self.device = device
        self._steps: dict[tuple, tuple[torch.Tensor, ...]] = {}

    # -- the Backend protocol -------------------------------------------------
    def check_size(self, size: tuple[int, int]) -> None:
        """Refuse a processed frame size (width, height) outside the engine's resolution profile.

        Raises:
            UserError: The size is outside the profile (with the command that rebuilds the engine wider).
        """
        self.folder.check_size(size)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        b, _, h, w = frames.shape
        self.check_size((w, h))
        c = self.folder.component("vae_encoder")
        return self.run_component(c.name, {"frames": frames}, {"latents": (b, 4, h // 8, w // 8)})["latents"]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, _, h, w = latents.shape
        self.check_size((8 * w, 8 * h))
        c = self.folder.component("vae_decoder")
        return self.run_component(c.name, {"latents": latents}, {"depth": (b, 1, 8 * h, 8 * w)})["depth"]

    @torch.no_grad()
    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        s, l, c, h, w = depth.shape
        self.check_size((8 * w, 8 * h))
        comp = self.folder.component("unet_step", l)
        t, a, ap = self.step_inputs(step)
        feeds = {"rgb_latent": rgb, "depth_latent": depth, "timestep": t, "alpha_t": a, "alpha_prev": ap}
        return self.run_component(comp.name, feeds, {"depth_latent_next": (s, l, c, h, w)})["depth_latent_next"]

    # -- for subclasses ---------------------------------------------------------
    def step_inputs(self, step: DDIMStep) -> tuple[torch.Tensor, ...]:
        """The exported UNet step's (timestep, alpha_t, alpha_prev) inputs for one DDIM step.

        Cached per step, so a CUDA run makes no host-to-device copy per call.
        """
        a, ap = step.as_floats()
        key = (step.t, a, ap)
        got = self._steps.get(key)
        if got is None:
            got = (
                torch.tensor([step.t], dtype=torch.int64, device=self.device),
                step.alpha_t.reshape(1).to(self.device, torch.float32),
                step.alpha_prev.reshape(1).to(self.device, torch.float32),
            )
            self._steps[key] = got
        return got

    def run_component(
        self, name: str, feeds: dict[str, torch.Tensor], out_shapes: dict[str, tuple[int, ...]]
    ) -> dict[str, torch.Tensor]:
        """Run one component of the engine.

        Args:
            name: The component (a key of `folder.contracts`).
            feeds: Its inputs by name (any dtype and device: converted to the component's).
            out_shapes: The shape of each output, by name.

        Returns:
            The outputs by name, on `device`.
        """
        raise NotImplementedError
