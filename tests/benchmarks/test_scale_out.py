"""The scale-out benchmark's gather arithmetic: what a worker sends the driver per frame."""

from benchmarks.scale_out import gather_bytes


def test_gather_bytes_per_frame_are_the_solver_copies_and_a_timestamp():
    g = gather_bytes(768, 432, [1, 25, 25])  # a repeated dilation is one group: its snippets are sent once
    assert g["solver_pixels"] == 43 * 77  # (432 - 4) / 10 and (768 - 4) / 10 rounded up
    assert g["bytes_per_frame"] == 2 * 3 * 43 * 77 * 2 + 8
    assert g["bytes_per_frame"] < g["depth_bytes_per_frame_fp32"] / 30
