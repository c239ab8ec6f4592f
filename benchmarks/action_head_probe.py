"""Does the VLA's action head throw away what the chain knows? The chain probe with each action head.

``benchmarks/chain_sufficiency.py`` showed that, on planar pushing, the chain's numbers (the task
object's box and the gripper's pixel point, true values from the simulator) are enough for an MLP
regressing the action to succeed in closed loop. A VLA does not regress: it writes each action
dimension as one of 256 bin tokens, trained with cross-entropy against the one true bin and decoded
greedily. This benchmark trains the same MLP on the same inputs and steps with each kind of head
and runs each in closed loop on the same seeded episodes:

* ``regression``: MSE on the action (the chain probe as it is);
* ``bins``: 256 bins per dimension through ``ecot``'s own normalization (q01..q99) and
  :class:`~ecot.actions.ActionTokenizer`, cross-entropy against the true bin, the greedy bin decoded
  (what ``ecot train`` and ``ecot eval`` do by default);
* ``bins-expected``: the same training, decoded as the mean over the bins' probabilities
  (``ecot eval --action-decoding expected``);
* ``hl-gauss`` / ``hl-gauss-expected``: trained against soft labels, a Gaussian of ``--sigma`` bins
  around the true bin (:func:`ecot.train.metrics.action_label_targets`, what
  ``ecot train --action-label-sigma`` uses), decoded greedily / as the mean.

Beside the success rates it reports, on the held-out steps whose true motion is a *fractional*
step (neither zero nor the expert's full 3 or 4 cm: the last step of a line-up, where the policy
must stop on the object's line), the median error of the decoded dx, dy and the share within 5 mm.

Usage: python benchmarks/action_head_probe.py [--data DIR] [--heads regression,bins,...] [--sigma 10]
       [--steps 3000] [--lr 1e-3] [--episodes 50] [--seed 0] [--max-steps 30] [--out-name action_head_probe]
Without --data it collects the demo's demonstrations (``ecot demo``'s recipe) under runs/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import closed_loop, comma_choices, write_result  # noqa: E402
from benchmarks.chain_sufficiency import closed_loop_settings, demo_data, load_steps, make_net, probe_policy  # noqa: E402

HEADS = ("regression", "bins", "bins-expected", "hl-gauss", "hl-gauss-expected")
N_BINS = 256  # OpenVLA's action bins
FULL_STEPS = (0.03, 0.04)  # the axis expert's step sizes while pushing / moving (m)


def fractional_steps(actions: np.ndarray) -> np.ndarray:
    """``[N, 2]`` mask of dx, dy steps that are neither ~0 nor a full 3 or 4 cm step."""
    a = np.abs(actions[:, :2])
    full = np.any([np.abs(a - s) <= 0.002 for s in FULL_STEPS], axis=0)
    return (a > 0.004) & ~full


def train_head(head: str, inputs: np.ndarray, actions: np.ndarray, train: np.ndarray, steps: int,
               batch_size: int, sigma: float, lr: float = 1e-3, seed: int = 0) -> tuple[Any, float]:
    """Train the chain MLP with ``head``; returns (``inputs -> action[4]``, seconds)."""
    import torch
    import torch.nn.functional as F

    from ecot.actions import ActionTokenizer, ArrayStats
    from ecot.train.metrics import action_label_targets

    torch.manual_seed(seed)
    dims = actions.shape[1]
    x, y = torch.tensor(inputs), torch.tensor(actions)
    tokenizer = ActionTokenizer(vocab_size=N_BINS + 1, n_bins=N_BINS)  # ids 1..256 stand for the bins
    stats = ArrayStats.from_array(actions[train])
    ids = torch.tensor(tokenizer.encode(stats.normalize(actions)))  # [N, dims]
    values = torch.tensor(tokenizer.decode(np.arange(tokenizer.first_id, tokenizer.last_id + 1)), dtype=torch.float32)
    targets = None
    if head.startswith("hl-gauss"):
        targets = action_label_targets(ids.reshape(-1), tokenizer.first_id, N_BINS, sigma).view(len(ids), dims, N_BINS)
    regression = head == "regression"
    net = make_net("chain", x.shape[1], 0)
    if not regression:  # the same MLP, its last layer widened to 256 logits per dimension
        net[-1] = torch.nn.Linear(net[-1].in_features, dims * N_BINS)
    scale = torch.clamp(y[train].std(0), min=1e-3)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    train_idx = torch.nonzero(torch.tensor(train))[:, 0]
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = train_idx[torch.randint(0, len(train_idx), (batch_size,))]
        out = net(x[idx])
        if regression:
            loss = F.mse_loss(out, y[idx] / scale)
        else:
            logits = out.view(-1, dims, N_BINS)
            if targets is None:
                loss = F.cross_entropy(logits.reshape(-1, N_BINS), (ids[idx] - tokenizer.first_id).reshape(-1))
            else:
                loss = -(targets[idx] * logits.log_softmax(-1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    seconds = time.perf_counter() - t0

    def act(inputs_: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.tensor(inputs_, dtype=torch.float32).reshape(1, -1))[0]
        if regression:
            return (out * scale).numpy()
        logits = out.view(dims, N_BINS)
        if head.endswith("expected"):
            normalized = (logits.softmax(-1) * values).sum(-1).double().numpy()
        else:
            normalized = tokenizer.decode(logits.argmax(-1).numpy() + tokenizer.first_id)
        return stats.unnormalize(normalized).astype(np.float32)

    return act, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a collected planar sim push dataset with ground truth (default: the demo's)")
    parser.add_argument("--heads", default=",".join(HEADS), help=f"comma-separated, of {', '.join(HEADS)}")
    parser.add_argument("--sigma", type=float, default=10.0, help="the hl-gauss heads' label std, in bins")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per head (batch 64)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's peak rate (cosine to 0)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the episodes (ecot eval's --seed)")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--out-name", default="action_head_probe", help="result file name (without .json)")
    args = parser.parse_args()
    heads = comma_choices(parser, "--heads", args.heads, HEADS)
    if min(args.steps, args.episodes, args.batch_size) < 1 or not args.sigma > 0:
        parser.error("--steps, --batch-size and --episodes must be at least 1, --sigma above 0")
    import torch

    torch.set_num_threads(1)
    data = Path(args.data) if args.data else demo_data(Path("runs/chain_sufficiency"), seed=0)
    loop = closed_loop_settings(data, args.episodes, args.seed, args.max_steps)
    inputs, _, actions, episode = load_steps(data, "chain")
    n_train_eps = max(1, int(round((episode.max() + 1) * 0.9)))  # as the chain probe: the last 10 % held out
    train, held = episode < n_train_eps, episode >= n_train_eps
    frac = fractional_steps(actions[held])

    value: dict[str, Any] = {}
    for head in heads:
        act, seconds = train_head(head, inputs, actions, train, args.steps, args.batch_size, args.sigma, args.lr)
        predicted = np.stack([act(v) for v in inputs[held]])
        err = np.abs(predicted[:, :2] - actions[held][:, :2])[frac]
        value[head] = {
            "train_seconds": round(seconds, 1),
            "heldout_fractional_steps": int(frac.sum()),
            "heldout_fractional_median_error_mm": round(float(np.median(err)) * 1000, 2),
            "heldout_fractional_within_5mm": round(float((err < 0.005).mean()), 3),
            **closed_loop(probe_policy("chain", lambda inputs_, code_, act=act: act(inputs_)), label=head, **loop),
        }
    write_result(args.out_name, {
        "what": "the chain probe (an MLP on the task object's true box and the gripper's true pixel point) "
                "trained with each action head on the same demonstrations and steps, in closed loop on the "
                "same episodes",
        "data": str(data), "sigma_bins": args.sigma, "train_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        **{k: loop[k] for k in ("episodes", "seed", "max_steps", "num_objects", "image_size", "start", "camera")},
        "value": value,
    })


if __name__ == "__main__":
    main()
