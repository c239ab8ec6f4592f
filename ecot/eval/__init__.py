"""Evaluation: closed-loop success and reasoning faithfulness (sim, LIBERO, WidowX), results on disk.

* :mod:`ecot.eval.sim` -- ``ecot eval --env sim``: seeded episodes in the built-in tabletop,
  parallel workers, resumable, GIFs; :class:`~ecot.eval.sim.EvalConfig`, :func:`~ecot.eval.sim.evaluate`;
* :mod:`ecot.eval.policies` -- expert / oracle / random / local checkpoint / ``ws://`` server;
* :mod:`ecot.eval.faithfulness` -- the reasoning scored against the sim's ground truth;
* :mod:`ecot.eval.results` -- ``episodes.jsonl`` and ``results.json`` (numpy only);
* :mod:`ecot.eval.libero`, :mod:`ecot.eval.widowx` -- client-side runners that talk to ``ecot serve``
  (importable without torch or MuJoCo).

This package imports nothing heavy itself.
"""
