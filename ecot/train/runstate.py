"""Explicit resume: a training run directory remembers its options.

``OUT/run_options.json`` holds every option that changes the run. Re-running ``ecot train`` on
the directory resumes only with the same options; ``--max-steps`` may grow (never shrink), and
runtime-only knobs (progress bar, logging and saving cadence, data-loader workers, loggers) may
change. Anything else is refused with the differences listed; start a new run with
``--force-new`` into a new or empty directory. On resume ``metrics.jsonl`` is cut back to the
checkpoint's step, so no step appears twice; a finished run re-run is a no-op that says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecot.errors import UsageError

OPTIONS_NAME = "run_options.json"
METRICS_NAME = "metrics.jsonl"
# Options that do not change what is trained (may differ between the first run and a resume).
RUNTIME_ONLY = frozenset({"progress", "num_workers", "tensorboard", "wandb_project", "keep_last", "save_every",
                          "log_every", "resume", "out", "out_dir", "allow_partial_reasoning"})
GROWABLE = frozenset({"max_steps"})


def _flag(key: str) -> str:
    return "--" + key.replace(".", "-").replace("_", "-")


def _path_option(value: Any) -> Any:
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def run_options(run: Any) -> dict[str, Any]:
    """The options of a :class:`~ecot.train.recipes.RunConfig` that define the run, flattened."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(run):
        if f.name == "train":
            continue
        value = getattr(run, f.name)
        out[f.name] = _path_option(value) if f.name in ("data", "features", "model", "tokenizer") else value
    for key, value in dataclasses.asdict(run.train).items():
        if key == "lora":
            out.update({f"lora_{k}": v for k, v in value.items()})
        elif key == "betas":
            out[key] = list(value)
        else:
            out[key] = value
    return {k: v for k, v in out.items() if k not in RUNTIME_ONLY}


@dataclass
class RunState:
    out: Path
    step: int  # the newest checkpoint's step (0: none)
    max_steps: int
    finished: bool  # nothing left to do
    fresh: bool  # a new run (no options recorded yet)


def _contents(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(".ecot.lock"))


def inspect_run_dir(run: Any, force_new: bool = False) -> RunState:
    """Check that ``run`` may start or resume in its directory (read-only; raises :class:`UsageError`)."""
    from ecot.train import checkpoint as ckpt

    out = Path(run.out)
    contents = _contents(out)
    if force_new and contents:
        raise UsageError(f"--force-new starts a new run and needs a new or empty directory, but {out} holds "
                         f"{', '.join(contents[:5])}{' ...' if len(contents) > 5 else ''}; choose another --out")
    options = run_options(run)
    path = out / OPTIONS_NAME
    found = ckpt.list_checkpoints(out)
    step = found[-1][0] if found else 0
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as err:
            raise UsageError(f"{path} is malformed ({err}); expected the options file `ecot train` writes") from None
        diffs = []
        for key in sorted(set(old) | set(options)):
            a, b = old.get(key), options.get(key)
            if a == b or key in GROWABLE:
                continue
            diffs.append(f"{_flag(key)}: {a!r} in the run, {b!r} now")
        if diffs:
            raise UsageError(
                f"{out} holds a run made with other options; it resumes only with the same ones "
                f"(--max-steps may grow). Differences: {'; '.join(diffs)}. Re-run with the run's options, or "
                "start a new run with --force-new into a new or empty --out")
        if run.train.max_steps < int(old.get("max_steps", 0)):
            raise UsageError(f"--max-steps {run.train.max_steps} is below the run's {old['max_steps']} "
                             f"(it is at step {step}); --max-steps may only grow")
    elif contents and not found and METRICS_NAME not in contents and "train_config.json" not in contents:
        raise UsageError(f"{out} is not an ecot training run (it holds {', '.join(contents[:5])}); "
                         "choose a new or empty --out")
    if step > run.train.max_steps:
        raise UsageError(f"--max-steps {run.train.max_steps} is below the run's newest checkpoint (step {step}); "
                         "--max-steps may only grow")
    finished = step >= run.train.max_steps and (out / "final").is_dir()
    return RunState(out=out, step=step, max_steps=run.train.max_steps, finished=finished, fresh=not path.is_file())


def truncate_metrics(out: Path, step: int) -> int:
    """Keep only the ``metrics.jsonl`` lines of steps ``<= step`` (none when ``step`` is 0); returns lines dropped."""
    from ecot.runlock import unique_temp

    path = Path(out) / METRICS_NAME
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row_step = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            dropped += 1  # a line cut by a crash
            continue
        if step > 0 and row_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = unique_temp(path)
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def prepare_run_dir(run: Any, state: RunState) -> None:
    """Before training (main process, directory locked): drop leftovers of killed runs, cut the
    metrics back to the checkpoint, record the options."""
    from ecot.runlock import unique_temp

    out = state.out
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith((".tmp-", ".old-")) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
    truncate_metrics(out, state.step)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OPTIONS_NAME
    tmp = unique_temp(path)
    tmp.write_text(json.dumps(run_options(run), indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
