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

import fcntl
import json
import os
import socket
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ecot.annotate.pipeline import AnnotateConfig, Stages, annotate_episode, build_stages

FEATURES_NAME = "embodied_features.json"
STEPS_NAME = "steps.parquet"
REPORT_NAME = "validation.json"
RUN_NAME = "run.json"


@dataclass
class RunConfig:
    dataset_dir: str
    out_dir: str
    shard_index: int = 0
    num_shards: int = 1
    workers: int = 1
    use_ray: bool = False
    limit: int | None = None  # annotate only the first N episodes
    progress: bool = True
    validate: bool = True
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)

    def __post_init__(self) -> None:
        if not (self.num_shards >= 1 and 0 <= self.shard_index < self.num_shards):
            raise ValueError(f"shard must be i/n with 0 <= i < n, got {self.shard_index}/{self.num_shards}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


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
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


# ---------------------------------------------------------------------- files


_HOST = socket.gethostname().replace(".", "_")


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: names this host and process, so that a
    resumed run removes only the leftovers of dead processes, never a live shard's file."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")


def _is_stale(tmp: Path) -> bool:
    parts = tmp.name.rsplit(".", 3)  # [".name", host, pid, "tmp"]
    if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False  # another machine's (or not ours): leave it
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False  # the process is alive


def _write_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class WorkDir:
    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        self.episodes = self.out / "work" / "episodes"
        self.failed = self.out / "work" / "failed"

    def make(self) -> None:
        self.episodes.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(parents=True, exist_ok=True)

    def result_path(self, index: int) -> Path:
        return self.episodes / f"{index:08d}.json"

    def failure_path(self, index: int) -> Path:
        return self.failed / f"{index:08d}.json"

    def done_indices(self) -> set[int]:
        out = set()
        if self.episodes.exists():
            for p in self.episodes.iterdir():
                if p.suffix == ".json" and not p.name.startswith(".") and p.stem.isdigit():
                    out.add(int(p.stem))
        return out

    def failures(self) -> dict[int, str]:
        out = {}
        if self.failed.exists():
            for p in sorted(self.failed.iterdir()):
                if p.suffix == ".json" and p.stem.isdigit():
                    try:
                        out[int(p.stem)] = json.loads(p.read_text())["error"]
                    except (json.JSONDecodeError, KeyError):
                        out[int(p.stem)] = "unreadable failure record"
        return out

    def write_result(self, index: int, file_path: str, episode_id: str, entry: dict, checks: dict | None = None) -> None:
        record = {"index": index, "file_path": file_path, "episode_id": episode_id, "checks": checks or {}, "entry": entry}
        _write_atomic(self.result_path(index), json.dumps(record))
        self.failure_path(index).unlink(missing_ok=True)

    def write_failure(self, index: int, error: str, trace: str) -> None:
        _write_atomic(self.failure_path(index), json.dumps({"index": index, "error": error, "traceback": trace}))

    def clean_temps(self) -> None:
        """Remove temporary files a killed run left behind (never a finished result)."""
        for folder in (self.out, self.episodes, self.failed):
            if folder.exists():
                for p in folder.glob(".*.tmp"):
                    if _is_stale(p):
                        p.unlink(missing_ok=True)


def check_run_settings(out: Path, settings: dict) -> None:
    """Record the settings on the first run; refuse to resume with different ones."""
    path = out / RUN_NAME
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = {k: (old.get(k), settings.get(k)) for k in set(old) | set(settings) if old.get(k) != settings.get(k)}
            raise ValueError(
                f"{out} holds a run made with other settings {diff} (old, new); "
                "resume with the same settings or choose a new --out directory"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(settings, indent=2, sort_keys=True))


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


def _worker_init(factory: Callable[[], Any], annotate: AnnotateConfig, out_dir: str, cache_dir: str) -> None:
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
                             initargs=(factory, config.annotate, str(work.out), cache_dir)) as pool:
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
    # What the results depend on (not --limit, --workers, shards or where the LLM cache lives).
    annotate = {k: v for k, v in config.annotate.to_dict().items() if k != "llm_cache"}
    settings = {"dataset_dir": str(Path(config.dataset_dir).resolve()), "annotate": annotate}
    check_run_settings(out, settings)
    work = WorkDir(out)
    work.make()
    work.clean_temps()
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
    return RunSummary(total=len(mine), done=len(set(mine) & work.done_indices()), annotated_now=annotated,
                      failed=failed, features_path=features_path, seconds=time.perf_counter() - start,
                      steps_now=steps)


def _load_order(work: WorkDir, n: int) -> tuple[list[tuple[str, int]], list[dict]]:
    """(file_path, index) in assembly order, and each episode's checks (in that order)."""
    heads = []
    for index in range(n):
        with open(work.result_path(index), "r", encoding="utf-8") as fh:
            record = json.load(fh)
        heads.append((record["file_path"], index, record.get("checks") or {}))
    heads.sort(key=lambda h: (h[0], h[1]))
    return [(fp, i) for fp, i, _ in heads], [c for _, _, c in heads]


def assemble(work: WorkDir, n: int, validate: bool = True) -> Path:
    """Write the features file, the per-step columns and the report from the result files.

    One pass over the results in assembly order feeds both streaming writers. Serialized by a
    lock (shards may finish together); every output is written atomically.
    """
    from ecot.data.features import FeaturesWriter

    out = work.out
    with open(out / ".assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        order, checks = _load_order(work, n)
        seen: dict[tuple[str, str], int] = {}
        path = out / FEATURES_NAME
        with FeaturesWriter(path) as writer, StepColumnsWriter(out / STEPS_NAME) as columns:
            for _, index in order:
                record = json.loads(work.result_path(index).read_text(encoding="utf-8"))
                key = (record["file_path"], record["episode_id"])
                if key in seen:
                    raise ValueError(
                        f"episodes {seen[key]} and {index} share file_path {key[0]!r} and episode_id {key[1]!r}; "
                        "the features file keys episodes by these, so they must be unique"
                    )
                seen[key] = index
                writer.add(record["file_path"], record["episode_id"], record["entry"])
                columns.add(index, record)
        if validate:
            from ecot.annotate.validate import validation_report

            report = validation_report(path, checks)
            _write_atomic(out / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True))
    return path


STEP_COLUMNS = ("episode_index", "frame_index", "file_path", "episode_id", "reasoning", "move_primitive",
                "gripper_x", "gripper_y", "bboxes_json", "task", "plan", "subtask", "subtask_reason", "move", "move_reason")


class StepColumnsWriter:
    """Per-step columns (one row per dataset step, keyed by episode and frame index), streamed to
    parquet in row groups and renamed into place on success."""

    def __init__(self, path: Path, rows_per_group: int = 65536):
        self.path, self.rows_per_group = path, rows_per_group
        self.tmp = temp_path(path)
        self.cols: dict[str, list] = {k: [] for k in STEP_COLUMNS}
        self.writer = None

    def add(self, index: int, record: dict) -> None:
        from ecot.data.features import step_reasoning_text

        entry = record["entry"]
        feats = entry["features"]
        cols = self.cols
        for step in range(len(feats["move_primitive"])):
            r = entry["reasoning"].get(str(step), {})
            gx, gy = feats["gripper_position"][step]
            cols["episode_index"].append(index)
            cols["frame_index"].append(step)
            cols["file_path"].append(record["file_path"])
            cols["episode_id"].append(record["episode_id"])
            cols["reasoning"].append(step_reasoning_text(entry, str(step)))
            cols["move_primitive"].append(feats["move_primitive"][step])
            cols["gripper_x"].append(gx)
            cols["gripper_y"].append(gy)
            cols["bboxes_json"].append(json.dumps(feats["bboxes"][step]))
            for key in ("task", "plan", "subtask", "subtask_reason", "move", "move_reason"):
                cols[key].append(r.get(key, ""))
        if len(cols["frame_index"]) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            k: pa.array(v, type=pa.int64() if k in ("episode_index", "frame_index", "gripper_x", "gripper_y") else pa.string())
            for k, v in self.cols.items()
        })
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.cols = {k: [] for k in STEP_COLUMNS}

    def __enter__(self) -> "StepColumnsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.cols["frame_index"] or self.writer is None:
                self._flush()
            self.writer.close()
            os.replace(self.tmp, self.path)
        else:
            if self.writer is not None:
                self.writer.close()
            self.tmp.unlink(missing_ok=True)


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
