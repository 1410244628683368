"""Atomic output files and arrays (rd_engine.io.files)."""

from __future__ import annotations

import numpy as np
import pytest

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output, open_npy_memmap_atomic, save_npy_atomic, save_npz_atomic


def test_atomic_output_success_keeps_suffix(tmp_path, leftovers):
    final = tmp_path / "sub" / "depth.mp4"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".depth.mp4.partial-") and tmp.suffix == ".mp4"
        assert not final.exists()
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert leftovers(final.parent) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_failure_leaves_nothing(tmp_path, error, leftovers):
    final = tmp_path / "out.npy"
    with pytest.raises(error):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise error()
    assert list(tmp_path.iterdir()) == []

    # An existing result survives a failed rewrite.
    final.write_text("old")
    with pytest.raises(error):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise error()
    assert final.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_output_nothing_written(tmp_path):
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_output(tmp_path / "x.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_file_over_folder(tmp_path, leftovers):
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="taken"):
        with atomic_output(tmp_path / "taken") as tmp:
            tmp.write_text("x")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_folder(tmp_path, error, leftovers):
    final = tmp_path / "png16"
    with atomic_output(final, folder=True) as tmp:
        assert tmp.is_dir()
        (tmp / "a.png").write_text("1")
    assert sorted(p.name for p in final.iterdir()) == ["a.png"]

    # Success replaces the old folder completely.
    with atomic_output(final, folder=True) as tmp:
        (tmp / "b.png").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.png"]

    # Failure keeps the old folder and removes the partial one.
    with pytest.raises(error):
        with atomic_output(final, folder=True) as tmp:
            (tmp / "c.png").write_text("3")
            raise error()
    assert sorted(p.name for p in final.iterdir()) == ["b.png"]
    assert leftovers(tmp_path) == []


def test_npy_npz_atomic(tmp_path, leftovers):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy_atomic(tmp_path / "depth.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "depth.npy"), a)

    save_npy_atomic(tmp_path / "no_suffix", a)  # numpy must not append ".npy"
    np.testing.assert_array_equal(np.load(tmp_path / "no_suffix"), a)

    save_npz_atomic(tmp_path / "all.npz", depth=a, index=np.arange(3))
    with np.load(tmp_path / "all.npz") as data:
        np.testing.assert_array_equal(data["depth"], a)
        np.testing.assert_array_equal(data["index"], np.arange(3))
    assert leftovers(tmp_path) == []


def test_npy_memmap_atomic(tmp_path):
    path = tmp_path / "big.npy"
    with open_npy_memmap_atomic(path, (4, 3, 2), np.float16) as array:
        assert not path.exists()
        for i in range(4):
            array[i] = i
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and loaded.shape == (4, 3, 2)
    assert (loaded[3] == 3).all()

    with pytest.raises(KeyboardInterrupt):
        with open_npy_memmap_atomic(tmp_path / "other.npy", (2, 2), np.float32) as array:
            array[0] = 1
            raise KeyboardInterrupt()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]
