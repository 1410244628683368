"""Atomic output files: nothing half-written ever stands under a final name.

Every output is written under a temporary name in its destination folder and
renamed into place only when complete, so an interrupted or failed run never
leaves a truncated file under the final name (a rerun sees it as missing and
writes it again). The temporary names start with a dot and contain
``.partial-``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError


def _partial_name(final: Path) -> Path:
    """Temporary sibling of ``final`` that keeps its suffix (for format guessing)."""
    return final.with_name(f".{final.name}.partial-{secrets.token_hex(4)}{final.suffix}")


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(final_path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Write to a temporary path that is renamed to ``final_path`` on success.

    The temporary path is in the same folder (so the rename is atomic) and
    ends with the same suffix. On any exception, KeyboardInterrupt included,
    it is deleted and the exception re-raised; an existing ``final_path`` is
    then left as it was.

    Args:
        final_path: Where the result should end up. Missing parent folders
            are created.
        folder: Yield a freshly created temporary folder instead of a file
            path; on success it replaces ``final_path``, an existing folder
            there included.

    Yields:
        The temporary path. In file mode nothing exists there yet; the body
        must create the file.

    Raises:
        UserError: If a file is to replace a folder.
        RuntimeError: If the body did not create the file.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(final)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder:
            _replace_folder(tmp, final)
        else:
            if not tmp.exists():
                raise RuntimeError(f"{final}: nothing was written")
            if final.is_dir():
                raise UserError(f"{final}: is a folder, cannot write a file there")
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final``, replacing whatever is there."""
    if not final.exists() and not final.is_symlink():
        os.replace(tmp, final)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, and put it back if the second rename fails.
    old = final.with_name(f".{final.name}.partial-old-{secrets.token_hex(4)}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy``, atomically.

    Args:
        path: Output file; no ``.npy`` is appended.
        array: The array.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        # A file object, so numpy does not append ".npy" to the name.
        np.save(f, np.asarray(array))


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save named arrays as an uncompressed ``.npz``, atomically.

    Args:
        path: Output file; no ``.npz`` is appended.
        **arrays: The arrays, by name.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def open_npy_memmap_atomic(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | str
) -> Iterator[np.memmap]:
    """Fill a ``.npy`` file in place (memory-mapped), atomically.

    For results too large to hold in memory: write slices into the yielded
    array; the file is flushed and renamed to ``path`` when the block ends,
    or deleted if it raises.

    Args:
        path: Final ``.npy`` file.
        shape: Array shape.
        dtype: Array dtype.

    Yields:
        A writable `numpy.memmap`, initially zeros.
    """
    with atomic_output(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        # Renaming (or, on failure, deleting) a mapped file is fine on POSIX.
        array.flush()
