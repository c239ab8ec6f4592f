"""The work directory of an annotation run: one result file per finished episode.

An episode is done exactly when ``work/episodes/<index>.json`` exists. Every file is written
to a temporary name (this host + process) and renamed into place, so a crash — kill -9
included — never leaves a partial result, and a resumed run removes only the leftovers of dead
processes, never the file a live shard is writing.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

RUN_NAME = "run.json"


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


def write_atomic(path: Path, text: str) -> None:
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
        write_atomic(self.result_path(index), json.dumps(record))
        self.failure_path(index).unlink(missing_ok=True)

    def write_failure(self, index: int, error: str, trace: str) -> None:
        write_atomic(self.failure_path(index), json.dumps({"index": index, "error": error, "traceback": trace}))

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
            from ecot.errors import UsageError

            raise UsageError(
                f"{out} holds a run made with other settings {diff} (old, new); "
                "resume with the same settings or choose a new --out directory"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(settings, indent=2, sort_keys=True))
