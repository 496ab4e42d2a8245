"""Cost charts are well-formed SVG whose bars are proportional to the values and whose text is escaped."""

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from django.utils.safestring import SafeString

from budgets.charts import bar_chart, column_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "chart-bar"]


def texts(root: ET.Element, css_class: str) -> list[str]:
    return [text.text for text in root.iter(f"{SVG}text") if text.get("class") == css_class]


def tooltips(root: ET.Element) -> list[str]:
    return [bar.find(f"{SVG}title").text for bar in bars(root)]


DAYS = [("2026-11-24", Decimal("1.50")), ("2026-11-25", Decimal("6.00")), ("2026-11-26", 3)]
ROLES = [("planner", Decimal("2.00")), ("coder", Decimal("8.00")), ("reviewer", 4)]


def test_column_chart_draws_one_bar_per_point_scaled_to_the_max():
    svg = column_chart(DAYS, label="Cost per day")
    assert isinstance(svg, SafeString)
    root = parse(svg)
    assert root.get("aria-label") == "Cost per day"
    heights = [float(bar.get("height")) for bar in bars(root)]
    assert len(heights) == 3
    assert max(heights) == heights[1]
    assert heights[0] / heights[1] == pytest.approx(0.25, abs=0.01)
    assert heights[2] / heights[1] == pytest.approx(0.5, abs=0.01)
    bottoms = {round(float(bar.get("y")) + float(bar.get("height")), 1) for bar in bars(root)}
    assert len(bottoms) == 1, "every bar stands on the same baseline"
    assert tooltips(root) == ["2026-11-24: $1.50", "2026-11-25: $6.00", "2026-11-26: $3.00"]
    assert texts(root, "chart-axis-label") == ["$6.00"]
    assert len(root.findall(f".//{SVG}line[@class='chart-baseline']")) == 1


def test_bar_chart_draws_one_row_per_label_scaled_to_the_max():
    root = parse(bar_chart(ROLES, label="Cost by role"))
    lengths = [float(bar.get("width")) for bar in bars(root)]
    assert len(lengths) == 3
    assert max(lengths) == lengths[1]
    assert lengths[0] / lengths[1] == pytest.approx(0.25, abs=0.01)
    assert lengths[2] / lengths[1] == pytest.approx(0.5, abs=0.01)
    assert texts(root, "chart-row-label") == ["planner", "coder", "reviewer"]
    assert texts(root, "chart-value") == ["$2.00", "$8.00", "$4.00"]
    assert tooltips(root) == ["planner: $2.00", "coder: $8.00", "reviewer: $4.00"]


def test_bar_chart_grows_taller_with_more_rows():
    short = parse(bar_chart(ROLES[:1], label="Cost by role"))
    tall = parse(bar_chart(ROLES, label="Cost by role"))
    assert int(tall.get("height")) > int(short.get("height"))


def test_column_chart_thins_x_labels_to_at_most_eight():
    points = [(f"2026-11-{day:02d}", Decimal(day)) for day in range(1, 31)]
    root = parse(column_chart(points, label="Cost per day"))
    assert len(bars(root)) == 30
    shown = texts(root, "chart-x-label")
    assert 2 <= len(shown) <= 8
    assert shown[0] == "2026-11-01"


def test_few_points_show_every_x_label():
    root = parse(column_chart(DAYS, label="Cost per day"))
    assert texts(root, "chart-x-label") == ["2026-11-24", "2026-11-25", "2026-11-26"]


@pytest.mark.parametrize("chart", [column_chart, bar_chart])
def test_labels_and_title_are_escaped(chart):
    hostile = "<script>alert(1)</script> R&D"
    svg = chart([(hostile, Decimal("1.00"))], label='Spend "<b>&"')
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    root = parse(svg)
    assert root.get("aria-label") == 'Spend "<b>&"'
    assert tooltips(root) == [f"{hostile}: $1.00"]


@pytest.mark.parametrize("chart", [column_chart, bar_chart])
@pytest.mark.parametrize("points", [[], [("a", Decimal(0)), ("b", 0)], [("refund", Decimal("-3.00"))]])
def test_empty_or_zero_input_says_no_spending_yet(chart, points):
    root = parse(chart(points, label="Cost"))
    assert bars(root) == []
    assert texts(root, "chart-empty") == ["No spending yet"]
    assert root.get("aria-label") == "Cost: no spending yet"


@pytest.mark.parametrize("chart", [column_chart, bar_chart])
def test_negative_values_draw_as_zero(chart):
    root = parse(chart([("spend", Decimal("4.00")), ("refund", Decimal("-2.00"))], label="Cost"))
    size = "height" if chart is column_chart else "width"
    spend, refund = (float(bar.get(size)) for bar in bars(root))
    assert spend > 0
    assert refund == 0
    assert tooltips(root)[1] == "refund: $0.00"


def test_value_format_is_used_and_output_is_deterministic():
    first = bar_chart(ROLES, label="Tokens", value_format="{:,.0f} tok")
    assert first == bar_chart(ROLES, label="Tokens", value_format="{:,.0f} tok")
    assert texts(parse(first), "chart-value") == ["2 tok", "8 tok", "4 tok"]
