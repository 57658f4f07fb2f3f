"""The table scripts/bench.py prints: rows of figure, ceiling, ratio and target, as Markdown.

A figure is the median of its repetitions with their range in brackets (`812 (790-830)`); a ratio is
the median of the per-repetition ratios, each taken between runs measured next to each other
(interleaved A/B/A/B), so the machine's load, shared with other work, cancels out as far as it can.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1) of the values; nan for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def _number(value: float, digits: int) -> str:
    if value != value:  # nan
        return "n/a"
    return f"{value:,.{digits}f}"


def spread(values: Sequence[float], unit: str = "", digits: int = 0) -> str:
    """`median unit (min-max)`; just the value when there is one."""
    if not values:
        return "n/a"
    text = _number(median(values), digits) + (f" {unit}" if unit else "")
    if len(values) > 1:
        text += f" ({_number(min(values), digits)}-{_number(max(values), digits)})"
    return text


@dataclass
class Target:
    """`ratio >= 0.7`-style targets: `text` for the table, `check` on the median."""

    text: str
    check: Callable[[float], bool]

    @classmethod
    def at_least(cls, bound: float, what: str = "") -> Target:
        return cls(f"{what}>= {bound:g}".strip(), lambda value: value >= bound)

    @classmethod
    def at_most(cls, bound: float, what: str = "") -> Target:
        return cls(f"{what}<= {bound:g}".strip(), lambda value: value <= bound)


NO_TARGET = Target("-", lambda _value: True)


@dataclass
class Row:
    what: str
    figure: str
    ceiling: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = ""

    @classmethod
    def invalid(cls, what: str, why: str) -> Row:
        return cls(what, f"INVALID: {why}", met="no")


def verdict(target: Target | None, value: float | None) -> str:
    if target is None or target is NO_TARGET or value is None or value != value:
        return ""
    return "yes" if target.check(value) else "**no**"


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def markdown(self) -> str:
        header = ["what", "figure", "ceiling / reference", "ratio", "target", "met"]
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        for row in self.rows:
            cells = [row.what, row.figure, row.ceiling, row.ratio, row.target, row.met]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
        return "\n".join(lines)
