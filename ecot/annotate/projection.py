"""Robust fit of a camera projection from end-effector xyz to image pixels (RANSAC + DLT).

The paper's trick for gripper points: a detector finds the gripper in some frames (noisily,
with outright wrong detections); since the camera is fixed during an episode, one 3×4
projection matrix maps the proprio xyz of every step to its pixel. Fitting it robustly removes
wrong detections and fills frames without any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_POINTS = 6  # a 3x4 projection has 11 degrees of freedom; each point gives 2 equations


@dataclass
class ProjectionFit:
    matrix: np.ndarray  # [3, 4]
    inliers: np.ndarray  # [N] bool over the points used for fitting
    rmse: float  # reprojection error on the inliers, pixels
    model: str = "perspective"  # or "affine"

    def project(self, xyz: np.ndarray) -> np.ndarray:
        return project(self.matrix, xyz)


def project(matrix: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pixels [N, 2] of world points [N, 3] under a 3×4 projection matrix."""
    xyz = np.asarray(xyz, dtype=np.float64)
    h = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1) @ np.asarray(matrix, dtype=np.float64).T
    w = h[:, 2:3]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    return h[:, :2] / w


def _normalizer(points: np.ndarray) -> np.ndarray:
    """Similarity transform moving points to zero mean and mean distance sqrt(dim) (Hartley)."""
    dim = points.shape[1]
    mean = points.mean(axis=0)
    scale = np.sqrt(dim) / max(np.mean(np.linalg.norm(points - mean, axis=1)), 1e-12)
    t = np.eye(dim + 1)
    t[:dim, :dim] *= scale
    t[:dim, dim] = -scale * mean
    return t


def dlt(xyz: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Least-squares 3×4 projection from ≥ 6 correspondences (normalized direct linear transform)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64)
    t3, t2 = _normalizer(xyz), _normalizer(uv)
    xh = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1) @ t3.T
    uh = np.concatenate([uv, np.ones((len(uv), 1))], axis=1) @ t2.T
    n = len(xyz)
    a = np.zeros((2 * n, 12))
    a[0::2, 0:4] = xh
    a[0::2, 8:12] = -uh[:, 0:1] * xh
    a[1::2, 4:8] = xh
    a[1::2, 8:12] = -uh[:, 1:2] * xh
    _, _, vt = np.linalg.svd(a)
    p = vt[-1].reshape(3, 4)
    p = np.linalg.inv(t2) @ p @ t3
    return p / np.linalg.norm(p)


def _degenerate(xyz: np.ndarray, ratio: float = 0.001) -> bool:
    """True when the points are (nearly) coplanar or collinear."""
    s = np.linalg.svd(xyz - xyz.mean(axis=0), compute_uv=False)
    return s[0] <= 0 or s[2] / s[0] < ratio


def fit_affine(xyz: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Least-squares affine camera (a 3×4 projection with last row [0, 0, 0, 1]) from ≥ 4 points."""
    a = np.concatenate([np.asarray(xyz, dtype=np.float64), np.ones((len(xyz), 1))], axis=1)
    m, *_ = np.linalg.lstsq(a, np.asarray(uv, dtype=np.float64), rcond=None)
    return np.concatenate([m.T, [[0.0, 0.0, 0.0, 1.0]]], axis=0)


# (name, sample size, solver). Samples are a little larger than minimal (4 and 6 points): robot
# trajectories are often nearly planar, and exactly-determined fits on near-coplanar points
# amplify noise. The affine camera (8 DOF) is the stable default; the perspective one (11 DOF)
# must win clearly on inliers to be chosen.
MODELS = (("affine", 6, fit_affine), ("perspective", 8, dlt))
PERSPECTIVE_MARGIN = (1.05, 2)  # perspective wins when inliers > 1.05 * affine inliers + 2


def fit_projection(
    xyz: np.ndarray,
    uv: np.ndarray,
    threshold_px: float = 4.0,
    iterations: int = 300,
    seed: int = 0,
) -> ProjectionFit:
    """RANSAC over minimal samples of an affine and a perspective camera, then a least-squares
    refit of the winner on its inliers.

    ``uv`` may hold NaN rows (frames without a detection): they are ignored. Raises ValueError
    when fewer than 6 usable points remain. Deterministic for a given ``seed``.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or uv.shape != (len(xyz), 2):
        raise ValueError(f"need xyz [N, 3] and uv [N, 2] of the same N; got {xyz.shape} and {uv.shape}")
    usable = np.isfinite(uv).all(axis=1) & np.isfinite(xyz).all(axis=1)
    idx = np.flatnonzero(usable)
    if len(idx) < MIN_POINTS:
        raise ValueError(f"projection fit needs at least {MIN_POINTS} detected points, got {len(idx)}")
    x, u = xyz[idx], uv[idx]
    rng = np.random.default_rng(seed)
    results = {}
    for model in MODELS:
        name, size, solve = model
        best_key, best_inl = (-1, 0.0), None
        for _ in range(iterations):
            sample = rng.choice(len(idx), size=size, replace=False)
            if _degenerate(x[sample]):
                continue
            try:
                p = solve(x[sample], u[sample])
            except np.linalg.LinAlgError:
                continue
            err = np.linalg.norm(project(p, x) - u, axis=1)
            inl = err < threshold_px
            count = int(inl.sum())
            key = (count, -float(err[inl].mean()) if count else 0.0)
            if key > best_key:
                best_key, best_inl = key, inl
            if count == len(idx):
                break
        results[name] = (best_key[0], best_inl, model)
    affine, perspective = results["affine"], results["perspective"]
    scale, extra = PERSPECTIVE_MARGIN
    chosen = perspective if perspective[0] > scale * affine[0] + extra else affine
    _, best_inl, best_model = chosen
    if best_inl is None:
        best_inl = np.ones(len(idx), dtype=bool)
    name, size, solve = best_model
    if best_inl.sum() < max(size, MIN_POINTS):
        best_inl = np.ones(len(idx), dtype=bool)  # no consensus: fall back to all points
    p = solve(x[best_inl], u[best_inl])
    for _ in range(2):  # refit on the refit's own inliers
        err = np.linalg.norm(project(p, x) - u, axis=1)
        refined = err < threshold_px
        if refined.sum() < MIN_POINTS or np.array_equal(refined, best_inl):
            break
        best_inl = refined
        p = solve(x[best_inl], u[best_inl])
    err = np.linalg.norm(project(p, x) - u, axis=1)
    inliers = np.zeros(len(xyz), dtype=bool)
    inliers[idx[best_inl]] = True
    return ProjectionFit(matrix=p, inliers=inliers, rmse=float(np.sqrt(np.mean(err[best_inl] ** 2))), model=name)
