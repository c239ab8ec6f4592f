"""RLDS without TensorFlow: TFRecord framing, tf.train.Example codec, and the RLDS/TFDS reader."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.data import open_dataset
from ecot.data.lerobot import LeRobotWriter
from ecot.data.rlds import RLDSDataset, write_rlds
from ecot.data.tfrecord import (
    TFRecordError,
    crc32c,
    index_records,
    iter_records,
    masked_crc32c,
    parse_example,
    read_record,
    serialize_example,
    write_records,
)


def _example_classes():
    """The real tf.train.Example messages, built with the protobuf library from their .proto definition."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="ecot_test_example.proto", package="tensorflow", syntax="proto3")
    L, T = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto

    def msg(name, fields, nested=()):
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name
            if packed is not None:
                fd.options.packed = packed
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        return m

    rep, opt = L.LABEL_REPEATED, L.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, T.TYPE_BYTES, rep, None, None)])
    msg("FloatList", [("value", 1, T.TYPE_FLOAT, rep, None, True)])
    msg("Int64List", [("value", 1, T.TYPE_INT64, rep, None, True)])
    msg("Feature", [("bytes_list", 1, T.TYPE_MESSAGE, opt, ".tensorflow.BytesList", None),
                    ("float_list", 2, T.TYPE_MESSAGE, opt, ".tensorflow.FloatList", None),
                    ("int64_list", 3, T.TYPE_MESSAGE, opt, ".tensorflow.Int64List", None)])
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    msg("Features", [("feature", 1, T.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None)], nested=[entry])
    msg("Example", [("features", 1, T.TYPE_MESSAGE, opt, ".tensorflow.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    descriptor = pool.FindMessageTypeByName("tensorflow.Example")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


Example = _example_classes()


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # The masked CRC of an 8-byte zero length header, as TensorFlow writes it.
    assert masked_crc32c(struct.pack("<Q", 0)) == ((((crc32c(b"\0" * 8) >> 15) | (crc32c(b"\0" * 8) << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


features_strategy = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.one_of(
        st.lists(st.binary(max_size=30), max_size=5),
        st.lists(st.floats(width=32, allow_nan=False), max_size=20).map(lambda v: np.asarray(v, np.float32)),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20).map(lambda v: np.asarray(v, np.int64)),
    ),
    max_size=6,
)


def _same(a, b):
    if isinstance(a, list):
        return isinstance(b, list) and a == b or (len(a) == 0 and len(b) == 0)
    return len(b) == len(a) and np.array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=80, deadline=None)
@given(features_strategy)
def test_example_round_trip_and_agreement_with_protobuf(features):
    data = serialize_example(features)
    parsed = parse_example(data)
    assert set(parsed) == set(features)
    for key, value in features.items():
        assert _same(value, parsed[key]), key
    # The real protobuf library reads what we write, and we read what it writes.
    msg = Example.FromString(data)
    assert set(msg.features.feature) == set(features)
    for key, value in features.items():
        feat = msg.features.feature[key]
        if isinstance(value, list):
            assert list(feat.bytes_list.value) == value
        elif value.dtype == np.float32:
            np.testing.assert_array_equal(np.asarray(feat.float_list.value, np.float32), value)
        else:
            assert list(feat.int64_list.value) == value.tolist()
    again = parse_example(msg.SerializeToString())
    for key, value in features.items():
        assert _same(value, again[key]), key


def test_parse_unpacked_repeated_fields():
    """Writers may emit non-packed floats/ints; the wire format allows both."""
    def varint(v):
        out = bytearray()
        v &= (1 << 64) - 1
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    def ld(field, payload):
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    floats = b"".join(varint(1 << 3 | 5) + struct.pack("<f", x) for x in (1.5, -2.0))
    ints = b"".join(varint(1 << 3 | 0) + varint(x) for x in (3, -4))
    entries = ld(1, ld(1, b"f") + ld(2, ld(2, floats))) + ld(1, ld(1, b"i") + ld(2, ld(3, ints)))
    parsed = parse_example(ld(1, entries))
    np.testing.assert_array_equal(parsed["f"], [1.5, -2.0])
    np.testing.assert_array_equal(parsed["i"], [3, -4])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_tfrecord_framing_round_trip(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("tfr") / "x.tfrecord"
    assert write_records(path, records) == len(records)
    assert list(iter_records(path, verify=True)) == records
    index = index_records(path)
    assert [read_record(path, off, n, verify=True) for off, n in index] == records


def test_tfrecord_corruption_is_detected(tmp_path):
    path = tmp_path / "x.tfrecord"
    write_records(path, [b"hello world", b"second"])
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "bad_len.tfrecord"
    bad.write_bytes(bytes([raw[0] ^ 1]) + bytes(raw[1:]))
    with pytest.raises(TFRecordError, match="bad length checksum"):
        index_records(bad)
    bad_data = tmp_path / "bad_data.tfrecord"
    flipped = bytearray(raw)
    flipped[13] ^= 0xFF
    bad_data.write_bytes(bytes(flipped))
    with pytest.raises(TFRecordError, match="bad data checksum"):
        list(iter_records(bad_data, verify=True))
    short = tmp_path / "short.tfrecord"
    short.write_bytes(bytes(raw[:-3]))
    with pytest.raises(TFRecordError, match="truncated"):
        index_records(short)


# --------------------------------------------------------------------------- RLDS directory


def _make_episodes(n=3, size=12, seed=0):
    from ecot.data.episode import Episode

    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        t = 4 + i
        states = np.cumsum(rng.normal(0, 0.02, (t, 7)), 0).astype(np.float32)
        states[:, 6] = rng.random(t)
        eps.append(Episode(
            images=rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
            states=states,
            actions=np.concatenate([rng.normal(0, 0.02, (t, 6)), rng.random((t, 1))], 1).astype(np.float32),
            instruction=f"put the carrot {i} on the plate",
            metadata={"file_path": f"/raw/bridge/traj_group{i}/raw/traj{i}", "episode_id": str(10 + i)},
        ))
    return eps


@pytest.fixture()
def rlds_dir(tmp_path):
    eps = _make_episodes()
    root = write_rlds(tmp_path, eps, name="bridge_orig", version="1.0.0", num_shards=2, image_format="png")
    return tmp_path / "bridge_orig", root, eps


def test_rlds_directory_in_the_real_layout(rlds_dir):
    dataset_dir, version_dir, eps = rlds_dir
    assert version_dir == dataset_dir / "1.0.0"
    shards = sorted(p.name for p in version_dir.glob("*.tfrecord-*"))
    assert shards == ["bridge_orig-train.tfrecord-00000-of-00002", "bridge_orig-train.tfrecord-00001-of-00002"]
    info = json.loads((version_dir / "dataset_info.json").read_text())
    assert info["name"] == "bridge_orig" and sum(int(n) for n in info["splits"][0]["shardLengths"]) == 3
    features = json.loads((version_dir / "features.json").read_text())
    step = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    assert step["observation"]["featuresDict"]["features"]["image_0"]["image"]["encodingFormat"] == "png"
    # One record per episode; per-step features concatenated over the steps.
    record = next(iter_records(version_dir / shards[0], verify=True))
    msg = Example.FromString(record)
    keys = set(msg.features.feature)
    assert {"steps/observation/image_0", "steps/observation/state", "steps/action", "steps/language_instruction",
            "steps/is_first", "steps/is_last", "steps/is_terminal", "episode_metadata/file_path",
            "episode_metadata/episode_id"} <= keys
    assert len(msg.features.feature["steps/action"].float_list.value) == 7 * len(eps[0])
    assert list(msg.features.feature["steps/is_first"].int64_list.value) == [1] + [0] * (len(eps[0]) - 1)


def test_rlds_reader_yields_the_episode_schema(rlds_dir):
    dataset_dir, version_dir, eps = rlds_dir
    ds = open_dataset(dataset_dir)  # finds the version folder
    assert isinstance(ds, RLDSDataset) and len(ds) == 3 and ds.root == version_dir and ds.fps == 5
    for i, ep in enumerate(eps):
        got = ds[i]
        np.testing.assert_array_equal(got.images, ep.images)
        np.testing.assert_array_equal(got.states, ep.states)
        np.testing.assert_array_equal(got.actions, ep.actions)
        assert got.instruction == ep.instruction
        assert got.file_path == ep.file_path and got.episode_id == ep.episode_id
        assert ds.episode_length(i) == len(ep)
        step = ds.step(i, 2)
        np.testing.assert_array_equal(step.image, ep.images[2])
        np.testing.assert_array_equal(step.action, ep.actions[2])
        assert step.file_path == ep.file_path
    stats = ds.norm_stats
    assert stats.keys() == ["bridge_orig"]
    assert list(stats["bridge_orig"].action.effective_mask) == [True] * 6 + [False]
    assert stats["bridge_orig"].num_trajectories == 3
    with pytest.raises(IndexError):
        ds[3]


def test_rlds_and_lerobot_readers_agree(rlds_dir, tmp_path):
    _, version_dir, eps = rlds_dir
    with LeRobotWriter(tmp_path / "lr", dataset_name="bridge_orig") as w:
        for ep in eps:
            w.add_episode(ep)
    a, b = open_dataset(version_dir), open_dataset(tmp_path / "lr")
    for i in range(3):
        x, y = a[i], b[i]
        for name in ("images", "states", "actions"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        assert (x.instruction, x.file_path, x.episode_id) == (y.instruction, y.file_path, y.episode_id)
        assert x.images.dtype == y.images.dtype == np.uint8


def test_rlds_bridge_transform_option(rlds_dir):
    from ecot.data.bridge import bridge_transform

    _, version_dir, eps = rlds_dir
    ds = RLDSDataset(version_dir, bridge_transform=True)
    for i, ep in enumerate(eps):
        got, want = ds[i], bridge_transform(ep)
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_allclose(got.actions, want.actions, atol=1e-7)
        assert ds.episode_length(i) == len(ep) - 2
        np.testing.assert_allclose(ds.step(i, 0).action, want.actions[0], atol=1e-7)
        assert ds.step(i, 0).raw_step_offset == 1 and got.metadata["raw_step_offset"] == 1


def test_rlds_jpeg_images_and_errors(tmp_path):
    eps = _make_episodes(n=1, size=32)
    root = write_rlds(tmp_path, eps, name="jpg", image_format="jpeg")
    got = open_dataset(root)[0]
    assert got.images.shape == eps[0].images.shape  # lossy, same shape
    with pytest.raises(FileNotFoundError, match="no 'val' shards"):
        RLDSDataset(root, split="val")
    with pytest.raises(ValueError, match="'steps/missing' is missing"):
        RLDSDataset(root, action_key="steps/missing")[0]
    with pytest.raises(ValueError, match="no image feature"):
        RLDSDataset(root, image_key=None)._resolve_keys({"steps/action": np.zeros(7, np.float32)}, root)
