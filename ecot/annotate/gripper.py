"""Gripper points: the gripper's pixel in every frame.

Backends:
- ``gt``: the simulator's ground truth (``Episode.ground_truth.gripper_points``).
- ``detector``: an open-vocabulary detector (transformers OWLv2 / OWL-ViT) finds the gripper,
  SAM segments it inside the box, the mask's centroid is the noisy point; then the robust
  projection fit (:mod:`ecot.annotate.projection`) maps proprio xyz to pixels for every frame,
  which rejects wrong detections and fills frames without one. The fit is separate from the
  detector (:func:`points_from_detections`), so any backend's noisy points can use it.

Weights are downloaded on the user's machine (Hugging Face hub ids); nothing here downloads
at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecot.annotate.projection import MIN_POINTS, fit_projection
from ecot.data.episode import Episode


class MissingGroundTruth(ValueError):
    pass


def require_ground_truth(episode: Episode, stage: str):
    if episode.ground_truth is None:
        raise MissingGroundTruth(
            f"the '{stage}' stage uses the 'gt' backend, but episode {episode.file_path!r}/{episode.episode_id!r} "
            "has no ground truth (only sim data has it); choose a model backend for this dataset"
        )
    return episode.ground_truth


class GroundTruthGripper:
    name = "gt"

    def points(self, episode: Episode) -> np.ndarray:
        return require_ground_truth(episode, "gripper").gripper_points.astype(np.float64)


def points_from_detections(
    states: np.ndarray, detections: np.ndarray, threshold_px: float = 6.0, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Gripper pixels for every step from noisy per-step detections (NaN where none).

    Returns the points and a small report (inlier count, rmse). With fewer than 6 detections
    no projection can be fitted: the raw detections are returned and the report says so.
    """
    detected = int(np.isfinite(detections).all(axis=1).sum())
    if detected < MIN_POINTS:
        return np.asarray(detections, dtype=np.float64), {"fit": False, "detected": detected}
    fit = fit_projection(np.asarray(states)[:, :3], detections, threshold_px=threshold_px, seed=seed)
    return fit.project(np.asarray(states)[:, :3]), {
        "fit": True,
        "detected": detected,
        "inliers": int(fit.inliers.sum()),
        "rmse_px": round(fit.rmse, 3),
    }


@dataclass
class DetectorGripperConfig:
    detector: str = "google/owlv2-base-patch16-ensemble"
    segmenter: str | None = "facebook/sam-vit-base"  # None: use the box centre
    query: str = "a robot gripper"
    score_threshold: float = 0.1
    fit_threshold_px: float = 6.0
    batch_size: int = 8
    device: str = "cpu"


class DetectorGripper:
    """OWLv2 (or OWL-ViT) + SAM + projection fit. Models may be injected (tests, custom weights)."""

    name = "detector"

    def __init__(self, config: DetectorGripperConfig | None = None, *, detector=None, detector_processor=None,
                 segmenter=None, segmenter_processor=None):
        self.config = config or DetectorGripperConfig()
        self.detector, self.detector_processor = detector, detector_processor
        self.segmenter, self.segmenter_processor = segmenter, segmenter_processor

    def _load(self) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if self.detector is None:
            self.detector = AutoModelForZeroShotObjectDetection.from_pretrained(self.config.detector).to(self.config.device).eval()
            self.detector_processor = AutoProcessor.from_pretrained(self.config.detector)
        if self.segmenter is None and self.config.segmenter:
            from transformers import SamModel, SamProcessor

            self.segmenter = SamModel.from_pretrained(self.config.segmenter).to(self.config.device).eval()
            self.segmenter_processor = SamProcessor.from_pretrained(self.config.segmenter)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """The gripper's pixel in one image, NaN when nothing scores above the threshold."""
        return self.detect_batch(image[None])[0]

    def detect_batch(self, images: np.ndarray) -> np.ndarray:
        """[B, 2] gripper pixels of a batch of images (rows of NaN where nothing was detected)."""
        import torch
        from PIL import Image

        self._load()
        pils = [Image.fromarray(img) for img in images]
        h, w = images.shape[1:3]
        inputs = self.detector_processor(text=[[self.config.query]] * len(pils), images=pils, return_tensors="pt")
        with torch.no_grad():
            outputs = self.detector(**inputs.to(self.config.device))
        results = self.detector_processor.post_process_grounded_object_detection(
            outputs, threshold=self.config.score_threshold, target_sizes=[(h, w)] * len(pils)
        )
        points = np.full((len(pils), 2), np.nan)
        boxes: dict[int, list[float]] = {}
        for i, result in enumerate(results):
            if len(result["scores"]):
                box = result["boxes"][int(result["scores"].argmax())].tolist()
                boxes[i] = box
                points[i] = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]  # box centre unless SAM refines it
        if self.segmenter is None or not boxes:
            return points
        found = sorted(boxes)
        sam_in = self.segmenter_processor(images=[pils[i] for i in found], input_boxes=[[boxes[i]] for i in found],
                                          return_tensors="pt")
        with torch.no_grad():
            sam_out = self.segmenter(**sam_in.to(self.config.device))
        masks = self.segmenter_processor.post_process_masks(
            sam_out.pred_masks.cpu(), sam_in["original_sizes"].cpu(), sam_in["reshaped_input_sizes"].cpu()
        )
        for j, i in enumerate(found):
            best = int(sam_out.iou_scores[j, 0].argmax())
            ys, xs = np.nonzero(masks[j][0, best].numpy())  # the one box's best mask
            if len(xs):
                points[i] = [xs.mean(), ys.mean()]
        return points

    def points(self, episode: Episode) -> np.ndarray:
        b = max(1, self.config.batch_size)
        detections = np.concatenate([self.detect_batch(episode.images[i : i + b]) for i in range(0, len(episode), b)])
        points, self.last_report = points_from_detections(episode.states, detections, self.config.fit_threshold_px)
        return points


def make_gripper_backend(name: str, **kwargs: Any):
    if name == "gt":
        return GroundTruthGripper()
    if name == "detector":
        return DetectorGripper(DetectorGripperConfig(**kwargs))
    raise ValueError(f"unknown gripper backend {name!r}; expected 'gt' or 'detector'")
