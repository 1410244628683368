"""Where a cluster run's outputs go: a local or shared folder, or an fsspec URL (`s3://bucket/prefix`).

Nothing half-written ever stands under a final name. In a folder, files are written in place by
`rd_engine.io.files.atomic_output` (a temporary name, renamed when complete). At a URL, files are
written in a local temporary folder first and then uploaded one object at a time: an object store
shows an object only once its upload is complete. The `.npz`, whose metadata a rerun reads to decide
whether a video is done, goes last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output

INSTALL_HINT = 'pip install "rd-engine[ray]"'


def is_url(location: str | os.PathLike) -> bool:
    text = str(location)
    return "://" in text and not text.startswith("file://")


class Destination:
    """An output location: a folder path or a URL that fsspec opens.

    Args:
        location: Folder or URL.
        storage_options: Passed to fsspec for URLs (for S3 through s3fs: `endpoint_url`, `key`,
            `secret`, ...; by default the usual environment variables and config files apply).
    """

    def __init__(self, location: str | os.PathLike, storage_options: dict | None = None):
        self.location = str(location)
        self.storage_options = dict(storage_options or {})
        self.fs = None
        if is_url(location):
            try:
                import fsspec
            except ImportError:
                raise UserError(f"output URLs need fsspec: {INSTALL_HINT}") from None
            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.location, **self.storage_options)
            except (ImportError, ValueError) as e:
                raise UserError(f"{self.location}: cannot open this output URL ({e})") from None
            self.root = self.root.rstrip("/")
        else:
            self.root = str(Path(location))

    def __reduce__(self):
        return Destination, (self.location, self.storage_options)

    @property
    def is_url(self) -> bool:
        return self.fs is not None

    @property
    def folder(self) -> Path:
        """The local folder (folders only)."""
        return Path(self.root)

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def display(self, name: str = "") -> str:
        """How to name an output in messages."""
        base = self.location.rstrip("/")
        return f"{base}/{name}" if name else base

    def check_writable(self) -> None:
        """Fail early, with one line, when the location cannot be written."""
        probe = f".rd-engine-write-test-{os.getpid()}"
        try:
            if self.is_url:
                self.fs.makedirs(self.root, exist_ok=True)
                self.fs.pipe_file(self._key(probe), b"")
                self.fs.rm_file(self._key(probe))
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.folder, prefix=probe):
                    pass
        except (OSError, ValueError) as e:
            raise UserError(f"output location {self.display()} is not writable ({e})") from None

    def exists(self, name: str) -> bool:
        if self.is_url:
            return self.fs.exists(self._key(name))
        return (self.folder / name).exists()

    def npz_metadata(self, name: str) -> dict | None:
        """The `metadata` JSON of an `.npz` output (only that member is read), or None."""
        try:
            if self.is_url:
                with self.fs.open(self._key(name), "rb") as f, np.load(f) as z:
                    return json.loads(str(z["metadata"]))
            with np.load(self.folder / name) as z:
                return json.loads(str(z["metadata"]))
        except (OSError, KeyError, ValueError):
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        """One whole file (small ones: the run summary), atomically."""
        if self.is_url:
            self.fs.pipe_file(self._key(name), data)
            return
        with atomic_output(self.folder / name) as tmp:
            tmp.write_bytes(data)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """One array as `.npy` (a frame range's part of a split video), atomically."""
        if not self.is_url:
            from rd_engine.io.files import open_npy_memmap_atomic

            with open_npy_memmap_atomic(self.folder / name, array.shape, array.dtype) as out:
                for a in range(0, array.shape[0], 64):
                    out[a : a + 64] = array[a : a + 64]
            return
        with tempfile.TemporaryDirectory(prefix="rd-engine-up-") as tmp:
            local = Path(tmp) / "part.npy"
            with open(local, "wb") as f:
                np.save(f, np.asarray(array))
            self.fs.put_file(str(local), self._key(name))

    def get_array(self, name: str, scratch: Path) -> np.ndarray:
        """An array written by `put_array`, memory-mapped (fetched into `scratch` first at a URL)."""
        if not self.is_url:
            return np.load(self.folder / name, mmap_mode="r")
        local = scratch / Path(name).name
        self.fs.get_file(self._key(name), str(local))
        return np.load(local, mmap_mode="r")

    def remove(self, name: str) -> None:
        """Delete a file or folder if it is there."""
        if self.is_url:
            if self.fs.exists(self._key(name)):
                self.fs.rm(self._key(name), recursive=True)
            return
        p = self.folder / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()

    def remove_partials(self, stem: str) -> None:
        """Delete the unfinished files of one video that a killed worker left (folders only: at a URL an
        upload that did not finish leaves no object).
        """
        if self.is_url or not self.folder.is_dir():
            return
        for p in self.folder.glob(f".{stem}*.partial-*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def publish(self, local_dir: Path, names: list[str]) -> None:
        """Upload finished outputs from a local folder (URLs only), the `.npz` files last."""
        ordered = sorted(names, key=lambda n: n.endswith(".npz"))
        for name in ordered:
            src = local_dir / name
            if src.is_dir():
                for f in sorted(src.rglob("*")):
                    if f.is_file():
                        self.fs.put_file(str(f), self._key(f"{name}/{f.relative_to(src).as_posix()}"))
            else:
                self.fs.put_file(str(src), self._key(name))
