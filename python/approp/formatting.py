"""Text of reports: Markdown tables, shares in percent (with their intervals), and headless pyplot.

The one formatter for evaluate, certify, the experiment tables and the
benchmarks, so the same number reads the same everywhere: a share with two
decimals ("61.23"), a share with its 95 % interval and one decimal
("61.2 [58.1, 64.2]"), a missing value as "–".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DASH = "–"  # a missing value in every table


def dash(v: Any) -> str:
    """Returns str(v), or "–" for None."""
    return DASH if v is None else str(v)


def pct(v: float | None, digits: int = 2) -> str:
    """Returns a share as a percentage with `digits` decimals ("61.23"), or "–" for None."""
    return DASH if v is None else f"{100 * v:.{digits}f}"


def format_interval(
    value: float,
    lower: float,
    upper: float,
    scale: float = 100.0,
    digits: int = 1,
    signed: bool = False,
) -> str:
    """Returns 'v [lo, hi]' of the three numbers times `scale` with `digits` decimals (signed: '+v [−lo, +hi]')."""
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{scale * value:{spec}} [{scale * lower:{spec}}, {scale * upper:{spec}}]"


def format_pct(value: float, lower: float, upper: float) -> str:
    """Returns 'v [lo, hi]' in % with one decimal, e.g. '61.2 [58.1, 64.2]'."""
    return format_interval(value, lower, upper)


def table_row(cells: Sequence[Any]) -> str:
    """Returns one Markdown table line of the cells (via `dash`): '| a | b |'."""
    return "| " + " | ".join(dash(c) for c in cells) + " |"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    """Returns the lines of a Markdown table: header, separator, one line per row (cells via `dash`).

    align: one separator per column ("---" by default, "---:" to align right).
    """
    seps = list(align) if align is not None else ["---"] * len(header)
    return [table_row(header), "|" + "".join(s + "|" for s in seps)] + [table_row(row) for row in rows]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """Returns a Markdown table (see table_lines) as text ending in a newline."""
    return "\n".join(table_lines(header, rows, align)) + "\n"


def pyplot():
    """Returns matplotlib.pyplot on the non-interactive Agg backend (figures are only written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
