"""ecot.io: atomic writes leave the old file or the new one, PNG round trip, decode errors, LRU cache."""

import numpy as np
import pytest

from ecot.io import LRUCache, atomic_path, decode_image, encode_png, write_atomic, write_dir_atomically


def test_write_atomic_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["f.json"]
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_write_dir_atomically(tmp_path):
    dest = tmp_path / "ckpt"
    write_dir_atomically(dest, lambda d: (d / "a").write_text("1"))
    with pytest.raises(ValueError):
        write_dir_atomically(dest, lambda d: ((d / "a").write_text("2"), (_ for _ in ()).throw(ValueError("boom"))))
    assert (dest / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    write_dir_atomically(dest, lambda d: (d / "b").write_text("3"))
    assert sorted(p.name for p in dest.iterdir()) == ["b"]


def test_png_round_trip_and_clear_decode_error():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = encode_png(image)
    np.testing.assert_array_equal(decode_image(data), image)
    with pytest.raises(ValueError, match=r"cannot decode an image in ep\.parquet \(frame 3\)"):
        decode_image(data[: len(data) // 2], source="ep.parquet (frame 3)")


def test_lru_cache_evicts_least_recent_and_pickles_empty():
    import pickle

    evicted = []
    cache = LRUCache(2, on_evict=evicted.append)
    assert cache.get("a", lambda: 1) == 1 and cache.get("b", lambda: 2) == 2
    assert cache.get("a", lambda: 99) == 1  # cached; "a" is now the most recent
    cache.get("c", lambda: 3)
    assert evicted == [2] and "b" not in cache and len(cache) == 2
    assert len(pickle.loads(pickle.dumps(LRUCache(3)))) == 0
