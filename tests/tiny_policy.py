"""A tiny ECoT policy that has *learned* something, trained in seconds for the tests.

Three scenes (a coloured block at different places), each with an instruction, a full ECoT
reasoning and an action. A tiny-siglip model is overfit on them with the real training sample
builder (``build_text_sample``), so its greedy decoding writes the memorized reasoning and action
for each scene — real, trained behaviour to check the runtime, the server and evaluation against
(random weights only exercise the plumbing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCENES = [
    {
        "instruction": "put the red block in the bowl",
        "color": (220, 30, 30),
        "where": (40, 30),
        "reasoning": (
            "TASK: Put the red block in the bowl. PLAN: grasp the red block, move it to the bowl, release it. "
            "VISIBLE OBJECTS: the red block [30, 40, 52, 62], the bowl [70, 20, 100, 50] "
            "SUBTASK REASONING: the red block is not held yet. SUBTASK: grasp the red block. "
            "MOVE REASONING: the red block is below the gripper. MOVE: move down "
            "GRIPPER POSITION: [41, 30, 41, 36, 41, 42, 41, 48, 41, 51]"
        ),
        "action": [0.1, -0.2, -0.9, 0.0, 0.0, 0.3, 1.0],
    },
    {
        "instruction": "pick up the green cup",
        "color": (30, 200, 40),
        "where": (60, 70),
        "reasoning": (
            "TASK: Pick up the green cup. PLAN: grasp the green cup, lift it. "
            "VISIBLE OBJECTS: the green cup [70, 60, 92, 82] "
            "SUBTASK REASONING: the gripper is around the green cup. SUBTASK: lift the green cup. "
            "MOVE REASONING: the cup is held. MOVE: move up, close gripper "
            "GRIPPER POSITION: [81, 71, 81, 65, 81, 59, 81, 53, 81, 47]"
        ),
        "action": [0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0],
    },
    {
        "instruction": "push the blue ball to the left",
        "color": (30, 40, 220),
        "where": (20, 80),
        "reasoning": (
            "TASK: Push the blue ball to the left. PLAN: move behind the blue ball, push it left. "
            "VISIBLE OBJECTS: the blue ball [80, 10, 102, 32], the bowl [10, 60, 40, 90] "
            "SUBTASK REASONING: the gripper is right of the blue ball. SUBTASK: push the blue ball left. "
            "MOVE REASONING: the ball is left of the gripper. MOVE: move left "
            "GRIPPER POSITION: [91, 21, 85, 21, 79, 21, 73, 21, 67, 21]"
        ),
        "action": [0.0, 0.6, 0.0, 0.0, 0.0, -0.1, 0.0],
    },
]
NORM_STATS = {
    "sim_tabletop": {
        "action": {
            "mask": [True] * 6 + [False],
            "max": [1.0] * 7,
            "mean": [0.0] * 7,
            "min": [-1.0] * 7,
            "q01": [-0.5] * 6 + [0.0],
            "q99": [0.5] * 6 + [1.0],
            "std": [1.0] * 7,
        },
        "num_trajectories": 3,
        "num_transitions": 3,
    }
}


def scene_image(index: int, size: int = 112, noise_seed: int = 0) -> np.ndarray:
    """The scene's camera image: grey table, the coloured object, a little noise."""
    scene = SCENES[index]
    rng = np.random.default_rng(noise_seed)
    img = np.full((size, size, 3), 180, dtype=np.uint8)
    x, y = scene["where"]
    img[y : y + 24, x : x + 24] = scene["color"]
    return np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def train_tiny_policy(dest: Path, steps: int = 250, seed: int = 0) -> Path:
    """Overfit a tiny-siglip ECoT model on :data:`SCENES`; save a checkpoint directory at ``dest``."""
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text
    from ecot.train.samples import build_text_sample, collate

    torch.manual_seed(seed)
    texts = [training_text(s["instruction"], s["reasoning"], "", "vicuna") for s in SCENES]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=1024)
    config = VLAConfig.preset("tiny-siglip", norm_stats=NORM_STATS)
    model = VLA(config)
    processor = VLAProcessor(config, tokenizer)
    samples = []
    for i, scene in enumerate(SCENES):
        sample = build_text_sample(tokenizer, processor.action_tokenizer, scene["instruction"], scene["reasoning"],
                                   np.array(scene["action"]), "vicuna")
        samples.append({"input_ids": sample.input_ids, "labels": sample.labels, "segments": sample.segments,
                        "pixel_values": processor.image_transform(scene_image(i))})
    batch = collate(samples, pad_token_id=tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and fair to a busy machine
    model.train()
    for step in range(steps):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch["pixel_values"], labels=batch["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    torch.set_num_threads(threads)
    model.eval()
    model.processor = processor
    with torch.no_grad():
        final = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    model.save_pretrained(dest)
    (Path(dest) / "train_loss.txt").write_text(f"{float(final):.6f}\n")
    return Path(dest)
