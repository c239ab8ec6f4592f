"""The policy runtime: ECoT inference for a control loop.

::

    from ecot.policy import ECoTPolicy
    policy = ECoTPolicy.from_pretrained(path, mode="reuse", reuse_steps=5, device="cuda", dtype="bfloat16")
    out = policy.step(image, "put the carrot on the plate")
    out.action, out.reasoning, out.text, out.timings
    policy.edit(subtask="grasp the carrot")   # continue from a corrected reasoning; edit(None) clears
    policy.reset()                            # new episode

Modes: ``full``, ``reuse``, ``async``, ``no-reasoning`` (see :mod:`ecot.policy.policy`). Decoding is
our own loop over transformers' Llama weights (:mod:`ecot.policy.engine`) with the ECoT grammar
(:mod:`ecot.policy.grammar`, :mod:`ecot.policy.decoder`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ECoTPolicy": "ecot.policy.policy",
    "PolicyConfig": "ecot.policy.policy",
    "PolicyOutput": "ecot.policy.policy",
    "PolicySession": "ecot.policy.policy",
    "MODES": "ecot.policy.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecot.policy' has no attribute {name!r}")
