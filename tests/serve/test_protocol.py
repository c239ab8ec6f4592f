"""Wire formats against the real reference packages (openpi-client's msgpack_numpy, json-numpy),
and validation of everything that comes off the wire."""

from __future__ import annotations

import base64
import io
import json

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.serve import protocol
from ecot.serve.protocol import Limits, ProtocolError


def test_msgpack_numpy_matches_openpi_client_both_ways():
    from openpi_client import msgpack_numpy as ref

    obs = {"observation/image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), "prompt": "pick",
           "state": np.array([0.5, -1.0], dtype=np.float32), "step": np.int64(3)}  # fmt: skip
    ours = protocol.unpackb(ref.packb(obs))
    assert ours["prompt"] == "pick" and ours["step"] == 3 and ours["step"].dtype == np.int64
    np.testing.assert_array_equal(ours["observation/image"], obs["observation/image"])
    assert ours["state"].dtype == np.float32
    theirs = ref.unpackb(protocol.packb({"actions": np.ones((1, 7)), "text": "TASK: x"}))
    assert theirs["actions"].shape == (1, 7) and theirs["actions"].dtype == np.float64 and theirs["text"] == "TASK: x"


def test_json_numpy_matches_the_json_numpy_package_both_ways():
    import json_numpy

    arr = np.linspace(-1, 1, 7)
    assert json.loads(json_numpy.dumps(arr)) == protocol.json_numpy_encode(arr)
    img = np.random.default_rng(0).integers(0, 255, (9, 8, 3), dtype=np.uint8)
    decoded = json.loads(json_numpy.dumps({"image": img}), object_hook=protocol.json_numpy_hook)["image"]
    np.testing.assert_array_equal(decoded, img)
    np.testing.assert_array_equal(json_numpy.loads(json.dumps(protocol.json_numpy_encode(arr))), arr)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, "unsupported array dtype"),
        ({b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "|u1", b"shape": [2, 2]}, "needs 4"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "|u1", b"shape": [-1]}, "non-negative"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "[('a', '<i4')]", b"shape": [0]}, "dtype"),
        ({b"__ndarray__": True, b"data": "text", b"dtype": "|u1", b"shape": [4]}, "must be bytes"),
    ],
)
def test_msgpack_arrays_are_validated(obj, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.unpackb(msgpack.packb(obj))


def test_packing_refuses_object_arrays():
    with pytest.raises(ProtocolError):
        protocol.packb({"x": np.array([object()], dtype=object)})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_protocol_errors(data):
    try:
        protocol.unpackb(data)
    except ProtocolError:
        pass


def _png(arr: np.ndarray, fmt: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_images_in_every_accepted_form():
    img = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(protocol.decode_image(img), img)
    np.testing.assert_array_equal(protocol.decode_image(protocol.json_numpy_encode(img)), img)
    np.testing.assert_array_equal(protocol.decode_image(_png(img)), img)
    np.testing.assert_array_equal(protocol.decode_image("data:image/png;base64," + _png(img)), img)
    assert protocol.decode_image(_png(img, "JPEG")).shape == (20, 30, 3)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros((20, 20, 3), np.float32), "dtype uint8"),
        (np.zeros((20, 20), np.uint8), "HxWx3"),
        (np.zeros((20, 20, 4), np.uint8), "HxWx3"),
        (np.zeros((3000, 10, 3), np.uint8), "exceeds the limit"),
        (np.zeros((2, 2, 3), np.uint8), "smaller than"),
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"GIF89a....").decode(), "PNG or JPEG"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(), "could not be decoded"),
        (12, "must be"),
    ],
)
def test_bad_images_are_refused_with_a_reason(value, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.decode_image(value)


def test_png_size_is_checked_before_decoding_the_pixels():
    big = _png(np.zeros((40, 4000, 3), np.uint8))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        protocol.decode_image(big, Limits(max_image_side=1000))


def test_instruction_unnorm_key_and_edit_validation():
    assert protocol.validate_instruction("pick up the cup") == "pick up the cup"
    for bad in ("", "   ", "a\x00b", "x" * 5000, 3):
        with pytest.raises(ProtocolError):
            protocol.validate_instruction(bad)
    assert protocol.validate_unnorm_key(None, ["a"]) is None
    with pytest.raises(ProtocolError, match="unknown unnorm_key"):
        protocol.validate_unnorm_key("b", ["a"])
    assert protocol.validate_edit({"plan": "go", "move": "", "visible_objects": [["cup", [1, 2, 3, 4]]]}) == {
        "plan": "go", "visible_objects": [("cup", [1, 2, 3, 4])]}  # fmt: skip
    assert protocol.validate_edit({}) == {}
    for bad in ({"bogus": "x"}, {"plan": 3}, {"visible_objects": [["cup", [1, 2, 3]]]}, "plan"):
        with pytest.raises(ProtocolError):
            protocol.validate_edit(bad)


def test_reasoning_dict_of_a_step_without_reasoning_has_every_field_empty():
    from ecot.reasoning import Reasoning

    empty = protocol.reasoning_dict(None)
    assert empty == protocol.reasoning_dict(Reasoning())
    assert set(empty) == set(protocol.REASONING_FIELDS)
