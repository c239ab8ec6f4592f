"""Test-only import shim that lets LeRobot's dataset code run beside the CPU torch here.

Import this module before ``lerobot`` (in the side environment of build_env.sh only):

* torchvision's compiled ops (``torchvision::nms`` ...) do not load with this torch build, and
  ``torchvision/_meta_registrations.py`` registers fake kernels for ``nms`` and ``qnms``
  unconditionally; defining those two schemas lets ``import torchvision`` succeed (the ops are
  never called by the dataset code).
* torchvision 0.28 removed ``torchvision.io.VideoReader``, which LeRobot's "pyav" decoding path
  (``decode_video_frames_torchvision``) uses when torchcodec is absent. :class:`VideoReader`
  below is a PyAV implementation of the part of the old API LeRobot uses: ``VideoReader(path,
  "video")``, ``seek(t, keyframes_only=...)``, iteration yielding ``{"data": uint8 CxHxW tensor,
  "pts": seconds}`` and the ``container`` attribute.
"""

from __future__ import annotations

import torch

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")

import av  # noqa: E402
import torchvision  # noqa: E402
import torchvision.io  # noqa: E402


class VideoReader:
    def __init__(self, src: str, stream: str = "video", num_threads: int = 0):
        if stream != "video":
            raise ValueError("this shim reads video streams only")
        self.container = av.open(str(src))
        self._stream = self.container.streams.video[0]
        self._iter = None

    def seek(self, time_s: float, keyframes_only: bool = False) -> "VideoReader":
        offset = int(round(time_s / self._stream.time_base))
        self.container.seek(offset, stream=self._stream, any_frame=not keyframes_only, backward=True)
        self._iter = None
        return self

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._iter is None:
            self._iter = self.container.decode(self._stream)
        frame = next(self._iter)
        data = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        return {"data": data, "pts": float(frame.pts * frame.time_base)}


torchvision.io.VideoReader = VideoReader
