"""The resumable sampler and image augmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from ecot.train.augment import augment_image
from ecot.train.sampler import ResumableSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_resume_continues_the_same_stream():
    full = take(ResumableSampler(10, seed=3), 35)
    resumed = take(ResumableSampler(10, seed=3, start=17), 18)
    assert resumed == full[17:]


def test_each_epoch_is_a_permutation_and_epochs_differ():
    keys = take(ResumableSampler(10, seed=3), 30)
    epochs = [[k[0] for k in keys[i : i + 10]] for i in (0, 10, 20)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert [k[2] for k in keys] == list(range(30))  # positions
    assert len({k[1] for k in keys}) == 30  # distinct per-sample seeds


def test_ranks_split_an_epoch():
    a = [k[0] for k in take(ResumableSampler(11, seed=1, rank=0, world_size=2), 6)]
    b = [k[0] for k in take(ResumableSampler(11, seed=1, rank=1, world_size=2), 6)]
    assert set(a) | set(b) == set(range(11))  # all covered; one wrapped duplicate pads the odd count
    assert len(set(a) & set(b)) <= 1


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="0 training steps"):
        ResumableSampler(0)
    with pytest.raises(ValueError, match="rank 2"):
        ResumableSampler(5, rank=2, world_size=2)


def test_augmentation_is_seeded_and_keeps_size():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    a = augment_image(image, np.random.default_rng(5))
    b = augment_image(image, np.random.default_rng(5))
    c = augment_image(image, np.random.default_rng(6))
    assert a.size == image.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert not np.array_equal(np.asarray(a), np.asarray(image))
