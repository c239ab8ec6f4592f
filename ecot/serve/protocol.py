"""The wire formats the policy server speaks, and the checks every input passes before the model.

* msgpack-numpy, as openpi's websocket protocol packs it: an ndarray is a map with bytes keys
  ``{b"__ndarray__": True, b"data": raw bytes, b"dtype": "|u1", b"shape": [...]}`` and a numpy
  scalar ``{b"__npgeneric__": True, b"data": value, b"dtype": str}``. No msgpack extension
  types, and never pickle.
* json-numpy, as OpenVLA's ``deploy.py`` clients send it after ``json_numpy.patch()``:
  ``{"__numpy__": base64 of the C-order bytes, "dtype": "<f8", "shape": [7]}``.
* Images: an HxWx3 uint8 array, or (in our JSON API) base64 PNG/JPEG.

Only numpy and msgpack are imported here (PIL on demand, server side), so the torch-free client
shares this module with the server.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

# Simple numeric dtypes only: object, void (structured) and complex arrays are refused on both
# ends (they are how a decoder gets tricked into executing or misreading data).
_ALLOWED_KINDS = ("b", "i", "u", "f")


class ProtocolError(ValueError):
    """A request that cannot be decoded or fails validation; its message is safe to send to the client."""


@dataclass(frozen=True)
class Limits:
    """Size limits checked before anything reaches the model."""

    max_body_bytes: int = 16 * 2**20  # one HTTP body or websocket frame
    max_image_side: int = 2048  # pixels, each of height and width
    min_image_side: int = 8
    max_instruction_chars: int = 2000
    max_edit_chars: int = 2000


DEFAULT_LIMITS = Limits()


# ---------------------------------------------------------------------- numpy <-> msgpack


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(f"unsupported array dtype {dtype.str!r}: only bool, integer and float arrays are accepted")
    return dtype


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot pack an object of type {type(obj).__name__}")


def _parse_dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) or len(value) > 16:
        raise ProtocolError("array dtype must be a short string such as '|u1' or '<f4'")
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"unknown array dtype {value!r}") from None
    return _check_dtype(dtype)


def _parse_shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 8:
        raise ProtocolError("array shape must be a list of at most 8 non-negative integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ProtocolError(f"array shape must hold non-negative integers, got {list(value)!r}")
    return tuple(value)


def _array_from_bytes(data: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("array data must be bytes")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(f"array data has {len(data)} bytes, but shape {list(shape)} of {dtype.str} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _unpack_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _array_from_bytes(obj.get(b"data"), _parse_dtype(obj.get(b"dtype")), _parse_shape(obj.get(b"shape")))
    if b"__npgeneric__" in obj:
        dtype = _parse_dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError):
            raise ProtocolError("bad numpy scalar") from None
    return obj


def packb(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (dicts, lists, str, numbers, ndarrays, numpy scalars)."""
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes, max_bytes: int | None = None) -> Any:
    """Decode msgpack-numpy ``data``; raises :class:`ProtocolError` on anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("expected a binary frame holding a msgpack map")
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        # strict_map_key=False: openpi packs numpy maps with bytes keys.
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=False)
    except ProtocolError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"frame is not valid msgpack: {type(err).__name__}") from None
    except Exception:  # msgpack raises assorted errors on garbage; none of them is ours to leak
        raise ProtocolError("frame is not valid msgpack") from None


# ---------------------------------------------------------------------- numpy <-> json-numpy


def json_numpy_encode(arr: np.ndarray | np.generic) -> dict:
    """json-numpy's encoding of an array: ``{"__numpy__": base64, "dtype": descr, "shape": [...]}``."""
    arr = np.asarray(arr)
    _check_dtype(arr.dtype)
    return {
        "__numpy__": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii"),
        "dtype": np.lib.format.dtype_to_descr(arr.dtype),
        "shape": list(arr.shape),
    }


def is_json_numpy(value: Any) -> bool:
    return isinstance(value, dict) and "__numpy__" in value


def json_numpy_decode(value: dict) -> np.ndarray:
    """Decode one json-numpy object (validated: simple dtype, consistent shape and byte count)."""
    data = value.get("__numpy__")
    if not isinstance(data, str):
        raise ProtocolError("json-numpy '__numpy__' must be a base64 string")
    dtype = _parse_dtype(value.get("dtype"))
    shape = _parse_shape(value.get("shape"))
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("json-numpy '__numpy__' is not valid base64") from None
    arr = _array_from_bytes(raw, dtype, shape)
    return arr


def json_numpy_hook(obj: dict) -> Any:
    """A ``json.loads`` object hook that decodes json-numpy objects (as ``json_numpy.loads`` does)."""
    if "__numpy__" in obj:
        arr = json_numpy_decode(obj)
        return arr if arr.shape else arr[()]
    return obj


# ---------------------------------------------------------------------- images


def decode_image_base64(data: str, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Base64 PNG/JPEG (optionally a ``data:image/...;base64,`` URL) -> HxWx3 uint8, validated."""
    if not isinstance(data, str):
        raise ProtocolError("image must be a base64 PNG/JPEG string or a json-numpy array")
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("image is not valid base64") from None
    if raw[:8] != b"\x89PNG\r\n\x1a\n" and raw[:3] != b"\xff\xd8\xff":
        raise ProtocolError("image must be a PNG or JPEG file (base64), or a json-numpy uint8 array")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            _check_size(height, width, limits)  # before decoding the pixels (decompression bombs)
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ProtocolError:
        raise
    except Exception:  # PIL raises many kinds of errors on corrupt files
        raise ProtocolError("image could not be decoded as PNG/JPEG") from None
    return validate_image(arr, limits)


def _check_size(height: int, width: int, limits: Limits) -> None:
    if height > limits.max_image_side or width > limits.max_image_side:
        raise ProtocolError(f"image of {height}x{width} pixels exceeds the limit of {limits.max_image_side} per side")
    if height < limits.min_image_side or width < limits.min_image_side:
        raise ProtocolError(f"image of {height}x{width} pixels is smaller than {limits.min_image_side} per side")


def validate_image(image: Any, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Check an image array is HxWx3 uint8 within the size limits; returns it as a C-contiguous array."""
    if not isinstance(image, np.ndarray):
        raise ProtocolError(f"image must be an HxWx3 uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ProtocolError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ProtocolError(f"image must have shape HxWx3, got {list(image.shape)}")
    _check_size(image.shape[0], image.shape[1], limits)
    return np.ascontiguousarray(image)


def decode_image(value: Any, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """An image in any accepted form (ndarray, json-numpy object, base64 PNG/JPEG) -> validated array."""
    if isinstance(value, np.ndarray):
        return validate_image(value, limits)
    if is_json_numpy(value):
        return validate_image(json_numpy_decode(value), limits)
    if isinstance(value, str):
        return decode_image_base64(value, limits)
    raise ProtocolError("image must be an HxWx3 uint8 array (json-numpy) or a base64 PNG/JPEG string")


def validate_instruction(value: Any, limits: Limits = DEFAULT_LIMITS, key: str = "instruction") -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ProtocolError(f"{key!r} must not be empty")
    if len(value) > limits.max_instruction_chars:
        raise ProtocolError(f"{key!r} is longer than {limits.max_instruction_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"{key!r} is not valid unicode text") from None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise ProtocolError(f"{key!r} contains control characters")
    return value


def validate_unnorm_key(value: Any, known: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"'unnorm_key' must be a string, got {type(value).__name__}")
    if known and value not in known:
        raise ProtocolError(f"unknown unnorm_key {value[:100]!r}; this policy has {known}")
    return value


EDIT_FIELDS = ("plan", "subtask", "move", "visible_objects")


def validate_edit(value: Any, limits: Limits = DEFAULT_LIMITS) -> dict | None:
    """An ``edit``: None/{} clears the session's edits; else some of plan / subtask / move (strings)
    and visible_objects (a list of [name, [x0, y0, x1, y1]])."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("'edit' must be an object with some of: " + ", ".join(EDIT_FIELDS))
    unknown = sorted(set(value) - set(EDIT_FIELDS))
    if unknown:
        raise ProtocolError(f"'edit' has unknown fields {unknown}; allowed: {list(EDIT_FIELDS)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "visible_objects":
            out[key] = _validate_objects(item)
            continue
        if not isinstance(item, str):
            raise ProtocolError(f"edit field {key!r} must be a string")
        if len(item) > limits.max_edit_chars:
            raise ProtocolError(f"edit field {key!r} is longer than {limits.max_edit_chars} characters")
        if item.strip():  # an empty field is no edit
            out[key] = validate_instruction(item, limits, key=f"edit.{key}")
    return out


def _validate_objects(items: Any) -> list[tuple[str, list[float]]]:
    if not isinstance(items, list) or len(items) > 64:
        raise ProtocolError("edit field 'visible_objects' must be a list (at most 64) of [name, [x0, y0, x1, y1]]")
    objects = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], (list, tuple))):
            raise ProtocolError("each visible object must be [name, [x0, y0, x1, y1]]")
        name, box = item
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box):
            raise ProtocolError(f"box of {name[:50]!r} must be 4 finite numbers")
        if not name.strip() or len(name) > 200:
            raise ProtocolError("visible object names must be 1 to 200 characters")
        objects.append((name, list(box)))
    return objects


# ---------------------------------------------------------------------- results

REASONING_FIELDS = ("task", "plan", "visible_objects", "subtask_reasoning", "subtask", "move_reasoning", "move", "gripper_positions")


def reasoning_dict(reasoning: Any) -> dict:
    """The typed reasoning fields as plain JSON (boxes and points as lists)."""
    if reasoning is None:  # no reasoning written (no-reasoning mode): every field empty
        return {key: [] if key in ("visible_objects", "gripper_positions") else "" for key in REASONING_FIELDS}
    return {
        "task": reasoning.task,
        "plan": reasoning.plan,
        "visible_objects": [[name, list(box)] for name, box in reasoning.visible_objects],
        "subtask_reasoning": reasoning.subtask_reasoning,
        "subtask": reasoning.subtask,
        "move_reasoning": reasoning.move_reasoning,
        "move": reasoning.move,
        "gripper_positions": [list(p) for p in reasoning.gripper_positions],
    }


def plain(value: Any) -> Any:
    """numpy scalars/arrays inside ``value`` as Python numbers/lists (for JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
