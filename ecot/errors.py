"""The errors ``ecot`` reports as one line (see :func:`ecot.cli.main`).

* :class:`UsageError` — an option or argument is invalid (exit code 2, like argparse's own errors);
  raised before any work is done or anything is written.
* :class:`EcotError` — an expected failure while working: a locked directory, stale or partial
  provenance, a run that cannot be resumed as asked (exit code 1).

Both subclass ``ValueError`` so library callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations

import errno


class EcotError(ValueError):
    """An expected failure; the message says what was wrong and what was expected."""

    exit_code = 1


class UsageError(EcotError):
    """An invalid option or argument (exit code 2)."""

    exit_code = 2


def require_positive(name: str, value, allow_none: bool = False) -> None:
    """Raise :class:`UsageError` unless ``value`` is a positive integer (``None`` allowed if asked)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def describe_os_error(err: OSError) -> str:
    """One line for an I/O error, naming the file and saying plainly when the disk is full."""
    where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
    if err.errno == errno.ENOSPC:
        return f"disk full: no space left on device{where}; free some space (nothing partial was kept) and re-run"
    if err.errno == errno.EDQUOT:
        return f"disk quota exceeded{where}; free some space and re-run"
    text = err.strerror or str(err)
    return f"{text}: {err.filename}" if getattr(err, "filename", None) and err.strerror else str(err)


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC, also when a library (torch, safetensors) reports it as its own error."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return "no space left" in text or "unexpected pos" in text or "file write failed" in text


def check_device(device: str, option: str = "--device") -> None:
    """Refuse a torch device this torch build or machine cannot use (before any work)."""
    if device in (None, "", "auto", "cpu"):
        return
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "has no CUDA support" if torch.version.cuda is None else "sees no CUDA GPU"
            raise UsageError(f"{option} {device}: this torch build ({torch.__version__}) {built}; "
                             "expected cpu or auto here, or install a CUDA torch on a GPU machine")
        if ":" in str(device):
            index = str(device).split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise UsageError(f"{option} {device}: expected cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"{option} {device}: MPS is not available here; expected cpu or auto")
        return
    raise UsageError(f"{option} {device!r} is not a device this command supports; expected auto, cpu, cuda or cuda:N")
