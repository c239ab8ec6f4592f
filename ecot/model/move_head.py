"""The move head: a small classifier that chooses the chain's MOVE from the locator's findings.

Why it exists (docs/quality.md, round fourteen): with the locator's findings as its only view of the
scene, a policy trained on the demo's budget acts on a consistent chain (with the scripted expert's
MOVE written into MOVE and MOVE REASONING it succeeds about as often as the expert), but the language
model does not learn in that budget to turn the findings' numbers into the right MOVE. A 2-layer MLP
on the same numbers learns it in seconds. The head reads

* the box of the object the instruction names (the found object whose name words best match the
  instruction's), the gripper's point, and their offset, in the chain's pixel frame, and
* which of the training instructions' other words (e.g. "left", "push") the instruction holds,

and classifies the MOVE among those of the training chains. It is trained after the locator's
pre-training on the annotations' boxes, gripper points and MOVEs (``ecot train --move-head``). At run
time :class:`ecot.policy.ECoTPolicy` writes its MOVE into the chain, and restates MOVE REASONING to
name it, as an edit would (``ECoTPolicy.edit(move=...)``); the language model writes everything else
and the action. A checkpoint has one when its ``config.json`` holds an ``ecot_move_head`` entry.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ecot.model.locator import PRESENT_THRESHOLD, instruction_object

CONFIG_KEY = "ecot_move_head"
GEOMETRY_FEATURES = 8  # box centre x, y, width, height; gripper x, y; gripper minus centre x, y


def instruction_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", str(text).lower())


@dataclass
class MoveHeadSpec:
    """What a checkpoint's ``config.json`` says about its move head (key ``ecot_move_head``)."""

    moves: list[str]  # the MOVE classes (every MOVE of the training chains)
    words: list[str]  # instruction words it reads, other than object names' words
    object_words: list[str]  # the locator's name words, in its order (they pick the named object)
    frame_size: int  # side of the chain's pixel frame
    hidden: int = 256

    def __post_init__(self) -> None:
        problems = []
        if len(self.moves) < 2 or len(set(self.moves)) != len(self.moves):
            problems.append(f"moves must list at least two distinct MOVEs, got {self.moves!r}")
        if not self.object_words:
            problems.append("object_words must not be empty")
        for name in ("frame_size", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise ValueError(f"invalid {CONFIG_KEY} entry: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MoveHeadSpec":
        if not isinstance(data, Mapping):
            raise ValueError(f"{CONFIG_KEY} must be an object, got {type(data).__name__}")
        missing = sorted({"moves", "words", "object_words", "frame_size"} - set(data))
        if missing:
            raise ValueError(f"{CONFIG_KEY} lacks {missing}")
        return cls(**{k: data[k] for k in ("moves", "words", "object_words", "frame_size", "hidden") if k in data})


class MoveHead(nn.Module):
    def __init__(self, spec: MoveHeadSpec):
        super().__init__()
        self.spec = spec
        self.net = nn.Sequential(nn.Linear(GEOMETRY_FEATURES + len(spec.words), spec.hidden), nn.ReLU(),
                                 nn.Linear(spec.hidden, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, len(spec.moves)))

    def features(self, boxes: torch.Tensor, scores: torch.Tensor, word_probs: torch.Tensor, gripper: torch.Tensor,
                 instructions: Sequence[str], named: Sequence[int | None] | None = None) -> torch.Tensor:
        """``[B, GEOMETRY_FEATURES + len(words)]`` from found objects (``boxes`` [B, M, 4] and ``word_probs``
        [B, M, len(object_words)] in the chain's frame, centre ``scores`` [B, M], or a bool mask of the present
        ones), ``gripper`` [B, 2] and the instructions. Without any found object the box is the gripper's point.
        ``named``: each sample's instruction object already chosen (a policy's tracked choice), instead of
        :func:`~ecot.model.locator.instruction_object`'s choice here."""
        half = self.spec.frame_size / 2.0
        rows = []
        for b, text in enumerate(instructions):
            said = instruction_words(text)
            chosen = (instruction_object(word_probs[b], scores[b], self.spec.object_words, text) if named is None
                      else named[b])
            present = scores[b].float() > PRESENT_THRESHOLD
            if chosen is None and bool(present.any()):  # no name word said: the first found object
                chosen = int(present.float().argmax())
            gx, gy = (float(v) for v in gripper[b])
            if chosen is not None:
                x0, y0, x1, y1 = (float(v) for v in boxes[b, chosen])
            else:
                x0, y0, x1, y1 = gx, gy, gx, gy
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            geometry = [cx / half - 1, cy / half - 1, (x1 - x0) / half, (y1 - y0) / half, gx / half - 1,
                        gy / half - 1, (gx - cx) / half, (gy - cy) / half]
            rows.append(geometry + [1.0 if w in said else 0.0 for w in self.spec.words])
        return torch.tensor(rows, dtype=self.net[0].weight.dtype, device=self.net[0].weight.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    @torch.no_grad()
    def choose(self, findings: Any, instructions: Sequence[str], named: Sequence[int | None] | None = None) -> list[str]:
        """The MOVE of each sample from the locator's :class:`~ecot.model.locator.Findings` (``named``: as in
        :meth:`features`)."""
        x = self.features(findings.boxes.float().cpu(), findings.scores.float().cpu(), findings.word_probs.float().cpu(),
                          findings.gripper.float().cpu(), instructions, named)
        return [self.spec.moves[int(i)] for i in self(x).argmax(-1)]


def build_spec(moves: Sequence[str], instructions: Sequence[str], object_words: Sequence[str],
               frame_size: int) -> MoveHeadSpec:
    """A :class:`MoveHeadSpec` for the training chains' ``moves`` and ``instructions``."""
    objects = list(object_words)
    words = sorted({w for text in instructions for w in instruction_words(text)} - set(objects))
    return MoveHeadSpec(moves=sorted(set(moves)), words=words, object_words=objects, frame_size=int(frame_size))
