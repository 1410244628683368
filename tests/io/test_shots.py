"""Cut detection (PySceneDetect fed frame by frame) and editors' cut lists."""

from pathlib import Path

import numpy as np
import pytest

from rd_engine.errors import UserError
from rd_engine.io.shots import FADE_THRESHOLD, ShotDetector, detect_cuts, read_cut_list, shot_ranges
from rd_engine.io.video import iter_frames
from rd_engine.testing.media import multishot_cuts, multishot_frames, synthetic_frame, write_frames_video

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples")


@pytest.mark.parametrize("lengths", [[20, 13, 30, 9, 25], [8, 8, 8], [40, 60]])
def test_hard_cuts_found_at_their_exact_frames(lengths):
    assert detect_cuts(multishot_frames(lengths, 96, 64)) == multishot_cuts(lengths)


def test_cuts_survive_encoding_and_decoding(tmp_path):
    """Through a real H.264 file and our decoder, as `rd-engine run` sees them."""
    lengths = [15, 22, 11]
    path = tmp_path / "edited.mp4"
    write_frames_video(path, multishot_frames(lengths, 128, 96))
    assert detect_cuts(f.rgb for f in iter_frames(path, 0, 0)) == multishot_cuts(lengths)


def test_fades_to_and_from_black_cut_at_the_first_bright_frame():
    lengths = [20, 25, 30]
    frames = list(multishot_frames(lengths, 96, 64, fade=5))
    bright = [f.mean() >= FADE_THRESHOLD for f in frames]
    expected = [i for i in range(1, len(frames)) if bright[i] and not bright[i - 1]]
    assert len(expected) == 2  # one fade out and in between each pair of shots
    assert detect_cuts(frames) == expected


def _fast_motion_with_flashes(n=60, w=96, h=64):
    frames = []
    for i in range(n):
        # back and forth across the whole frame every 8 frames (a third of a second at 24 fps)
        k = i % 16
        rgb = synthetic_frame(k if k <= 8 else 16 - k, 9, w, h, seed=3).astype(np.float32)
        if i in (10, 11):  # a two-frame flash to near white
            rgb = rgb * 0.4 + 150
        if i == 30:  # a one-frame brightening
            rgb = rgb + 60
        frames.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return frames


def test_no_false_cut_in_fast_motion_with_flashes():
    assert detect_cuts(_fast_motion_with_flashes()) == []


def test_online_detection_holds_nothing_back_and_reports_on_the_cut_frame():
    lengths = [12, 10, 9]
    det = ShotDetector(flash_frames=0)
    found = [i for i, fr in enumerate(multishot_frames(lengths, 96, 64)) if i in det.push(fr)]
    assert det.delay == 0 and found == multishot_cuts(lengths)


def test_a_cut_every_frame():
    frames = list(multishot_frames([1] * 15, 96, 64))
    assert detect_cuts(frames, min_shot_len=1) == list(range(1, 15))
    assert shot_ranges(list(range(1, 15)), 15) == [(i, i + 1) for i in range(15)]


def test_min_shot_len_and_threshold():
    lengths = [20, 6, 20]
    assert detect_cuts(multishot_frames(lengths, 96, 64)) == [20]  # a 6-frame shot is shorter than the default 8
    assert detect_cuts(multishot_frames(lengths, 96, 64), min_shot_len=6) == [20, 26]
    assert detect_cuts(multishot_frames(lengths, 96, 64), threshold=250) == []


@pytest.mark.skipif(not (SAMPLES / "elephant.mp4").exists(), reason="the sample clips are not here")
def test_real_clips_joined():
    """The sample clips, cut into pieces and joined: every join found, none inside a clip."""
    import cv2

    a = [f.rgb for f in iter_frames(SAMPLES / "davis_rollercoaster.mp4", 0, 0)]  # fast motion
    b = [cv2.resize(f.rgb, (a[0].shape[1], a[0].shape[0])) for f in iter_frames(SAMPLES / "elephant.mp4", 0, 0)]
    assert detect_cuts(a) == [] and detect_cuts(b) == []
    segments = [a[:35], b[:60], a[35:], b[60:]]
    assert detect_cuts([f for s in segments for f in s]) == [35, 95, 130]


def test_cut_list_frame_numbers(tmp_path):
    p = tmp_path / "cuts.txt"
    p.write_text("# cuts of my film\n0\n12\n\n40  # the chase\n")
    assert read_cut_list(p) == [12, 40]


def test_cut_list_scenedetect_csv(tmp_path):
    """The CSV PySceneDetect itself writes (its frames count from 1)."""
    from scenedetect import FrameTimecode
    from scenedetect.output import write_scene_list

    fps = 24.0
    scenes = [(FrameTimecode(a, fps=fps), FrameTimecode(b, fps=fps)) for a, b in [(0, 12), (12, 40), (40, 55)]]
    p = tmp_path / "scenes.csv"
    with open(p, "w", newline="") as f:
        write_scene_list(f, scenes)
    assert read_cut_list(p) == [12, 40]
    with open(p, "w", newline="") as f:
        write_scene_list(f, scenes, include_cut_list=False)
    assert read_cut_list(p) == [12, 40]


@pytest.mark.parametrize(
    "text, line",
    [("12\nabc\n", "line 2"), ("12\n5\n", "must increase"), ("-3\n", "line 1")],
)
def test_bad_cut_lists_name_the_line(tmp_path, text, line):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(UserError, match=line):
        read_cut_list(p)


def test_bad_scenedetect_csv_names_the_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("Scene Number,Start Frame,End Frame\n1,1,12\n2,x,40\n")
    with pytest.raises(UserError, match="line 3"):
        read_cut_list(p)


def test_missing_cut_list(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_cut_list(tmp_path / "nope.txt")
