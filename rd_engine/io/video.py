"""Video input: finding the videos, probing them, decoding frames, preprocessing.

Frames come out upright: the stream's display matrix (what phones write for
portrait video) is applied, so a clip stored as 1920x1080 with a 90 degree
rotation is delivered as 1080x1920 frames, as every player shows it.

Rotation convention: `VideoInfo.rotation` is the clockwise angle, in degrees,
by which the stored frames are turned for display; it equals the legacy MP4
``rotate`` tag (90 for a phone's portrait video). Mirroring in the display
matrix (rare) is ignored.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import av
import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.sequence import (
    ImageSequence,
    SequenceOptions,
    describe_format,
    find_sequence,
    image_folder,
    looks_like_sequence,
    read_frame,
    read_image,
    to_rgb8,
)

if TYPE_CHECKING:  # torch loads with `preprocess`, so that inputs are probed before it (and the model) load
    import torch

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".gif",
)  # fmt: skip

# Used when a stream declares no frame rate at all (e.g. some raw streams).
_DEFAULT_FPS = 30.0
# How long the decoding thread waits on a full queue before it checks again
# whether the consumer has gone away.
_PUT_POLL_S = 0.05


@dataclass
class VideoInfo:
    """What `probe` found out about a video.

    Attributes:
        path: The video file.
        width: Display width in pixels, after rotation.
        height: Display height in pixels, after rotation.
        fps: Average frame rate (falls back to the guessed rate, then 30).
        num_frames: Frame count from the container, None where the container
            does not store one (MKV, WebM, TS).
        rotation: Clockwise display rotation in degrees: 0, 90, 180 or 270.
        pix_fmt: Decoded pixel format, e.g. ``yuv420p`` or ``yuv420p10le``.
        codec: Decoder name, e.g. ``h264``; ``image-sequence`` for an image sequence.
        frame_numbers: An image sequence's frame numbers (from its file names), in order; None for a
            video (whose frames are numbered from 0).
    """

    path: Path | ImageSequence
    width: int
    height: int
    fps: float
    num_frames: int | None
    rotation: int
    pix_fmt: str
    codec: str
    frame_numbers: tuple[int, ...] | None = None

    def numbers(self, start: int, count: int) -> list[int]:
        """The input's numbers of the processed frames ``[start, start + count)``: a sequence's own, else indices."""
        if self.frame_numbers is not None:
            return list(self.frame_numbers[start : start + count])
        return list(range(start, start + count))


def as_sequence(path, options: SequenceOptions | None = None) -> ImageSequence | None:
    """The image sequence an input names (a folder of frames, a printf pattern, a glob), else None (a video)."""
    if isinstance(path, ImageSequence):
        return path if options is None or options == path.options else path.with_options(options)
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    if image_folder(Path(text)) or (not Path(text).exists() and looks_like_sequence(text)):
        return find_sequence(text, options)
    return None


def input_stem(path) -> str:
    """The name a run gives an input's outputs: a video's file stem, a sequence's name without its number."""
    if isinstance(path, ImageSequence):
        return path.stem
    text = str(path)
    if "://" not in text and (image_folder(Path(text)) or looks_like_sequence(text)):
        return ImageSequence(text, (), ()).stem
    return Path(text).stem or "stream"


class DecodedFrame(NamedTuple):
    """One decoded frame.

    Attributes:
        index: Frame number in the video, 0-based, counting from its start
            (not from ``start_frame``).
        timestamp: Presentation time in seconds (pts * time_base); where a
            frame has no pts, index / fps.
        rgb: uint8 array [H, W, 3], upright.
    """

    index: int
    timestamp: float
    rgb: np.ndarray


def _av_reason(error: Exception) -> str:
    """The human part of a PyAV error, without errno and call site."""
    return getattr(error, "strerror", None) or str(error)


def _open(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open a video file and pick its main video stream.

    Raises:
        UserError: For a missing file, a folder, an unreadable or non-media
            file, or a file without a video stream.
    """
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a video file")
    try:
        # Non-UTF-8 tags (old cameras) must not make a playable file unreadable.
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise UserError(f"{path}: not a readable video file ({_av_reason(e)})") from e
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from e
    # Cover art in audio files is a one-picture "video" stream; skip it.
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        container.close()
        raise UserError(f"{path}: has no video stream (audio only or not a video)")
    return container, streams[0]


def _clockwise_rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Clockwise display rotation of a frame, rounded to a multiple of 90."""
    # frame.rotation is FFmpeg's counter-clockwise angle from the display matrix.
    ccw = frame.rotation
    if not ccw:
        # Older FFmpeg versions also exported the matrix as a clockwise "rotate"
        # tag and did not attach it to frames.
        try:
            return int(round(float(stream.metadata.get("rotate", 0)) / 90.0)) * 90 % 360
        except ValueError:
            return 0
    return int(round(-ccw / 90.0)) * 90 % 360


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    """Average frame rate, else FFmpeg's guess, else 30."""
    return float(stream.average_rate or stream.guessed_rate or _DEFAULT_FPS)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored frame by its clockwise display rotation."""
    if rotation:
        # np.rot90 turns counter-clockwise for positive k.
        rgb = np.rot90(rgb, k=-(rotation // 90))
    # Contiguous, so that torch.from_numpy accepts it (rot90 gives a strided view).
    return np.ascontiguousarray(rgb)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's size, rate, length and rotation.

    Decodes the first frame, because the rotation lives in frame side data
    and because it proves that the video decodes at all.

    Args:
        path: The video file.

    Returns:
        The `VideoInfo`.

    Raises:
        UserError: If the file is missing, a folder, not a media file, has no
            video stream, or has no decodable frame.
    """
    seq = as_sequence(path)
    if seq is not None:
        return _probe_sequence(seq)
    path = Path(path)
    container, stream = _open(path)
    with container:
        first = None
        error = None
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    # Streams cut mid-GOP start with undecodable packets.
                    error = e
                    continue
                if frames:
                    first = frames[0]
                    break
        except av.FFmpegError as e:
            error = e
        if first is None:
            raise _no_frames_error(path, error)

        rotation = _clockwise_rotation(first, stream)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=_stream_fps(stream),
            num_frames=stream.frames or None,
            rotation=rotation,
            pix_fmt=stream.codec_context.pix_fmt or first.format.name,
            codec=stream.codec_context.name,
        )


def _probe_sequence(seq: ImageSequence) -> VideoInfo:
    img = read_image(seq.files[0])
    to_rgb8(img, seq.options.transform)
    return VideoInfo(
        path=seq,
        width=int(img.shape[1]),
        height=int(img.shape[0]),
        fps=float(seq.options.fps),
        num_frames=len(seq.files),
        rotation=0,
        pix_fmt=describe_format(img, seq.files[0]),
        codec="image-sequence",
        frame_numbers=seq.numbers,
    )


def _no_frames_error(path: Path, error: Exception | None) -> UserError:
    reason = f": {_av_reason(error)}" if error is not None else ""
    return UserError(f"{path}: no decodable video frames{reason}")


class _End:
    """Queue marker: the decoder has delivered everything."""


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put an item, giving up when the consumer has stopped. True if put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _decode_worker(path, start: int, count: int, q: queue.Queue, stop: threading.Event) -> None:
    """Thread body: run `_decode_into` (or `_read_sequence_into`), then queue an `_End` marker or the error."""
    try:
        if isinstance(path, ImageSequence):
            _read_sequence_into(path, start, count, q, stop)
        else:
            _decode_into(path, start, count, q, stop)
        _put(q, _End, stop)
    except BaseException as e:  # noqa: BLE001 - every failure goes to the consumer
        _put(q, e, stop)


def _read_sequence_into(seq: ImageSequence, start: int, count: int, q: queue.Queue, stop: threading.Event) -> None:
    """Read a sequence's frames [start, start + count) into the queue; a frame of another size is an error."""
    n = len(seq.files)
    if start >= n:
        raise UserError(f"{seq}: start frame {start} is beyond the end of the sequence ({n} frames)")
    end = min(n, start + count) if count else n
    size = None
    first = seq.numbers[0]
    for i in range(start, end):
        rgb = read_frame(seq.files[i], seq.options)
        if size is None:
            size = rgb.shape[:2]
        elif rgb.shape[:2] != size:
            raise UserError(
                f"{seq.files[i]}: {rgb.shape[1]}x{rgb.shape[0]}, but the sequence's frames are {size[1]}x{size[0]}"
            )
        ts = (seq.numbers[i] - first) / seq.options.fps
        if not _put(q, DecodedFrame(i, ts, rgb), stop):
            return


def _decode_into(path: Path, start: int, count: int, q: queue.Queue, stop: threading.Event) -> None:
    """Decode frames [start, start + count) into the queue.

    Returns when done or when the consumer has stopped. Frames before
    ``start`` are decoded but not converted: seeking would be faster but
    cannot give exact frame numbers in variable frame rate videos.
    """
    container, stream = _open(path)
    with container:
        # PyAV's default slice threading is kept on purpose: frame threading
        # decodes faster but swallows the error of a truncated H.264 stream
        # (and the frames before it), which would then end silently.
        end = start + count if count else None
        fps = _stream_fps(stream)
        rotation = None
        index = 0
        early_error = None

        def deliver(frames: list[av.VideoFrame]) -> bool:
            """Queue the wanted frames; False once done or abandoned."""
            nonlocal index, rotation
            for frame in frames:
                if rotation is None:
                    # Fixed from the first frame: all frames of a video must
                    # have one size for batching.
                    rotation = _clockwise_rotation(frame, stream)
                if index >= start:
                    timestamp = frame.time if frame.pts is not None else index / fps
                    rgb = _upright(frame.to_ndarray(format="rgb24"), rotation)
                    if not _put(q, DecodedFrame(index, timestamp, rgb), stop):
                        return False
                index += 1
                if end is not None and index >= end:
                    return False
            return True

        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    if index == 0:
                        # Streams cut mid-GOP start with undecodable packets.
                        early_error = e
                        continue
                    raise
                if not deliver(frames):
                    return
        except av.FFmpegError as e:
            if index == 0:
                raise _no_frames_error(path, e) from e
            # Frames the decoder still holds were intact: hand them out first.
            try:
                if not deliver(stream.decode(None)):
                    return
            except av.FFmpegError:
                pass
            raise UserError(
                f"{path}: corrupt or truncated video stream after frame {index - 1}: {_av_reason(e)}"
            ) from e

        if index == 0:
            raise _no_frames_error(path, early_error)
        if index <= start:
            raise UserError(f"{path}: start frame {start} is beyond the end of the video ({index} frames)")


def iter_frames(
    path: str | os.PathLike, start_frame: int = 0, frame_count: int = 0, queue_size: int = 8
) -> Iterator[DecodedFrame]:
    """Decode a video's frames as upright RGB, in a background thread.

    The thread feeds a queue of at most ``queue_size`` frames, so decoding
    overlaps the consumer's work without running far ahead. Stopping early
    (``break``, an exception, or closing the generator) stops the thread and
    closes the file.

    Args:
        path: The video file.
        start_frame: First frame to deliver, 0-based.
        frame_count: Number of frames to deliver; 0 means up to the end.
        queue_size: Decoded frames that may wait for the consumer.

    Yields:
        `DecodedFrame` (index, timestamp in seconds, rgb uint8 [H, W, 3]).

    Raises:
        UserError: For unreadable input (see `probe`), for a stream that
            fails part-way ("corrupt or truncated video stream after frame
            K"), for no decodable frame, or for a start_frame past the end.
    """
    path = as_sequence(path) or Path(path)
    if start_frame < 0 or frame_count < 0:
        raise UserError(f"{path}: start frame and frame count must be >= 0, got {start_frame} and {frame_count}")
    q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
    stop = threading.Event()
    worker = threading.Thread(
        target=_decode_worker,
        args=(path, start_frame, frame_count, q, stop),
        name=f"rd-decode:{path.name}",
        daemon=True,
    )
    worker.start()
    try:
        while True:
            try:
                item = q.get(timeout=1.0)
            except queue.Empty:
                if worker.is_alive() or not q.empty():
                    continue
                raise RuntimeError(f"{path}: decoder thread ended without a result") from None
            if item is _End:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def list_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand the input arguments into a list of video files.

    Each item may be a video file, a folder (its files with a video
    extension, see `VIDEO_EXTENSIONS`, sorted by name; hidden files and
    other files are skipped; a folder of image frames and no videos is one
    image sequence), a printf pattern or glob of image frames
    (`rd_engine.io.sequence`: kept as given) or a ``.txt`` list with one path per line
    (blank lines and lines starting with ``#`` skipped; relative paths are
    relative to the list's folder; folders in it are expanded too).

    Missing video files are kept, so that the other videos still run and the
    missing one is reported by `probe` on its turn. Duplicates are dropped,
    keeping the first occurrence.

    Args:
        paths: Files, folders and ``.txt`` lists.

    Returns:
        The video paths in order.

    Raises:
        UserError: For a missing ``.txt`` list, a missing folder (a path that
            ends with a separator or has no suffix), or a folder without
            videos.
    """
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise UserError(f"{path}: list file not found")
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                entry_path = Path(entry).expanduser()
                if not entry_path.is_absolute():
                    entry_path = path.parent / entry_path
                found.extend(_expand(entry_path, str(entry_path)))
        else:
            found.extend(_expand(path, os.fspath(item)))

    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _expand(path: Path, spelled: str) -> list[Path]:
    """A folder's videos, or the path itself (which may not exist yet)."""
    if not path.exists() and looks_like_sequence(spelled):
        return [Path(spelled)]
    if path.is_dir():
        videos = sorted(
            (
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
            ),
            key=lambda p: p.name,
        )
        if not videos and image_folder(path):
            return [path]  # an image sequence
        if not videos:
            raise UserError(f"{path}: folder has no video files ({', '.join(VIDEO_EXTENSIONS)})")
        return videos
    if not path.exists() and (spelled.endswith(("/", os.sep)) or not path.suffix):
        raise UserError(f"{path}: folder not found")
    return [path]


def processed_size(width: int, height: int, res: int) -> tuple[int, int]:
    """Size at which the model sees a video.

    Args:
        width: Video width.
        height: Video height.
        res: Longest edge to scale to (up or down); 0 or less keeps the size.

    Returns:
        (width, height), each at least 1.
    """
    if res > 0:
        f = min(res / width, res / height)
        return max(1, int(width * f)), max(1, int(height * f))
    return width, height


def preprocess(
    frames: torch.Tensor | np.ndarray,
    size: tuple[int, int],
    device: torch.device | str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Turn RGB frames into model input.

    Bilinear resizing with antialiasing on float values, as torchvision's
    tensor resize does.

    Args:
        frames: uint8 [B, H, W, 3] RGB, a tensor or a numpy array.
        size: Target (width, height).
        device: Where the result lives.
        dtype: Result dtype (the arithmetic runs in float32 first).

    Returns:
        Tensor [B, 3, h, w] with values in [-1, 1].
    """
    import torch
    import torch.nn.functional as F

    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [B, H, W, 3], got {tuple(frames.shape)}")
    # Move as uint8: a quarter of the bytes of float32.
    x = frames.to(device).permute(0, 3, 1, 2).to(torch.float32)
    w, h = size
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    x = x / 255.0 * 2.0 - 1.0
    return x.to(dtype)


class SeekMismatch(UserError):
    """Seeking did not land on the frames sequential decoding gives (decode from the start instead)."""


def keyframe_index(path: str | os.PathLike) -> tuple[list[int], list[int]] | None:
    """Every frame's pts in presentation order and the keyframes' pts, from the demuxer (nothing decoded).

    None when the packets cannot number the frames exactly: a packet without pts, repeated pts, or a
    packet count that differs from the count the stream announces; and for an image sequence (whose
    frames are each read directly).
    """
    if as_sequence(path) is not None:
        return None
    container, stream = _open(Path(path))
    with container:
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's flush packet
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.FFmpegError:
            return None
        if not pts or len(set(pts)) != len(pts) or (stream.frames and stream.frames != len(pts)):
            return None
        return sorted(pts), sorted(keys)


def seek_frames(path: str | os.PathLike, start: int, count: int, index=None) -> Iterator[DecodedFrame]:
    """Frames ``[start, start + count)`` decoded from the last keyframe before ``start`` (a seek), upright RGB.

    For long videos split across workers: a worker's range starts where the file's keyframes allow,
    instead of decoding every frame before it. Frames are numbered by the demuxer's packet index
    (`keyframe_index`), so variable frame rates number them as `iter_frames` does; where the index
    cannot (see `keyframe_index`), or ``start`` is 0, this is `iter_frames`. Stops early, without an
    error, at the end of the video (the caller checks the count).

    Raises:
        SeekMismatch: The decoder's frames after the seek are not the indexed ones (the caller
            decodes from the start instead).
    """
    seq = as_sequence(path)
    if seq is not None:
        yield from iter_frames(seq, start, count)
        return
    path = Path(path)
    index = keyframe_index(path) if index is None and start > 0 else index
    if start == 0 or index is None:
        yield from iter_frames(path, start, count)
        return
    pts, keys = index
    if start >= len(pts):
        return
    want = pts[start : start + count]
    target = want[0]
    key = max((k for k in keys if k <= target), default=None)
    if key is None:
        yield from iter_frames(path, start, count)
        return
    rotation = probe(path).rotation
    container, stream = _open(path)
    with container:
        container.seek(key, stream=stream, backward=True, any_frame=False)
        i = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        raise SeekMismatch(f"{path}: a frame without pts after seeking")
                    if frame.pts < target:
                        continue
                    if frame.pts != want[i]:
                        raise SeekMismatch(f"{path}: frame {start + i} is not where the index puts it")
                    yield DecodedFrame(start + i, frame.time, _upright(frame.to_ndarray(format="rgb24"), rotation))
                    i += 1
                    if i == len(want):
                        return
        except av.FFmpegError as e:
            raise UserError(
                f"{path}: corrupt or truncated video stream after frame {start + i}: {_av_reason(e)}"
            ) from e
