"""The README's benchmark table quotes the committed result files, not numbers typed from memory.

For every row of the table that names a benchmark (its first cell starts with `` `name` ``), the
file ``benchmarks/results/name.json`` must exist, and every ratio (``×1.52``) and every bold figure
(``**357 tokens/s**``) in the row must be a number found in that file (or in a file the row names,
e.g. ``policy_decode_cpu_compiled.json``), rounded as the README prints it. A rerun that changes a
figure without updating the README, or a README figure with no file behind it, fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

NUMBER = r"(\d[\d,]*(?:\.\d+)?)"


def table_rows() -> list[tuple[str, str]]:
    """(benchmark name, row text) for each row of the README's benchmark table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    rows, name = [], None
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| benchmark") or line.startswith("|---"):
            continue
        first = line.split("|")[1].strip()
        match = re.match(r"`(\w+)`", first)
        if match:
            name = match.group(1)
        elif not first.startswith("same"):  # "same, ..." rows continue the benchmark above
            continue
        rows.append((name, line))
    return rows


def numbers_in(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers_in(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers_in(v)]
    return []


def quoted_figures(row: str) -> list[str]:
    """Ratios (×N) and the leading number of each bold figure in a README row."""
    row = re.sub(r"goals?\b[^)|;:]*", "", row)  # targets quoted from the issue are not measurements
    row = re.sub(r"\*\*(\d+) min (\d+) s\*\*", lambda m: f"**{int(m[1]) * 60 + int(m[2])} s**", row)
    ratios = re.findall(r"(?<![\d\s])\s?×\s?" + NUMBER, row)
    bold = [m for b in re.findall(r"\*\*([^*]+)\*\*", row) for m in re.findall(r"^[^\d]*" + NUMBER, b)[:1]]
    return ratios + bold


def matches(figure: str, values: list[float]) -> bool:
    digits = figure.replace(",", "")
    if "." in digits:
        tolerance = 0.5 * 10 ** -len(digits.split(".")[1])
    else:  # "30,300" is a figure rounded to hundreds
        tolerance = 0.5 * 10 ** (len(digits) - len(digits.rstrip("0"))) if len(digits) > 2 else 0.5
    target = float(digits)
    tolerance += 1e-9
    # A figure may be printed as-is or as a percentage of a fraction.
    return any(abs(v - target) <= tolerance or abs(v * 100 - target) <= tolerance for v in values)


ROWS = table_rows()


def test_the_table_is_found():
    names = {name for name, _ in ROWS}
    assert len(names) >= 10, f"README benchmark table not parsed: {sorted(names)}"


@pytest.mark.parametrize("name,row", ROWS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROWS)])
def test_readme_row_quotes_its_result_file(name, row):
    path = RESULTS / f"{name}.json"
    assert path.is_file(), f"README row for `{name}` has no results file {path.relative_to(ROOT)}"
    values = numbers_in(json.loads(path.read_text()))
    for other in re.findall(r"`(\w+)\.json`", row):  # a row may quote a second file it names
        values += numbers_in(json.loads((RESULTS / f"{other}.json").read_text()))
    missing = [f for f in quoted_figures(row) if not matches(f, values)]
    assert not missing, f"README row for `{name}` quotes {missing}, which {path.name} does not hold:\n{row}"
