"""Camera frames as mp4 video, encoded and decoded with PyAV (FFmpeg), the way LeRobot does it.

Encoding follows LeRobot's defaults: AV1 (``libsvtav1``), ``yuv420p``, a keyframe every 2
frames (``g=2``), ``crf=30``; frame ``k`` of a file has presentation time ``k / fps``, so
episodes concatenated in one file start at ``from_timestamp = frames before it / fps``.

Decoding follows LeRobot's rule: a frame is asked for at a time in seconds; the nearest
decoded frame is returned if it lies closer than ``tolerance_s`` (1e-4 s by default), else
:class:`FrameTimestampError`. :class:`VideoFile` keeps one open decoder per file and decodes
forward from the last position when the next request lies shortly ahead (no seek), so reading
an episode or a dataset in order decodes each frame once.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ecot.io import LRUCache, temp_path

DEFAULT_CODEC = "libsvtav1"
DEFAULT_CRF = 30
DEFAULT_GOP = 2
DEFAULT_TOLERANCE_S = 1e-4
_FORWARD_WINDOW_S = 2.0  # decode forward (no seek) when the next request is at most this far ahead


_INHERITED_DECODERS: list = []  # a forked child's copies of its parent's decoders, never torn down


class FrameTimestampError(ValueError):
    """No decoded frame lies within the tolerance of a requested time."""


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a core dependency
        raise ImportError("video cameras need PyAV: pip install av") from err
    return av


class VideoWriter:
    """Frames (HxWx3 uint8) appended one by one to ``path``; the file appears only on :meth:`close`."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int, codec: str = DEFAULT_CODEC,
                 crf: int | None = DEFAULT_CRF, gop: int = DEFAULT_GOP, pix_fmt: str = "yuv420p"):
        av = _av()
        if width % 2 or height % 2:
            raise ValueError(f"video frames must have even width and height for {pix_fmt}, got {width}x{height}")
        if codec == "libsvtav1" and min(width, height) < 64:
            raise ValueError(f"libsvtav1 needs frames of at least 64x64 pixels, got {width}x{height}; "
                             "use larger images or codec='libx264'")
        os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder's banner on stderr: errors only
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path).with_suffix(".mp4")
        self.fps = int(fps)
        self.width, self.height = int(width), int(height)
        options = {"g": str(gop)}
        if crf is not None and codec in ("libsvtav1", "libx264", "h264", "hevc", "libx265"):
            options["crf"] = str(crf)
        if codec == "libsvtav1":
            options["preset"] = "12"
        self.codec = codec
        self.pix_fmt = pix_fmt
        self._container = av.open(str(self.tmp), "w")
        self._stream = self._container.add_stream(codec, rate=self.fps, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, pix_fmt
        self._stream.time_base = Fraction(1, self.fps)
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        av = _av()
        image = np.ascontiguousarray(image)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"video frame must be uint8 {(self.height, self.width, 3)}, got {image.dtype} {image.shape}")
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place (atomically)."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
        self.tmp.unlink(missing_ok=True)


def video_info(path: str | Path) -> dict:
    """The ``info`` dict LeRobot stores with a video feature in ``meta/info.json``."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name if hasattr(stream.codec_context.codec, "canonical_name") else stream.codec_context.name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": False,
        }


class VideoFile:
    """Frames of one mp4 file by presentation time (seconds), decoded lazily (see the module docstring)."""

    def __init__(self, path: str | Path, tolerance_s: float = DEFAULT_TOLERANCE_S):
        self.path = Path(path)
        self.tolerance_s = float(tolerance_s)
        self._container = None
        self._stream = None
        self._iter = None
        self._last: tuple[float, np.ndarray] | None = None  # the last decoded frame (time, image)

    def _open(self) -> None:
        av = _av()
        if not self.path.exists():
            raise FileNotFoundError(f"video file {self.path} is missing")
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as err:
            self.close()
            raise ValueError(f"cannot open video file {self.path}: {err} (expected an mp4 with one video stream; "
                             "the file may be corrupt or truncated)") from None

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
        self._container = self._stream = self._iter = self._last = None

    def forget(self) -> None:
        """Drop the decoder without closing it (in a forked child, for the parent's decoders: tearing
        down FFmpeg state copied from the parent, whose decoder threads do not exist here, can hang)."""
        _INHERITED_DECODERS.append((self._container, self._stream, self._iter))  # kept alive for good
        self._container = self._stream = self._iter = self._last = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()

    def _seek(self, t: float) -> None:
        offset = int(t / self._stream.time_base) if t > 0 else 0
        self._container.seek(offset, stream=self._stream, any_frame=False, backward=True)
        self._iter = self._container.decode(self._stream)
        self._last = None

    def _next(self) -> tuple[float, np.ndarray] | None:
        try:
            frame = next(self._iter)
        except StopIteration:
            return None
        self._last = (float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24"))
        return self._last

    def frames_at(self, times: Sequence[float]) -> np.ndarray:
        """The frames nearest to ``times`` (seconds, ascending or not): uint8 [N, H, W, 3]."""
        av = _av()
        if not len(times):
            return np.zeros((0, 0, 0, 3), np.uint8)
        if self._container is None:
            self._open()
        times = [float(t) for t in times]
        first, last = min(times), max(times)
        tol = self.tolerance_s
        try:
            ahead = self._iter is not None and self._last is not None and self._last[0] - tol <= first <= self._last[0] + _FORWARD_WINDOW_S
            if not ahead:
                self._seek(first)
            loaded: list[tuple[float, np.ndarray]] = []
            if self._last is not None:
                loaded.append(self._last)
            while not loaded or loaded[-1][0] < last - tol:
                got = self._next()
                if got is None:
                    break
                if got[0] >= first - 1.0:  # keep only frames near the request (bounded memory)
                    loaded.append(got)
        except av.error.FFmpegError as err:
            self.close()
            raise ValueError(f"cannot decode video file {self.path}: {err} (the file may be corrupt or truncated)") from None
        if not loaded:
            raise FrameTimestampError(f"{self.path}: no frame decoded near t={first:.4f} s (the file may be truncated)")
        loaded_t = np.array([t for t, _ in loaded])
        out = []
        for t in times:
            k = int(np.abs(loaded_t - t).argmin())
            if abs(loaded_t[k] - t) >= tol:
                raise FrameTimestampError(
                    f"{self.path}: no frame within {tol} s of t={t:.6f} s (nearest decoded frame at {loaded_t[k]:.6f} s); "
                    "the video and the data timestamps disagree, or the file is truncated")
            out.append(loaded[k][1])
        return np.stack(out)


class VideoFiles:
    """Open :class:`VideoFile` decoders, at most ``max_open`` at a time (least recently used closed)."""

    def __init__(self, max_open: int = 4, tolerance_s: float = DEFAULT_TOLERANCE_S):
        self.tolerance_s = tolerance_s
        self._cache: LRUCache[Path, VideoFile] = LRUCache(max_open, on_evict=VideoFile.close)
        self._pid = os.getpid()

    def frames_at(self, path: Path, times: Sequence[float]) -> np.ndarray:
        if os.getpid() != self._pid:  # a forked worker: never share the parent's decoders (and file offsets)
            for inherited in list(self._cache._data.values()):
                inherited.forget()
            self._cache = LRUCache(self._cache.maxsize, on_evict=VideoFile.close)
            self._pid = os.getpid()
        return self._cache.get(Path(path), lambda: VideoFile(path, self.tolerance_s)).frames_at(times)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        self._cache.clear()
