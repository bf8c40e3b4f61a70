"""`top`'s text chart: the maximum on the top row, zero on the bottom, points placed by time."""

from __future__ import annotations

from clawdbot_otel.presentation._top import line_chart


def test_the_chart_puts_each_point_in_its_row_and_column() -> None:
    rows = line_chart([(0.0, 0.0), (50.0, 0.1), (100.0, 0.2)], 0.0, 100.0, 11, 4)
    plot = [row.split("│", 1)[1] for row in rows[:4]]
    assert plot == ["          •", "           ", "     •     ", "•          "]
    assert rows[0].startswith("    200│")


def test_the_time_axis_names_the_chart_s_ends() -> None:
    rows = line_chart([(0.0, 1.0)], 0.0, 86400.0, 40, 3)
    assert rows[-1].split() == ["01-01", "00:00", "01-02", "00:00"]


def test_a_single_point_equal_to_the_maximum_is_drawn() -> None:
    rows = line_chart([(60.0, 0.2000000000000001)], 0.0, 120.0, 9, 6)
    assert rows[0].split("│", 1)[1] == "    •    "


def test_no_points_says_so() -> None:
    assert line_chart([], 0.0, 1.0, 10, 3) == ["  (no requests in the last 24 h)"]
