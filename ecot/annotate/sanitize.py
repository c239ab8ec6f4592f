"""Text hygiene for values that go into the features file."""

from __future__ import annotations

import re

_SPACES = re.compile(r"\s+")


def clean_text(value: object) -> str:
    """One line, single spaces, no '@' (the original loader splits the reasoning string on it)."""
    text = str(value).replace("@", " at ")
    return _SPACES.sub(" ", text).strip()
