"""Does the chain's perception determine the action? Behaviour-cloning probes on the demo's data.

Every ECoT policy trained in the built-in sim so far fails in closed loop, even with the true
object boxes written into its chain (``benchmarks/oracle_boxes.py``). This benchmark asks what
*information* a policy needs to act, apart from how well a VLA learns it. It trains small
behaviour-cloning probes (an MLP from given inputs to the expert's ``[dx, dy, dz, dyaw]``, MSE,
the same steps for each) on a collected dataset and runs each in closed loop on the same seeded
episodes. The inputs are true values from the simulator, so a probe measures what its inputs
*allow*, not what a model can perceive:

* ``state``: privileged world state (gripper xyz and yaw, the task object's xy, their difference);
* ``chain``: what the ECoT chain writes about the scene before the action: the task object's box
  and the gripper's point, in pixels (VISIBLE OBJECTS, GRIPPER POSITION);
* ``chain+height``: the same plus the gripper's true height above the table;
* ``chain+height-bins``: the same plus a coarse height (below 3.5 cm, below 12 cm, above);
* ``image`` (slow, opt-in): a small CNN (coordinate channels, spatial soft-argmax keypoints,
  conditioned on the task) on the camera image alone, at the same steps: plain image-based
  behaviour cloning, without the VLA.

Every probe also gets the task (one-hot colour and kind of the task object, and the push side).
Beside them, on the same episodes: the scripted expert (the upper bound) and zero motion.

Usage: python benchmarks/chain_sufficiency.py [--data DIR] [--probes state,chain,...] [--steps 3000]
       [--batch-size 64] [--episodes 50] [--seed 0] [--max-steps 30] [--out-name chain_sufficiency]
Without --data it collects the demo's demonstrations (``ecot demo``'s recipe) under runs/.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import closed_loop, comma_choices, write_result  # noqa: E402

PROBES = ("state", "chain", "chain+height", "chain+height-bins", "image")
DEFAULT_PROBES = ("state", "chain", "chain+height", "chain+height-bins")
ACTION_DIMS = [0, 1, 2, 5]  # dx, dy, dz, dyaw: push demonstrations keep roll, pitch and the gripper fixed


def task_code(object_name: str, relation: str) -> np.ndarray:
    """One-hot colour and kind of the task object ("the red block") and the push side."""
    from ecot.sim.scene import COLORS, KINDS
    from ecot.sim.tasks import REGIONS

    colors, kinds = list(COLORS), list(KINDS)
    parts = object_name.split()
    if len(parts) != 3 or parts[1] not in colors or parts[2] not in kinds or relation not in REGIONS:
        raise ValueError(f"expected a push task on 'the <colour> <kind>' towards one of {REGIONS}, "
                         f"got {object_name!r} towards {relation!r}")
    code = np.zeros(len(colors) + len(kinds) + len(REGIONS), np.float32)
    code[colors.index(parts[1])] = 1
    code[len(colors) + kinds.index(parts[2])] = 1
    code[len(colors) + len(kinds) + REGIONS.index(relation)] = 1
    return code


def probe_inputs(probe: str, state: np.ndarray, box: np.ndarray, gripper_point: np.ndarray, object_xy: np.ndarray,
                 image_size: int, code: np.ndarray) -> np.ndarray:
    """A non-image probe's input vector for one step. ``box`` and ``gripper_point`` are pixels of the
    task object and the gripper, ``object_xy`` the task object's world position, ``state`` the env's."""
    half = image_size / 2.0
    if probe == "state":
        x = [*state[:3], math.sin(state[5]), math.cos(state[5]), *object_xy, *(state[:2] - object_xy)]
    else:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x = [cx / half - 1, cy / half - 1, (box[2] - box[0]) / half, (box[3] - box[1]) / half,
             gripper_point[0] / half - 1, gripper_point[1] / half - 1, (gripper_point[0] - cx) / half,
             (gripper_point[1] - cy) / half]
        if probe == "chain+height":
            x.append(state[2] * 5.0)  # metres -> about [0, 1]
        elif probe == "chain+height-bins":
            x.append(0.0 if state[2] < 0.035 else 0.5 if state[2] < 0.12 else 1.0)
        elif probe != "chain":
            raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")
    return np.concatenate([np.asarray(x, np.float32), code])


@functools.lru_cache(maxsize=1)
def read_episodes(data: Path) -> tuple:
    """Every episode of a dataset, read once however many probes train on it."""
    from ecot.data import open_dataset

    ds = open_dataset(data)
    return tuple(ds.episode(i) for i in range(len(ds)))


def load_steps(data: Path, probe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs or images, task codes, actions, episode index) of every step of a collected dataset."""
    inputs, codes, actions, episode = [], [], [], []
    for i, ep in enumerate(read_episodes(Path(data))):
        gt, task = ep.ground_truth, ep.metadata.get("task") or {}
        if gt is None or task.get("family") != "push":
            raise ValueError(f"{data}: episode {i} is not a sim push demonstration with ground truth "
                             "(collect one with `ecot sim collect --task push`)")
        main = gt.object_names.index(task["object"])
        code = task_code(task["object"], task["relation"])
        for t in range(len(ep.actions)):
            if probe == "image":
                inputs.append(ep.images[t])
            else:
                inputs.append(probe_inputs(probe, ep.states[t], gt.object_boxes[t, main], gt.gripper_points[t],
                                           gt.object_poses[t, main, :2], ep.images.shape[2], code))
            codes.append(code)
            actions.append(ep.actions[t][ACTION_DIMS])
            episode.append(i)
    return np.stack(inputs), np.stack(codes), np.stack(actions).astype(np.float32), np.asarray(episode)


def make_net(probe: str, in_dim: int, code_dim: int):
    import torch
    from torch import nn

    if probe != "image":
        return nn.Sequential(nn.Linear(in_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))

    class KeypointCNN(nn.Module):
        """Coordinate channels -> convs -> task-scaled features -> spatial soft-argmax keypoints -> MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(5, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1))
            self.film = nn.Linear(code_dim, 64)
            self.head = nn.Sequential(nn.Linear(128 + code_dim, 256), nn.ReLU(), nn.Linear(256, 4))

        def forward(self, images, code):
            b, _, h, w = images.shape
            gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            x = torch.cat([images, gx.expand(b, 1, h, w), gy.expand(b, 1, h, w)], 1)
            f = self.conv(x) * (1 + self.film(code)[:, :, None, None])
            attention = torch.softmax(f.flatten(2), -1)
            fy, fx = torch.meshgrid(torch.linspace(-1, 1, f.shape[2]), torch.linspace(-1, 1, f.shape[3]), indexing="ij")
            keypoints = [(attention * fx.flatten()).sum(-1), (attention * fy.flatten()).sum(-1)]
            return self.head(torch.cat([*keypoints, code], 1))

    return KeypointCNN()


def train_probe(probe: str, data: Path, steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                heldout_fraction: float = 0.1) -> tuple[Any, dict]:
    """Train one probe; returns (a callable ``(inputs, code) -> action[4]``, its training figures).
    The last ``heldout_fraction`` of the episodes are held out; their MSE (in units of each
    action dimension's variance) is reported beside zero motion's on the same steps."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    inputs, codes, actions, episode = load_steps(data, probe)
    n_train_eps = max(1, int(round((episode.max() + 1) * (1 - heldout_fraction))))  # episodes numbered from 0
    train, held = episode < n_train_eps, episode >= n_train_eps
    if not held.any():
        raise ValueError(f"{data}: too few episodes to hold {heldout_fraction:.0%} out")
    x = torch.tensor(inputs)
    if probe == "image":
        x = x.permute(0, 3, 1, 2).float() / 255.0
    code, y = torch.tensor(codes), torch.tensor(actions)
    std = y[train].std(0)
    scale = torch.clamp(std, min=1e-3)  # 1 mm (or mrad): a dimension nearly constant in training is not blown up
    net = make_net(probe, x.shape[1], code.shape[1])
    forward = (lambda idx: net(x[idx], code[idx])) if probe == "image" else (lambda idx: net(x[idx]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    train_idx, held_idx = torch.nonzero(torch.tensor(train))[:, 0], torch.nonzero(torch.tensor(held))[:, 0]
    t0 = time.perf_counter()
    for step in range(steps):
        idx = train_idx[torch.randint(0, len(train_idx), (batch_size,))]
        loss = F.mse_loss(forward(idx), y[idx] / scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        held_mse = float(F.mse_loss(forward(held_idx), y[held_idx] / scale))
    zero_mse = float(((y[held_idx] / scale) ** 2).mean())
    figures = {"train_steps": steps, "train_frames": int(train.sum()), "heldout_frames": int(held.sum()),
               "heldout_mse": round(held_mse, 4), "zero_motion_heldout_mse": round(zero_mse, 4),
               "train_seconds": round(time.perf_counter() - t0, 1)}

    def act(inputs_: np.ndarray, code_: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xi = torch.tensor(inputs_)[None]
            if probe == "image":
                xi = xi.permute(0, 3, 1, 2).float() / 255.0
            out = net(xi, torch.tensor(code_)[None]) if probe == "image" else net(xi)
        return (out[0] * scale).numpy()

    return act, figures


def probe_policy(probe: str, act):
    """An ``ecot eval`` policy that feeds the probe the simulator's true values at every step."""
    from ecot.eval.policies import EvalPolicy, StepOutput

    class ProbePolicy(EvalPolicy):
        def reset(self, env: Any, seed: int) -> None:
            super().reset(env, seed)
            self.env = env
            task = env.task
            self.code = task_code(task.object_names[task.main], task.relation)

        def act(self, obs: dict, instruction: str) -> StepOutput:
            env, main = self.env, self.env.task.main
            if probe == "image":
                out = act(obs["image"], self.code)
            else:
                gt = env.ground_truth()
                x = probe_inputs(probe, obs["state"], np.asarray(gt["object_boxes"])[main],
                                 np.asarray(gt["gripper_point"]), env.object_positions()[main, :2],
                                 obs["image"].shape[1], self.code)
                out = act(x, self.code)
            action = np.zeros(7, np.float32)
            action[ACTION_DIMS] = out
            action[6] = 0.0  # closed, as in every push demonstration
            return StepOutput(action=action)

    return ProbePolicy()


def demo_data(root: Path, seed: int) -> Path:
    """The demo's demonstrations (its collection recipe), collected once under ``root``."""
    from ecot.demo import DEMO_RECIPE
    from ecot.sim.collect import CollectConfig, collect

    out = root / "dataset"
    config = CollectConfig(task=DEMO_RECIPE["task"], episodes=DEMO_RECIPE["episodes"],
                           image_size=DEMO_RECIPE["image_size"], num_objects=DEMO_RECIPE["num_objects"],
                           expert_style=DEMO_RECIPE["expert_style"], start=DEMO_RECIPE["start"], camera=DEMO_RECIPE["camera"],
                           action_noise=DEMO_RECIPE["action_noise"],
                           action_noise_fraction=DEMO_RECIPE["action_noise_fraction"], stop_at_success=True, seed=seed)
    collect(out, config, progress=True)  # resumes (or returns at once) when already collected
    return out


def closed_loop_settings(data: Path, episodes: int, seed: int, max_steps: int) -> dict:
    """:func:`closed_loop`'s keyword arguments for seen push episodes that start and look as the
    demonstrations in ``data`` did (their image size, object count, start region and camera)."""
    from ecot.data import open_dataset
    from ecot.provenance import collection_settings

    first = read_episodes(data)[0]
    settings = collection_settings(open_dataset(data))
    return dict(task="push", split="seen", episodes=episodes, seed=seed, max_steps=max_steps,
                num_objects=len(first.ground_truth.object_names), image_size=int(first.images.shape[2]),
                start=settings.get("start", "home"), camera=settings.get("camera", "main"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a collected sim push dataset with ground truth (default: the demo's, collected)")
    parser.add_argument("--probes", default=",".join(DEFAULT_PROBES), help=f"comma-separated, of {', '.join(PROBES)}")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per probe (batch 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the episodes (ecot eval's --seed)")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--out-name", default="chain_sufficiency", help="result file name (without .json)")
    args = parser.parse_args()
    probes = comma_choices(parser, "--probes", args.probes, PROBES)
    if min(args.steps, args.episodes, args.batch_size) < 1:
        parser.error("--steps, --batch-size and --episodes must be at least 1")
    import torch

    from ecot.eval.policies import ExpertPolicy, EvalPolicy, StepOutput, hold_action

    torch.set_num_threads(1)
    data = Path(args.data) if args.data else demo_data(Path("runs/chain_sufficiency"), seed=0)
    loop = closed_loop_settings(data, args.episodes, args.seed, args.max_steps)
    image_size, num_objects, start, camera = (loop[k] for k in ("image_size", "num_objects", "start", "camera"))

    class ZeroMotion(EvalPolicy):
        def act(self, obs: dict, instruction: str) -> StepOutput:
            return StepOutput(action=hold_action(obs))

    value: dict[str, Any] = {}
    for probe in probes:
        act, figures = train_probe(probe, data, args.steps, batch_size=args.batch_size)
        value[probe] = {**figures, **closed_loop(probe_policy(probe, act), label=probe, **loop)}
    baselines = {"expert": closed_loop(ExpertPolicy(), label="expert", **loop),
                 "zero_motion": closed_loop(ZeroMotion(), label="zero motion", **loop)}
    write_result(args.out_name, {
        "what": "behaviour-cloning probes (MLP, or a small CNN for 'image') trained on the same demonstrations "
                "with the same steps, fed the simulator's true values, in closed loop on the same episodes",
        "data": str(data), "episodes": args.episodes, "seed": args.seed, "max_steps": args.max_steps,
        "num_objects": num_objects, "image_size": image_size, "start": start, "camera": camera, "batch_size": args.batch_size,
        "value": value, "baseline": baselines,
    })


if __name__ == "__main__":
    main()
