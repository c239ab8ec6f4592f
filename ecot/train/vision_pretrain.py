"""Vision pre-training on a sim dataset's ground truth, before a from-scratch VLA trains.

A released ECoT policy starts from a pretrained SigLIP that already sees colours, shapes and
where things are. A tiny tower trained from scratch learns to see only through the language loss,
and in a CPU budget it does not learn to bind a name to its object (docs/quality.md: the policy
writes the instructed object's name on the other object's box, then drives to it). This stage
trains the tower alone, briefly, on what the sim's ground truth gives for free:

* per patch, how much of it each word of the object names covers ("red", "block", ...: the area
  fraction of the patch inside boxes of objects whose name has that word), and the gripper;
* per image, the gripper's 3-D position and opening (the proprio state, normalized).

The heads are thrown away; the tower's weights start the VLA training. Only episodes with ground
truth (sim data) can be used, only the run's training episodes are (held-out ones stay unseen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ecot.model.locator import name_words  # noqa: F401 - also this module's API
from ecot.train.pretrain_stage import load_cached, optimize, save_cached

CACHE_NAME = "vision_pretrain.pt"  # in the run directory: a restarted run does not pre-train again
GRIPPER_HALF_PX = 4.0  # the gripper target: a square of this half-size around its point (image pixels)


@dataclass
class VisionPretrainConfig:
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    max_frames: int = 6000  # frames drawn from the training episodes (evenly over episodes)
    max_pos_weight: float = 20.0  # cap on the weight of covered (patch, word) pairs
    seed: int = 0


def _coverage(boxes: np.ndarray, grid: int, cell: float) -> np.ndarray:
    """Fraction of each grid cell covered by each box: ``[K, grid, grid]`` (boxes in model pixels)."""
    edges = np.arange(grid + 1, dtype=np.float32) * cell
    lo, hi = edges[:-1], edges[1:]
    x = np.clip(np.minimum(hi[None], boxes[:, 2:3]) - np.maximum(lo[None], boxes[:, 0:1]), 0, None) / cell  # [K, g]
    y = np.clip(np.minimum(hi[None], boxes[:, 3:4]) - np.maximum(lo[None], boxes[:, 1:2]), 0, None) / cell
    return y[:, :, None] * x[:, None, :]


def patch_targets(gt: Any, t: int, words: list[str], image_hw: tuple[int, int], model_size: int,
                  grid: int) -> np.ndarray:
    """Per-patch targets ``[grid*grid, len(words) + 1]`` of frame ``t``: word coverage, then the gripper."""
    h, w = image_hw
    scale = np.array([model_size / w, model_size / h] * 2, np.float32)
    cell = model_size / grid
    out = np.zeros((len(words) + 1, grid, grid), np.float32)
    visible = np.asarray(gt.object_visible[t], bool)
    if visible.any():
        boxes = np.asarray(gt.object_boxes[t], np.float32)[visible] * scale
        cover = _coverage(boxes, grid, cell)
        names = [n for n, v in zip(gt.object_names, visible) if v]
        for k, name in enumerate(names):
            for word in str(name).lower().split():
                if word in words:
                    i = words.index(word)
                    out[i] = np.maximum(out[i], cover[k])
    if bool(gt.gripper_visible[t]):
        x, y = np.asarray(gt.gripper_points[t], np.float32) * scale[:2]
        r = GRIPPER_HALF_PX * scale[0]
        out[-1] = _coverage(np.array([[x - r, y - r, x + r, y + r]], np.float32), grid, cell)[0] * (cell / (2 * r)) ** 2
        out[-1] = np.clip(out[-1], 0, 1)
    return out.reshape(len(words) + 1, grid * grid).T


class _Heads(nn.Module):
    def __init__(self, dim: int, n_patch: int, n_global: int):
        super().__init__()
        self.patch = nn.Linear(dim, n_patch)
        self.glob = nn.Linear(dim, n_global)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.patch(features), self.glob(features.mean(dim=1))


@torch.no_grad()
def _check(tower: nn.Module, heads: _Heads, pixels: torch.Tensor, targets: torch.Tensor) -> dict:
    """On frames the stage did not train on: of the (patch, word) pairs at least half covered, the
    share predicted present (``check_recall``); of the uncovered ones, the share predicted present
    (``check_false_rate``); the gripper separately."""
    tower.eval()
    present = torch.cat([heads(tower(pixels[i : i + 64]))[0] for i in range(0, len(pixels), 64)]).sigmoid() > 0.5
    tower.train()
    covered, empty = targets >= 0.5, targets == 0
    figures = {}
    for name, cols in (("", slice(0, -1)), ("_gripper", slice(-1, None))):
        c, e, p = covered[..., cols], empty[..., cols], present[..., cols]
        figures[f"check_recall{name}"] = round(float(p[c].float().mean()), 3) if c.any() else None
        figures[f"check_false_rate{name}"] = round(float(p[e].float().mean()), 4) if e.any() else None
    return figures


def _frames(dataset: Any, episodes: Sequence[int], max_frames: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    pairs = [(e, t) for e in episodes for t in range(dataset.episode_length(e))]
    if len(pairs) > max_frames:
        keep = np.sort(rng.choice(len(pairs), size=max_frames, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def pretrain_vision(model: Any, processor: Any, dataset: Any, episodes: Sequence[int], run_dir: str | Path,
                    config: VisionPretrainConfig | None = None, progress: bool = True) -> dict:
    """Train ``model.vision_backbone`` on the ground truth of ``episodes``; the weights stay in the model.

    Writes ``run_dir/vision_pretrain.pt`` (the tower's weights and the figures) and the figures as
    ``vision_pretrain.json``; when the ``.pt`` exists the tower is loaded from it instead. Returns
    the figures: first and last losses, what the tower sees on frames it did not train on, seconds."""
    cfg = config or VisionPretrainConfig()
    tower = model.vision_backbone
    cache = Path(run_dir) / CACHE_NAME
    cached = load_cached(cache, tower, "vision_backbone")
    if cached is not None:
        return cached
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not len(episodes):
        raise ValueError("vision pre-training needs episodes with ground truth (a dataset from `ecot sim collect`)")
    pairs = _frames(dataset, episodes, cfg.max_frames, rng)
    grid = tower.featurizer.grid
    size = tower.featurizer.image_size
    from tqdm.auto import tqdm

    pixels, frames, glob_t = [], [], []
    by_episode: dict[int, list[int]] = {}
    for e, t in pairs:
        by_episode.setdefault(e, []).append(t)
    for e, ts in tqdm(by_episode.items(), desc="vision pre-training: frames", disable=not progress):
        ep = dataset.episode(e)
        if ep.ground_truth is None:
            raise ValueError(f"episode {e} has no ground truth: vision pre-training needs sim episodes")
        for t in ts:
            pixels.append(processor.image_transform(ep.images[t]))
            frames.append((ep.ground_truth, t, ep.images.shape[1:3]))
            glob_t.append(np.asarray(ep.states[t], np.float32)[[0, 1, 2, 6]])  # x, y, z, gripper
    words = name_words([n for gt, _, _ in frames for n in gt.object_names])
    patch_t = [patch_targets(gt, t, words, hw, size, grid) for gt, t, hw in frames]
    pixels_t = torch.stack(pixels)
    patch_tt = torch.from_numpy(np.stack(patch_t))
    glob = torch.from_numpy(np.stack(glob_t))
    glob = (glob - glob.mean(0)) / glob.std(0).clamp_min(1e-6)
    # A few frames are kept out of the stage's training to say what the tower learned to see.
    n_check = max(1, len(pixels_t) // 20)
    perm = torch.from_numpy(rng.permutation(len(pixels_t)))
    check = perm[:n_check]
    train = perm[n_check:] if len(pixels_t) > 1 else perm
    heads = _Heads(tower.embed_dim, patch_tt.shape[-1], glob.shape[-1])
    tower.requires_grad_(True)
    covered = patch_tt[train].mean(dim=(0, 1)).clamp_min(1e-4)
    pos_weight = ((1 - covered) / covered).clamp(max=cfg.max_pos_weight)
    tower.train()

    def step_loss() -> torch.Tensor:
        idx = train[torch.from_numpy(rng.integers(0, len(train), size=min(cfg.batch_size, len(train))))]
        patch_logits, glob_pred = heads(tower(pixels_t[idx]))
        # Most (patch, word) pairs are empty: weigh the covered ones up so "nothing anywhere" is no minimum.
        return F.binary_cross_entropy_with_logits(patch_logits, patch_tt[idx], pos_weight=pos_weight) \
            * patch_tt.shape[-1] + F.mse_loss(glob_pred, glob[idx])

    losses = optimize(list(tower.parameters()) + list(heads.parameters()), cfg.steps, cfg.lr, step_loss,
                      "vision pre-training", progress)
    figures = {"steps": cfg.steps, "frames": len(train), "words": words, **losses,
               **_check(tower, heads, pixels_t[check], patch_tt[check]), "seconds": round(time.perf_counter() - start, 1)}
    save_cached(cache, tower, "vision_backbone", figures)
    return figures
