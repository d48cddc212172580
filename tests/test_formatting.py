"""The one table and share formatter: layout of Markdown tables, percentages and intervals."""

from __future__ import annotations

from approp.formatting import DASH, dash, format_interval, format_pct, markdown_table, pct, table_lines, table_row
from approp.stats.intervals import Estimate, wilson


def test_table_lines_lay_out_header_separator_and_rows():
    assert table_lines(["a", "b"], [[1, None], ["x", 0.5]]) == ["| a | b |", "|---|---|", "| 1 | – |", "| x | 0.5 |"]
    assert table_lines(["a", "b"], [], ["---", "---:"]) == ["| a | b |", "|---|---:|"]
    assert markdown_table(["a"], [["1"]]) == "| a |\n|---|\n| 1 |\n"
    assert table_row(["r", None]) == "| r | – |"


def test_shares_read_the_same_everywhere():
    assert pct(0.61234) == "61.23" and pct(None) == DASH and pct(0.615, 0) == "62"
    assert dash(None) == "–" and dash(3) == "3"
    assert format_pct(0.5, 0.25, 0.75) == "50.0 [25.0, 75.0]"
    assert format_interval(0.012, -0.008, 0.031, signed=True) == "+1.2 [-0.8, +3.1]"
    assert format_interval(0.5, 0.25, 1.0, scale=1.0, digits=4) == "0.5000 [0.2500, 1.0000]"
    p = wilson(1, 4)
    assert str(p) == format_pct(0.25, p.lower, p.upper)
    assert str(Estimate(0.1, 0.05, 0.2)) == "0.1000 [0.0500, 0.2000]"
