"""Shots of an edited video: cut detection while decoding, and editors' cut lists.

A *cut* is the boundary before the first frame of a new shot; a video's shots are given by the
sorted first frames of every shot but the first (`cuts`, 0-based positions in the processed
window). Detection uses PySceneDetect's detectors, fed one decoded frame at a time
(`ShotDetector.push`): no second pass over the file and bounded memory (a few small frames).

- Hard cuts: `ContentDetector` (hue, saturation and luma difference to the previous frame, its
  default weights and threshold) on a copy of the frame downscaled to `DETECT_SIZE` px. Offline, a
  candidate is dropped when one of the next `FLASH_FRAMES` frames looks like the frame before it
  again (a camera flash or a burst of light returns to the same picture), so the decoder holds
  that many frames back; online (`flash_frames=0`) nothing is held back and detection adds no lag.
- Fades to and from black: `ThresholdDetector`, the cut placed at the first frame that is bright
  again (`fade_bias=+1`, known on that frame): the dark frames end the shot that faded out.
- Shots are at least `min_shot_len` frames: a cut closer than that to the previous one is dropped.
- Dissolves (cross-fades) change the picture a little every frame, so no frame-to-frame
  difference crosses the threshold: they are not cut; the mixed frames stay in one shot
  (docs/edited-video.md).

`read_cut_list` reads an editor's cut list: frame numbers one per line, or the CSV that
`scenedetect ... list-scenes` writes.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError

DEFAULT_THRESHOLD = 27.0  # ContentDetector score that makes a cut (PySceneDetect's default; see docs)
DEFAULT_MIN_SHOT_LEN = 8  # frames: a cut closer than this to the previous one is not taken
FADE_THRESHOLD = 12  # mean 8-bit intensity below which a frame counts as black (PySceneDetect's default)
DETECT_SIZE = 256  # longer edge (px) of the copy the detectors see
FLASH_FRAMES = 4  # offline look-ahead: a picture that comes back within this many frames was a flash
FLASH_RATIO = 0.85  # "comes back": its score to the frame before falls below this share of the jump's
MOTION_FRAMES = 3  # frames before a candidate cut whose scores measure the shot's own motion

SHOT_MODES = ("auto", "off")


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - a dependency of the package
        raise UserError(
            "cut detection needs PySceneDetect and OpenCV: pip install scenedetect opencv-python-headless "
            "(or run with --shots off)"
        ) from None
    return cv2


class ShotDetector:
    """Feed decoded frames in order; cuts come out as soon as they are certain.

    `push(rgb)` returns the cuts it confirmed (frame numbers, counted from 0 in push order). With
    `flash_frames = F > 0` a frame that differs from the one before is a cut only if none of the next
    `F` frames looks like the frame before it again (a flash, or a short burst of light, returns to
    the same picture): a cut at frame `c` is then confirmed once frame `c + F` was pushed (or at
    `finish()`), and the caller holds `F` frames back. With `F = 0` nothing is held back: each cut is
    reported by the push of its own frame (the online mode; a flash then may cut).

    Args:
        threshold: ContentDetector threshold (lower finds more cuts).
        min_shot_len: Frames a shot has at least (1: a cut may follow every frame).
        fades: Also cut at fades to and from black.
        flash_frames: Look-ahead for flash rejection (0: none; at most `min_shot_len - 1`).
        fps: The frame rate (PySceneDetect's timecodes need one; it changes nothing here).
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        min_shot_len: int = DEFAULT_MIN_SHOT_LEN,
        fades: bool = True,
        flash_frames: int = FLASH_FRAMES,
        fps: float = 30.0,
    ):
        if not threshold > 0:
            raise UserError(f"shot threshold must be > 0, got {threshold}")
        if min_shot_len < 1:
            raise UserError(f"minimum shot length must be >= 1 frame, got {min_shot_len}")
        self.cv2 = _cv2()
        from scenedetect.common import FrameTimecode
        from scenedetect.detector import FlashFilter
        from scenedetect.detectors import ContentDetector, ThresholdDetector

        self._tc = FrameTimecode
        self._content_cls = ContentDetector
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.threshold = threshold
        # every frame whose content score crosses the threshold is a candidate; the minimum shot
        # length is enforced here, on confirmed cuts only (a rejected flash must not suppress a cut)
        self.content = ContentDetector(threshold=threshold, min_scene_len=0, filter_mode=FlashFilter.Mode.SUPPRESS)
        self.fade = ThresholdDetector(threshold=FADE_THRESHOLD, min_scene_len=1, fade_bias=1.0) if fades else None
        self.min_shot_len = min_shot_len
        # a burst that returns to the same picture is a flash only while shorter than a shot can be
        self.flash_frames = max(0, min(flash_frames, min_shot_len - 1))
        self.n = 0
        self.last_cut = 0
        self.cuts: list[int] = []
        self._small: dict[int, np.ndarray] = {}  # the last few downscaled frames (look-ahead and motion)
        self._candidates: list[tuple[int, bool]] = []  # (frame, is a fade) awaiting the flash check
        self._flash_until = -1  # last frame of the latest flash rejected
        self._pairs: dict[tuple[int, int], float] = {}  # scores between kept frames, computed once
        self._dark = False  # the previous frame was black (below the fade threshold)
        self.seconds = 0.0  # time spent in detection (downscale included)

    @property
    def delay(self) -> int:
        """Frames a caller holds back: a frame's shot is known once this many later frames were pushed."""
        return self.flash_frames

    def _downscale(self, rgb: np.ndarray) -> np.ndarray:
        """A BGR copy about `DETECT_SIZE` px long, shrunk by a whole factor (bilinear, as PySceneDetect does)."""
        cv2 = self.cv2
        k = max(1, max(rgb.shape[:2]) // DETECT_SIZE)
        rgb = np.ascontiguousarray(rgb)
        small = cv2.resize(rgb, None, fx=1 / k, fy=1 / k, interpolation=cv2.INTER_LINEAR) if k > 1 else rgb
        return cv2.cvtColor(small, cv2.COLOR_RGB2BGR)

    def _score(self, a: np.ndarray, b: np.ndarray) -> float:
        """ContentDetector's score between two (downscaled) frames."""
        from scenedetect.stats_manager import StatsManager

        det = self._content_cls(threshold=self.threshold, min_scene_len=0)
        det.stats_manager = StatsManager()
        t0, t1 = self._tc(0, fps=self.fps), self._tc(1, fps=self.fps)
        det.process_frame(t0, a)
        det.process_frame(t1, b)
        return float(det.stats_manager.get_metrics(t1, [det.FRAME_SCORE_KEY])[0])

    def _pair(self, a: int, b: int) -> float:
        """`_score` of frames `a` and `b` (remembered while both are kept)."""
        key = (a, b)
        if key not in self._pairs:
            self._pairs[key] = self._score(self._small[a], self._small[b])
        return self._pairs[key]

    def _came_back(self, c: int, j: int) -> bool:
        """Whether frame `j` after the candidate cut `c` is the picture before `c` again (a flash).

        Two conditions: it is much closer to frame `c - 1` than frame `c` was (`FLASH_RATIO`; across
        a real cut every later frame is about as far from the old shot as the first one), and no
        farther from it than the shot's own motion explains (the threshold plus, per frame between
        them, the median frame-to-frame score of the frames before `c`; another shot is farther).
        """
        back = self._pair(c - 1, j)
        if back >= FLASH_RATIO * self._pair(c - 1, c):
            return False
        steps = [self._pair(k - 1, k) for k in range(c - MOTION_FRAMES, c) if k - 1 in self._small]
        motion = float(np.median(steps)) if steps else 0.0
        return back < self.threshold + (j - c + 1) * motion

    def _take(self, c: int) -> list[int]:
        if c - self.last_cut < self.min_shot_len:
            return []
        self.last_cut = c
        self.cuts.append(c)
        return [c]

    def _settle(self, final: bool) -> list[int]:
        """Confirm or reject the candidates whose look-ahead is complete."""
        out = []
        while self._candidates:
            c, fade = self._candidates[0]
            later = [j for j in range(c + 1, c + 1 + self.flash_frames) if j in self._small]
            if c <= self._flash_until:
                self._candidates.pop(0)  # the end of a flash already rejected
                continue
            back = next((j for j in later if not fade and self._came_back(c, j)), None)
            if back is not None:
                self._candidates.pop(0)  # the picture came back: a flash, not a cut
                self._flash_until = back
                continue
            if not fade and not final and len(later) < self.flash_frames:
                break  # its look-ahead is not complete yet (later candidates wait behind it)
            self._candidates.pop(0)
            out += self._take(c)
        return out

    def push(self, rgb: np.ndarray) -> list[int]:
        """The next decoded frame (`[H, W, 3]` uint8 RGB); returns the cuts confirmed now."""
        t0 = time.perf_counter()
        i = self.n
        self.n += 1
        img = self._downscale(np.asarray(rgb))
        self._small[i] = img
        gone = i - self.flash_frames - MOTION_FRAMES - 2
        if self._small.pop(gone, None) is not None:
            self._pairs = {k: v for k, v in self._pairs.items() if k[0] > gone}
        tc = self._tc(i, fps=self.fps)
        hard = bool(self.content.process_frame(tc, img)) and i > 0
        dark = float(img.mean()) < FADE_THRESHOLD
        if self.fade is not None:
            fade = any(int(c.frame_num) == i for c in self.fade.process_frame(tc, img))
            # into and out of black is the fade detector's: its cut is at the first bright frame
            hard = hard and not (dark or self._dark)
        else:
            fade = False
        self._dark = dark
        if i > 0 and (hard or fade):
            self._candidates.append((i, fade))
        out = self._settle(final=False)
        self.seconds += time.perf_counter() - t0
        return out

    def finish(self) -> list[int]:
        """The stream ended: the cuts still awaiting their look-ahead."""
        return self._settle(final=True)


def detect_cuts(frames, **kw) -> list[int]:
    """The cuts of a sequence of RGB frames (a convenience over `ShotDetector`)."""
    det = ShotDetector(**kw)
    for fr in frames:
        det.push(fr)
    det.finish()
    return det.cuts


def shot_ranges(cuts: list[int], n: int) -> list[tuple[int, int]]:
    """`[first, end)` of every shot of an `n`-frame window cut at `cuts`."""
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def read_cut_list(path: str | Path) -> list[int]:
    """An editor's cut list: the first frame (0-based) of every shot after the first, sorted.

    Two formats: frame numbers one per line (blank lines and `#` comments ignored; 0 means the
    video's start and is ignored), or the CSV of `scenedetect ... list-scenes` (its optional first
    "Timecode List:" row, then a header with "Start Frame", 1-based as PySceneDetect writes it).
    Frame numbers count from the video's first frame, as an editor's do.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{p}: the cut list is not a text file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read the cut list ({e.strerror or e})") from None
    lines = text.splitlines()
    cuts: list[int] = []
    if any("Start Frame" in ln for ln in lines[:3]):
        rows = list(csv.reader(lines))
        head = next(i for i, r in enumerate(rows) if "Start Frame" in r)
        col = rows[head].index("Start Frame")
        for i, row in enumerate(rows[head + 1 :], start=head + 2):
            if not any(c.strip() for c in row):
                continue
            try:
                start = int(row[col])
            except (IndexError, ValueError):
                bad = ",".join(row)
                raise UserError(f"{p}: line {i}: no frame number in the Start Frame column: {bad!r}") from None
            if start < 1:
                raise UserError(f"{p}: line {i}: Start Frame {start} (PySceneDetect's frames count from 1)")
            cuts.append(start - 1)
    else:
        for i, line in enumerate(lines, start=1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            try:
                f = int(s)
            except ValueError:
                raise UserError(f"{p}: line {i}: not a frame number: {line.strip()!r}") from None
            if f < 0:
                raise UserError(f"{p}: line {i}: negative frame number {f}")
            cuts.append(f)
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            raise UserError(f"{p}: frame numbers must increase: {b} after {a}")
    return [c for c in cuts if c > 0]
