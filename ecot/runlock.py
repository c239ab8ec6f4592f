"""Exclusive output directories and child processes that die with their parent.

Every command that writes a run or dataset directory holds an advisory lock on it for as long
as it writes::

    from ecot.runlock import locked_dir

    with locked_dir(out, "ecot sim collect"):   # raises DirectoryLocked at once if another process holds it
        ...                                      # write into out

The lock is ``fcntl.flock`` on ``OUT/.ecot.lock``; the kernel releases it when the holder dies
(kill -9 included), so a crashed run never blocks the next one. The file records the holder's
PID, host and command, which the refusal names. Locks are re-entrant within one process (the
demo runs the stage commands in its own process). ``scope`` gives a lock of its own to work that
may run side by side in one directory (``ecot annotate --shard i/n`` locks one shard).

:func:`die_with_parent` makes a worker process exit when its parent dies (Linux
``PR_SET_PDEATHSIG``; elsewhere a watchdog thread polls the parent PID).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ecot.errors import EcotError

LOCK_NAME = ".ecot.lock"

_HELD: dict[str, list] = {}  # lock path -> [fd, depth] held by this process
_HELD_LOCK = threading.Lock()


class DirectoryLocked(EcotError):
    """Another live process is writing the directory."""


def lock_path(directory: str | os.PathLike, scope: str | None = None) -> Path:
    name = LOCK_NAME if not scope else f"{LOCK_NAME}.{scope}"
    return Path(directory) / name


def _holder(path: Path) -> dict:
    for _ in range(20):  # the holder writes its record right after locking
        try:
            text = path.read_text()
        except OSError:
            text = ""
        if text.strip():
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        time.sleep(0.025)
    return {}


def holder_of(directory: str | os.PathLike, scope: str | None = None) -> dict | None:
    """The record of the process holding the directory's lock, or None when it is free."""
    path = lock_path(directory, scope)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path) or {"pid": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DirLock:
    """An acquired lock on a directory; :meth:`release` (or the context manager) frees it."""

    def __init__(self, directory: str | os.PathLike, what: str = "ecot", scope: str | None = None):
        self.directory = Path(directory)
        self.what = what
        self.scope = scope
        self.path = lock_path(self.directory, scope)
        self.created_dir = False
        self._key = str(self.path.resolve()) if self.path.parent.exists() else None
        self.acquire()

    def acquire(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.created_dir = True
        key = str(self.path.resolve())
        self._key = key
        with _HELD_LOCK:
            if key in _HELD:  # this process holds it already: re-entrant
                _HELD[key][1] += 1
                return
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    holder = _holder(self.path)
                    pid = holder.get("pid")
                    cmd = holder.get("command")
                    who = f"PID {pid}" if pid is not None else "an unknown PID"
                    if holder.get("host") and holder.get("host") != socket.gethostname():
                        who += f" on {holder['host']}"
                    running = f" ({cmd})" if cmd else ""
                    raise DirectoryLocked(
                        f"{self.directory} is in use by another ecot process, {who}{running}; "
                        f"wait for it to finish or choose another output directory") from None
                try:  # the file may have been replaced while we waited for it: lock the current one
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.what,
                      "argv": sys.argv[1:], "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            _HELD[key] = [fd, 1]

    def release(self, remove_if_empty: bool = False, remove_file: bool = False) -> None:
        """Free the lock. ``remove_if_empty``: also remove the directory when this lock created it
        and nothing but the lock file is in it (a command that failed before writing anything).
        ``remove_file``: remove the lock file too (for outputs that are shared as they are, like a
        checkpoint directory; a process that opened the old file meanwhile still fails at once)."""
        key = self._key
        with _HELD_LOCK:
            entry = _HELD.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            fd = entry[0]
            del _HELD[key]
            if remove_if_empty and self.created_dir:
                try:
                    if [p.name for p in self.directory.iterdir()] == [self.path.name]:
                        self.path.unlink()
                        self.directory.rmdir()
                except OSError:
                    pass
            elif remove_file:
                self.path.unlink(missing_ok=True)  # still locked: acquirers re-check the inode
            else:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(remove_if_empty=exc_type is not None)


@contextmanager
def locked_dir(directory: str | os.PathLike, what: str = "ecot", scope: str | None = None,
               keep_file: bool = True) -> Iterator[DirLock]:
    """Hold ``directory``'s exclusive lock (creating the directory) for the ``with`` block.

    Raises :class:`DirectoryLocked` at once, naming the directory and the holder's PID, when
    another live process holds it. When the block fails and the directory was created here and
    holds nothing else, it is removed again (no empty leftovers of a failed command).
    ``keep_file=False`` removes the lock file on success (outputs shared as they are).
    """
    lock = DirLock(directory, what, scope)
    try:
        yield lock
    except BaseException:
        lock.release(remove_if_empty=True)
        raise
    lock.release(remove_file=not keep_file)


# ---------------------------------------------------------------------- child processes


def die_with_parent(parent_pid: int | None = None) -> None:
    """Call first thing in a worker process: it is killed when its parent dies (kill -9 included)."""
    parent_pid = parent_pid or os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:
            _watch_parent(parent_pid)
    else:
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="ecot-parent-watch").start()


def unique_temp(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident() % 100000}.tmp")
