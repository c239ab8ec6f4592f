"""The RANSAC projection fit recovers a known camera from noisy points with outliers."""

from __future__ import annotations

import numpy as np
import pytest

from ecot.annotate.projection import fit_projection, project


def look_at_camera(f=200.0, c=(128.0, 128.0), eye=(0.6, 0.0, 0.5), target=(0.0, 0.0, 0.05)):
    eye, target = np.array(eye), np.array(target)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    k = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]])
    return k @ np.concatenate([r, -(r @ eye)[:, None]], axis=1)


def test_recovers_camera_with_noise_and_outliers():
    rng = np.random.default_rng(1)
    p_true = look_at_camera()
    xyz = rng.uniform([-0.2, -0.2, 0.0], [0.2, 0.2, 0.3], size=(120, 3))
    uv_true = project(p_true, xyz)
    uv = uv_true + rng.normal(0, 1.0, size=uv_true.shape)
    outliers = rng.choice(120, size=30, replace=False)
    uv[outliers] = rng.uniform(0, 256, size=(30, 2))
    missing = rng.choice(np.setdiff1d(np.arange(120), outliers), size=15, replace=False)
    uv[missing] = np.nan

    fit = fit_projection(xyz, uv, threshold_px=4.0)
    err = np.linalg.norm(fit.project(xyz) - uv_true, axis=1)
    assert err.max() < 2.0, err.max()  # every frame, detected or not, lands near the truth
    far = np.linalg.norm(uv[outliers] - uv_true[outliers], axis=1) > 8
    assert not fit.inliers[outliers[far]].any()  # gross outliers rejected
    assert not fit.inliers[missing].any()
    assert fit.rmse < 2.0


def test_plain_least_squares_is_worse_than_ransac():
    """Guard that the test data really needs the robust fit."""
    from ecot.annotate.projection import dlt

    rng = np.random.default_rng(2)
    p_true = look_at_camera()
    xyz = rng.uniform([-0.2, -0.2, 0.0], [0.2, 0.2, 0.3], size=(60, 3))
    uv_true = project(p_true, xyz)
    uv = uv_true.copy()
    uv[:15] = rng.uniform(0, 256, size=(15, 2))
    naive = np.linalg.norm(project(dlt(xyz, uv), xyz) - uv_true, axis=1).max()
    robust = np.linalg.norm(fit_projection(xyz, uv).project(xyz) - uv_true, axis=1).max()
    assert robust < 1.0 < naive


def test_too_few_points_is_a_clear_error():
    xyz = np.zeros((10, 3))
    uv = np.full((10, 2), np.nan)
    uv[:4] = 1.0
    with pytest.raises(ValueError, match="at least 6"):
        fit_projection(xyz, uv)
