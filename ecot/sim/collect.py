"""Collect scripted demonstrations into a LeRobot-layout dataset (resumable, parallel).

Episode ``k`` of a collection has family ``families[k % len(families)]`` and a seed derived
from ``(seed, k, attempt)``, so a collection is reproducible and a resumed run continues where
the last one stopped. A failed demonstration is retried with the next attempt's seed (up to
``max_attempts``); the stored episode records whether it succeeded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecot.errors import UsageError
from ecot.options import option
from ecot.runlock import die_with_parent, locked_dir, unique_temp
from ecot.sim import EXPERT_STYLES
from ecot.sim.scene import CAMERAS, START_REGIONS
from ecot.sim.tasks import FAMILIES, SPLITS, check_num_objects, check_start_option

COLLECT_META = "meta/ecot_collect.json"
MIN_IMAGE_SIZE = 16
# The annotator's move window spans 4 states (``ecot.annotate.primitives.WINDOW``): 3 steps past
# success give every frame before it a full window of the expert's motion.
POST_SUCCESS_STEPS = 3


@dataclass
class CollectConfig:
    """What ``ecot sim collect`` collects; the defaults give a small seen-split dataset."""

    task: str = option("all", f"task family ({', '.join(FAMILIES)}) or 'all'")  # 'all': round robin over every family
    split: str = option("seen", "object/relation compositions", choices=SPLITS)
    episodes: int = option(100, "total number of episodes in the dataset", required=True)  # the CLI requires it
    seed: int = option(0, "base seed: episode k's seed is derived from (seed, k, attempt)")
    image_size: int = option(224, "square camera image size in pixels")
    workers: int = option(1, "parallel simulation processes")
    max_attempts: int = option(3, "retries (new seed) when a demonstration fails")
    dataset_name: str = option("ecot_sim", "dataset name (the key of its normalization statistics)", flag="--name")
    max_steps: int = option(80, cli=False)  # control steps per demonstration at most (no flag)
    video: bool = option(False, "store the camera as mp4 video (LeRobot v3.0, AV1) instead of PNG frames")
    num_objects: int = option(4, "objects per scene (the task's own plus distractors)")
    stop_at_success: bool = option(False, "end each demonstration when its task is achieved (no retreat frames)")
    # Why keep going after success: a demonstration that ends on a no-motion frame right at success
    # teaches the policy to stop one step early, and with the same image every step after it never
    # moves again (nearly every failure of round eight's planar policies, docs/quality.md round nine).
    post_success_steps: int = option(POST_SUCCESS_STEPS, "with --stop-at-success: steps recorded after the task is "
                                     "achieved, the motion going on (0: end at success on a no-motion frame)")
    expert_style: str = option("smooth", "smooth: human-like straight moves with noise and pauses; axis: "
                               "fixed-speed steps per axis, no noise; grid: as axis, every step a whole number of cm; sign: "
                               "every step 2 cm or none per axis (three values)", choices=EXPERT_STYLES)
    # DART-style recovery data: the executed translation gets this much Gaussian noise (m, per axis)
    # while the recorded action stays the expert's, so off-path states carry corrective labels.
    action_noise: float = option(0.0, "std (m) of Gaussian noise added to the executed translation while the "
                                 "expert's own action is recorded (recovery data); 0: none")
    # Noise on every step keeps the axis expert from ever settling on a waypoint (it corrects to
    # within 3 mm), so most frames become dithering; perturbing a fraction of the steps leaves
    # clean steps on which it converges, and the perturbed ones still carry corrective labels.
    action_noise_fraction: float = option(1.0, "fraction of steps whose executed translation gets --action-noise")
    start: str = option("home", "where the gripper starts: home (as evaluation does), anywhere above the "
                        "workspace (episode-level recovery data), or table: at pushing height, for planar "
                        "push tasks to the left, right or back", choices=START_REGIONS)
    camera: str = option("main", "the camera: main (over the robot's shoulder) or top (straight down)", choices=CAMERAS)

    def __post_init__(self) -> None:
        # Usage errors, raised before anything is written (bad settings never reach the metadata).
        if self.task != "all" and self.task not in FAMILIES:
            raise UsageError(f"unknown task family {self.task!r}; expected 'all' or one of {', '.join(FAMILIES)}")
        if self.split not in SPLITS:
            raise UsageError(f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")
        for name in ("episodes", "workers", "max_attempts", "max_steps", "num_objects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < MIN_IMAGE_SIZE:
            raise UsageError(f"image_size must be an integer of at least {MIN_IMAGE_SIZE} pixels, got {self.image_size!r}")
        if self.expert_style not in EXPERT_STYLES:
            raise UsageError(f"unknown expert style {self.expert_style!r}; expected one of {', '.join(EXPERT_STYLES)}")
        if not 0 <= self.action_noise <= 0.05:
            raise UsageError(f"action_noise must be in [0, 0.05] m, got {self.action_noise}")
        if self.start not in START_REGIONS:
            raise UsageError(f"unknown start region {self.start!r}; expected one of {', '.join(START_REGIONS)}")
        if not 0 < self.action_noise_fraction <= 1:
            raise UsageError(f"action_noise_fraction must be in (0, 1], got {self.action_noise_fraction}")
        if isinstance(self.post_success_steps, bool) or not isinstance(self.post_success_steps, int) \
                or self.post_success_steps < 0:
            raise UsageError(f"post_success_steps must be an integer >= 0, got {self.post_success_steps!r}")
        check_num_objects(self.task, self.num_objects)
        if self.camera not in CAMERAS:
            raise UsageError(f"unknown camera {self.camera!r}; expected one of {', '.join(CAMERAS)}")
        check_start_option(self.task, self.start)
        if self.max_steps < 2:
            raise UsageError(f"max_steps must be at least 2, got {self.max_steps}")
        if not self.dataset_name or "/" in self.dataset_name:
            raise UsageError(f"dataset_name must be a non-empty name without '/', got {self.dataset_name!r}")

    @property
    def families(self) -> tuple[str, ...]:
        return FAMILIES if self.task == "all" else (self.task,)

    def identity(self) -> dict[str, Any]:
        """Settings that must match when a collection is resumed."""
        d = asdict(self)
        for key in ("episodes", "workers"):
            d.pop(key)
        if not self.stop_at_success:
            d.pop("post_success_steps")  # only means something with --stop-at-success
        return d


def episode_seed(base_seed: int, index: int, attempt: int) -> int:
    return int(np.random.SeedSequence([int(base_seed), int(index), int(attempt)]).generate_state(1)[0])


def stack_ground_truth(task, gts: list[dict]) -> GroundTruth:
    """An episode's :class:`GroundTruth` from the per-step ``env.ground_truth()`` dicts."""
    from ecot.data.episode import GroundTruth

    return GroundTruth(
        object_names=task.object_names,
        object_boxes=np.stack([g["object_boxes"] for g in gts]),
        object_visible=np.stack([g["object_visible"] for g in gts]),
        object_poses=np.stack([g["object_poses"] for g in gts]),
        gripper_points=np.stack([g["gripper_point"] for g in gts]),
        gripper_visible=np.array([g["gripper_visible"] for g in gts]),
        gripper_open=np.array([g["gripper_open"] for g in gts]),
    )


def record_episode(env, seed: int, family: str, split: str, max_steps: int | None = None, stop_at_success: bool = False,
                   expert_style: str = "smooth", action_noise: float = 0.0, action_noise_fraction: float = 1.0,
                   post_success_steps: int = POST_SUCCESS_STEPS):
    """Run the scripted expert once; returns the :class:`Episode` (with ground truth).

    ``stop_at_success`` ends the demonstration soon after the first step where the task is
    achieved, so its last frames are not the expert's retreat (which a policy can confuse with the
    start). It records ``post_success_steps`` more steps and closes with the next command: the
    expert's while it stays in the phase that achieved the task, then that phase's last command
    repeated (a push goes on instead of backing off). So no frame before success is labelled
    "stop" or closes on a no-motion action, which would teach a policy to halt one step short
    (``post_success_steps=0``: the episode ends at success on a no-motion frame, as before).
    ``action_noise`` perturbs the executed translation of a random ``action_noise_fraction`` of the
    steps; the recorded action is the expert's command, never the noise."""
    from ecot.data.episode import Episode, GroundTruth
    from ecot.sim.expert import ExpertConfig, ScriptedExpert

    if post_success_steps < 0:
        raise ValueError(f"post_success_steps must be >= 0, got {post_success_steps}")
    obs, _ = env.reset(seed=seed, task=family, split=split)
    expert = ScriptedExpert(env, np.random.default_rng([seed, 7]), ExpertConfig(style=expert_style))
    noise_rng = np.random.default_rng([seed, 11])
    limit = max_steps or env.config.max_steps
    images, states, actions, gts = [], [], [], []
    success_phase: str | None = None  # the expert's phase when the task was first achieved
    success_index = 0  # frames recorded by then
    closing = None  # the final frame's action once past success: the motion going on
    while len(actions) < limit - 1:
        action = expert.act()
        if success_phase is None:
            if expert.done:
                break
        else:
            # Past success the motion that achieved it goes on, even where the expert would move on to
            # its next phase (a push that reached its goal backs off; a placed object is let go). The
            # expert never returns to an earlier phase, so once it has left, the last command repeats.
            if expert.done or expert.phase != success_phase:
                action = actions[-1].copy()
            if len(actions) - success_index >= post_success_steps:
                closing = action
                break
        images.append(obs["image"])
        states.append(obs["state"])
        gts.append(env.ground_truth())
        actions.append(action)
        executed = action
        # (The uniform draw only happens for fractions below 1: collections with noise on every step
        # keep the noise stream they were made with.)
        if action_noise > 0 and (action_noise_fraction >= 1 or noise_rng.random() < action_noise_fraction):
            executed = action.copy()
            executed[:3] += noise_rng.normal(0.0, action_noise, size=3)
        obs, _, _, _, _ = env.step(executed)
        if stop_at_success and success_phase is None and env.success():
            if post_success_steps == 0:
                break
            success_phase, success_index = expert.phase, len(actions)
    # The final observation closes the episode: with the next command after a success (the motion
    # goes on), otherwise with a no-motion action.
    images.append(obs["image"])
    states.append(obs["state"])
    gts.append(env.ground_truth())
    if closing is None:
        closing = np.array([0, 0, 0, 0, 0, 0, 1.0 if env.gripper_open else 0.0], np.float32)
    actions.append(closing)
    success = bool(env.success())
    task = env.task
    gt = stack_ground_truth(task, gts)
    metadata = {
        "file_path": f"sim/{family}/{split}",
        "episode_id": "",  # set by the collector (the episode index)
        "task_family": family,
        "split": split,
        "seed": int(seed),
        "success": success,
        "task": task.describe(),
        "instruction": task.instruction,
    }
    return Episode(images=np.stack(images), states=np.stack(states), actions=np.stack(actions),
                   instruction=task.instruction, metadata=metadata, ground_truth=gt)


# Worker processes keep one environment each.
_WORKER: dict[str, Any] = {}


def _worker_init(image_size: int, max_steps: int, num_objects: int = 4, start: str = "home", camera: str = "main",
                 parent_pid: int | None = None) -> None:
    from ecot.sim.env import SimConfig, TabletopEnv

    if parent_pid is not None:  # a pool worker: dies with the collecting process
        die_with_parent(parent_pid)

    _WORKER["env"] = TabletopEnv(SimConfig(image_size=image_size, max_steps=max_steps, num_objects=num_objects,
                                           start=start, camera=camera))


def _collect_one(args: tuple) -> Any:
    index, family, config = args
    env = _WORKER["env"]
    episode = None
    for attempt in range(config.max_attempts):
        episode = record_episode(env, episode_seed(config.seed, index, attempt), family, config.split,
                                 stop_at_success=config.stop_at_success, expert_style=config.expert_style,
                                 action_noise=config.action_noise, action_noise_fraction=config.action_noise_fraction,
                                 post_success_steps=config.post_success_steps)
        episode.metadata["attempt"] = attempt
        if episode.metadata["success"]:
            break
    episode.metadata["episode_id"] = str(index)
    from ecot.io import encode_png

    return episode, [encode_png(img) for img in episode.images]  # encode in the worker, in parallel


def collect(out: str | Path, config: CollectConfig | None = None, progress: bool = True, **overrides) -> dict[str, Any]:
    """Collect ``config.episodes`` demonstrations into ``out`` (resuming what is there).

    Holds ``out``'s lock while writing: a second collection into the same directory fails at once.
    """
    if config is None:
        config = CollectConfig(**overrides)
    elif overrides:
        config = CollectConfig(**{**asdict(config), **overrides})
    out = Path(out)
    with locked_dir(out, "ecot sim collect"):  # one writer per dataset directory
        return _collect_locked(out, config, progress)


def _collect_locked(out: Path, config: CollectConfig, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from ecot.data.lerobot import LeRobotWriter

    meta_path = out / COLLECT_META
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        previous.setdefault("video", False)  # collections made before --video existed
        previous.setdefault("num_objects", 4)  # ... and before --num-objects / --stop-at-success
        previous.setdefault("stop_at_success", False)
        previous.setdefault("expert_style", "smooth")
        previous.setdefault("action_noise", 0.0)
        previous.setdefault("action_noise_fraction", 1.0)
        previous.setdefault("start", "home")
        previous.setdefault("camera", "main")
        if previous.get("stop_at_success"):
            previous.setdefault("post_success_steps", 0)  # collections that ended on a no-motion frame at success
        if previous != config.identity():
            diff = {k: (previous.get(k), v) for k, v in config.identity().items() if previous.get(k) != v}
            raise UsageError(f"{out} was collected with different settings (existing, requested): {diff}; "
                             "use another output directory or the same settings to resume")
    writer = LeRobotWriter(out, fps=5, dataset_name=config.dataset_name, video=config.video)
    if not meta_path.exists():  # a resumed collection keeps its record (settings added since then are defaults)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_temp(meta_path)
        tmp.write_text(json.dumps(config.identity(), indent=2))
        os.replace(tmp, meta_path)
    start = len(writer)
    jobs = [(k, config.families[k % len(config.families)], config) for k in range(start, config.episodes)]
    successes = 0
    bar = tqdm(total=config.episodes, initial=min(start, config.episodes), desc="collect", unit="ep", disable=not progress)
    try:
        if config.workers == 1 or len(jobs) <= 1:
            _worker_init(config.image_size, config.max_steps, config.num_objects, config.start, config.camera)
            results = map(_collect_one, jobs)
            pool = None
        else:
            import multiprocessing as mp

            from ecot.sim._gl import ensure_gl_backend

            ensure_gl_backend()  # probe once here; the workers inherit MUJOCO_GL
            pool = mp.get_context("spawn").Pool(config.workers, initializer=_worker_init,
                                                initargs=(config.image_size, config.max_steps, config.num_objects,
                                                          config.start, config.camera, os.getpid()))
            results = pool.imap(_collect_one, jobs)  # ordered: episodes are written in index order
        try:
            for episode, pngs in results:
                writer.add_episode(episode, pngs)
                successes += bool(episode.metadata["success"])
                bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            if "env" in _WORKER:
                _WORKER.pop("env").close()
    finally:
        writer.close()
        bar.close()
    return {"out": str(out), "episodes": len(writer), "new_episodes": len(jobs), "new_successes": successes}
