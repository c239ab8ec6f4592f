"""The policy runtime's mode and action-decoding names, importable without torch (CLI help, eval, serve)."""

MODES = ("full", "reuse", "async", "no-reasoning")
ACTION_DECODINGS = ("argmax", "expected")  # greedy bin / mean over the bins' probabilities
