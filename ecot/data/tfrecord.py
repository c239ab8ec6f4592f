"""TFRecord files and ``tf.train.Example`` messages without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`` (mod 2^32). ``tf.train.Example`` is the
protobuf ``Example{Features features=1}``, ``Features{map<string, Feature> feature=1}``,
``Feature{oneof BytesList bytes_list=1; FloatList float_list=2; Int64List int64_list=3}``, each
list a ``repeated`` field 1 (floats and ints usually packed). We decode the wire format
directly: the messages are tiny and fixed, and no generated code or TensorFlow is needed.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np

FeatureValue = Union[list, np.ndarray]

# --------------------------------------------------------------------------- CRC32C


def _make_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c():
    try:
        import google_crc32c  # type: ignore

        return lambda data: int(google_crc32c.value(bytes(data)))
    except ImportError:
        pass
    try:
        import crc32c  # type: ignore

        return lambda data: int(crc32c.crc32c(bytes(data)))
    except ImportError:
        return None


_FAST = _fast_crc32c()
HAVE_FAST_CRC = _FAST is not None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; uses a C implementation when one is installed."""
    return _FAST(data) if _FAST is not None else _crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- record framing


class TFRecordError(ValueError):
    """A TFRecord file is truncated or corrupt."""


def write_records(path: str | Path, records) -> int:
    """Write ``records`` (bytes) as a TFRecord file (to a temporary name, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with open(tmp, "wb") as f:
        for data in records:
            data = bytes(data)
            header = struct.pack("<Q", len(data))
            f.write(header)
            f.write(struct.pack("<I", masked_crc32c(header)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc32c(data)))
            n += 1
    tmp.replace(path)
    return n


def _read_exact(f: BinaryIO, n: int, path, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TFRecordError(f"{path}: truncated record at byte {offset} (wanted {n} bytes, got {len(data)})")
    return data


def _read_header(f: BinaryIO, path, offset: int) -> int | None:
    header = f.read(8)
    if not header:
        return None
    if len(header) != 8:
        raise TFRecordError(f"{path}: truncated record header at byte {offset}")
    (crc,) = struct.unpack("<I", _read_exact(f, 4, path, offset + 8))
    if crc != masked_crc32c(header):
        raise TFRecordError(f"{path}: bad length checksum at byte {offset}; not a TFRecord file or corrupt")
    return struct.unpack("<Q", header)[0]


def index_records(path: str | Path) -> list[tuple[int, int]]:
    """``(offset of data, length)`` of every record, reading only the 12-byte headers."""
    out = []
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while True:
            length = _read_header(f, path, offset)
            if length is None:
                break
            start = offset + 12
            if start + length + 4 > size:
                raise TFRecordError(f"{path}: truncated record at byte {offset} (length {length}, file size {size})")
            out.append((start, length))
            offset = start + length + 4
            f.seek(offset)
    return out


def read_record(path: str | Path, offset: int, length: int, verify: bool = False) -> bytes:
    """One record's data given its ``index_records`` entry; ``verify`` checks the data CRC."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = _read_exact(f, length, path, offset)
        if verify:
            (crc,) = struct.unpack("<I", _read_exact(f, 4, path, offset + length))
            if crc != masked_crc32c(data):
                raise TFRecordError(f"{path}: bad data checksum for the record at byte {offset - 12}")
    return data


def iter_records(path: str | Path, verify: bool = False) -> Iterator[bytes]:
    with open(path, "rb") as f:
        offset = 0
        while True:
            length = _read_header(f, path, offset)
            if length is None:
                return
            data = _read_exact(f, length, path, offset + 12)
            crc_bytes = _read_exact(f, 4, path, offset + 12 + length)
            if verify and struct.unpack("<I", crc_bytes)[0] != masked_crc32c(data):
                raise TFRecordError(f"{path}: bad data checksum for the record at byte {offset}")
            offset += 12 + length + 4
            yield data


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in protobuf message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long in protobuf message")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """``(field number, wire type, value)``; LEN values are memoryview slices."""
    pos, n = 0, len(buf)
    mv = memoryview(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise ValueError("truncated fixed64 in protobuf message")
            value, pos = mv[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise ValueError("truncated length-delimited field in protobuf message")
            value, pos = mv[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > n:
                raise ValueError("truncated fixed32 in protobuf message")
            value, pos = mv[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _to_int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_feature(buf) -> FeatureValue:
    for kind, wire, value in _fields(bytes(buf)):
        if wire != 2:
            continue
        raw = bytes(value)
        if kind == 1:  # BytesList
            return [bytes(v) for f, w, v in _fields(raw) if f == 1 and w == 2]
        if kind == 2:  # FloatList: packed (LEN) or one fixed32 per value
            parts = []
            for f, w, v in _fields(raw):
                if f == 1:
                    parts.append(bytes(v))
            return np.frombuffer(b"".join(parts), dtype="<f4").astype(np.float32)
        if kind == 3:  # Int64List: packed varints (LEN) or one varint per value
            ints: list[int] = []
            for f, w, v in _fields(raw):
                if f != 1:
                    continue
                if w == 0:
                    ints.append(_to_int64(v))
                elif w == 2:
                    b, pos = bytes(v), 0
                    while pos < len(b):
                        x, pos = _varint(b, pos)
                        ints.append(_to_int64(x))
            return np.asarray(ints, dtype=np.int64)
    return []  # a Feature with no list set


def parse_example(data: bytes) -> dict[str, FeatureValue]:
    """A serialized ``tf.train.Example`` -> ``{key: list[bytes] | float32 array | int64 array}``."""
    out: dict[str, FeatureValue] = {}
    for field, wire, features in _fields(bytes(data)):
        if field != 1 or wire != 2:
            continue
        for f, w, entry in _fields(bytes(features)):
            if f != 1 or w != 2:
                continue
            key, value = None, b""
            for ef, ew, ev in _fields(bytes(entry)):
                if ef == 1 and ew == 2:
                    key = bytes(ev).decode("utf-8")
                elif ef == 2 and ew == 2:
                    value = ev
            if key is None:
                raise ValueError("tf.train.Example map entry without a key")
            out[key] = _parse_feature(value)
    return out


def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _enc_varint((field << 3) | 2) + _enc_varint(len(payload)) + payload


def serialize_example(features: dict[str, FeatureValue]) -> bytes:
    """``{key: bytes list | float array | int array}`` -> a serialized ``tf.train.Example``.

    Lists of ``bytes``/``str`` become a BytesList; float arrays a FloatList (float32, packed);
    integer or bool arrays an Int64List (packed).
    """
    entries = b""
    for key in sorted(features):
        value = features[key]
        if isinstance(value, (bytes, str)):
            value = [value]
        if isinstance(value, list) and (not value or isinstance(value[0], (bytes, str))):
            items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
            feature = _len_field(1, b"".join(_len_field(1, v) for v in items))
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                feature = _len_field(2, _len_field(1, arr.astype("<f4").reshape(-1).tobytes()) if arr.size else b"")
            elif arr.dtype.kind in "iub":
                packed = b"".join(_enc_varint(int(v)) for v in arr.reshape(-1))
                feature = _len_field(3, _len_field(1, packed) if arr.size else b"")
            else:
                raise TypeError(f"feature {key!r}: cannot serialize values of dtype {arr.dtype}")
        entries += _len_field(1, _len_field(1, key.encode("utf-8")) + _len_field(2, feature))
    return _len_field(1, entries)
