"""The shape profile of an engine: the batch and resolution ranges it serves."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rd_engine.errors import UserError


def ceil_div(a: int, b: int) -> int:
    """A / b rounded up (integers)."""
    return -(-a // b)


@dataclass(frozen=True)
class Profile:
    """Batch and resolution ranges an engine serves.

    Resolutions are in processed pixels: every side of a frame, after padding
    to a multiple of 8, must lie in [min_res, max_res] (rounded up to multiples
    of 8). `opt_res` is the longer edge TensorRT tunes its kernels for (a 16:9
    frame of that size); batches are per call (snippets for the UNet, frames
    for the VAE), from 1 to the max.
    """

    min_res: int = 64
    opt_res: int = 768
    max_res: int = 768
    max_batch: int = 8
    opt_batch: int = 8
    max_vae_batch: int = 8
    opt_vae_batch: int = 4

    def validated(self) -> Profile:
        """This profile, checked.

        Returns:
            self.

        Raises:
            UserError: A range is empty or a bound is out of range (worded with the field names).
        """

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(self.min_res >= 8, f"min_res must be >= 8 pixels, got {self.min_res}")
        need(self.max_res >= self.min_res, f"max_res ({self.max_res}) must be >= min_res ({self.min_res})")
        need(
            self.min_res <= self.opt_res <= self.max_res,
            f"opt_res ({self.opt_res}) must lie within min_res..max_res ({self.min_res}..{self.max_res})",
        )
        need(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")
        need(self.max_vae_batch >= 1, f"max_vae_batch must be >= 1, got {self.max_vae_batch}")
        need(
            1 <= self.opt_batch <= self.max_batch,
            f"opt_batch ({self.opt_batch}) must lie within 1..max_batch ({self.max_batch})",
        )
        need(
            1 <= self.opt_vae_batch <= self.max_vae_batch,
            f"opt_vae_batch ({self.opt_vae_batch}) must lie within 1..max_vae_batch ({self.max_vae_batch})",
        )
        return self

    def latent_range(self) -> tuple[int, int]:
        """Smallest and largest latent side (pixels / 8, padded)."""
        return ceil_div(self.min_res, 8), ceil_div(self.max_res, 8)

    def opt_latent(self) -> tuple[int, int]:
        """Latent (h, w) of the optimum: a 16:9 landscape frame with longer edge opt_res."""
        lo, hi = self.latent_range()
        w = ceil_div(self.opt_res, 8)
        h = ceil_div(int(self.opt_res * 9 / 16), 8)
        return min(max(h, lo), hi), min(max(w, lo), hi)

    def covers(self, size: tuple[int, int]) -> bool:
        """Whether every side of a processed frame size (width, height) lies in the range, once padded."""
        lo, hi = self.latent_range()
        return all(lo <= ceil_div(s, 8) <= hi for s in size)

    def to_json(self) -> dict:
        lo, hi = self.latent_range()
        return {**asdict(self), "latent_min": lo, "latent_max": hi, "latent_opt_hw": list(self.opt_latent())}

    @classmethod
    def from_json(cls, data: dict) -> Profile:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})
