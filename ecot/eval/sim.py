"""Closed-loop evaluation in the built-in MuJoCo tabletop: seeded episodes, parallel, resumable.

Episode ``i`` of a run has the family ``families[i % len(families)]`` and the scene seed
:func:`episode_seed` ``(seed, i)`` -- derived apart from the seeds of ``ecot sim collect``, so
evaluation scenes are not the training scenes of the same ``--seed``. A run is reproducible
episode by episode whatever the number of workers, and a rerun continues where the last one
stopped: the episodes already in ``OUT/episodes.jsonl`` are skipped. Worker processes each hold one
environment and load the policy once. Episodes come back in index order; the parent alone
writes files (GIFs first, then the episode's line), so a ``kill -9`` loses only episodes in
flight.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecot.eval import faithfulness as faith
from ecot.eval.policies import MODES, EvalPolicy, StepOutput, hold_action, make_policy, validate_spec
from ecot.errors import UsageError
from ecot.eval.results import RESULTS_NAME, EpisodeLog, aggregate, check_config, write_atomic
from ecot.options import option
from ecot.policy.modes import ACTION_DECODINGS
from ecot.reasoning import Reasoning
from ecot.sim.scene import CAMERAS, START_REGIONS
from ecot.sim.tasks import FAMILIES, SPLITS, check_num_objects, check_start_option

GIF_DIR = "gifs"


@dataclass
class EvalConfig:
    """What ``ecot eval --env sim`` evaluates; the defaults are a quick look at the expert.

    The fields are also ``ecot eval``'s flags (:mod:`ecot.options`); --policy and --out are required there."""

    policy: str = option("expert", "CHECKPOINT | ws://HOST:PORT | expert | oracle | random", required=True)
    env: str = option("sim", "environment", choices=("sim",))  # LIBERO and WidowX have their own entry points
    task: str = option("all", "task family", choices=("all",) + FAMILIES)  # "all": round robin
    split: str = option("seen", "composition split", choices=SPLITS)
    episodes: int = option(20, "episodes")
    seed: int = option(0, "base seed")
    workers: int = option(1, "worker processes")
    mode: str = option("full", "policy mode of a local checkpoint", choices=MODES)  # ECoTPolicy mode
    reuse_steps: int = option(5, "reasoning reuse interval for --mode reuse")
    action_decoding: str = option("argmax", "action tokens -> action of a local checkpoint: the greedy bin, or "
                                  "the mean over the bins' probabilities", choices=ACTION_DECODINGS)
    max_steps: int = option(80, "control steps per episode")
    image_size: int = option(224, "camera resolution; use the resolution the policy was trained at")
    num_objects: int = option(4, "objects per scene (the task's own plus distractors)")
    start: str = option("home", "where the gripper starts: home, anywhere above the workspace, or table "
                        "(planar pushing; --task push); use the policy's training setting", choices=START_REGIONS)
    camera: str = option("main", "the camera (main or top); use the policy's training camera", choices=CAMERAS)
    gifs: int = option(3, "GIFs of this many successes and failures")
    device: str | None = option(None, "torch device of a local checkpoint (default: cuda if available)")
    unnorm_key: str | None = option(None, "normalization statistics key of the checkpoint")
    api_key: str | None = option(None, "API key of a ws:// server", repr=False)
    rerun: str | None = option(None, "also log every step to a Rerun recording (pip install 'ecot[viz]')",
                               metavar="OUT.rrd")  # a .rrd of every episode
    out: str = option("runs/eval", "output directory", required=True)

    def __post_init__(self) -> None:
        if self.env != "sim":
            raise UsageError(f"--env {self.env!r} is not supported by `ecot eval`; it evaluates in the built-in sim "
                             "(LIBERO: python -m ecot.eval.libero, WidowX: python -m ecot.eval.widowx)")
        if self.task != "all" and self.task not in FAMILIES:
            raise UsageError(f"unknown task family {self.task!r}; expected 'all' or one of {', '.join(FAMILIES)}")
        if self.split not in SPLITS:
            raise UsageError(f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        check_num_objects(self.task, self.num_objects)
        if self.start not in START_REGIONS:
            raise UsageError(f"unknown start region {self.start!r}; expected one of {', '.join(START_REGIONS)}")
        if self.camera not in CAMERAS:
            raise UsageError(f"unknown camera {self.camera!r}; expected one of {', '.join(CAMERAS)}")
        check_start_option(self.task, self.start)
        for name in ("episodes", "max_steps", "workers", "reuse_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 16:
            raise UsageError(f"image_size must be at least 16, got {self.image_size}")
        if self.gifs < 0:
            raise UsageError(f"gifs must be >= 0, got {self.gifs}")
        validate_spec(self.policy)

    @property
    def families(self) -> tuple[str, ...]:
        return FAMILIES if self.task == "all" else (self.task,)

    def identity(self) -> dict[str, Any]:
        """Settings a resumed run must share (episodes, workers and output knobs may change)."""
        d = asdict(self)
        for key in ("out", "episodes", "workers", "gifs", "device", "api_key", "rerun"):
            d.pop(key)
        return d


EVAL_SALT = 0xE7A1  # keeps evaluation seeds apart from `ecot sim collect`'s (whose third word is an attempt, 0-2)


def episode_seed(base_seed: int, index: int) -> int:
    """The scene seed of evaluation episode ``index``."""
    return int(np.random.SeedSequence([int(base_seed), int(index), EVAL_SALT]).generate_state(1)[0])


def episode_plan(config: EvalConfig, index: int) -> tuple[int, str]:
    """(seed, family) of episode ``index``."""
    return episode_seed(config.seed, index), config.families[index % len(config.families)]


def reasoning_fields(r: Reasoning | None) -> dict | None:
    if r is None:
        return None
    return {"task": r.task, "plan": r.plan, "visible_objects": [[n, list(b)] for n, b in r.visible_objects],
            "subtask_reasoning": r.subtask_reasoning, "subtask": r.subtask, "move_reasoning": r.move_reasoning,
            "move": r.move, "gripper_positions": [list(p) for p in r.gripper_positions]}


def run_episode(env: Any, policy: EvalPolicy, index: int, seed: int, family: str, split: str,
                max_steps: int) -> tuple[dict, dict]:
    """One closed-loop episode. Returns (the episode's record, its frames: images, reasonings, actions)."""
    from ecot.data.episode import Episode
    from ecot.sim.collect import stack_ground_truth

    obs, info = env.reset(seed=seed, task=family, split=split)
    policy.reset(env, seed)
    instruction = env.task.instruction
    images, states, gts = [obs["image"]], [obs["state"]], [env.ground_truth()]
    outputs: list[StepOutput] = []
    for _ in range(max_steps):
        out = policy.act(obs, instruction)
        if policy.done:
            break
        outputs.append(out)
        obs, _, terminated, truncated, info = env.step(out.action)
        images.append(obs["image"])
        states.append(obs["state"])
        gts.append(env.ground_truth())
        if terminated or truncated:
            break
    success = bool(info["success"])
    task = env.task
    closing = hold_action(obs)
    episode = Episode(
        images=np.stack(images), states=np.stack(states),
        actions=np.stack([o.action for o in outputs] + [closing]).astype(np.float32),
        instruction=instruction,
        metadata={"file_path": f"eval/{family}/{split}", "episode_id": str(index), "task_family": family,
                  "split": split, "seed": int(seed), "success": success, "task": task.describe(),
                  "instruction": instruction},
        ground_truth=stack_ground_truth(task, gts),
    )
    policy.finish(episode, outputs)
    reasonings = [o.reasoning for o in outputs]
    metrics = faith.episode_metrics(episode, reasonings) if any(r is not None for r in reasonings) else [None] * len(outputs)
    per_step = [{
        "t": t,
        "action": [round(float(v), 6) for v in o.action],
        "latency_ms": None if o.latency_ms is None else round(float(o.latency_ms), 3),
        "reasoning": reasoning_fields(o.reasoning),
        "metrics": metrics[t],
    } for t, o in enumerate(outputs)]
    record = {
        "index": index,
        "seed": int(seed),
        "task": family,
        "split": split,
        "instruction": instruction,
        "task_spec": task.describe(),
        "success": success,
        "steps": len(outputs),
        "latency_ms": [s["latency_ms"] for s in per_step],
        "faithfulness": faith.summarize_steps(metrics),
        "per_step": per_step,
        "gif": None,
    }
    frames = {"images": episode.images, "reasonings": reasonings, "actions": [o.action for o in outputs],
              "states": episode.states, "ground_truth": episode.ground_truth}
    return record, frames


# ---------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _worker_init(config: EvalConfig, threads: int | None = None, parent_pid: int | None = None) -> None:
    from ecot.runlock import die_with_parent
    from ecot.sim.env import SimConfig, TabletopEnv

    if parent_pid is not None:
        die_with_parent(parent_pid)  # no orphan workers (holding a model) after a kill -9 of the parent

    _WORKER["config"] = config
    _WORKER["env"] = TabletopEnv(SimConfig(image_size=config.image_size, max_steps=config.max_steps,
                                           num_objects=config.num_objects, start=config.start,
                                           camera=config.camera))
    _WORKER["policy"] = make_policy(config.policy, mode=config.mode, reuse_steps=config.reuse_steps,
                                    action_decoding=config.action_decoding,
                                    device=config.device, unnorm_key=config.unnorm_key, api_key=config.api_key)
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _worker_episode(index: int) -> tuple[dict, dict]:
    config = _WORKER["config"]
    seed, family = episode_plan(config, index)
    return run_episode(_WORKER["env"], _WORKER["policy"], index, seed, family, config.split, config.max_steps)


def _worker_close() -> None:
    if "policy" in _WORKER:
        _WORKER.pop("policy").close()
    if "env" in _WORKER:
        _WORKER.pop("env").close()


# ---------------------------------------------------------------------- GIFs


def episode_gif(record: dict, frames: dict, path: Path) -> Path:
    """The episode as a GIF: each step's image with the policy's reasoning (boxes, gripper trail, text) drawn."""
    from ecot.viz.overlay import reasoning_frame, save_gif

    images = frames["images"]
    size = images.shape[1]
    scale = max(1, round(256 / size))
    out = []
    n = len(frames["actions"])
    for t in range(n):  # one frame per control step: what the policy saw, wrote and did
        end = f", then {'success' if record['success'] else 'episode over'}" if t == n - 1 else ""
        out.append(reasoning_frame(images[t], frames["reasonings"][t] or Reasoning(),
                                   header=f"{record['instruction']} (step {t}{end})", action=frames["actions"][t],
                                   scale=scale))
    return save_gif(out, path)


# ---------------------------------------------------------------------- the run


def evaluate(config: EvalConfig, progress: bool = True,
             on_episode: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the evaluation into ``config.out``; returns the ``results.json`` dict."""
    from tqdm import tqdm

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    defaults = {f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}
    check_config(out, config.identity(), defaults=defaults)  # settings added since an older run: their defaults
    log = EpisodeLog(out)
    todo = [i for i in range(config.episodes) if i not in log]
    gif_counts = {True: 0, False: 0}
    for r in log.ordered(config.episodes):
        if r.get("gif"):
            gif_counts[bool(r["success"])] += 1
    rerun = None
    if config.rerun:
        from ecot.viz.rerun import RerunLogger

        rerun = RerunLogger(config.rerun, application_id=f"ecot eval {config.policy}")
    done = log.ordered(config.episodes)
    successes = sum(bool(r["success"]) for r in done)
    bar = tqdm(total=config.episodes, initial=len(done), desc="eval", unit="ep", disable=not progress)
    if done:
        bar.set_postfix_str(f"success {successes}/{len(done)} = {successes / len(done):.0%}")
    pool = None
    try:
        if config.workers == 1 or len(todo) <= 1:
            _worker_init(config)
            results = map(_worker_episode, todo)
        else:
            import multiprocessing as mp

            from ecot.sim._gl import ensure_gl_backend

            ensure_gl_backend()  # probe once here; the workers inherit MUJOCO_GL
            threads = max(1, (os.cpu_count() or 1) // config.workers)
            pool = mp.get_context("spawn").Pool(min(config.workers, len(todo)), initializer=_worker_init,
                                                initargs=(config, threads, os.getpid()))
            results = pool.imap(_worker_episode, todo)  # ordered: files are written in index order
        for record, frames in results:
            ok = bool(record["success"])
            if gif_counts[ok] < config.gifs and record["steps"] > 0:
                name = f"{GIF_DIR}/{'success' if ok else 'failure'}_{record['index']:04d}.gif"
                episode_gif(record, frames, out / name)
                record["gif"] = name
                gif_counts[ok] += 1
            if rerun is not None:
                rerun.log_episode(record, frames)
            log.append(record)
            if on_episode is not None:
                on_episode(record)
            successes += ok
            bar.update(1)
            n = len(log.ordered(config.episodes))
            bar.set_postfix_str(f"success {successes}/{n} = {successes / n:.0%}")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _worker_close()
        bar.close()
        if rerun is not None:
            rerun.close()
    return write_results(config, log)


def write_results(config: EvalConfig, log: EpisodeLog) -> dict[str, Any]:
    records = log.ordered(config.episodes)
    results = aggregate(records, policy=config.policy, env=config.env, split=config.split,
                        faithfulness=faith.aggregate(records))
    write_atomic(Path(config.out) / RESULTS_NAME, json.dumps(results, indent=2))
    return results
