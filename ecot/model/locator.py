"""The locator: a small convolutional detector whose findings reach the language model as tokens.

Why it exists (docs/quality.md, rounds three to nine): a tiny ViT and language model trained from
scratch on a CPU learn to write the gripper's pixel point, but never where the objects are. The
tower marks the right patches after pre-training, yet the language model does not learn, in a
CPU budget, to turn "the red block" plus an 8 x 8 patch grid into pixel coordinates written as
digits. The locator takes that read-out off the language model:

* a 4-layer CNN (with coordinate channels) finds object centres, box sizes, the words of each
  object's name ("red", "block", ...) and the gripper's point on a grid of 4-pixel cells
  (CenterNet-style heatmaps with sub-cell offsets);
* its findings enter the language model after the image patches as tokens it only has to copy:
  for each of up to ``max_objects`` objects (left to right), five tokens that all carry the name
  words' token embeddings (weighted by how sure the locator is of each word), four of them also the
  embedding of one box coordinate as the tokenizer writes it; then two tokens for the gripper's
  point. The language model still writes the whole chain and the action itself.
* With ``relations`` on (``ecot train --locator-relations``), each object's tokens also carry its box's
  signed offsets from the gripper's point through a small learned layer (docs/quality.md, round eleven).
* It is trained by its own loss on the annotations' boxes and gripper points (the same numbers
  the chain holds), beside the language-model loss. The coordinates are rounded to token ids, so
  no gradient flows from the language model into the CNN. In training the language model reads
  the annotation's findings (teacher forcing) for some samples and the locator's own for the rest.

The released architectures have no locator; a checkpoint has one when its ``config.json`` holds an
``ecot_locator`` entry (:class:`LocatorSpec`). It needs a tokenizer that writes every coordinate
value as one token (``ecot train --tokenizer-numbers whole``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_KEY = "ecot_locator"  # the config.json entry that turns the locator on
STRIDE = 4  # image pixels per heatmap cell
TOKENS_PER_OBJECT = 5  # name, x0, y0, x1, y1
RELATION_FEATURES = 6  # box x0, x1, centre x, y0, y1, centre y minus the gripper's point
RELATION_SCALE = 16.0  # pixels of the chain's frame per unit of the relation MLP's input
GRIPPER_TOKENS = 2
PRESENT_THRESHOLD = 0.5  # centre score above which a found object is handed to the language model
# Centre score above which a peak may still be the object the instruction names (instruction_object): with the
# gripper at the object its peak drops below PRESENT_THRESHOLD (docs/quality.md, round sixteen).
CANDIDATE_THRESHOLD = 0.1
# A policy tracks the instruction's object from step to step (instruction_object's ``previous``): a peak's fit
# loses its squared distance from the previous step's choice over 2 * TRACK_SIGMA ** 2 (pixels of the chain's
# frame). A 2-cm step moves an object a few pixels; the other object is tens away (docs/quality.md, round eighteen).
TRACK_SIGMA = 4.0
# In training, this share of the samples gives the language model the locator's own findings instead of the
# annotation's, so that it also learns to read findings with the locator's errors (a missed word, a spurious
# object): a model that only ever saw exact findings derails on one spurious object (docs/quality.md, round ten).
OWN_FINDINGS_SHARE = 0.5
ARTICLES = ("the", "a", "an")  # not name words: the locator does not report them
_FOCAL_ALPHA, _FOCAL_BETA = 2.0, 4.0  # CenterNet's focal loss exponents


@dataclass
class LocatorSpec:
    """What a checkpoint's ``config.json`` says about its locator (key ``ecot_locator``)."""

    words: list[str]  # the attribute words of object names it reports ("block", "red", ...)
    word_token_ids: list[list[int]]  # the tokenizer's ids of each word (with its leading space)
    number_token_ids: list[int]  # the one token of each coordinate value 0 .. len - 1
    frame_size: int  # side of the frame the chain's coordinates are in (the annotated image), px
    max_objects: int = 4
    channels: int = 64
    # Each object's tokens also carry where it lies relative to the gripper (signed pixel offsets of its
    # box from the gripper's point, through a small learned MLP): docs/quality.md, round eleven.
    relations: bool = False
    # False (``ecot train --locator-only``): the language model sees the locator's tokens and not the image's
    # patches, so its chain can only come from the findings, which hold off the demonstrations' paths where the
    # patches do not (docs/quality.md, round fourteen).
    image_patches: bool = True
    # The training chains' object names ("the red block"): the policy names what the locator found with them
    # when it writes the findings into VISIBLE OBJECTS (``PolicyConfig.locator_objects``). Empty in
    # checkpoints from before they were stored: the language model then writes VISIBLE OBJECTS itself.
    names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.words or len(self.words) != len(self.word_token_ids):
            problems.append(f"words ({len(self.words)}) and word_token_ids ({len(self.word_token_ids)}) must be "
                            "non-empty lists of the same length")
        elif any(not ids for ids in self.word_token_ids):
            problems.append("every word needs at least one token id")
        if len(self.number_token_ids) < 2:
            problems.append(f"number_token_ids must list the token of every coordinate value, got "
                            f"{len(self.number_token_ids)} entries")
        for name in ("frame_size", "max_objects", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("relations", "image_patches"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.names, list) or not all(isinstance(n, str) and n.strip() for n in self.names):
            problems.append(f"names must be a list of non-empty object names, got {self.names!r}")
        if problems:
            raise ValueError(f"invalid {CONFIG_KEY} entry: " + "; ".join(problems))

    @property
    def num_tokens(self) -> int:
        return self.max_objects * TOKENS_PER_OBJECT + GRIPPER_TOKENS

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LocatorSpec":
        if not isinstance(data, Mapping):
            raise ValueError(f"{CONFIG_KEY} must be an object, got {type(data).__name__}")
        known = {"words", "word_token_ids", "number_token_ids", "frame_size", "max_objects", "channels", "relations",
                 "image_patches", "names"}
        missing = sorted({"words", "word_token_ids", "number_token_ids", "frame_size"} - set(data))
        if missing:
            raise ValueError(f"{CONFIG_KEY} lacks {missing}")
        return cls(**{k: data[k] for k in known if k in data}, extra={k: v for k, v in data.items() if k not in known})


def _coords(b: int, h: int, w: int, device, dtype) -> torch.Tensor:
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


@dataclass
class Located:
    """The locator's raw output on a batch (heatmap logits and regressions on the cell grid)."""

    centre: torch.Tensor  # [B, g, g] object-centre logits
    offset: torch.Tensor  # [B, 2, g, g] sub-cell offset of the centre (cells, x then y)
    size: torch.Tensor  # [B, 2, g, g] box width, height (cells)
    words: torch.Tensor  # [B, W, g, g] name-word logits
    gripper: torch.Tensor  # [B, g, g] gripper-point logits
    gripper_offset: torch.Tensor  # [B, 2, g, g]


@dataclass
class Findings:
    """What the locator hands the language model, in the chain's pixel frame."""

    boxes: torch.Tensor  # [B, M, 4] float
    scores: torch.Tensor  # [B, M] centre probability
    word_probs: torch.Tensor  # [B, M, W]
    gripper: torch.Tensor  # [B, 2]

    def present(self) -> torch.Tensor:
        return self.scores > PRESENT_THRESHOLD

    def ordered(self) -> "Findings":
        """Objects left to right (by box centre), absent ones last: the same order in training and at run time."""
        centre_x = (self.boxes[..., 0] + self.boxes[..., 2]) / 2
        key = torch.where(self.present(), centre_x, centre_x.new_full((), float("inf")))
        order = key.argsort(dim=1, stable=True)
        pick = order[..., None]
        return Findings(boxes=self.boxes.gather(1, pick.expand(-1, -1, 4)), scores=self.scores.gather(1, order),
                        word_probs=self.word_probs.gather(1, pick.expand(-1, -1, self.word_probs.shape[-1])),
                        gripper=self.gripper)


class Locator(nn.Module):
    def __init__(self, spec: LocatorSpec, image_size: int, llm_dim: int):
        super().__init__()
        if image_size % STRIDE:
            raise ValueError(f"the locator needs an image size divisible by {STRIDE}, got {image_size}")
        self.spec = spec
        self.image_size = image_size
        self.grid = image_size // STRIDE
        c = spec.channels
        self.stem = nn.Sequential(
            nn.Conv2d(5, c // 2, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1), nn.GELU(),
        )
        self.body = nn.Sequential(
            nn.Conv2d(c + 2, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
        )
        n_words = len(spec.words)
        # centre 1, offset 2, size 2, words W, gripper 1, gripper offset 2
        self.head = nn.Conv2d(c, 8 + n_words, 1)
        self.slot_embed = nn.Parameter(torch.zeros(spec.max_objects + 1, llm_dim))  # last: the gripper
        self.field_embed = nn.Parameter(torch.zeros(TOKENS_PER_OBJECT + GRIPPER_TOKENS, llm_dim))
        self.presence_embed = nn.Parameter(torch.zeros(2, llm_dim))
        # Signed offsets of an object's box (x0, x1, centre x, y0, y1, centre y) from the gripper's point ->
        # one vector added to each of the object's tokens. Unlike the coordinate tokens, this is continuous, so
        # the language model's loss shapes it: "is the gripper lined up behind the object" is one read-out.
        self.relation = (nn.Sequential(nn.Linear(RELATION_FEATURES, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
                         if spec.relations else None)
        self.rebuild_buffers(None)
        self._init_weights()

    def rebuild_buffers(self, device: torch.device | str | None) -> None:
        """The token-id tables (not saved: they come from the spec), also after loading on ``meta``."""
        spec = self.spec
        with torch.device(device) if device is not None else contextlib.nullcontext():
            word_ids = torch.zeros(len(spec.words), max(len(i) for i in spec.word_token_ids), dtype=torch.long)
            word_mask = torch.zeros(word_ids.shape)
            for k, ids in enumerate(spec.word_token_ids):
                word_ids[k, : len(ids)] = torch.tensor(ids)
                word_mask[k, : len(ids)] = 1.0 / len(ids)
            self.register_buffer("number_ids", torch.tensor(spec.number_token_ids, dtype=torch.long), persistent=False)
            self.register_buffer("word_ids", word_ids, persistent=False)
            self.register_buffer("word_mask", word_mask, persistent=False)

    def _init_weights(self) -> None:
        if self.head.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[0] = -2.19  # CenterNet's prior: centres are rare
            self.head.bias[5 + len(self.spec.words)] = -2.19
        for p in (self.slot_embed, self.field_embed, self.presence_embed):
            nn.init.normal_(p, std=0.02)
        if self.relation is not None:
            for m in self.relation:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    @property
    def num_tokens(self) -> int:
        return self.spec.num_tokens

    # ------------------------------------------------------------------ seeing

    def forward(self, pixel_values: torch.Tensor) -> Located:
        """``[B, 3 or more, H, W]`` normalized pixels (the first tower's channels) -> heatmaps."""
        x = pixel_values[:, :3]
        b, _, h, w = x.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"the locator expects {self.image_size}x{self.image_size} images, got {h}x{w}")
        x = self.stem(torch.cat([x, _coords(b, h, w, x.device, x.dtype)], dim=1))
        x = self.body(torch.cat([x, _coords(b, self.grid, self.grid, x.device, x.dtype)], dim=1))
        out = self.head(x)
        n = len(self.spec.words)
        return Located(centre=out[:, 0], offset=out[:, 1:3].sigmoid(), size=F.softplus(out[:, 3:5]),
                       words=out[:, 5 : 5 + n], gripper=out[:, 5 + n], gripper_offset=out[:, 6 + n : 8 + n].sigmoid())

    @torch.no_grad()
    def find(self, located: Located) -> Findings:
        """The ``max_objects`` strongest centres (local maxima), their boxes and words, and the gripper."""
        g, m = self.grid, self.spec.max_objects
        heat = located.centre.float().sigmoid()
        peaks = heat * (F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0] == heat)
        scores, idx = peaks.flatten(1).topk(min(m, g * g), dim=1)
        rows, cols = idx // g, idx % g

        def at(t: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # [B, C, g, g] -> [B, K, C]
            flat = t.float().flatten(2)
            return flat.gather(2, (r * g + c)[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)

        off = at(located.offset, rows, cols)
        size = at(located.size, rows, cols)
        cx, cy = (cols + off[..., 0]) * STRIDE, (rows + off[..., 1]) * STRIDE
        half_w, half_h = size[..., 0] * STRIDE / 2, size[..., 1] * STRIDE / 2
        scale = self.spec.frame_size / self.image_size
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1) * scale
        words = at(located.words, rows, cols).sigmoid()
        gheat = located.gripper.float().flatten(1).argmax(dim=1)
        gr, gc = gheat // g, gheat % g
        goff = at(located.gripper_offset, gr[:, None], gc[:, None])[:, 0]
        gripper = torch.stack([(gc + goff[:, 0]) * STRIDE, (gr + goff[:, 1]) * STRIDE], dim=-1) * scale
        return Findings(boxes=boxes, scores=scores, word_probs=words, gripper=gripper).ordered()

    def training_findings(self, located: Located, objects: torch.Tensor, gripper: torch.Tensor,
                          generator: torch.Generator | None = None) -> Findings:
        """What the language model reads in training: the annotation's findings, or for a random
        :data:`OWN_FINDINGS_SHARE` of the samples the locator's own (see :meth:`findings_from_targets`)."""
        truth = self.findings_from_targets(objects, gripper)
        if OWN_FINDINGS_SHARE <= 0:
            return truth
        own = self.find(located)
        pick = torch.rand(objects.shape[0], generator=generator, device=objects.device) < OWN_FINDINGS_SHARE
        return Findings(*(torch.where(pick.view(-1, *([1] * (a.ndim - 1))), b.to(a.dtype), a)
                          for a, b in ((truth.boxes, own.boxes), (truth.scores, own.scores),
                                       (truth.word_probs, own.word_probs), (truth.gripper, own.gripper))))

    def findings_from_targets(self, objects: torch.Tensor, gripper: torch.Tensor) -> Findings:
        """The annotation's boxes, words and gripper point as findings (targets as in :meth:`loss`).

        Training feeds the language model these (teacher forcing), so that the numbers it learns to copy
        are exactly the numbers its chain holds; at run time it gets :meth:`find`'s."""
        scale = self.spec.frame_size / self.image_size
        objects, gripper = objects.float(), gripper.float()
        return Findings(boxes=objects[..., :4] * scale, scores=objects[..., 4], word_probs=objects[..., 5:],
                        gripper=gripper[:, :2] * scale).ordered()

    # ------------------------------------------------------------------ telling the language model

    def _number_embeds(self, values: torch.Tensor, embed: nn.Embedding) -> torch.Tensor:
        ids = self.number_ids[values.round().long().clamp(0, len(self.number_ids) - 1)]
        return embed(ids)

    def tokens(self, findings: Findings, embed: nn.Embedding) -> torch.Tensor:
        """The locator's tokens ``[B, max_objects * 5 + 2, D]`` for the language model."""
        b, m = findings.scores.shape
        word_vecs = (embed(self.word_ids) * self.word_mask[..., None].to(embed.weight.dtype)).sum(1)  # [W, D]
        name = findings.word_probs.to(word_vecs.dtype) @ word_vecs  # [B, M, D]
        coords = self._number_embeds(findings.boxes, embed)  # [B, M, 4, D]
        objects = torch.cat([torch.zeros_like(name)[:, :, None], coords], dim=2)  # [B, M, 5, D]
        present = self.presence_embed[findings.present().long()]  # [B, M, D]
        # Every token of an object carries its name: the language model writing "the red block [x0," finds
        # the coordinate to copy in one attention hop (name and field match), not via the name token.
        objects = objects + (name + present)[:, :, None] + self.slot_embed[:m][None, :, None] \
            + self.field_embed[:TOKENS_PER_OBJECT][None, None]
        if self.relation is not None:
            objects = objects + self.relation_embeds(findings).to(objects.dtype)[:, :, None]
        gripper = self._number_embeds(findings.gripper, embed) + self.slot_embed[-1] \
            + self.field_embed[TOKENS_PER_OBJECT:][None]
        if m < self.spec.max_objects:  # a grid with fewer cells than objects: pad with absent slots
            objects = torch.cat([objects, objects.new_zeros(b, self.spec.max_objects - m, *objects.shape[2:])], 1)
        return torch.cat([objects.flatten(1, 2), gripper], dim=1)

    def relation_embeds(self, findings: Findings) -> torch.Tensor:
        """``[B, M, D]``: each present object's offset from the gripper through the relation MLP (0 if absent)."""
        boxes, g = findings.boxes.float(), findings.gripper.float()[:, None]  # [B, M, 4], [B, 1, 2]
        cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
        gx, gy = g[..., 0], g[..., 1]
        offsets = torch.stack([boxes[..., 0] - gx, boxes[..., 2] - gx, cx - gx,
                               boxes[..., 1] - gy, boxes[..., 3] - gy, cy - gy], dim=-1) / RELATION_SCALE
        out = self.relation(offsets.to(self.relation[0].weight.dtype))
        return out * findings.present()[..., None].to(out.dtype)

    # ------------------------------------------------------------------ learning

    def loss(self, located: Located, objects: torch.Tensor, gripper: torch.Tensor) -> torch.Tensor:
        """Loss against annotation targets in the model's pixels.

        ``objects``: ``[B, T, 5 + W]`` rows of box (x0, y0, x1, y1), valid flag, name-word multi-hot;
        ``gripper``: ``[B, 3]`` x, y, valid flag."""
        g = self.grid
        n_words = len(self.spec.words)
        if objects.shape[-1] != 5 + n_words:
            raise ValueError(f"locator targets must have {5 + n_words} columns (box, valid, {n_words} words), "
                             f"got {objects.shape[-1]}")
        objects, gripper = objects.float(), gripper.float()
        valid = objects[..., 4] > 0.5  # [B, T]
        cx = (objects[..., 0] + objects[..., 2]) / 2 / STRIDE
        cy = (objects[..., 1] + objects[..., 3]) / 2 / STRIDE
        size = torch.stack([objects[..., 2] - objects[..., 0], objects[..., 3] - objects[..., 1]], -1) / STRIDE
        sigma = (size.clamp_min(1.0).min(dim=-1).values / 3).clamp_min(0.7)  # CenterNet-like radius, cells
        total = _focal(located.centre, _gaussians(cx, cy, sigma, valid, g))
        ci, cj = cy.floor().clamp(0, g - 1).long(), cx.floor().clamp(0, g - 1).long()
        if valid.any():
            b_idx = torch.arange(objects.shape[0], device=objects.device)[:, None].expand_as(ci)[valid]
            r, c = ci[valid], cj[valid]
            off_pred = located.offset.float()[b_idx, :, r, c]
            off_true = torch.stack([cx[valid] - cj[valid], cy[valid] - ci[valid]], -1)
            total = total + F.l1_loss(off_pred, off_true) + 0.5 * F.l1_loss(located.size.float()[b_idx, :, r, c],
                                                                              size[valid])
            total = total + F.binary_cross_entropy_with_logits(located.words.float()[b_idx, :, r, c],
                                                               objects[..., 5:][valid])
        g_valid = gripper[:, 2] > 0.5
        gx, gy = gripper[:, 0] / STRIDE, gripper[:, 1] / STRIDE
        total = total + _focal(located.gripper, _gaussians(gx[:, None], gy[:, None], torch.full_like(gx[:, None], 1.0),
                                                           g_valid[:, None], g))
        if g_valid.any():
            gi, gj = gy.floor().clamp(0, g - 1).long()[g_valid], gx.floor().clamp(0, g - 1).long()[g_valid]
            b_idx = torch.arange(gripper.shape[0], device=gripper.device)[g_valid]
            total = total + F.l1_loss(located.gripper_offset.float()[b_idx, :, gi, gj],
                                      torch.stack([gx[g_valid] - gj, gy[g_valid] - gi], -1))
        return total


def _gaussians(cx: torch.Tensor, cy: torch.Tensor, sigma: torch.Tensor, valid: torch.Tensor, g: int) -> torch.Tensor:
    """``[B, g, g]`` heat targets: 1 at each valid centre's cell, a Gaussian around it (max over objects)."""
    grid = torch.arange(g, device=cx.device, dtype=torch.float32)
    ci, cj = cy.floor().clamp(0, g - 1), cx.floor().clamp(0, g - 1)
    dy = (grid.view(1, 1, g, 1) - ci[..., None, None]) ** 2
    dx = (grid.view(1, 1, 1, g) - cj[..., None, None]) ** 2
    heat = torch.exp(-(dx + dy) / (2 * sigma[..., None, None] ** 2)) * valid[..., None, None]
    return heat.amax(dim=1) if heat.shape[1] else torch.zeros(cx.shape[0], g, g, device=cx.device)


def _focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, averaged over the number of centres (at least 1)."""
    logits = logits.float()
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target >= 0.999
    pos_loss = -((1 - p) ** _FOCAL_ALPHA * F.logsigmoid(logits))[pos].sum()
    neg_loss = -((1 - target) ** _FOCAL_BETA * p**_FOCAL_ALPHA * F.logsigmoid(-logits))[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp_min(1)


# ---------------------------------------------------------------------- building one


def name_words(names: Sequence[str]) -> list[str]:
    """The attribute words of object names ("the red block" -> red, block), sorted."""
    words = {w for name in names for w in str(name).lower().split() if w not in ARTICLES}
    return sorted(words)


def task_object_words(instruction: str, words: Sequence[str]) -> list[str]:
    """The name words of the object the instruction names first: its first run of consecutive name words
    ("put the red block in the blue bowl" -> red, block), as the training chains' task object."""
    run: list[str] = []
    for w in re.findall(r"[a-z]+", str(instruction).lower()):
        if w in words:
            run.append(w)
        elif run and w not in ARTICLES:
            break
    return run


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` boxes (x0, y0, x1, y1) -> ``[..., 2]`` centres."""
    boxes = boxes.float()
    return torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], dim=-1)


def instruction_object(word_probs: torch.Tensor, scores: torch.Tensor, words: Sequence[str],
                       instruction: str, boxes: torch.Tensor | None = None,
                       previous: Sequence[float] | torch.Tensor | None = None) -> int | None:
    """Index of the found object the instruction names first (:func:`task_object_words`): among the peaks whose
    centre score (``scores`` [M]; a bool mask counts as 1 or 0) is above :data:`CANDIDATE_THRESHOLD`, the one
    where score times the probabilities of those words (``word_probs`` [M, len(words)]) is largest; None when
    there is no such peak or the instruction holds no name word. Where several fit equally, the first.

    Why weak peaks count: when the gripper touches or covers the object, its peak falls below
    :data:`PRESENT_THRESHOLD` while the other object's stays high; choosing among the present ones alone then
    took the other object, whose words did not fit at all (docs/quality.md, round sixteen).

    Tracking: with the previous step's choice (``previous``, its box centre) and the peaks' ``boxes`` [M, 4],
    each fit also loses the squared distance from it over ``2 * TRACK_SIGMA ** 2``, so that a step where the
    words fit the other object a little better (a covered object, a colour and kind never seen together) does
    not switch to it (docs/quality.md, round eighteen)."""
    wanted = [list(words).index(w) for w in task_object_words(instruction, words)]
    scores = scores.float()
    candidates = scores > CANDIDATE_THRESHOLD
    if not wanted or not bool(candidates.any()):
        return None
    fit = scores.clamp_min(1e-6).log() + word_probs[:, wanted].float().clamp_min(1e-6).log().sum(-1)
    if previous is not None:
        if boxes is None:
            raise ValueError("instruction_object: tracking the previous choice needs the peaks' boxes")
        last = torch.as_tensor(previous, dtype=torch.float32, device=boxes.device).reshape(2)
        fit = fit - ((box_centres(boxes) - last) ** 2).sum(-1) / (2 * TRACK_SIGMA ** 2)
    return int(torch.where(candidates, fit, torch.full_like(fit, -float("inf"))).argmax())


def name_slots(names: Sequence[str]) -> tuple[str, list[list[str]], list[bool]]:
    """How the training names are built: their article ("the", or ""), the words that stand in each place after
    it (e.g. [[colours], [kinds]]) and whether every name fills that place, so that a found object gets a name
    from its words -- also a colour and kind that never met in training (the sim's held-out appearances)."""
    split = [str(n).lower().split() for n in names if str(n).strip()]
    articles = [w[0] for w in split if w[0] in ARTICLES]
    article = max(set(articles), key=articles.count) if len(articles) * 2 > len(split) else ""
    places: dict[str, list[int]] = {}
    for words in split:
        rest = [w for w in words if w not in ARTICLES]
        for j, w in enumerate(rest):
            places.setdefault(w, []).append(j - len(rest))  # counted from the end: the kind is always last
    slots: dict[int, list[str]] = {}
    for w, js in sorted(places.items()):
        slots.setdefault(max(set(js), key=js.count), []).append(w)
    order = sorted(slots)
    always = [all(any(w in slots[j] for w in words) for words in split) for j in order]
    return article, [slots[j] for j in order], always


def named_objects(findings: Findings, spec: LocatorSpec, instructions: Sequence[str],
                  mains: Sequence[int | None] | None = None) -> list[list[tuple[str, list[int]]]]:
    """VISIBLE OBJECTS from the locator's findings, as the training chains list them: first the object the
    instruction names first (:func:`instruction_object`), under the instruction's words for it; then
    the others left to right, each named from its likeliest word in each place of the training names
    (``spec.names``: "the" + colour + kind). Boxes are rounded into the chain's frame; a name is written once.
    ``mains``: each sample's instruction object already chosen (e.g. tracked by a policy), instead of choosing it here."""
    if not spec.names:
        raise ValueError("this locator stores no object names (a checkpoint from before they were kept): it cannot "
                         "name what it finds")
    article, slots, always = name_slots(spec.names)
    index = {w: k for k, w in enumerate(spec.words)}
    top = spec.frame_size - 1
    out = []
    for b, instruction in enumerate(instructions):
        probs = findings.word_probs[b].float()
        present = [k for k in range(probs.shape[0]) if bool(findings.present()[b, k])]
        wanted = task_object_words(instruction, spec.words)
        main = instruction_object(probs, findings.scores[b], spec.words, instruction) if mains is None else mains[b]

        def name_of(k: int) -> str:
            if k == main:
                words = wanted
            else:
                words = []
                for slot, filled in zip(slots, always):
                    known = [w for w in slot if w in index]
                    best = max(known, key=lambda w: float(probs[k, index[w]])) if known else None
                    if best is not None and (filled or float(probs[k, index[best]]) > 0.5):
                        words.append(best)
            return " ".join([article] * bool(article) + words)

        kept, seen = [], set()
        for k in ([main] if main is not None else []) + [k for k in present if k != main]:
            name = name_of(k)
            box = [int(min(max(round(float(v)), 0), top)) for v in findings.boxes[b, k]]
            if name.strip() == article or name in seen or box[2] <= box[0] or box[3] <= box[1]:
                continue  # nameless, a name already written, or a degenerate box: nothing the chain could use
            seen.add(name)
            kept.append((name, box))
        out.append(kept)
    return out


def number_token_ids(tokenizer: Any, largest: int) -> list[int]:
    """The one token id of each coordinate value 0..largest as the chain writes it ("[48, 53]").

    Raises ValueError when a value is not a single token, the same wherever it stands: the
    locator's coordinate tokens must be the ids the model reads and writes in its chain."""
    from ecot.model.tokenizer import number_token_ids_of

    single = number_token_ids_of(tokenizer, largest)
    ids = []
    for v in range(largest + 1):
        found = tokenizer(f"[{v}, {v}]", add_special_tokens=False)["input_ids"]
        token = single.get(v)
        if token is None or found.count(token) != 2:
            raise ValueError(
                f"the tokenizer does not write the coordinate {v} as one token of its own (it gives "
                f"{tokenizer.convert_ids_to_tokens(found)}); the locator needs one token per coordinate value: "
                "train with --tokenizer-numbers whole")
        ids.append(int(token))
    return ids


def build_spec(tokenizer: Any, names: Sequence[str], frame_size: int, max_objects: int = 4,
               channels: int = 64, relations: bool = False, image_patches: bool = True) -> LocatorSpec:
    """A :class:`LocatorSpec` for object ``names`` (their words are what it reports) and ``tokenizer``."""
    words = name_words(names)
    if not words:
        raise ValueError("the locator needs object names to learn (the annotations hold no VISIBLE OBJECTS)")
    word_ids = [list(tokenizer(f" {w}", add_special_tokens=False)["input_ids"]) for w in words]
    word_ids = [[i for i in ids if tokenizer.convert_ids_to_tokens(i) != "▁"] or ids for ids in word_ids]
    return LocatorSpec(words=words, word_token_ids=word_ids, number_token_ids=number_token_ids(tokenizer, frame_size - 1),
                       frame_size=int(frame_size), max_objects=max_objects, channels=channels, relations=relations,
                       image_patches=image_patches, names=sorted({" ".join(str(n).split()) for n in names if str(n).strip()}))


def frame_targets(items: Sequence[tuple[str, Sequence[float]]], gripper: Sequence[float] | None, spec: LocatorSpec,
                  image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's targets from its annotation: ``(objects [max_objects, 5 + W], gripper [3])`` in model pixels.

    ``items``: (name, [x0, y0, x1, y1]) in the chain's frame; ``gripper``: [x, y] or None."""
    scale = image_size / spec.frame_size
    n_words = len(spec.words)
    objects = torch.zeros(spec.max_objects, 5 + n_words)
    for k, (name, box) in enumerate(list(items)[: spec.max_objects]):
        objects[k, :4] = torch.tensor([float(v) * scale for v in box])
        objects[k, 4] = 1.0
        for w in str(name).lower().split():
            if w in spec.words:
                objects[k, 5 + spec.words.index(w)] = 1.0
    g = torch.zeros(3)
    if gripper is not None and len(gripper) == 2:
        g[:2] = torch.tensor([float(v) * scale for v in gripper])
        g[2] = 1.0
    return objects, g
