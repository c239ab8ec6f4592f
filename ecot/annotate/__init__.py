"""Annotation: embodied features and reasoning for any robot dataset.

Stages (one module each, pluggable backends):

- :mod:`ecot.annotate.primitives` — move primitives from proprioception (exact original semantics).
- :mod:`ecot.annotate.gripper` — gripper pixel per step: ground truth, or detector + SAM + the
  RANSAC projection fit of :mod:`ecot.annotate.projection`.
- :mod:`ecot.annotate.boxes` — object boxes: ground truth, or Grounding DINO.
- :mod:`ecot.annotate.captions` — captions / object phrases: ground truth, transformers, chat LLM.
- :mod:`ecot.annotate.template` / :mod:`ecot.annotate.llm_reasoning` — the per-step reasoning.
- :mod:`ecot.annotate.pipeline` — one episode through all stages; :mod:`ecot.annotate.runner` —
  the resumable, sharded, parallel (processes or Ray) run over a dataset, on top of
  :mod:`ecot.annotate.workdir` (atomic per-episode results) and :mod:`ecot.annotate.assemble`
  (the deterministic features file, step columns and report); :mod:`ecot.annotate.validate` —
  the coverage / consistency checks; :mod:`ecot.annotate.cli` — ``ecot annotate``.

Nothing heavy is imported here.
"""

from ecot.annotate.primitives import label_trajectory

__all__ = ["label_trajectory"]
