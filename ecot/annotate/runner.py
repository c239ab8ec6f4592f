"""The resumable annotation run over a dataset directory.

Layout of the output directory::

    run.json                  the settings (a resumed run must use the same)
    work/episodes/00000042.json   one finished episode (written to a temp file, then renamed)
    work/failed/00000042.json     why episode 42 failed (retried on the next run)
    embodied_features.json    the features file, original layout, assembled when every episode is done
    steps.parquet             per-step columns (reasoning text, primitive, gripper, boxes) beside the dataset
    validation.json           coverage and consistency report

Crash safety: an episode is done exactly when its result file exists, and that file appears
atomically. A kill -9 loses only episodes in flight; the next run redoes them. The final files
are assembled from the result files in a fixed order (file_path, then dataset index), so a
resumed run gives byte-identical output to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ecot.annotate.assemble import FEATURES_NAME, REPORT_NAME, STEPS_NAME, assemble
from ecot.annotate.pipeline import AnnotateConfig, Stages, annotate_episode, build_stages
from ecot.annotate.workdir import RUN_NAME, WorkDir, check_run_settings, temp_path
from ecot.errors import UsageError
from ecot.options import option
from ecot.runlock import die_with_parent, locked_dir

__all__ = ["FEATURES_NAME", "REPORT_NAME", "RUN_NAME", "STEPS_NAME", "RunConfig", "RunSummary", "WorkDir",
           "assemble", "failure_summary", "parse_shard", "run_annotation", "temp_path"]


@dataclass
class RunConfig:
    """One annotation run (also ``ecot annotate``'s flags, see :mod:`ecot.options`)."""

    dataset_dir: str = option(help="dataset directory (LeRobot layout, e.g. from `ecot sim collect`)",
                              positional=True, metavar="DATASET_DIR")
    out_dir: str = option(help="output directory (created; resumed if it exists)", flag="--out")
    shard_index: int = option(0, cli=False)  # both from --shard i/n
    num_shards: int = option(1, cli=False)
    workers: int = option(1, "parallel worker processes on this machine")
    use_ray: bool = option(False, "distribute over a Ray cluster (RAY_ADDRESS, or a local one)", flag="--ray")
    limit: int | None = option(None, "annotate only the first N episodes")
    progress: bool = option(True, "no progress bar")  # --no-progress
    validate: bool = option(True, "skip the validation report")  # --no-validate
    annotate: AnnotateConfig = option(default_factory=AnnotateConfig, prefix="")  # --reasoning, ...

    def __post_init__(self) -> None:
        if not (self.num_shards >= 1 and 0 <= self.shard_index < self.num_shards):
            raise UsageError(f"shard must be i/n with 0 <= i < n, got {self.shard_index}/{self.num_shards}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise UsageError(f"workers must be a positive integer, got {self.workers!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise UsageError(f"limit must be a positive number of episodes, got {self.limit!r}")


@dataclass
class RunSummary:
    total: int  # episodes selected
    done: int  # with a result (this run or before)
    annotated_now: int
    failed: dict[int, str]  # index -> one-line reason
    features_path: Path | None  # None until every episode is done
    seconds: float
    steps_now: int = 0

    @property
    def complete(self) -> bool:
        return self.features_path is not None


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def check_ground_truth(dataset, annotate: AnnotateConfig) -> None:
    """Fail before any work when a 'gt' backend meets a dataset that has no ground truth."""
    gt_stages = [name for name in ("gripper", "boxes", "captions") if getattr(annotate, name) == "gt"]
    if gt_stages and getattr(dataset, "has_ground_truth", True) is False:
        raise ValueError(
            f"the dataset has no ground truth (only sim data has it), but the {', '.join(gt_stages)} stage(s) use the "
            "'gt' backend; choose model backends, e.g. --gripper detector --boxes grounding-dino --captions openai"
        )


# ---------------------------------------------------------------------- per-episode work

_WORKER: dict[str, Any] = {}


def open_dataset_dir(path: str):
    from ecot.data import open_dataset  # provided by the datasets stage

    return open_dataset(path)


def _annotate_one(dataset, stages: Stages, work: WorkDir, index: int) -> tuple[int, str | None, int]:
    """Annotate episode ``index`` and store its result; returns (index, error or None, steps)."""
    try:
        episode = dataset[index]
        entry = annotate_episode(episode, stages)
        from ecot.annotate.validate import episode_checks

        work.write_result(index, episode.file_path, episode.episode_id, entry, episode_checks(episode, entry))
        return index, None, len(episode)
    except Exception as err:  # one bad episode must not stop the run
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        work.write_failure(index, message, traceback.format_exc())
        return index, message, 0


def _worker_init(factory: Callable[[], Any], annotate: AnnotateConfig, out_dir: str, cache_dir: str,
                 parent_pid: int | None = None) -> None:
    if parent_pid is not None:  # killed with the annotating process (kill -9 included): no orphans holding GPUs
        die_with_parent(parent_pid)
    _WORKER["dataset"] = factory()
    _WORKER["stages"] = build_stages(annotate, cache_dir)
    _WORKER["work"] = WorkDir(out_dir)


def _worker_run(index: int) -> tuple[int, str | None, int]:
    return _annotate_one(_WORKER["dataset"], _WORKER["stages"], _WORKER["work"], index)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="annotate", unit="ep", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def _run_inline(dataset, config: RunConfig, work: WorkDir, pending: list[int], cache_dir: str):
    stages = build_stages(config.annotate, cache_dir)
    for index in pending:
        yield _annotate_one(dataset, stages, work, index)


def _run_pool(factory, config: RunConfig, work: WorkDir, pending: list[int], cache_dir: str):
    import multiprocessing as mp

    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(factory, config.annotate, str(work.out), cache_dir, os.getpid())) as pool:
        # A bounded number in flight: results land roughly in index order, memory stays flat.
        it = iter(pending)
        in_flight: dict[Any, int] = {}
        for index in it:
            in_flight[pool.submit(_worker_run, index)] = index
            if len(in_flight) >= 2 * config.workers:
                break
        while in_flight:
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in finished:
                index = in_flight.pop(fut)
                try:
                    yield fut.result()
                except Exception as err:  # the worker process itself died (e.g. out of memory)
                    yield index, f"worker died: {type(err).__name__}: {err}", 0
                    return  # the pool is broken; the summary lists what is left and a re-run resumes
                nxt = next(it, None)
                if nxt is not None:
                    in_flight[pool.submit(_worker_run, nxt)] = nxt


def _ray_annotate(dataset_dir: str, annotate: dict, out_dir: str, cache: str, index: int):
    """Body of the Ray task: one dataset + stages per Ray worker process, reused across tasks."""
    key = (dataset_dir, json.dumps(annotate, sort_keys=True, default=str))
    if _WORKER.get("key") != key:
        _WORKER.update(key=key, dataset=open_dataset_dir(dataset_dir),
                       stages=build_stages(AnnotateConfig(**annotate), cache), work=WorkDir(out_dir))
    return _annotate_one(_WORKER["dataset"], _WORKER["stages"], _WORKER["work"], index)


def _run_ray(config: RunConfig, work: WorkDir, pending: list[int], cache_dir: str):
    """Episodes as Ray tasks. Joins the cluster at RAY_ADDRESS, or starts a local one with
    ``workers`` CPUs. Every node must see DATASET_DIR and --out at the same paths (shared storage)."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--ray needs the 'ray' package: pip install 'ecot[ray]'") from err
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS") or None
        kwargs = {} if address else {"num_cpus": config.workers, "include_dashboard": False}
        ray.init(address=address, log_to_driver=False, **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(_ray_annotate)
        annotate = config.annotate.to_dict()
        dataset_dir = str(Path(config.dataset_dir).resolve())
        refs = {task.remote(dataset_dir, annotate, str(work.out.resolve()), cache_dir, i): i for i in pending}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            index = refs.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except Exception as err:  # the task's worker died (after Ray's own retries)
                yield index, f"ray task failed: {type(err).__name__}: {str(err).splitlines()[0]}", 0
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------- the run


def run_annotation(config: RunConfig, dataset_factory: Callable[[], Any] | None = None) -> RunSummary:
    """Annotate this shard's pending episodes, then assemble the outputs if every episode is done."""
    start = time.perf_counter()
    factory = dataset_factory or (lambda: open_dataset_dir(config.dataset_dir))
    dataset = factory()
    n = len(dataset) if config.limit is None else min(len(dataset), config.limit)
    check_ground_truth(dataset, config.annotate)
    out = Path(config.out_dir)
    # One writer per output directory; shards of one run lock only their own shard.
    scope = None if config.num_shards == 1 else f"shard-{config.shard_index}-of-{config.num_shards}"
    with locked_dir(out, "ecot annotate", scope=scope):
        return _run_locked(config, dataset, factory, n, out, start)


def _run_locked(config: RunConfig, dataset, factory, n: int, out: Path, start: float) -> RunSummary:
    # What the results depend on (not --limit, --workers, shards or where the LLM cache lives).
    annotate = {k: v for k, v in config.annotate.to_dict().items() if k != "llm_cache"}
    settings = {"dataset_dir": str(Path(config.dataset_dir).resolve()), "annotate": annotate}
    check_run_settings(out, settings)
    work = WorkDir(out)
    work.make()
    work.clean_temps()
    _check_same_collection(out, dataset)
    cache_dir = config.annotate.llm_cache or str(out / "llm_cache")

    mine = [i for i in range(n) if i % config.num_shards == config.shard_index]
    done = work.done_indices()
    pending = [i for i in mine if i not in done]
    failed: dict[int, str] = {}
    annotated = steps = 0
    bar = _progress(len(mine), len(mine) - len(pending), config.progress)
    try:
        if not pending:
            results = iter(())
        elif config.use_ray:
            results = _run_ray(config, work, pending, cache_dir)
        elif config.workers > 1 and len(pending) > 1:
            results = _run_pool(factory, config, work, pending, cache_dir)
        else:
            results = _run_inline(dataset, config, work, pending, cache_dir)
        for index, error, n_steps in results:
            if error is None:
                annotated += 1
                steps += n_steps
            else:
                failed[index] = error
                bar.write(f"episode {index} failed: {error}")
            bar.update(1)
            bar.set_postfix(failed=len(failed), refresh=False)
    finally:
        bar.close()

    all_done = work.done_indices() >= set(range(n))
    features_path = None
    if all_done:
        features_path = assemble(work, n, validate=config.validate)
        from ecot.provenance import write_provenance

        write_provenance(out, dataset, n, config.dataset_dir)  # which dataset the features belong to
    return RunSummary(total=len(mine), done=len(set(mine) & work.done_indices()), annotated_now=annotated,
                      failed=failed, features_path=features_path, seconds=time.perf_counter() - start,
                      steps_now=steps)


def _check_same_collection(out: Path, dataset) -> None:
    """Refuse to resume over a dataset re-collected with other settings since the run started
    (its finished episodes would describe other demonstrations)."""
    from ecot.annotate.workdir import write_atomic
    from ecot.errors import EcotError
    from ecot.provenance import collection_settings

    path = out / "work" / "dataset_settings.json"
    now = collection_settings(dataset)
    if path.exists():
        then = json.loads(path.read_text())
        if then != now:
            keys = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
            raise EcotError(f"the dataset changed since the annotation in {out} started (collection settings "
                            + ", ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in keys)
                            + "); annotate it into a new --out directory")
    else:
        write_atomic(path, json.dumps(now, sort_keys=True))


def failure_summary(summary: RunSummary, work: WorkDir | None = None) -> str:
    failed = dict(summary.failed)
    if work is not None:
        failed = {**work.failures(), **failed}
    if not failed:
        return ""
    lines = [f"{len(failed)} episode(s) failed (details in work/failed/*.json; re-run the same command to retry):"]
    for index, why in sorted(failed.items())[:20]:
        lines.append(f"  episode {index}: {why}")
    if len(failed) > 20:
        lines.append(f"  ... and {len(failed) - 20} more")
    return "\n".join(lines)
