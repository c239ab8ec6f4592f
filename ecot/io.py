"""The small I/O layer every stage shares: atomic file and directory writes, PNG encode/decode,
and a least-recently-used cache for per-file readers.

Atomic means a reader (or a resumed run after ``kill -9``) sees either the old file or the
complete new one, never a half-written one: data goes to a temporary name in the same
directory, then ``os.replace`` renames it into place.
"""

from __future__ import annotations

import io
import os
import shutil
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Generic, Hashable, Iterator, TypeVar

import numpy as np

__all__ = ["temp_path", "write_atomic", "atomic_path", "write_dir_atomically", "encode_png", "decode_image",
           "LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# --------------------------------------------------------------------------- atomic writes


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary sibling of ``path`` (hidden, unique to this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; creates parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)`` -- ``tmp`` is renamed to ``p`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_dir_atomically(dest: str | os.PathLike, fill: Callable[[Path], object]) -> Path:
    """Call ``fill(tmp_dir)``, then rename ``tmp_dir`` to ``dest`` (replacing an old ``dest``).

    The temporary names carry the process id, so two processes never share one; a ``fill`` that
    fails leaves no partial directory, and a full disk is reported as ``ENOSPC`` whatever library
    noticed it (torch.save says "unexpected pos").
    """
    import errno

    from ecot.errors import is_disk_full

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(err, OSError) and isinstance(err, Exception) and is_disk_full(err):
            raise OSError(errno.ENOSPC, f"no space left on device ({str(err).splitlines()[0]})", str(dest)) from err
        raise
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)
    return dest


# --------------------------------------------------------------------------- images


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """An HxWx3 uint8 image as PNG bytes (lossless; level 1 is fast, 9 small)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_image(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of an HxWx3 uint8 image."""
    from PIL import Image

    if fmt == "png":
        return encode_png(image)
    if fmt != "jpeg":
        raise ValueError(f"image format must be 'png' or 'jpeg', got {fmt!r}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes, source: str | os.PathLike | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as an HxWx3 uint8 RGB array.

    A corrupt or truncated image raises ``ValueError`` naming ``source`` (e.g. the file and frame).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        where = f" in {source}" if source is not None else ""
        raise ValueError(f"cannot decode an image{where}: {type(err).__name__}: {err} "
                         "(expected PNG/JPEG bytes; the file may be corrupt or truncated)") from None


# --------------------------------------------------------------------------- cache


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` values, the least recently used dropped first (``on_evict`` called on it).

    ``cache.get(key, load)`` returns the cached value or ``load()``'s (then cached). Not shared
    across processes: a pickled cache (e.g. sent to a DataLoader worker) arrives empty.
    """

    def __init__(self, maxsize: int, on_evict: Callable[[V], object] | None = None):
        self.maxsize = max(1, int(maxsize))
        self.on_evict = on_evict
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, load: Callable[[], V]) -> V:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = load()
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            _, old = self._data.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(old)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        while self._data:
            _, old = self._data.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(old)

    def __getstate__(self) -> dict:
        return {"maxsize": self.maxsize, "on_evict": self.on_evict, "_data": OrderedDict()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
