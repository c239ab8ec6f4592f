"""``ecot model``: make a random checkpoint from a preset, describe a checkpoint, run one prediction.

Nothing heavy is imported at module level; handlers import what they need.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

# Words for the tokenizer of `ecot model init` tiny checkpoints (a trainer usually trains its own).
_DEFAULT_CORPUS_INSTRUCTIONS = [
    "pick up the red block", "put the green cup in the bowl", "push the blue block to the left",
    "open the drawer", "stack the yellow block on the red block", "move the carrot onto the plate",
]  # fmt: skip


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="VLA checkpoints: init from a preset, info, predict")
    sub = parser.add_subparsers(title="model commands", metavar="ACTION")

    init = sub.add_parser("init", help="write a randomly initialized checkpoint of a preset")
    init.add_argument("--preset", default="tiny-siglip", help="tiny-siglip | tiny-dinosiglip | ecot-7b-bridge | openvla-7b")
    init.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--max-shard-size", default="5GB")
    init.add_argument("--allow-large", action="store_true", help="allow materializing a 7B model (~30 GB RAM)")
    init.add_argument("--force", action="store_true", help="replace a checkpoint already in --out")
    init.set_defaults(func=_init)

    info = sub.add_parser("info", help="describe a checkpoint directory (reads headers only)")
    info.add_argument("path", type=Path)
    info.set_defaults(func=_info)

    predict = sub.add_parser("predict", help="predict one action (and reasoning) for an image file")
    predict.add_argument("path", help="checkpoint directory or hub id")
    predict.add_argument("--image", required=True, type=Path)
    predict.add_argument("--instruction", required=True)
    predict.add_argument("--unnorm-key", default=None)
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--dtype", default=None)
    predict.add_argument("--max-new-tokens", type=int, default=1024)
    predict.set_defaults(func=_predict)
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])


def _init(args) -> int:
    import shutil

    from ecot.errors import UsageError
    from ecot.model.config import PRESETS
    from ecot.runlock import locked_dir

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; expected one of {', '.join(sorted(PRESETS))}")
    from ecot.model.checkpoint import parse_size

    try:
        parse_size(args.max_shard_size)
    except ValueError as err:
        raise UsageError(f"--max-shard-size: {err}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; expected a new or empty directory (or an old checkpoint with --force)")
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    config = VLAConfig.preset(args.preset)
    if config.text_config.get("hidden_size", 4096) >= 2048 and not args.allow_large:
        raise UsageError(f"preset {args.preset} is a 7B model (~30 GB of RAM); pass --allow-large to materialize it")
    with locked_dir(out, "ecot model init", keep_file=False):  # a checkpoint is shared as it is: no lock file kept
        existing = [p.name for p in out.iterdir() if not p.name.startswith(".ecot.lock")]
        if existing and not args.force:
            raise UsageError(f"{out} is not empty ({', '.join(sorted(existing)[:4])}); refusing to overwrite it "
                             "without --force")
        torch.manual_seed(args.seed)
        model = VLA(config)
        if config.pad_token_id == 1024:  # tiny presets: make a matching tokenizer so the checkpoint is usable
            texts = [training_text(i, f"TASK: {i}. PLAN: reach, grasp, move, release.", "", s)
                     for i in _DEFAULT_CORPUS_INSTRUCTIONS for s in ("vicuna", "pure")]  # fmt: skip
            model.processor = VLAProcessor(config, train_tiny_tokenizer(texts, vocab_size=1024))
        # Written complete into a staging directory, then moved in: a failure (disk full) leaves nothing partial.
        staging = out / f".init-{os.getpid()}.tmp"
        try:
            model.save_pretrained(staging, max_shard_size=args.max_shard_size)
            for name in existing:  # --force: the old checkpoint goes only once the new one is complete
                old = out / name
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            for item in sorted(staging.iterdir()):
                os.replace(item, out / item.name)
            staging.rmdir()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    print(f"wrote {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters) to {out}")
    return 0


def _info(args) -> int:
    from ecot.model.checkpoint import checkpoint_tensors
    from ecot.model.config import VLAConfig

    config = VLAConfig.from_pretrained(args.path)
    tensors = checkpoint_tensors(args.path)
    total = sum(math.prod(shape) for _, shape, _ in tensors.values())
    summary = {
        "vision_backbone_id": config.vision_backbone_id,
        "llm_backbone_id": config.llm_backbone_id,
        "timm_model_ids": config.timm_model_ids,
        "prompt_style": config.prompt_style,
        "image_size": config.image_size,
        "num_patches": config.num_patches,
        "tensors": len(tensors),
        "parameters": total,
        "shards": sorted({p.name for p, _, _ in tensors.values()}),
        "dtypes": sorted({d for _, _, d in tensors.values()}),
        "norm_stats_keys": sorted(config.norm_stats),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _predict(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from ecot.errors import UsageError, check_device
    from ecot.model import VLA

    check_device(args.device)
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
    if not args.image.is_file():
        raise UsageError(f"--image {args.image} does not exist; expected an image file (PNG, JPEG, ...)")
    try:
        image = Image.open(args.image)
        image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"--image {args.image} is not a readable image ({err}); expected PNG, JPEG, ...") from None
    from ecot.model.processor import MIN_IMAGE_SIDE

    if min(image.size) < MIN_IMAGE_SIDE:  # checked before the model is loaded
        raise UsageError(f"--image {args.image} is {image.size[0]}x{image.size[1]} pixels; expected at least "
                         f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    model = VLA.from_pretrained(args.path, dtype=args.dtype, device=args.device)
    result = model.predict_action(
        image, args.instruction, unnorm_key=args.unnorm_key, max_new_tokens=args.max_new_tokens
    )
    print(result.text)
    print(json.dumps({"action": [float(a) for a in result.action], "action_ids": result.action_ids}))
    return 0
